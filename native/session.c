/* session.c: KV cache, scratch buffers and the forward pass (the FFN of
 * every mode lives in ffn.c).
 *
 * forward_batch() is the whole transformer, step by step, for a batch of
 * consecutive tokens: matrix products go through compute.h (one dispatch for
 * Q/K/V, one for gate/up), attention is parallel over heads x tokens, and the
 * small elementwise steps are fused loops over each token's row. Nothing is
 * allocated after ps_session_create; every step that can fail returns its
 * status, and the first failure ends the pass.
 */
#include "session.h"

#include "ffn.h"
#include "quant.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

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

/* Rotate adjacent pairs (2i, 2i+1), i < n_rot/2, of each of n_heads heads.
 * GGUF llama files store q/k rows permuted so that adjacent pairs here are
 * the (i, i + head_dim/2) pairs of Hugging Face's rotate-half. */
static void rope(float *v, int n_heads, int head_dim, int n_rot, const float *cs, const float *sn) {
    for (int h = 0; h < n_heads; h++) {
        float *p = v + (size_t)h * head_dim;
        for (int i = 0; i < n_rot / 2; i++) {
            float x0 = p[2 * i], x1 = p[2 * i + 1];
            p[2 * i] = x0 * cs[i] - x1 * sn[i];
            p[2 * i + 1] = x0 * sn[i] + x1 * cs[i];
        }
    }
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

/* RoPE on each token's queries and on its keys, already in the cache. */
static void rope_rows(void *vc, int64_t t0, int64_t t1, int ith) {
    const step_ctx *c = vc;
    const ps_session *s = c->s;
    const ps_hparams *hp = &s->model->hp;
    const int64_t q_dim = (int64_t)hp->n_head * hp->head_dim;
    const int64_t kv_dim = (int64_t)hp->n_head_kv * hp->head_dim;
    const int half = hp->n_rot / 2;
    float *kc = s->k_cache + ((int64_t)c->layer * s->n_ctx + c->pos0) * kv_dim;
    for (int64_t t = t0; t < t1; t++) {
        const float *cs = s->rope_cos + t * half, *sn = s->rope_sin + t * half;
        rope(s->q + t * q_dim, hp->n_head, hp->head_dim, hp->n_rot, cs, sn);
        rope(kc + t * kv_dim, hp->n_head_kv, hp->head_dim, hp->n_rot, cs, sn);
    }
}

/* Causal grouped-query attention for items i = t * n_head + h: query head h
 * of batch token t (position pos0 + t) attends to cache positions 0..pos0+t
 * of kv head h / (n_head / n_head_kv). */
static void attention_items(void *vc, int64_t i0, int64_t i1, int ith) {
    const step_ctx *c = vc;
    const ps_session *s = c->s;
    const ps_hparams *hp = &s->model->hp;
    const int hd = hp->head_dim;
    const int64_t q_dim = (int64_t)hp->n_head * hd;
    const int64_t kv_dim = (int64_t)hp->n_head_kv * hd;
    const int group = hp->n_head / hp->n_head_kv;
    const float scale = 1.0f / sqrtf((float)hd);
    const float *k_layer = s->k_cache + (int64_t)c->layer * s->n_ctx * kv_dim;
    const float *v_layer = s->v_cache + (int64_t)c->layer * s->n_ctx * kv_dim;
    float *att = s->att + (int64_t)ith * s->n_ctx;
    const ps_level_ops *ops = ps_ops();
    if (hd % ops->attn_head_multiple) ops = &ps_ops_scalar;

    for (int64_t item = i0; item < i1; item++) {
        const int64_t t = item / hp->n_head;
        const int h = (int)(item % hp->n_head);
        const int64_t n_keys = c->pos0 + t + 1;
        const float *q = s->q + t * q_dim + (int64_t)h * hd;
        const float *k = k_layer + (int64_t)(h / group) * hd;
        const float *v = v_layer + (int64_t)(h / group) * hd;
        float *out = s->att_out + t * q_dim + (int64_t)h * hd;
        const float mx = ops->attn_scores(q, k, kv_dim, n_keys, hd, scale, att);
        const float sum = ops->attn_softmax(att, n_keys, mx);
        ops->attn_values(att, 1.0f / sum, v, kv_dim, n_keys, hd, out);
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
    const int64_t kv_dim = (int64_t)hp->n_head_kv * hp->head_dim;
    const int32_t pos0 = s->n_past;
    step_ctx c = {.s = s, .n_tok = n_tok, .pos0 = pos0, .norm_scale = 1.0f};

    /* 1. token embeddings (dequantized rows), times the embedding scale */
    for (int32_t t = 0; t < n_tok; t++) {
        float *x = s->x + (int64_t)t * n_embd;
        PS_TRY(ps_dequant_row(&m->tok_embd, tokens[t], x));
        if (hp->embedding_scale != 1.0f)
            for (int i = 0; i < n_embd; i++) x[i] *= hp->embedding_scale;
    }

    /* 2. RoPE angles of this batch's positions, shared by all layers */
    const int half = hp->n_rot / 2;
    for (int32_t t = 0; t < n_tok; t++)
        for (int i = 0; i < half; i++) {
            double a = (double)(pos0 + t) * s->inv_freq[i];
            s->rope_cos[(int64_t)t * half + i] = (float)cos(a);
            s->rope_sin[(int64_t)t * half + i] = (float)sin(a);
        }

    for (int il = 0; il < hp->n_layer; il++) {
        const ps_layer *L = &m->layers[il];
        c.layer = il;
        /* This batch's rows of the layer's KV cache (contiguous in positions). */
        float *kc = s->k_cache + ((int64_t)il * s->n_ctx + pos0) * kv_dim;
        float *vc = s->v_cache + ((int64_t)il * s->n_ctx + pos0) * kv_dim;

        /* 3. attention block: xb = norm(x) (adding the previous layer's FFN
         *    output first), Q/K/V in one dispatch, K and V straight into the cache */
        c.norm_w = L->attn_norm;
        c.add_residual = il > 0;
        for_tokens(s, &c, residual_norm_rows);
        const ps_matrix *qkv[3] = {&L->wq, &L->wk, &L->wv};
        float *qkv_out[3] = {s->q, kc, vc};
        PS_TRY(ps_matmul_multi(s->pool, 3, qkv, s->xb, n_tok, qkv_out));
        for_tokens(s, &c, rope_rows);
        ps_parallel_for(s->pool, (int64_t)n_tok * hp->n_head, n_tok > 1 ? 4 : 1, attention_items, &c);
        PS_TRY(ps_matmul(s->pool, &L->wo, s->att_out, n_tok, s->xb2));

        /* 4. FFN block: xb = norm(x + attn), then the FFN of the session's
         *    mode (ffn.c) writes its output to xb2 and counts neurons */
        c.norm_w = L->ffn_norm;
        c.add_residual = 1;
        for_tokens(s, &c, residual_norm_rows);
        PS_TRY(ps_ffn_forward(s, il, n_tok));
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
    void *owned[] = {s->k_cache, s->v_cache, s->x, s->xb, s->xb2, s->q, s->att_out, s->att, s->hb, s->hb2,
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
    s->k_cache = alloc_floats(hp->n_layer, s->n_ctx, kv_dim);
    s->v_cache = alloc_floats(hp->n_layer, s->n_ctx, kv_dim);
    s->x = alloc_floats(nb, hp->n_embd, 1);
    s->xb = alloc_floats(nb, hp->n_embd, 1);
    s->xb2 = alloc_floats(nb, hp->n_embd, 1);
    s->q = alloc_floats(nb, q_dim, 1);
    s->att_out = alloc_floats(nb, q_dim, 1);
    s->att = alloc_floats(s->n_threads, s->n_ctx, 1);
    s->hb = alloc_floats(nb, hp->n_ff, 1);
    s->hb2 = alloc_floats(nb, hp->n_ff, 1);
    s->rope_cos = alloc_floats(nb, half, 1);
    s->rope_sin = alloc_floats(nb, half, 1);
    s->logits = alloc_floats(hp->n_vocab, 1, 1);
    s->inv_freq = ps_alloc(sizeof(double) * (size_t)half);
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
    if (!s->k_cache || !s->v_cache || !s->x || !s->xb || !s->xb2 || !s->q || !s->att_out ||
        !s->att || !s->hb || !s->hb2 || !s->rope_cos || !s->rope_sin || !s->logits ||
        !s->inv_freq || !s->stats || !s->active_by_thread || !s->ffn_mask || !s->ffn_idx || !s->ffn_keep || !s->ffn_pause || !pred_ok) {
        ps_fail(PS_ERR_MEMORY, "out of memory for a session of n_ctx %d, n_batch %d", s->n_ctx,
                s->n_batch);
        ps_session_destroy(s);
        return NULL;
    }
    for (int64_t i = 0; i < half; i++)
        s->inv_freq[i] = pow((double)hp->rope_freq_base, -2.0 * (double)i / hp->n_rot) *
                         hp->rope_freq_scale;
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
