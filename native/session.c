/* session.c: KV cache, scratch buffers and the forward pass (the FFN of
 * every mode lives in ffn.c).
 *
 * forward_batch() is the whole transformer, step by step, for a batch of
 * consecutive tokens: matrix products go through compute.h (one dispatch for
 * Q/K/V, one for gate/up), attention is attend.c's chunked kernel, and the
 * small elementwise steps are fused loops over each token's row. Nothing is
 * allocated after ps_session_create; every step that can fail returns its
 * status, and the first failure ends the pass.
 */
#include "session.h"

#include "attend.h"
#include "attention.h"
#include "ffn.h"
#include "quant.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "util.h"

/* ---- small vector helpers ---------------------------------------------- */

/* out = x / rms(x) * w * scale (RMSNorm; the sum of squares in double). */
static void rmsnorm(float *out, const float *x, const float *w, int n, float eps, float scale) {
    /* eight running sums (in a fixed order, so still deterministic): one
     * sum would be a chain of n dependent adds, ~3 us at n = 2048 */
    double acc[8] = {0};
    int i = 0;
    for (; i + 8 <= n; i += 8)
        for (int k = 0; k < 8; k++) acc[k] += (double)x[i + k] * x[i + k];
    double ss = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
    for (; i < n; i++) ss += (double)x[i] * x[i];
    float r = (float)(1.0 / sqrt(ss / n + eps)) * scale;
    for (i = 0; i < n; i++) out[i] = x[i] * r * w[i];
}

/* Rotate pairs of the first n_rot dims of each of n_heads heads by angle i:
 * adjacent pairs (2i, 2i+1) (GGUF llama files store q/k rows permuted so
 * that these are Hugging Face's rotate-half pairs), or, neox, the pairs
 * (i, i + n_rot/2) of rotate-half itself (qwen2, qwen3, gemma3 files). */
static void rope(float *v, int n_heads, int head_dim, int n_rot, int neox, const float *cs, const float *sn) {
    const int half = n_rot / 2, step = neox ? 1 : 2, other = neox ? half : 1;
    for (int h = 0; h < n_heads; h++) {
        float *p = v + (size_t)h * head_dim;
        for (int i = 0; i < half; i++) {
            float *a = p + i * step, *b = a + other;
            const float x0 = *a, x1 = *b;
            *a = x0 * cs[i] - x1 * sn[i];
            *b = x0 * sn[i] + x1 * cs[i];
        }
    }
}

/* v[i] += b[i] (a projection's bias) */
static void add_bias(float *v, const float *b, int64_t n) {
    for (int64_t i = 0; i < n; i++) v[i] += b[i];
}

/* Per-head RMSNorm of n_heads vectors of head_dim, in place. */
static void head_norm(float *v, int n_heads, int head_dim, const float *w, float eps) {
    for (int h = 0; h < n_heads; h++) rmsnorm(v + (size_t)h * head_dim, v + (size_t)h * head_dim, w, head_dim, eps, 1.0f);
}

/* ---- parallel steps ---------------------------------------------------- */

/* What the per-token and per-head callbacks need to know about the batch. */
typedef struct step_ctx {
    ps_session *s;
    int layer;
    int32_t n_tok, pos0;
    const float *norm_w; /* norm to apply after the optional residual add */
    float norm_scale;
    int add_residual;    /* x += residual_scale * xb2 before the norm */
} step_ctx;

/* Run fn over n_tok tokens: inline for one token (decode), else spread. */
static void for_tokens(ps_session *s, step_ctx *c, ps_range_fn fn) {
    if (c->n_tok == 1) fn(c, 0, 1, 0);
    else ps_parallel_for(s->pool, c->n_tok, 8, fn, c);
}

/* x += residual_scale * xb2 (if asked), then xb = rmsnorm(x) * w. */
static void residual_norm_rows(void *vc, int64_t t0, int64_t t1, int ith) {
    const step_ctx *c = vc;
    const ps_session *s = c->s;
    const ps_hparams *hp = &s->model->hp;
    const int n = hp->n_embd;
    const float rs = hp->residual_scale;
    for (int64_t t = t0; t < t1; t++) {
        float *x = s->x + t * n;
        if (c->add_residual) {
            const float *d = s->xb2 + t * n;
            if (rs == 1.0f) for (int i = 0; i < n; i++) x[i] += d[i];
            else for (int i = 0; i < n; i++) x[i] += rs * d[i];
        }
        rmsnorm(s->xb + t * n, x, c->norm_w, n, hp->rms_eps, c->norm_scale);
    }
}

/* Each token's queries and keys as attention reads them: the projections'
 * biases (if any), the per-head q/k norms (if any), RoPE with the layer's
 * angles; then its keys and values into the layer's cache rows at
 * positions pos0 + t. */
static void rope_store_rows(void *vc, int64_t t0, int64_t t1, int ith) {
    const step_ctx *c = vc;
    const ps_session *s = c->s;
    const ps_hparams *hp = &s->model->hp;
    const ps_layer *L = &s->model->layers[c->layer];
    const int hd = hp->head_dim;
    const int64_t q_dim = (int64_t)hp->n_head * hd;
    const int64_t kv_dim = (int64_t)hp->n_head_kv * hd;
    const int half = hp->n_rot / 2;
    /* local layers have their own RoPE base: the second table */
    const int64_t table = L->sliding ? (int64_t)s->n_batch * half : 0;
    for (int64_t t = t0; t < t1; t++) {
        const float *cs = s->rope_cos + table + t * half, *sn = s->rope_sin + table + t * half;
        float *q = s->q + t * q_dim, *k = s->kb + t * kv_dim, *v = s->vb + t * kv_dim;
        if (L->bq) {
            add_bias(q, L->bq, q_dim);
            add_bias(k, L->bk, kv_dim);
            add_bias(v, L->bv, kv_dim);
        }
        if (L->q_norm) {
            head_norm(q, hp->n_head, hd, L->q_norm, hp->rms_eps);
            head_norm(k, hp->n_head_kv, hd, L->k_norm, hp->rms_eps);
        }
        rope(q, hp->n_head, hd, hp->n_rot, hp->rope_neox, cs, sn);
        rope(k, hp->n_head_kv, hd, hp->n_rot, hp->rope_neox, cs, sn);
        for (int g = 0; g < hp->n_head_kv; g++) {
            const size_t row = (((size_t)c->layer * hp->n_head_kv + g) * s->n_ctx + c->pos0 + t) * s->cache_row;
            ps_cache_store_row(s->cache_type, k + g * hd, hd, s->k_cache + row);
            ps_cache_store_row(s->cache_type, v + g * hd, hd, s->v_cache + row);
        }
    }
}

/* xb2 = rmsnorm(xb2) * w: a block's output normed before the residual add (Gemma). */
static void post_norm_rows(void *vc, int64_t t0, int64_t t1, int ith) {
    const step_ctx *c = vc;
    const ps_session *s = c->s;
    const ps_hparams *hp = &s->model->hp;
    for (int64_t t = t0; t < t1; t++) {
        float *y = s->xb2 + t * hp->n_embd;
        rmsnorm(y, y, c->norm_w, hp->n_embd, hp->rms_eps, 1.0f);
    }
}

/* ---- the forward pass -------------------------------------------------- */

/* Run n_tok tokens at positions n_past.. through the model. Logits go to
 * all_logits (n_tok x n_vocab) when given, else, if want_last, the last
 * token's logits go to s->logits. */
static int forward_batch(ps_session *s, const int32_t *tokens, int32_t n_tok,
                         float *all_logits, int want_last) {
    const ps_model *m = s->model;
    const ps_hparams *hp = &m->hp;
    const int n_embd = hp->n_embd;
    const int32_t pos0 = s->n_past;
    step_ctx c = {.s = s, .n_tok = n_tok, .pos0 = pos0, .norm_scale = 1.0f};

    /* 1. token embeddings (dequantized rows), times the embedding scale */
    for (int32_t t = 0; t < n_tok; t++) {
        float *x = s->x + (int64_t)t * n_embd;
        PS_TRY(ps_dequant_row(&m->tok_embd, tokens[t], x));
        if (hp->embedding_scale != 1.0f)
            for (int i = 0; i < n_embd; i++) x[i] *= hp->embedding_scale;
    }

    /* 2. RoPE angles of this batch's positions, shared by all layers (a
     *    second table for the local layers' own base, if the model has them) */
    const int half = hp->n_rot / 2;
    for (int tab = 0; tab < (hp->n_swa > 0 ? 2 : 1); tab++) {
        const double *inv_freq = s->inv_freq + tab * half;
        float *cs = s->rope_cos + (int64_t)tab * s->n_batch * half, *sn = s->rope_sin + (int64_t)tab * s->n_batch * half;
        for (int32_t t = 0; t < n_tok; t++)
            for (int i = 0; i < half; i++) {
                double a = (double)(pos0 + t) * inv_freq[i];
                cs[(int64_t)t * half + i] = (float)cos(a);
                sn[(int64_t)t * half + i] = (float)sin(a);
            }
    }

    for (int il = 0; il < hp->n_layer; il++) {
        const ps_layer *L = &m->layers[il];
        c.layer = il;
        /* 3. attention block: xb = norm(x) (adding the previous layer's FFN
         *    output first), Q/K/V in one dispatch, then biases, q/k norms and
         *    RoPE, K and V into the cache; attention (over the window, in a
         *    local layer), the output projection, its norm (Gemma) */
        c.norm_w = L->attn_norm;
        c.add_residual = il > 0;
        for_tokens(s, &c, residual_norm_rows);
        const ps_matrix *qkv[3] = {&L->wq, &L->wk, &L->wv};
        float *qkv_out[3] = {s->q, s->kb, s->vb};
        PS_TRY(ps_matmul_multi(s->pool, 3, qkv, s->xb, n_tok, qkv_out));
        for_tokens(s, &c, rope_store_rows);
        ps_attend(s, il, pos0, n_tok);
        PS_TRY(ps_matmul(s->pool, &L->wo, s->att_out, n_tok, s->xb2));
        if (L->post_attn_norm) {
            c.norm_w = L->post_attn_norm;
            for_tokens(s, &c, post_norm_rows);
        }

        /* 4. FFN block: xb = norm(x + attn), then the FFN of the session's
         *    mode (ffn.c) writes its output to xb2 and counts neurons; its
         *    norm (Gemma) */
        c.norm_w = L->ffn_norm;
        c.add_residual = 1;
        for_tokens(s, &c, residual_norm_rows);
        PS_TRY(ps_ffn_forward(s, il, n_tok));
        if (L->post_ffn_norm) {
            c.norm_w = L->post_ffn_norm;
            for_tokens(s, &c, post_norm_rows);
        }
    }

    /* 5. last residual add, final norm (times the logit scale), output matrix */
    c.norm_w = m->output_norm;
    c.norm_scale = hp->logit_scale;
    c.add_residual = 1;
    if (all_logits) {
        for_tokens(s, &c, residual_norm_rows);
        return ps_matmul(s->pool, &m->output, s->xb, n_tok, all_logits);
    }
    if (want_last) {
        /* only the last token: add its residual and norm it alone */
        step_ctx last = c;
        last.n_tok = 1;
        residual_norm_rows(&last, n_tok - 1, n_tok, 0);
        return ps_matmul(s->pool, &m->output, s->xb + (int64_t)(n_tok - 1) * n_embd, 1, s->logits);
    }
    return PS_OK;
}

int ps_session_forward(ps_session *s, const int32_t *tokens, int32_t n, float *all_logits) {
    const int32_t n_vocab = s->model->hp.n_vocab;
    const int32_t n_past0 = s->n_past;
    for (int32_t done = 0; done < n;) {
        int32_t nb = n - done < s->n_batch ? n - done : s->n_batch;
        float *lo = all_logits ? all_logits + (int64_t)done * n_vocab : NULL;
        const int rc = forward_batch(s, tokens + done, nb, lo, done + nb == n);
        if (rc != PS_OK) { /* the cache as before the call; no logits */
            s->n_past = n_past0;
            s->has_logits = 0;
            return rc;
        }
        s->n_past += nb;
        done += nb;
    }
    if (all_logits)
        memcpy(s->logits, all_logits + (int64_t)(n - 1) * n_vocab, sizeof(float) * n_vocab);
    s->has_logits = 1;
    return PS_OK;
}

/* ---- construction ------------------------------------------------------ */

void ps_session_destroy(ps_session *s) {
    if (!s) return;
    ps_compute_free(s->pool);
    /* (ps_alloc's buffers are free()d like the others: ps_free is free) */
    void *owned[] = {s->k_cache, s->v_cache, s->kb, s->vb, s->qq, s->part_m, s->part_l, s->part_o,
                     s->x, s->xb, s->xb2, s->q, s->att_out, s->att, s->hb, s->hb2,
                     s->rope_cos, s->rope_sin, s->logits, s->inv_freq, s->pred_h, s->pred_l, s->ref_g, s->ref_u,
                     s->ffn_mask, s->ffn_idx, s->ffn_keep, s->ffn_pause, s->stats, s->active_by_thread};
    for (size_t i = 0; i < sizeof owned / sizeof owned[0]; i++) free(owned[i]);
    free(s);
}

/* Allocate a*b*c floats (64-byte aligned, untouched: the KV cache's pages
 * become resident only as it fills). NULL on overflow or failure. */
static float *alloc_floats(int64_t a, int64_t b, int64_t c) {
    if (a <= 0 || b <= 0 || c <= 0) return NULL;
    if (a > INT64_MAX / b || a * b > (INT64_MAX / 4) / c) return NULL;
    int64_t n = a * b * c;
    if ((uint64_t)n > SIZE_MAX / sizeof(float)) return NULL;
    return ps_alloc((size_t)n * sizeof(float));
}

/* The KV cache: read once per token, in long streams, so on transparent
 * huge pages where the kernel gives them on request (fewer TLB misses; a
 * hint, without it the cache still works). Untouched until it fills. */
static uint8_t *alloc_cache(size_t bytes) {
    const size_t huge = (size_t)2 << 20;
    if (bytes > SIZE_MAX - huge || ps_alloc_fails()) return NULL;
    const size_t n = (bytes + huge - 1) & ~(huge - 1);
    uint8_t *p = aligned_alloc(huge, n);
    if (p) madvise(p, n, MADV_HUGEPAGE);
    return p;
}

ps_session *ps_session_create(const ps_model *m, const ps_session_params *p) {
    const ps_hparams *hp = &m->hp;
    ps_session *s = ps_calloc(1, sizeof *s);
    if (!s) {
        ps_fail(PS_ERR_MEMORY, "out of memory");
        return NULL;
    }
    s->model = m;
    s->n_ctx = p->n_ctx;
    s->n_batch = p->n_batch;
    s->mode = p->mode;
    s->cache_type = p->cache_type;
    s->act = hp->act;
    s->act_threshold = hp->act_threshold;
    if (p->activation_threshold > 0.0f) {
        s->act = PS_ACT_FATRELU;
        s->act_threshold = p->activation_threshold;
    }

    /* the pool first: per-thread buffers are sized by the threads it really runs */
    s->pool = ps_compute_new(p->n_threads, ps_model_max_cols(m), s->n_batch);
    if (!s->pool) {
        ps_session_destroy(s);
        return NULL;
    }
    s->n_threads = ps_compute_n_threads(s->pool);

    const int64_t q_dim = (int64_t)hp->n_head * hp->head_dim;
    const int64_t kv_dim = (int64_t)hp->n_head_kv * hp->head_dim;
    const int64_t nb = s->n_batch, half = hp->n_rot / 2;
    /* (api.c checked that the cache type holds this head_dim) */
    s->cache_row = ps_cache_row_bytes(s->cache_type, hp->head_dim);
    const int64_t rows = (int64_t)hp->n_layer * hp->n_head_kv;
    if (rows <= INT64_MAX / 2 / s->n_ctx / (int64_t)s->cache_row) {
        const size_t bytes = (size_t)(rows * s->n_ctx) * s->cache_row;
        s->k_cache = alloc_cache(bytes);
        s->v_cache = alloc_cache(bytes);
        s->kv_bytes = 2 * (int64_t)bytes;
    }
    const int64_t n_chunks = (s->n_ctx + PS_ATTN_CHUNK - 1) / PS_ATTN_CHUNK;
    s->kb = alloc_floats(nb, kv_dim, 1);
    s->vb = alloc_floats(nb, kv_dim, 1);
    s->part_m = alloc_floats(n_chunks, hp->n_head, 1);
    s->part_l = alloc_floats(n_chunks, hp->n_head, 1);
    s->part_o = alloc_floats(n_chunks, q_dim, 1);
    int qq_ok = 1;
    if (s->cache_type == PS_CACHE_Q8_0) {
        s->qq = ps_alloc(sizeof(ps_block_q8a) * (size_t)(nb * q_dim / PS_QK));
        qq_ok = s->qq != NULL;
    }
    s->x = alloc_floats(nb, hp->n_embd, 1);
    s->xb = alloc_floats(nb, hp->n_embd, 1);
    s->xb2 = alloc_floats(nb, hp->n_embd, 1);
    s->q = alloc_floats(nb, q_dim, 1);
    s->att_out = alloc_floats(nb, q_dim, 1);
    s->att = alloc_floats(s->n_threads, (int64_t)ps_attend_scratch_floats(hp), 1);
    s->hb = alloc_floats(nb, hp->n_ff, 1);
    s->hb2 = alloc_floats(nb, hp->n_ff, 1);
    const int n_tables = hp->n_swa > 0 ? 2 : 1; /* local layers: their own RoPE base */
    s->rope_cos = alloc_floats(n_tables, nb, half);
    s->rope_sin = alloc_floats(n_tables, nb, half);
    s->logits = alloc_floats(hp->n_vocab, 1, 1);
    s->inv_freq = ps_alloc(sizeof(double) * (size_t)(n_tables * half));
    s->ffn_mask = ps_malloc((size_t)hp->n_ff);
    s->ffn_idx = ps_malloc(sizeof(int32_t) * (size_t)hp->n_ff);
    s->ffn_keep = ps_malloc((size_t)nb * (size_t)hp->n_ff);
    s->ffn_pause = ps_calloc((size_t)hp->n_layer, sizeof *s->ffn_pause);
    int pred_ok = 1;
    if (hp->predictor_rank > 0) {
        s->pred_h = alloc_floats(nb, hp->predictor_rank, 1);
        s->pred_l = alloc_floats(nb, hp->n_ff, 1);
        pred_ok = s->pred_h && s->pred_l;
    }
    s->stats = ps_calloc((size_t)hp->n_layer, sizeof *s->stats);
    s->active_by_thread = ps_calloc((size_t)s->n_threads, sizeof(int64_t));
    if (!s->k_cache || !s->v_cache || !s->kb || !s->vb || !s->part_m || !s->part_l || !s->part_o || !qq_ok || !s->x || !s->xb || !s->xb2 || !s->q || !s->att_out ||
        !s->att || !s->hb || !s->hb2 || !s->rope_cos || !s->rope_sin || !s->logits ||
        !s->inv_freq || !s->stats || !s->active_by_thread || !s->ffn_mask || !s->ffn_idx || !s->ffn_keep || !s->ffn_pause || !pred_ok) {
        ps_fail(PS_ERR_MEMORY, "out of memory for a session of n_ctx %d, n_batch %d", s->n_ctx,
                s->n_batch);
        ps_session_destroy(s);
        return NULL;
    }
    /* global layers: linear scaling and Llama 3's per-dim divisors; local ones neither */
    for (int64_t i = 0; i < half; i++) {
        s->inv_freq[i] = pow((double)hp->rope_freq_base, -2.0 * (double)i / hp->n_rot) * hp->rope_freq_scale;
        if (m->rope_factors) s->inv_freq[i] /= m->rope_factors[i];
        if (n_tables == 2) s->inv_freq[half + i] = pow((double)hp->rope_freq_base_swa, -2.0 * (double)i / hp->n_rot);
    }
    return s;
}

int ps_session_measure(ps_session *s, int on) {
    const ps_hparams *hp = &s->model->hp;
    if (on && !s->ref_g) {
        s->ref_g = alloc_floats(s->n_batch, hp->n_ff, 1);
        if (hp->act == PS_ACT_DRELU) s->ref_u = alloc_floats(s->n_batch, hp->n_ff, 1);
        if (!s->ref_g || (hp->act == PS_ACT_DRELU && !s->ref_u)) {
            ps_free(s->ref_g);
            ps_free(s->ref_u);
            s->ref_g = s->ref_u = NULL;
            return ps_fail(PS_ERR_MEMORY, "out of memory for the measure buffers");
        }
    }
    s->measure = on != 0;
    return PS_OK;
}
