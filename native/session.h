/* session.h: the state of one conversation with a model (not public;
 * prosparse.h's ps_session is this struct).
 *
 * All buffers are allocated once in ps_session_create and sized for n_batch
 * tokens, so forward() never allocates. Shapes: q_dim = n_head*head_dim,
 * kv_dim = n_head_kv*head_dim; "(n_batch, n_embd)" is row-major, one row per
 * token of the current batch.
 */
#ifndef PS_SESSION_H
#define PS_SESSION_H

#include <stdint.h>

#include "compute.h"
#include "model.h"
#include "prosparse.h"
#include "quant.h"

/* A layer's paused decisions (ffn.h's pause policy): decode tokens left. */
typedef struct ps_ffn_pause {
    int32_t predictor; /* predict mode decides by the gate instead */
    int32_t sparse;    /* the exact sparse path runs dense instead */
} ps_ffn_pause;

struct ps_session {
    const struct ps_model *model; /* not owned; must outlive the session */
    ps_compute *pool;             /* owned: worker threads + activation scratch */
    int32_t n_threads, n_ctx, n_batch, mode, cache_type;
    /* the FFN activation this session runs: the file's, or FATReLU with the
     * session's activation_threshold (ps_session_params) */
    ps_act act;
    float act_threshold;
    int32_t n_past;               /* tokens in the KV cache */

    /* KV cache: (n_layer, n_head_kv, n_ctx) rows of one head vector each,
     * cache_row bytes as cache_type stores it (attention.h); RoPE applied to k. */
    uint8_t *k_cache, *v_cache;
    size_t cache_row;
    int64_t kv_bytes;   /* of both caches */

    /* activations of the current batch */
    float *x;        /* (n_batch, n_embd) residual stream */
    float *xb;       /* (n_batch, n_embd) normed input of a block */
    float *xb2;      /* (n_batch, n_embd) output of a block before the residual add */
    float *q;        /* (n_batch, q_dim) queries */
    float *att_out;  /* (n_batch, q_dim) attention output, heads concatenated */
    float *kb, *vb;  /* (n_batch, kv_dim) new keys and values before they are stored */
    ps_block_q8a *qq; /* (n_batch, q_dim/32) queries for a Q8_0 cache; NULL otherwise */
    float *att;      /* (n_threads, ps_attend_scratch_floats) attention scratch */
    float *part_m, *part_l; /* (chunks of n_ctx, n_head) decode partials (attend.c) */
    float *part_o;   /* (chunks of n_ctx, n_head, head_dim) */
    float *hb;       /* (n_batch, n_ff) gate, then the activation x1 = act(gate)*up */
    float *hb2;      /* (n_batch, n_ff) up */
    float *rope_cos, *rope_sin; /* (tables, n_batch, n_rot/2) for the batch's positions; table 1
                                 * (models with local layers only): the local layers' base */
    double *inv_freq;/* (tables, n_rot/2) theta_i = base^(-2i/n_rot) * freq_scale / rope_factors[i];
                      * table 1: rope_freq_base_swa^(-2i/n_rot) */

    float *logits;   /* (n_vocab) last position */
    int has_logits;

    /* sparse-mode scratch (ffn.c) */
    uint8_t *ffn_mask;  /* (n_ff) 1: some token of the batch keeps the neuron */
    int32_t *ffn_idx;   /* (n_ff) row list: kept neurons, then those with x1 != 0 */
    uint8_t *ffn_keep;  /* (n_batch, n_ff) 1: this token keeps the neuron */
    float *pred_h;      /* (n_batch, rank) predictor hidden; NULL without predictor */
    float *pred_l;      /* (n_batch, n_ff) predictor logits; NULL without predictor */
    int measure;        /* 1: predict mode also runs the dense gate to count recall */
    ps_ffn_pause *ffn_pause; /* (n_layer) */
    float *ref_g, *ref_u; /* (n_batch, n_ff) dense gate/up for the measure option */

    ps_layer_stats *stats;   /* (n_layer) counters since the last reset */
    int64_t *active_by_thread; /* (n_threads) scratch for counting non-zero x1 */
};

/* Create a session with fully resolved params (api.c resolves defaults).
 * NULL on error (ps_last_error set). */
struct ps_session *ps_session_create(const struct ps_model *model, const ps_session_params *p);
void ps_session_destroy(struct ps_session *s);

/* Run n (<= the free context) already validated tokens; see ps_session_eval. */
int ps_session_forward(struct ps_session *s, const int32_t *tokens, int32_t n, float *all_logits);

/* Turn the predictor-recall measurement on (allocating its buffers) or off. */
int ps_session_measure(struct ps_session *s, int on);

#endif
