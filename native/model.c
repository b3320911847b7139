/* model.c: GGUF -> ps_model. Reads the hyper-parameters of the "llama",
 * "qwen2", "qwen3", "gemma3" and "prosparse" architectures, finds every tensor, checks its shape and type
 * against what the hyper-parameters imply, and builds the weight views.
 * Anything inconsistent is refused here, so the forward pass can trust the
 * model without further checks.
 *
 * PowerInfer's files (magic "PWRI") are read as they are and mapped onto
 * the prosparse model: architecture "llama" is relu(gate) * up (ReluLLaMA,
 * ProSparse-LLaMA), "bamboo" is relu(gate) * relu(up) (Bamboo, Mistral
 * shaped); ffn_down_t is the down projection; the predictor blk.N.fc1
 * [rank, n_embd] and blk.N.fc2 [n_ff, rank] has a ReLU between the two,
 * reads the residual before ffn_norm, and keeps a neuron where its logit
 * >= powerinfer.sparse_threshold (0 when absent). */
#include "model.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "prosparse.h"
#include "util.h"

/* Sanity bounds: far above any real model, low enough that products of
 * them cannot overflow the int64 arithmetic below. */
#define MAX_LAYER 4096
#define MAX_EMBD (1 << 17)
#define MAX_FF (1 << 20)
#define MAX_HEAD 4096
#define MAX_HEAD_DIM 4096
#define MAX_VOCAB (1 << 24)

const char *ps_act_name(ps_act a) {
    switch (a) {
    case PS_ACT_SILU: return "silu";
    case PS_ACT_RELU: return "relu";
    case PS_ACT_FATRELU: return "fatrelu";
    case PS_ACT_RELU2: return "relu2";
    case PS_ACT_DRELU: return "drelu";
    case PS_ACT_GELU_TANH: return "gelu_tanh";
    }
    return "?";
}

/* ---- architectures ------------------------------------------------------ */

/* What each layer layout adds to LLaMA's. The forward pass has no notion of
 * architectures: it reads these as flags in ps_hparams and as optional
 * tensors in ps_layer. A prosparse file names its layout in
 * prosparse.base_architecture and carries that layout's extra tensors. */
typedef struct arch_layout {
    const char *name;
    int rope_neox; /* llama.cpp permutes q/k rows for llama only: the others rotate halves */
    int qkv_bias;  /* blk.N.attn_{q,k,v}.bias, required */
    int qk_norm;   /* blk.N.attn_{q,k}_norm.weight (head_dim), required */
    int gemma;     /* post-attention/post-FFN norms, embeddings * sqrt(n_embd), GELU-tanh
                    * GeGLU, local sliding-window layers with their own RoPE base */
} arch_layout;

static const arch_layout LAYOUTS[] = {
    {"llama", 0, 0, 0, 0},
    {"qwen2", 1, 1, 0, 0},
    {"qwen3", 1, 0, 1, 0},
    {"gemma3", 1, 0, 1, 1},
};

static const arch_layout *find_layout(const char *name) {
    for (size_t i = 0; i < sizeof LAYOUTS / sizeof LAYOUTS[0]; i++)
        if (strcmp(LAYOUTS[i].name, name) == 0) return &LAYOUTS[i];
    return NULL;
}

static const arch_layout *layout_of(const ps_model *m) {
    const arch_layout *l = find_layout(m->base_arch);
    return l ? l : &LAYOUTS[0];
}

/* ---- metadata ---------------------------------------------------------- */

/* "<arch>.<suffix>" into buf. */
static const char *arch_key(char *buf, size_t n, const char *arch, const char *suffix) {
    snprintf(buf, n, "%s.%s", arch, suffix);
    return buf;
}

/* A getter failed (wrong type, out of range): prefix its message with the key. */
static int key_error(const char *key) {
    char why[256];
    snprintf(why, sizeof why, "%s", ps_last_error());
    return ps_fail(PS_ERR_FORMAT, "key %s: %s", key, why);
}

/* Integer key under the arch prefix. Returns PS_OK, or an error when it is
 * required and absent, of the wrong type, or outside [lo, hi]. */
static int read_int(const ps_gguf *g, const char *arch, const char *suffix, int required,
                    int32_t def, int32_t lo, int32_t hi, int32_t *out) {
    char key[128];
    arch_key(key, sizeof key, arch, suffix);
    int32_t v = def;
    int r = ps_gguf_get_i32(g, key, &v);
    if (r < 0) return key_error(key);
    if (r == 0) {
        if (required) return ps_fail(PS_ERR_FORMAT, "missing key %s", key);
        v = def;
    }
    if (v < lo || v > hi)
        return ps_fail(PS_ERR_FORMAT, "key %s = %d is out of range [%d, %d]", key, v, lo, hi);
    *out = v;
    return PS_OK;
}

static int read_float(const ps_gguf *g, const char *arch, const char *suffix, float def, float *out) {
    char key[128];
    arch_key(key, sizeof key, arch, suffix);
    float v = def;
    int r = ps_gguf_get_f32(g, key, &v);
    if (r < 0) return key_error(key);
    if (r == 0) v = def;
    if (!isfinite(v)) return ps_fail(PS_ERR_FORMAT, "key %s is not a finite number", key);
    *out = v;
    return PS_OK;
}

/* Copy a string key into buf (NUL-terminated). 1 found, 0 absent, <0 error. */
static int read_str(const ps_gguf *g, const char *key, char *buf, size_t n) {
    ps_str s;
    int r = ps_gguf_get_str(g, key, &s);
    if (r < 0) return key_error(key);
    if (r == 0) return 0;
    size_t k = s.n < n - 1 ? (size_t)s.n : n - 1;
    memcpy(buf, s.p, k);
    buf[k] = '\0';
    return 1;
}

/* An optional string key with two allowed values: *out = 0 for `off` (also
 * when the key is absent), 1 for `on`; anything else is a format error. */
static int read_choice(const ps_gguf *g, const char *key, const char *off, const char *on, int32_t *out) {
    char val[64];
    int rc = read_str(g, key, val, sizeof val);
    if (rc < 0) return PS_ERR_FORMAT;
    *out = 0;
    if (rc == 0 || strcmp(val, off) == 0) return PS_OK;
    if (strcmp(val, on) == 0) {
        *out = 1;
        return PS_OK;
    }
    return ps_fail(PS_ERR_FORMAT, "%s '%s' (expected %s or %s)", key, val, off, on);
}

/* The optional sparse-inference keys of prosparse files: predictor
 * settings and threshold-mode cut-offs (copied: GGUF arrays need not be
 * 4-byte aligned). */
static int read_sparse_keys(ps_model *m) {
    const ps_gguf *g = m->gguf;
    ps_hparams *hp = &m->hp;
    int rc;
    if ((rc = read_float(g, "prosparse", "predictor.threshold", 0.0f, &hp->pred_threshold))) return rc;
    if ((rc = read_choice(g, "prosparse.predictor.input", "residual", "ffn_norm", &hp->pred_on_normed))) return rc;
    if ((rc = read_choice(g, "prosparse.predictor.hidden_act", "none", "relu", &hp->pred_hidden_relu))) return rc;

    int et = 0;
    uint64_t n = 0;
    if (ps_gguf_find_key(g, "prosparse.ffn.cutoffs") >= 0) {
        if (ps_gguf_arr_info(g, "prosparse.ffn.cutoffs", &et, &n) != 0 || et != PS_GGUF_FLOAT32)
            return ps_fail(PS_ERR_FORMAT, "prosparse.ffn.cutoffs must be an array of float32");
        if (n != (uint64_t)hp->n_layer)
            return ps_fail(PS_ERR_FORMAT, "prosparse.ffn.cutoffs has %llu values for %d layers",
                           (unsigned long long)n, hp->n_layer);
        m->cutoffs = ps_malloc(sizeof(float) * (size_t)n);
        if (!m->cutoffs) return ps_fail(PS_ERR_MEMORY, "out of memory");
        memcpy(m->cutoffs, ps_gguf_arr_data(g, "prosparse.ffn.cutoffs"), sizeof(float) * (size_t)n);
        for (uint64_t i = 0; i < n; i++)
            if (!isfinite(m->cutoffs[i]) || m->cutoffs[i] < 0.0f)
                return ps_fail(PS_ERR_FORMAT, "prosparse.ffn.cutoffs[%llu] = %g is not a finite value >= 0",
                               (unsigned long long)i, m->cutoffs[i]);
    }
    return PS_OK;
}

/* A file with the sparse extras: prosparse, or PowerInfer's. */
static int sparse_file(const ps_model *m) { return m->powerinfer || strcmp(m->arch, "prosparse") == 0; }

/* PowerInfer's activation and predictor settings (what prosparse files
 * say in keys, PowerInfer's runtime fixes). */
static int read_powerinfer_keys(ps_model *m) {
    ps_hparams *hp = &m->hp;
    hp->act = strcmp(m->arch, "bamboo") == 0 ? PS_ACT_DRELU : PS_ACT_RELU;
    hp->pred_on_normed = 0;
    hp->pred_hidden_relu = 1;
    hp->pred_inclusive = 1;
    int r = ps_gguf_get_f32(m->gguf, "powerinfer.sparse_threshold", &hp->pred_threshold);
    if (r < 0) return key_error("powerinfer.sparse_threshold");
    if (r == 0) hp->pred_threshold = 0.0f;
    if (!isfinite(hp->pred_threshold))
        return ps_fail(PS_ERR_FORMAT, "key powerinfer.sparse_threshold is not a finite number");
    return PS_OK;
}

/* Keys whose presence changes the function: a non-zero one we do not
 * implement is refused rather than ignored. */
static int refuse_softcapping(const ps_model *m) {
    static const char *keys[] = {"attn_logit_softcapping", "final_logit_softcapping"};
    for (size_t i = 0; i < 2; i++) {
        float v = 0.0f;
        if (read_float(m->gguf, m->arch, keys[i], 0.0f, &v)) return PS_ERR_FORMAT;
        if (v != 0.0f)
            return ps_fail(PS_ERR_UNSUPPORTED, "%s.%s = %g: logit soft-capping (Gemma 2) is not supported",
                           m->arch, keys[i], v);
    }
    return PS_OK;
}

/* The layout's flags: RoPE pairing, attention scale, sliding-window layers. */
static int read_layout_keys(ps_model *m) {
    const ps_gguf *g = m->gguf;
    const char *a = m->arch;
    ps_hparams *hp = &m->hp;
    const arch_layout *lay = layout_of(m);
    int rc;
    if ((rc = refuse_softcapping(m))) return rc;
    hp->rope_neox = lay->rope_neox;
    if ((rc = read_float(g, a, "attention.scale", 1.0f / sqrtf((float)hp->head_dim), &hp->attn_scale))) return rc;
    if (!(hp->attn_scale > 0.0f))
        return ps_fail(PS_ERR_FORMAT, "%s.attention.scale %g must be > 0", a, hp->attn_scale);
    hp->n_swa = 0;
    hp->rope_freq_base_swa = hp->rope_freq_base;
    if (!lay->gemma) return PS_OK;
    /* Gemma 3 as llama.cpp reads it: every sixth layer global, the others
     * local with RoPE base 10000 unless the file says otherwise */
    if ((rc = read_int(g, a, "attention.sliding_window", 0, 0, 0, INT32_MAX, &hp->n_swa))) return rc;
    if ((rc = read_float(g, a, "rope.freq_base_swa", 10000.0f, &hp->rope_freq_base_swa))) return rc;
    if (hp->rope_freq_base_swa <= 1.0f)
        return ps_fail(PS_ERR_FORMAT, "rope.freq_base_swa %g must be > 1", hp->rope_freq_base_swa);
    return PS_OK;
}

/* Which layers are local, as llama.cpp reads it: per-layer flags
 * (<arch>.attention.sliding_window_pattern, a bool array), or that key as
 * an integer n (every n-th layer global; 0: all local), by default Gemma 3's
 * n = 6 (five local layers, then one global). */
static int read_sliding_layers(ps_model *m) {
    const ps_hparams *hp = &m->hp;
    if (hp->n_swa == 0) return PS_OK;
    char key[128];
    arch_key(key, sizeof key, m->arch, "attention.sliding_window_pattern");
    int et = 0;
    uint64_t n = 0;
    if (ps_gguf_arr_info(m->gguf, key, &et, &n) == 0) {
        if (et != PS_GGUF_BOOL)
            return ps_fail(PS_ERR_FORMAT, "%s must be an array of bool (one per layer) or an integer", key);
        if (n != (uint64_t)hp->n_layer)
            return ps_fail(PS_ERR_FORMAT, "%s has %llu values for %d layers", key, (unsigned long long)n, hp->n_layer);
        const uint8_t *flags = ps_gguf_arr_data(m->gguf, key);
        for (int il = 0; il < hp->n_layer; il++) m->layers[il].sliding = flags[il] != 0;
        return PS_OK;
    }
    int32_t every = 6;
    int rc = read_int(m->gguf, m->arch, "attention.sliding_window_pattern", 0, 6, 0, MAX_LAYER, &every);
    if (rc) return rc;
    for (int il = 0; il < hp->n_layer; il++) m->layers[il].sliding = every == 0 || il % every < every - 1;
    return PS_OK;
}

static int read_hparams(ps_model *m) {
    const ps_gguf *g = m->gguf;
    const char *a = m->arch;
    ps_hparams *hp = &m->hp;
    int rc;
    char key[128], val[64];

    if ((rc = read_int(g, a, "block_count", 1, 0, 1, MAX_LAYER, &hp->n_layer))) return rc;
    if ((rc = read_int(g, a, "embedding_length", 1, 0, 1, MAX_EMBD, &hp->n_embd))) return rc;
    if ((rc = read_int(g, a, "feed_forward_length", 1, 0, 1, MAX_FF, &hp->n_ff))) return rc;
    if ((rc = read_int(g, a, "attention.head_count", 1, 0, 1, MAX_HEAD, &hp->n_head))) return rc;
    if ((rc = read_int(g, a, "attention.head_count_kv", 0, hp->n_head, 1, MAX_HEAD, &hp->n_head_kv)))
        return rc;
    if ((rc = read_int(g, a, "context_length", 0, 0, 0, INT32_MAX, &hp->n_ctx_train))) return rc;

    /* head_dim: attention.key_length if given, else n_embd / n_head. */
    int32_t key_len = 0, val_len = 0;
    if ((rc = read_int(g, a, "attention.key_length", 0, 0, 0, MAX_HEAD_DIM, &key_len))) return rc;
    if ((rc = read_int(g, a, "attention.value_length", 0, key_len, 0, MAX_HEAD_DIM, &val_len)))
        return rc;
    if (key_len == 0) {
        if (hp->n_embd % hp->n_head != 0)
            return ps_fail(PS_ERR_FORMAT, "n_embd %d is not divisible by n_head %d",
                           hp->n_embd, hp->n_head);
        key_len = hp->n_embd / hp->n_head;
        if (val_len == 0) val_len = key_len;
    }
    if (val_len != key_len)
        return ps_fail(PS_ERR_UNSUPPORTED, "attention key length %d != value length %d",
                       key_len, val_len);
    hp->head_dim = key_len;
    if (hp->n_head % hp->n_head_kv != 0)
        return ps_fail(PS_ERR_FORMAT, "n_head %d is not a multiple of n_head_kv %d",
                       hp->n_head, hp->n_head_kv);
    if ((rc = read_int(g, a, "rope.dimension_count", 0, hp->head_dim, 2, hp->head_dim, &hp->n_rot)))
        return rc;
    if (hp->n_rot % 2 != 0)
        return ps_fail(PS_ERR_FORMAT, "rope.dimension_count %d is odd", hp->n_rot);

    if ((rc = read_float(g, a, "rope.freq_base", 10000.0f, &hp->rope_freq_base))) return rc;
    if (hp->rope_freq_base <= 1.0f)
        return ps_fail(PS_ERR_FORMAT, "rope.freq_base %g must be > 1", hp->rope_freq_base);
    hp->rope_freq_scale = 1.0f;
    rc = read_str(g, arch_key(key, sizeof key, a, "rope.scaling.type"), val, sizeof val);
    if (rc < 0) return PS_ERR_FORMAT;
    /* llama3 scaling is carried by rope_freqs.weight (per-dim divisors, read with the tensors) */
    if (rc == 1 && strcmp(val, "none") != 0 && strcmp(val, "llama3") != 0) {
        if (strcmp(val, "linear") != 0)
            return ps_fail(PS_ERR_UNSUPPORTED, "rope scaling '%s' is not supported (linear, llama3)", val);
        float factor = 1.0f;
        if ((rc = read_float(g, a, "rope.scaling.factor", 1.0f, &factor))) return rc;
        if (factor < 1.0f || factor > 1024.0f)
            return ps_fail(PS_ERR_FORMAT, "rope.scaling.factor %g is out of range", factor);
        hp->rope_freq_scale = 1.0f / factor;
    }
    if ((rc = read_float(g, a, "attention.layer_norm_rms_epsilon", 1e-5f, &hp->rms_eps))) return rc;
    if (!(hp->rms_eps > 0.0f && hp->rms_eps < 1.0f))
        return ps_fail(PS_ERR_FORMAT, "rms epsilon %g is out of range", hp->rms_eps);
    if ((rc = read_layout_keys(m))) return rc;

    /* FFN activation: the layout's gate (SiLU; Gemma: GELU-tanh); prosparse says which. */
    hp->act = layout_of(m)->gemma ? PS_ACT_GELU_TANH : PS_ACT_SILU;
    hp->act_threshold = 0.0f;
    hp->embedding_scale = hp->residual_scale = hp->logit_scale = 1.0f;
    if (strcmp(a, "prosparse") == 0) {
        rc = read_str(g, "prosparse.ffn.activation", val, sizeof val);
        if (rc < 0) return PS_ERR_FORMAT;
        if (rc == 0) return ps_fail(PS_ERR_FORMAT, "missing key prosparse.ffn.activation");
        static const ps_act acts[] = {PS_ACT_SILU, PS_ACT_RELU, PS_ACT_FATRELU, PS_ACT_RELU2,
                                      PS_ACT_DRELU, PS_ACT_GELU_TANH};
        int found = 0;
        for (size_t i = 0; i < sizeof acts / sizeof acts[0]; i++)
            if (strcmp(val, ps_act_name(acts[i])) == 0) { hp->act = acts[i]; found = 1; }
        if (!found)
            return ps_fail(PS_ERR_UNSUPPORTED,
                           "unknown activation '%s' (expected silu, gelu_tanh, relu, fatrelu, relu2 or drelu)", val);
        if ((rc = read_float(g, a, "ffn.activation_threshold", 0.0f, &hp->act_threshold))) return rc;
        if ((rc = read_float(g, a, "embedding_scale", 1.0f, &hp->embedding_scale))) return rc;
        if ((rc = read_float(g, a, "residual_scale", 1.0f, &hp->residual_scale))) return rc;
        if ((rc = read_float(g, a, "logit_scale", 1.0f, &hp->logit_scale))) return rc;
        if ((rc = read_sparse_keys(m))) return rc;
    }
    if (layout_of(m)->gemma) hp->embedding_scale *= sqrtf((float)hp->n_embd);
    if (m->powerinfer && (rc = read_powerinfer_keys(m))) return rc;
    return PS_OK;
}

/* ---- tensors ----------------------------------------------------------- */

enum role { ROLE_MATMUL, ROLE_ROWS, ROLE_F32 };

/* Find a tensor and check it is (rows, cols) of a type usable for its role:
 * ROLE_MATMUL / ROLE_ROWS: any supported weight type whose blocks divide a row;
 * ROLE_F32: float32 only (norms, frequencies; rows == 1 means 1-D).
 * optional: absent -> PS_OK with *found = 0. */
static int get_tensor(const ps_model *m, const char *name, int64_t rows, int64_t cols,
                      enum role role, int optional, const ps_gguf_tensor **found) {
    const ps_gguf_tensor *t = ps_gguf_find_tensor(m->gguf, name);
    *found = t;
    if (!t) {
        if (optional) return PS_OK;
        return ps_fail(PS_ERR_FORMAT, "missing tensor '%s'", name);
    }
    int64_t e0 = t->ne[0], e1 = t->ne[1];
    if (e0 != cols || e1 != rows || t->ne[2] != 1 || t->ne[3] != 1) {
        if (rows == 1)
            return ps_fail(PS_ERR_FORMAT, "tensor '%s' has shape [%lld, %lld, %lld, %lld], expected [%lld]",
                           name, (long long)e0, (long long)e1, (long long)t->ne[2],
                           (long long)t->ne[3], (long long)cols);
        return ps_fail(PS_ERR_FORMAT,
                       "tensor '%s' has shape [%lld, %lld, %lld, %lld], expected [%lld, %lld] (ggml order)",
                       name, (long long)e0, (long long)e1, (long long)t->ne[2], (long long)t->ne[3],
                       (long long)cols, (long long)rows);
    }
    const ps_type_traits *tt = ps_type_get(t->type);
    if (role == ROLE_F32) {
        if (t->type != PS_TYPE_F32)
            return ps_fail(PS_ERR_UNSUPPORTED, "tensor '%s' has type %s, expected f32", name,
                           tt ? tt->name : "unknown");
        return PS_OK;
    }
    if (!tt || !ps_type_supported(t->type))
        return ps_fail(PS_ERR_UNSUPPORTED, "tensor '%s' has type %s (id %d), which this engine does not run",
                       name, tt ? tt->name : "unknown", (int)t->type);
    if (ps_row_bytes(t->type, cols) == 0)
        return ps_fail(PS_ERR_FORMAT, "tensor '%s': row length %lld is not a multiple of the %s block size %d",
                       name, (long long)cols, tt->name, tt->block_size);
    if ((uint64_t)ps_row_bytes(t->type, cols) * (uint64_t)rows != t->nbytes)
        return ps_fail(PS_ERR_FORMAT, "tensor '%s': byte size %llu does not match its shape", name,
                       (unsigned long long)t->nbytes);
    return PS_OK;
}

static ps_matrix to_matrix(const ps_gguf_tensor *t) {
    ps_matrix w = {0};
    if (t) {
        w.data = t->data;
        w.type = t->type;
        w.n_cols = t->ne[0];
        w.n_rows = t->ne[1];
    }
    return w;
}

static int get_matrix(const ps_model *m, const char *name, int64_t rows, int64_t cols,
                      int optional, ps_matrix *out) {
    const ps_gguf_tensor *t;
    int rc = get_tensor(m, name, rows, cols, ROLE_MATMUL, optional, &t);
    *out = to_matrix(t);
    return rc;
}

static int get_f32(const ps_model *m, const char *name, int64_t n, int optional, const float **out) {
    const ps_gguf_tensor *t;
    int rc = get_tensor(m, name, 1, n, ROLE_F32, optional, &t);
    *out = t ? (const float *)t->data : NULL;
    return rc;
}

/* Is this a tensor name the engine consumes? (Anything else changes the
 * function in ways we do not implement, e.g. biases or rope_freqs.) */
static int known_tensor(const ps_model *m, ps_str name) {
    static const char *top[] = {"token_embd.weight", "output_norm.weight", "output.weight"};
    const arch_layout *lay = layout_of(m);
    static const char *bias_blk[] = {"attn_q.bias", "attn_k.bias", "attn_v.bias"};
    static const char *qk_norm_blk[] = {"attn_q_norm.weight", "attn_k_norm.weight"};
    static const char *gemma_blk[] = {"post_attention_norm.weight", "post_ffw_norm.weight"};
    if (m->rope_factors && ps_str_eq(name, "rope_freqs.weight")) return 1;
    static const char *llama_blk[] = {"attn_norm.weight", "attn_q.weight", "attn_k.weight",
                                      "attn_v.weight", "attn_output.weight", "ffn_norm.weight",
                                      "ffn_gate.weight", "ffn_up.weight", "ffn_down.weight"};
    static const char *sparse_blk[] = {"ffn_down_t.weight", "ffn_freq", "ffn_pred_in.weight",
                                       "ffn_pred_out.weight"};
    /* PowerInfer: its predictor, and the GPU neuron split (unused on a CPU) */
    static const char *pwri_blk[] = {"ffn_down_t.weight", "fc1.weight", "fc2.weight", "gpu_idx", "gpu_bucket"};
    for (size_t i = 0; i < 3; i++)
        if (ps_str_eq(name, top[i])) return 1;
    if (name.n < 5 || memcmp(name.p, "blk.", 4) != 0) return 0;
    uint64_t i = 4;
    int64_t layer = 0;
    if (i >= name.n || name.p[i] < '0' || name.p[i] > '9') return 0;
    while (i < name.n && name.p[i] >= '0' && name.p[i] <= '9' && layer <= MAX_LAYER)
        layer = layer * 10 + (name.p[i++] - '0');
    if (layer >= m->hp.n_layer || i >= name.n || name.p[i] != '.') return 0;
    ps_str rest = {name.p + i + 1, name.n - i - 1};
    for (size_t k = 0; k < sizeof llama_blk / sizeof llama_blk[0]; k++)
        if (ps_str_eq(rest, llama_blk[k]) && !(m->powerinfer && ps_str_eq(rest, "ffn_down.weight"))) return 1;
    for (size_t k = 0; lay->qkv_bias && k < 3; k++)
        if (ps_str_eq(rest, bias_blk[k])) return 1;
    for (size_t k = 0; lay->qk_norm && k < 2; k++)
        if (ps_str_eq(rest, qk_norm_blk[k])) return 1;
    for (size_t k = 0; lay->gemma && k < 2; k++)
        if (ps_str_eq(rest, gemma_blk[k])) return 1;
    if (m->powerinfer) {
        for (size_t k = 0; k < sizeof pwri_blk / sizeof pwri_blk[0]; k++)
            if (ps_str_eq(rest, pwri_blk[k])) return 1;
    } else if (strcmp(m->arch, "prosparse") == 0) {
        for (size_t k = 0; k < sizeof sparse_blk / sizeof sparse_blk[0]; k++)
            if (ps_str_eq(rest, sparse_blk[k])) return 1;
    }
    return 0;
}

static int load_layer(ps_model *m, int il) {
    const ps_hparams *hp = &m->hp;
    ps_layer *L = &m->layers[il];
    const int64_t q_dim = (int64_t)hp->n_head * hp->head_dim;
    const int64_t kv_dim = (int64_t)hp->n_head_kv * hp->head_dim;
    const int sparse_arch = sparse_file(m);
    char name[96];
    int rc;
#define NAME(s) (snprintf(name, sizeof name, "blk.%d." s, il), name)
    if ((rc = get_f32(m, NAME("attn_norm.weight"), hp->n_embd, 0, &L->attn_norm))) return rc;
    if ((rc = get_matrix(m, NAME("attn_q.weight"), q_dim, hp->n_embd, 0, &L->wq))) return rc;
    if ((rc = get_matrix(m, NAME("attn_k.weight"), kv_dim, hp->n_embd, 0, &L->wk))) return rc;
    if ((rc = get_matrix(m, NAME("attn_v.weight"), kv_dim, hp->n_embd, 0, &L->wv))) return rc;
    if ((rc = get_matrix(m, NAME("attn_output.weight"), hp->n_embd, q_dim, 0, &L->wo))) return rc;
    if ((rc = get_f32(m, NAME("ffn_norm.weight"), hp->n_embd, 0, &L->ffn_norm))) return rc;
    /* the layout's extra tensors, all required where the layout has them */
    const arch_layout *lay = layout_of(m);
    if (lay->qkv_bias) {
        if ((rc = get_f32(m, NAME("attn_q.bias"), q_dim, 0, &L->bq))) return rc;
        if ((rc = get_f32(m, NAME("attn_k.bias"), kv_dim, 0, &L->bk))) return rc;
        if ((rc = get_f32(m, NAME("attn_v.bias"), kv_dim, 0, &L->bv))) return rc;
    }
    if (lay->qk_norm) {
        if ((rc = get_f32(m, NAME("attn_q_norm.weight"), hp->head_dim, 0, &L->q_norm))) return rc;
        if ((rc = get_f32(m, NAME("attn_k_norm.weight"), hp->head_dim, 0, &L->k_norm))) return rc;
    }
    if (lay->gemma) {
        if ((rc = get_f32(m, NAME("post_attention_norm.weight"), hp->n_embd, 0, &L->post_attn_norm))) return rc;
        if ((rc = get_f32(m, NAME("post_ffw_norm.weight"), hp->n_embd, 0, &L->post_ffn_norm))) return rc;
    }
    if ((rc = get_matrix(m, NAME("ffn_gate.weight"), hp->n_ff, hp->n_embd, 0, &L->gate))) return rc;
    if ((rc = get_matrix(m, NAME("ffn_up.weight"), hp->n_ff, hp->n_embd, 0, &L->up))) return rc;

    /* Down projection: ffn_down (n_embd rows) or, in prosparse files,
     * ffn_down_t (one row per neuron) in its place. Exactly one. */
    int has_t = sparse_arch && ps_gguf_find_tensor(m->gguf, NAME("ffn_down_t.weight")) != NULL;
    int has_d = ps_gguf_find_tensor(m->gguf, NAME("ffn_down.weight")) != NULL;
    if (has_t && has_d)
        return ps_fail(PS_ERR_FORMAT, "layer %d has both ffn_down and ffn_down_t", il);
    if (has_t) {
        if ((rc = get_matrix(m, NAME("ffn_down_t.weight"), hp->n_ff, hp->n_embd, 0, &L->down_t)))
            return rc;
        L->has_down_t = 1;
    } else if (m->powerinfer || (sparse_arch && !has_d)) {
        return ps_fail(PS_ERR_FORMAT, "missing tensor '%s'%s", NAME("ffn_down_t.weight"),
                       m->powerinfer ? " (PowerInfer files keep the down projection there)" : "");
    } else {
        if ((rc = get_matrix(m, NAME("ffn_down.weight"), hp->n_embd, hp->n_ff, 0, &L->down))) return rc;
    }
    if (!sparse_arch) return PS_OK;

    /* Optional sparse extras: per-neuron frequencies (checked, for the tools
     * that read them; the engine does not need them) and the predictor. */
    const float *freq;
    if (!m->powerinfer && (rc = get_f32(m, NAME("ffn_freq"), hp->n_ff, 1, &freq))) return rc;
    const char *in_name = m->powerinfer ? "fc1" : "ffn_pred_in", *out_name = m->powerinfer ? "fc2" : "ffn_pred_out";
    char pin_name[96], pout_name[96];
    snprintf(pin_name, sizeof pin_name, "blk.%d.%s.weight", il, in_name);
    snprintf(pout_name, sizeof pout_name, "blk.%d.%s.weight", il, out_name);
    const ps_gguf_tensor *pin = ps_gguf_find_tensor(m->gguf, pin_name);
    const ps_gguf_tensor *pout = ps_gguf_find_tensor(m->gguf, pout_name);
    if (!pin != !pout)
        return ps_fail(PS_ERR_FORMAT, "layer %d has only one of %s / %s", il, in_name, out_name);
    if ((pin != NULL) != (m->hp.predictor_rank > 0))
        return ps_fail(PS_ERR_FORMAT, "predictor tensors are present in some layers only (layer %d differs)", il);
    if (pin) {
        /* the rank may differ by layer (PowerInfer sizes each layer's predictor) */
        const int64_t rank = pin->ne[1];
        if (rank < 1 || rank > hp->n_ff)
            return ps_fail(PS_ERR_FORMAT, "%s: rank %lld out of range [1, %d]", pin_name, (long long)rank, hp->n_ff);
        if ((rc = get_matrix(m, pin_name, rank, hp->n_embd, 0, &L->pred_in))) return rc;
        if ((rc = get_matrix(m, pout_name, hp->n_ff, rank, 0, &L->pred_out))) return rc;
    }
#undef NAME
    return PS_OK;
}

static int load_tensors(ps_model *m) {
    const ps_hparams *hp = &m->hp;
    int rc;
    const ps_gguf_tensor *t = ps_gguf_find_tensor(m->gguf, "token_embd.weight");
    if (!t) return ps_fail(PS_ERR_FORMAT, "missing tensor 'token_embd.weight'");
    int64_t n_vocab = t->ne[1];
    if (n_vocab < 1 || n_vocab > MAX_VOCAB)
        return ps_fail(PS_ERR_FORMAT, "token_embd has %lld rows (vocabulary size out of range)",
                       (long long)n_vocab);
    m->hp.n_vocab = (int32_t)n_vocab;
    if ((rc = get_tensor(m, "token_embd.weight", n_vocab, hp->n_embd, ROLE_ROWS, 0, &t))) return rc;
    m->tok_embd = to_matrix(t);
    if ((rc = get_f32(m, "output_norm.weight", hp->n_embd, 0, &m->output_norm))) return rc;
    if ((rc = get_matrix(m, "output.weight", n_vocab, hp->n_embd, 1, &m->output))) return rc;
    m->tied_output = m->output.data == NULL;
    if (m->tied_output) m->output = m->tok_embd;
    /* Llama 3's RoPE scaling, as llama.cpp's converter writes it */
    if (strcmp(m->base_arch, "llama") == 0) {
        if ((rc = get_f32(m, "rope_freqs.weight", hp->n_rot / 2, 1, &m->rope_factors))) return rc;
        for (int i = 0; m->rope_factors && i < hp->n_rot / 2; i++)
            if (!(m->rope_factors[i] > 0.0f) || !isfinite(m->rope_factors[i]))
                return ps_fail(PS_ERR_FORMAT, "rope_freqs.weight[%d] = %g is not a positive number", i,
                               m->rope_factors[i]);
        /* a file that names llama3 scaling must carry its factors, or it would run unscaled */
        char key[96], val[32];
        if (!m->rope_factors &&
            read_str(m->gguf, arch_key(key, sizeof key, m->arch, "rope.scaling.type"), val, sizeof val) == 1 &&
            strcmp(val, "llama3") == 0)
            return ps_fail(PS_ERR_FORMAT, "%s is llama3 but the file has no rope_freqs.weight", key);
    }

    /* Predictor rank: the largest layer's (each layer checks its own below). */
    if (sparse_file(m)) {
        for (int il = 0; il < hp->n_layer; il++) {
            char pin_name[96];
            snprintf(pin_name, sizeof pin_name, "blk.%d.%s.weight", il, m->powerinfer ? "fc1" : "ffn_pred_in");
            const ps_gguf_tensor *pin = ps_gguf_find_tensor(m->gguf, pin_name);
            if (il == 0 && !pin) break;
            if (pin && pin->ne[1] > m->hp.predictor_rank && pin->ne[1] <= hp->n_ff)
                m->hp.predictor_rank = (int32_t)pin->ne[1];
        }
    }
    m->layers = ps_calloc((size_t)hp->n_layer, sizeof *m->layers);
    if (!m->layers) return ps_fail(PS_ERR_MEMORY, "out of memory for %d layers", hp->n_layer);
    for (int il = 0; il < hp->n_layer; il++)
        if ((rc = load_layer(m, il))) return rc;
    if ((rc = read_sliding_layers(m))) return rc;

    /* Refuse tensors we would silently ignore (biases, rope_freqs, ...). */
    int64_t nt = ps_gguf_n_tensors(m->gguf);
    for (int64_t i = 0; i < nt; i++) {
        const ps_gguf_tensor *x = ps_gguf_tensor_at(m->gguf, i);
        m->n_params += x->ne[0] * x->ne[1] * x->ne[2] * x->ne[3];
        if (!known_tensor(m, x->name)) {
            int n = x->name.n > 80 ? 80 : (int)x->name.n;
            return ps_fail(PS_ERR_UNSUPPORTED, "tensor '%.*s' is not part of the %s architecture "
                           "(unsupported model variant)", n, x->name.p, m->arch);
        }
    }
    return PS_OK;
}

/* ---- public-facing constructors ---------------------------------------- */

void ps_model_close(ps_model *m) {
    if (!m) return;
    ps_tokenizer_free(m->tok);
    ps_model_free_copies(m);
    free(m->layers);
    free(m->cutoffs);
    ps_gguf_close(m->gguf);
    free(m);
}

ps_model *ps_model_open(const char *path, int copy_weights) {
    ps_model *m = ps_calloc(1, sizeof *m);
    if (!m) {
        ps_fail(PS_ERR_MEMORY, "out of memory");
        return NULL;
    }
    m->gguf = ps_gguf_open(path);
    if (!m->gguf) goto fail;

    int r = read_str(m->gguf, "general.architecture", m->arch, sizeof m->arch);
    if (r < 0) goto fail;
    if (r == 0) {
        ps_fail(PS_ERR_FORMAT, "missing key general.architecture");
        goto fail;
    }
    m->powerinfer = ps_gguf_is_powerinfer(m->gguf);
    if (m->powerinfer) {
        if (strcmp(m->arch, "falcon") == 0 || strcmp(m->arch, "opt") == 0) {
            ps_fail(PS_ERR_UNSUPPORTED, "PowerInfer's %s files are not supported (its llama and bamboo files are: "
                    "ReluLLaMA, ProSparse-LLaMA, Bamboo)", m->arch);
            goto fail;
        }
        if (strncmp(m->arch, "generic.gpu_index", 17) == 0 || strcmp(m->arch, "moe.gpu_idx") == 0) {
            ps_fail(PS_ERR_UNSUPPORTED, "this is PowerInfer's GPU neuron split (.gpuidx), not a model; it is not "
                    "needed on a CPU: open the .powerinfer.gguf file");
            goto fail;
        }
        if (strcmp(m->arch, "llama") != 0 && strcmp(m->arch, "bamboo") != 0) {
            ps_fail(PS_ERR_UNSUPPORTED, "architecture '%s' of a PowerInfer file is not supported (llama, bamboo)",
                    m->arch);
            goto fail;
        }
    } else if (strcmp(m->arch, "prosparse") != 0 && !find_layout(m->arch)) {
        ps_fail(PS_ERR_UNSUPPORTED, "architecture '%s' is not supported (llama, qwen2, qwen3, gemma3, prosparse)",
                m->arch);
        goto fail;
    }
    snprintf(m->base_arch, sizeof m->base_arch, "%s", m->powerinfer ? "llama" : m->arch);
    if (strcmp(m->arch, "prosparse") == 0) {
        r = read_str(m->gguf, "prosparse.base_architecture", m->base_arch, sizeof m->base_arch);
        if (r < 0) goto fail;
        if (r == 0) snprintf(m->base_arch, sizeof m->base_arch, "llama");
        if (!find_layout(m->base_arch)) {
            ps_fail(PS_ERR_UNSUPPORTED, "prosparse.base_architecture '%s' is not supported (llama, qwen2, qwen3, "
                    "gemma3)", m->base_arch);
            goto fail;
        }
    }
    if (read_hparams(m) != PS_OK) goto fail;
    if (load_tensors(m) != PS_OK) goto fail;

    int32_t vocab_key = 0;
    if (read_int(m->gguf, m->arch, "vocab_size", 0, m->hp.n_vocab, 1, MAX_VOCAB, &vocab_key)) goto fail;
    if (vocab_key != m->hp.n_vocab) {
        ps_fail(PS_ERR_FORMAT, "%s.vocab_size %d != token_embd rows %d", m->arch, vocab_key, m->hp.n_vocab);
        goto fail;
    }
    m->tok = ps_tokenizer_load(m->gguf);
    if (!m->tok) goto fail;
    if (ps_tokenizer_n_vocab(m->tok) != m->hp.n_vocab) {
        ps_fail(PS_ERR_FORMAT, "tokenizer has %d tokens but token_embd has %d rows",
                ps_tokenizer_n_vocab(m->tok), m->hp.n_vocab);
        goto fail;
    }
    if (copy_weights && ps_model_copy_weights(m) != PS_OK) goto fail;
    ps_clear_error();
    return m;
fail:
    ps_model_close(m);
    return NULL;
}

int64_t ps_model_max_cols(const ps_model *m) {
    const ps_hparams *hp = &m->hp;
    int64_t mx = hp->n_embd;
    if (hp->n_ff > mx) mx = hp->n_ff;
    if ((int64_t)hp->n_head * hp->head_dim > mx) mx = (int64_t)hp->n_head * hp->head_dim;
    return mx;
}
