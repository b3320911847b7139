/* model.h: a loaded GGUF model — hyper-parameters, weight views, tokenizer
 * (not public; prosparse.h's ps_model is this struct).
 *
 * The GGUF mapping stays open for the model's lifetime: norms, embeddings
 * and the matrices without a load-time copy (model_pack.c) point into it;
 * the others point at owned copies with the same bytes. Shapes are
 * written as (rows, cols) with cols the contiguous dimension (ggml ne[0]).
 */
#ifndef PS_MODEL_H
#define PS_MODEL_H

#include <stdint.h>

#include "compute.h"
#include "gguf.h"
#include "tokenizer.h"

/* FFN activation: x1 = act(gate) * up, except where noted. */
typedef enum ps_act {
    PS_ACT_SILU = 0,    /* gate * sigmoid(gate) (LLaMA's SwiGLU) */
    PS_ACT_RELU = 1,    /* max(gate, 0) */
    PS_ACT_FATRELU = 2, /* gate if gate >= threshold else 0 (ProSparse) */
    PS_ACT_RELU2 = 3,   /* max(gate, 0)^2 (squared ReLU) */
    PS_ACT_DRELU = 4,   /* max(gate, 0) * max(up, 0) (dReLU, TurboSparse) */
    PS_ACT_GELU_TANH = 5, /* 0.5 g (1 + tanh(sqrt(2/pi) (g + 0.044715 g^3))) (Gemma's GeGLU) */
} ps_act;

/* Activations that are never exactly zero (dense, or threshold mode). */
static inline int ps_act_smooth(ps_act a) { return a == PS_ACT_SILU || a == PS_ACT_GELU_TANH; }

/* Name of an activation as the file spells it ("silu", "relu", ...). */
const char *ps_act_name(ps_act a);

typedef struct ps_hparams {
    int32_t n_vocab;      /* tokens; rows of token_embd and output */
    int32_t n_ctx_train;  /* context the model was trained for (0 if unknown) */
    int32_t n_embd;       /* residual stream width */
    int32_t n_ff;         /* FFN neurons */
    int32_t n_layer;
    int32_t n_head;       /* query heads */
    int32_t n_head_kv;    /* key/value heads (grouped-query attention) */
    int32_t head_dim;     /* per-head width of q, k and v */
    int32_t n_rot;        /* leading dims of each head RoPE rotates (== head_dim usually) */
    float rope_freq_base; /* theta_i = base^(-2i/n_rot) */
    float rope_freq_scale;/* positions are multiplied by it (linear scaling; 1 = none) */
    int32_t rope_neox;    /* 0: rotate adjacent pairs (2i, 2i+1) (llama files, q/k rows permuted);
                           * 1: pairs (i, i + n_rot/2), HF's rotate-half (qwen2, qwen3, gemma3) */
    float attn_scale;     /* scores = scale * q.k (1/sqrt(head_dim) unless the file says) */
    int32_t n_swa;        /* sliding window of the local layers (ps_layer.sliding): a query at
                           * position p sees keys p - n_swa + 1 .. p; 0: no local layers */
    float rope_freq_base_swa; /* RoPE base of the local layers (no linear scaling there) */
    float rms_eps;
    ps_act act;
    float act_threshold;  /* FATReLU t (0 otherwise) */
    /* MiniCPM-style scalings (1 for plain LLaMA):
     * x0 = embd * embedding_scale; x += residual_scale * block(x);
     * logits = output(norm(x) * logit_scale). */
    float embedding_scale, residual_scale, logit_scale;
    int32_t predictor_rank; /* 0 without predictor tensors; else the largest layer's rank */
    /* predictor: logits = pred_out . hidden_act(pred_in . u); a neuron is a
     * candidate when its logit > pred_threshold. u is the residual stream
     * before the FFN norm (pred_on_normed 0, PowerInfer) or the normed input. */
    float pred_threshold;
    int32_t pred_on_normed;   /* prosparse.predictor.input: 0 "residual", 1 "ffn_norm" */
    int32_t pred_hidden_relu; /* prosparse.predictor.hidden_act: 0 "none", 1 "relu" */
    int32_t pred_inclusive;   /* 1: candidate when logit >= pred_threshold (PowerInfer's rule) */
} ps_hparams;

/* One transformer block's weights (q_dim = n_head*head_dim,
 * kv_dim = n_head_kv*head_dim). */
typedef struct ps_layer {
    const float *attn_norm;  /* (n_embd) F32 */
    ps_matrix wq;            /* (q_dim, n_embd), rows permuted for adjacent-pair RoPE (llama) */
    ps_matrix wk;            /* (kv_dim, n_embd), likewise */
    ps_matrix wv;            /* (kv_dim, n_embd) */
    const float *bq, *bk, *bv; /* (q_dim), (kv_dim), (kv_dim) F32 biases (qwen2), else NULL */
    const float *q_norm, *k_norm; /* (head_dim) F32 per-head RMSNorm before RoPE (qwen3, gemma3) */
    ps_matrix wo;            /* (n_embd, q_dim) */
    const float *post_attn_norm; /* (n_embd) F32 norm of the attention output (gemma3), else NULL */
    const float *ffn_norm;   /* (n_embd) F32 */
    const float *post_ffn_norm;  /* (n_embd) F32 norm of the FFN output (gemma3), else NULL */
    int sliding;             /* 1: a local layer (window hp.n_swa, base hp.rope_freq_base_swa) */
    ps_matrix gate;          /* (n_ff, n_embd) */
    ps_matrix up;            /* (n_ff, n_embd) */
    ps_matrix down;          /* (n_embd, n_ff): llama files */
    ps_matrix down_t;        /* (n_ff, n_embd): prosparse files, one row per neuron */
    int has_down_t;          /* 1: use down_t (ps_accum_rows), 0: down (ps_matmul) */
    ps_matrix pred_in;       /* (rank, n_embd), data NULL without predictor (PowerInfer: fc1);
                              * the rank is this layer's */
    ps_matrix pred_out;      /* (n_ff, rank) (PowerInfer: fc2) */
} ps_layer;

struct ps_model {
    ps_gguf *gguf;           /* owned; kept open: every pointer below is into its mmap */
    char arch[32];           /* "llama", "qwen2", "qwen3", "gemma3" or "prosparse";
                              * PowerInfer files: "llama" or "bamboo" */
    char base_arch[32];      /* the layer layout: arch, or a prosparse file's
                              * prosparse.base_architecture ("llama" when absent) */
    const float *rope_factors; /* (n_rot/2) F32 per-dim divisors of the RoPE frequencies
                                * (rope_freqs.weight, Llama 3), else NULL */
    int powerinfer;          /* 1: a PowerInfer file (magic PWRI; see model.c) */
    ps_hparams hp;
    ps_matrix tok_embd;      /* (n_vocab, n_embd) */
    const float *output_norm;/* (n_embd) F32 */
    ps_matrix output;        /* (n_vocab, n_embd); == tok_embd when tied */
    int tied_output;
    ps_layer *layers;        /* (n_layer) */
    ps_tokenizer *tok;       /* owned */
    int64_t n_params;        /* elements over all tensors */
    float *cutoffs;          /* (n_layer) threshold-mode cut-offs on |act(gate)|
                              * (prosparse.ffn.cutoffs), owned; NULL when absent */
    void *weight_arena;      /* owned: the load-time weight copies (model_pack.c) */
    size_t weight_arena_bytes;
};

/* Map, validate and build a model; copy_weights: make the load-time weight
 * copies (model_pack.c). NULL on error (ps_last_error set). */
struct ps_model *ps_model_open(const char *path, int copy_weights);
void ps_model_close(struct ps_model *m);

/* The load-time weight copies (model_pack.c), in one huge-page arena:
 * packed copies of the matrices every mode multiplies whole, row-major
 * copies of the others. Without memory for them the model runs from the
 * mapping. ps_model_free_copies frees them (the matrices' pointers into the
 * arena then dangle: close only). */
int ps_model_copy_weights(struct ps_model *m);
void ps_model_free_copies(struct ps_model *m);

/* The largest row length of any matrix the forward pass multiplies (the
 * compute pool's activation scratch is sized by it). */
int64_t ps_model_max_cols(const struct ps_model *m);

#endif
