/* ffn.c: the FFN block for every engine mode (see ffn.h).
 *
 * The sparse modes share one shape:
 *   1. decide which neurons each token keeps (gate, predictor or cut-off);
 *   2. their union becomes a row list (idx), built by one sequential scan,
 *      so the list, and therefore the output, is the same every run;
 *   3. the missing rows (up; gate and up for predict) are computed for the
 *      list only: ps_matmul_rows gives bit for bit the values of the dense
 *      product, so the only difference from dense is the summation order of
 *      the down projection;
 *   4. x1 = act(gate) * up where a token keeps the neuron, 0 elsewhere;
 *   5. down: ffn_down_t rows of the neurons whose x1 is non-zero for some
 *      token (ps_accum_rows), or ps_matmul over ffn_down with the zeros in
 *      place for llama files (exact, at dense cost for that projection).
 * Each path reports what it counted (ffn_count); ps_ffn_forward adds that to
 * the layer's counters once, and applies the pause policy (ffn.h).
 */
#include "ffn.h"

#include <math.h>
#include <string.h>

#include "quant.h"
#include "util.h"

/* ---- activations ------------------------------------------------------- */

static inline float silu(float g) { return g / (1.0f + expf(-g)); }

/* GELU, tanh approximation (Gemma's gelu_pytorch_tanh) */
static inline float gelu_tanh(float g) {
    return 0.5f * g * (1.0f + tanhf(0.7978845608028654f * (g + 0.044715f * g * g * g)));
}

/* g[i] = gelu_tanh(g[i]) * u[i] (u NULL: gelu_tanh(g[i])) */
static void gelu_mul(float *g, const float *u, int64_t n) {
    if (u) for (int64_t i = 0; i < n; i++) g[i] = gelu_tanh(g[i]) * u[i];
    else for (int64_t i = 0; i < n; i++) g[i] = gelu_tanh(g[i]);
}

/* act(gate) for the activations whose x1 = act(gate) * up. */
static inline float act_gate(ps_act a, float g, float thr) {
    switch (a) {
    case PS_ACT_SILU: return silu(g);
    case PS_ACT_RELU: return g > 0.0f ? g : 0.0f;
    case PS_ACT_FATRELU: return g >= thr ? g : 0.0f;
    case PS_ACT_RELU2: return g > 0.0f ? g * g : 0.0f;
    case PS_ACT_DRELU: return g > 0.0f ? g : 0.0f; /* and relu(up) below */
    case PS_ACT_GELU_TANH: return gelu_tanh(g);
    }
    return 0.0f;
}

/* x1 for one neuron, written exactly as the dense path computes it. */
static inline float x1_of(ps_act a, float g, float u, float thr) {
    switch (a) {
    case PS_ACT_SILU: return silu(g) * u;
    case PS_ACT_RELU: return g > 0.0f ? g * u : 0.0f;
    case PS_ACT_FATRELU: return g >= thr ? g * u : 0.0f;
    case PS_ACT_RELU2: return g > 0.0f ? g * g * u : 0.0f;
    case PS_ACT_DRELU: return (g > 0.0f && u > 0.0f) ? g * u : 0.0f;
    case PS_ACT_GELU_TANH: return gelu_tanh(g) * u;
    }
    return 0.0f;
}

int ps_ffn_check_mode(const ps_model *m, int32_t mode) {
    const ps_hparams *hp = &m->hp;
    switch (mode) {
    case PS_MODE_DENSE:
        return PS_OK;
    case PS_MODE_SPARSE:
        if (ps_act_smooth(hp->act))
            return ps_fail(PS_ERR_UNSUPPORTED,
                           "mode 'sparse' needs a ReLU-family activation; this model uses %s, whose "
                           "activations are never exactly zero (use mode 'threshold' with cut-offs from "
                           "prosparse-convert --calibrate)", ps_act_name(hp->act));
        return PS_OK;
    case PS_MODE_PREDICT:
        if (hp->predictor_rank <= 0)
            return ps_fail(PS_ERR_UNSUPPORTED,
                           "mode 'predict' needs predictor tensors (blk.N.ffn_pred_in/ffn_pred_out); this "
                           "file has none (convert with prosparse-convert --predictor DIR)");
        return PS_OK;
    case PS_MODE_THRESHOLD:
        if (!m->cutoffs)
            return ps_fail(PS_ERR_UNSUPPORTED,
                           "mode 'threshold' needs per-layer cut-offs (prosparse.ffn.cutoffs); this file has "
                           "none (make them with prosparse-convert --calibrate TEXT --target-sparsity S)");
        if (!ps_act_smooth(hp->act))
            return ps_fail(PS_ERR_UNSUPPORTED,
                           "mode 'threshold' is for SiLU and GELU models; this model's %s activation is exactly "
                           "sparse already (use mode 'sparse')",
                           ps_act_name(hp->act));
        return PS_OK;
    }
    return ps_fail(PS_ERR_ARG, "unknown mode %d", (int)mode);
}

/* What one layer's FFN counted for the batch. */
typedef struct ffn_count {
    int64_t active; /* x1 != 0 */
    int64_t kept;   /* neurons the decision kept (all of them on a dense path) */
} ffn_count;

/* Rows from which a union counts as dense (PS_FFN_DENSE_SHARE of n). */
static int64_t dense_rows(int64_t n) { return (int64_t)(PS_FFN_DENSE_SHARE * (double)n); }

/* ---- dense ------------------------------------------------------------- */

/* x1 = act(gate) * up into hb for tokens [t0, t1), counting non-zero x1. */
static void activation_rows(void *ctx, int64_t t0, int64_t t1, int ith) {
    ps_session *s = ctx;
    const ps_hparams *hp = &s->model->hp;
    const int n = hp->n_ff;
    const float thr = s->act_threshold;
    int64_t active = 0;
    for (int64_t t = t0; t < t1; t++) {
        float *g = s->hb + t * n;
        const float *u = s->hb2 + t * n;
        switch (s->act) {
        case PS_ACT_SILU:
            ps_ops()->silu_mul(g, u, n);
            break;
        case PS_ACT_GELU_TANH:
            gelu_mul(g, u, n);
            break;
        case PS_ACT_RELU:
            for (int i = 0; i < n; i++) g[i] = g[i] > 0.0f ? g[i] * u[i] : 0.0f;
            break;
        case PS_ACT_FATRELU:
            for (int i = 0; i < n; i++) g[i] = g[i] >= thr ? g[i] * u[i] : 0.0f;
            break;
        case PS_ACT_RELU2:
            for (int i = 0; i < n; i++) g[i] = g[i] > 0.0f ? g[i] * g[i] * u[i] : 0.0f;
            break;
        case PS_ACT_DRELU:
            for (int i = 0; i < n; i++) g[i] = (g[i] > 0.0f && u[i] > 0.0f) ? g[i] * u[i] : 0.0f;
            break;
        }
        for (int i = 0; i < n; i++) active += g[i] != 0.0f;
    }
    s->active_by_thread[ith] += active;
}

static int down_projection(ps_session *s, const ps_layer *L, int32_t n_tok, const int32_t *idx, int64_t n_idx) {
    if (L->has_down_t) return ps_accum_rows(s->pool, &L->down_t, s->hb, n_tok, idx, n_idx, s->xb2);
    /* llama files: x1 holds zeros where skipped, so the dense product is exact */
    return ps_matmul(s->pool, &L->down, s->hb, n_tok, s->xb2);
}

/* x1 and down for every neuron, with gate in s->hb and up in s->hb2. */
static int dense_tail(ps_session *s, const ps_layer *L, int32_t n_tok, ffn_count *n) {
    memset(s->active_by_thread, 0, sizeof(int64_t) * s->n_threads);
    if (n_tok == 1) activation_rows(s, 0, 1, 0);
    else ps_parallel_for(s->pool, n_tok, 8, activation_rows, s);
    PS_TRY(down_projection(s, L, n_tok, NULL, s->model->hp.n_ff));
    for (int i = 0; i < s->n_threads; i++) n->active += s->active_by_thread[i];
    n->kept = (int64_t)n_tok * s->model->hp.n_ff;
    return PS_OK;
}

static int ffn_dense(ps_session *s, const ps_layer *L, int32_t n_tok, ffn_count *n) {
    const ps_matrix *gu[2] = {&L->gate, &L->up};
    float *gu_out[2] = {s->hb, s->hb2};
    PS_TRY(ps_matmul_multi(s->pool, 2, gu, s->xb, n_tok, gu_out));
    return dense_tail(s, L, n_tok, n);
}

/* ---- sparse modes -------------------------------------------------------- */

/* Predict mode, measure option: the dense gate (and up for drelu) in
 * ref_g/ref_u, to count how many truly active neurons the predictor kept. */
static int measure_recall(ps_session *s, const ps_layer *L, int32_t n_tok, ps_layer_stats *st) {
    const ps_hparams *hp = &s->model->hp;
    const int64_t n = hp->n_ff;
    if (hp->act == PS_ACT_DRELU) {
        const ps_matrix *gu[2] = {&L->gate, &L->up};
        float *out[2] = {s->ref_g, s->ref_u};
        PS_TRY(ps_matmul_multi(s->pool, 2, gu, s->xb, n_tok, out));
    } else {
        PS_TRY(ps_matmul(s->pool, &L->gate, s->xb, n_tok, s->ref_g));
    }
    int64_t hits = 0, total = 0;
    for (int64_t k = 0; k < (int64_t)n_tok * n; k++) {
        int act = act_gate(s->act, s->ref_g[k], s->act_threshold) != 0.0f;
        if (s->act == PS_ACT_DRELU) act = act && s->ref_u[k] > 0.0f;
        if (!act) continue;
        total++;
        hits += hp->pred_inclusive ? s->pred_l[k] >= hp->pred_threshold : s->pred_l[k] > hp->pred_threshold;
    }
    st->recall_hits += hits;
    st->recall_total += total;
    return PS_OK;
}

/* Step 1's decision for one token's row of n neurons: keep[i] = 1 when the
 * token keeps neuron i; returns how many it keeps. scores is the gate
 * (sparse), silu(gate) (threshold, SiLU models only) or the predictor's
 * logits (predict). */
static int64_t decide_row(const ps_session *s, int mode, const float *scores, float cutoff, uint8_t *keep) {
    const ps_hparams *hp = &s->model->hp;
    const int64_t n = hp->n_ff;
    int64_t kept = 0;
    if (mode == PS_MODE_PREDICT) {
        const float pt = hp->pred_threshold;
        if (hp->pred_inclusive)
            for (int64_t i = 0; i < n; i++) kept += keep[i] = scores[i] >= pt;
        else
            for (int64_t i = 0; i < n; i++) kept += keep[i] = scores[i] > pt;
    } else if (mode == PS_MODE_THRESHOLD) {
        for (int64_t i = 0; i < n; i++) kept += keep[i] = fabsf(scores[i]) >= cutoff;
    } else if (s->act == PS_ACT_FATRELU) {
        const float thr = s->act_threshold;
        for (int64_t i = 0; i < n; i++) kept += keep[i] = scores[i] >= thr;
    } else { /* relu, relu2, drelu: act(gate) != 0 exactly when gate > 0 */
        for (int64_t i = 0; i < n; i++) kept += keep[i] = scores[i] > 0.0f;
    }
    return kept;
}

static int ffn_sparse(ps_session *s, int mode, const ps_layer *L, int il, int32_t n_tok, ffn_count *count) {
    const ps_model *m = s->model;
    const ps_hparams *hp = &m->hp;
    const int64_t n = hp->n_ff;
    /* threshold mode (SiLU and GELU models): hb holds act(gate) from step 1
     * on, so step 4 multiplies by up only */
    const int threshold = mode == PS_MODE_THRESHOLD;
    const float cutoff = threshold ? m->cutoffs[il] : 0.0f;
    uint8_t *mask = s->ffn_mask;
    int32_t *idx = s->ffn_idx;

    /* 1. what decides: the full gate, or the predictor's two small products */
    const float *scores = s->hb;
    if (mode == PS_MODE_PREDICT) {
        const int64_t r = L->pred_in.n_rows; /* this layer's rank */
        PS_TRY(ps_matmul(s->pool, &L->pred_in, hp->pred_on_normed ? s->xb : s->x, n_tok, s->pred_h));
        if (hp->pred_hidden_relu)
            for (int64_t k = 0; k < (int64_t)n_tok * r; k++)
                if (s->pred_h[k] < 0.0f) s->pred_h[k] = 0.0f;
        PS_TRY(ps_matmul(s->pool, &L->pred_out, s->pred_h, n_tok, s->pred_l));
        if (s->measure) PS_TRY(measure_recall(s, L, n_tok, &s->stats[il]));
        scores = s->pred_l;
    } else {
        PS_TRY(ps_matmul(s->pool, &L->gate, s->xb, n_tok, s->hb));
        if (threshold && hp->act == PS_ACT_GELU_TANH)
            for (int32_t t = 0; t < n_tok; t++) gelu_mul(s->hb + (int64_t)t * n, NULL, n);
        else if (threshold)
            for (int32_t t = 0; t < n_tok; t++) ps_ops()->silu_mul(s->hb + (int64_t)t * n, NULL, n);
    }

    /* 2. each token's decisions, and their union over the batch in index order */
    int64_t kept = 0, n_union = 0;
    if (n_tok > 1) memset(mask, 0, (size_t)n);
    for (int32_t t = 0; t < n_tok; t++) {
        const uint8_t *k = s->ffn_keep + (int64_t)t * n;
        kept += decide_row(s, mode, scores + (int64_t)t * n, cutoff, s->ffn_keep + (int64_t)t * n);
        if (n_tok == 1) {
            memcpy(mask, k, (size_t)n);
            n_union = kept;
        } else {
            for (int64_t i = 0; i < n; i++) {
                n_union += k[i] & !mask[i];
                mask[i] |= k[i];
            }
        }
        /* exact mode, a union this dense: the dense path gives the same
         * values, without the per-token bookkeeping of the others */
        if (mode == PS_MODE_SPARSE && n_union >= dense_rows(n)) {
            PS_TRY(ps_matmul(s->pool, &L->up, s->xb, n_tok, s->hb2));
            return dense_tail(s, L, n_tok, count);
        }
    }
    int64_t n_idx = 0;
    for (int64_t i = 0; i < n; i++) {
        idx[n_idx] = (int32_t)i;
        n_idx += mask[i];
    }
    const int all_rows = n_idx >= dense_rows(n);

    /* 3. the rows still missing, for the list only (or all of them) */
    if (mode == PS_MODE_PREDICT) {
        const ps_matrix *gu[2] = {&L->gate, &L->up};
        float *gu_out[2] = {s->hb, s->hb2};
        if (all_rows) PS_TRY(ps_matmul_multi(s->pool, 2, gu, s->xb, n_tok, gu_out));
        else PS_TRY(ps_matmul_rows_multi(s->pool, 2, gu, s->xb, n_tok, idx, n_idx, gu_out));
    } else if (all_rows) {
        PS_TRY(ps_matmul(s->pool, &L->up, s->xb, n_tok, s->hb2));
    } else {
        PS_TRY(ps_matmul_rows(s->pool, &L->up, s->xb, n_tok, idx, n_idx, s->hb2));
    }

    /* 4. x1 per token on the list: computed where the token keeps the neuron,
     *    0 where it does not; entries off the list are zeroed only when the
     *    down projection reads them (llama files, or all rows) */
    const int dense_down = !L->has_down_t;
    int64_t active = 0;
    for (int32_t t = 0; t < n_tok; t++) {
        float *g = s->hb + (int64_t)t * n;
        const float *u = s->hb2 + (int64_t)t * n;
        const uint8_t *k = s->ffn_keep + (int64_t)t * n;
        for (int64_t j = 0; j < n_idx; j++) {
            const int32_t i = idx[j];
            float v = 0.0f;
            if (k[i]) v = threshold ? g[i] * u[i] : x1_of(s->act, g[i], u[i], s->act_threshold);
            g[i] = v;
            active += v != 0.0f;
        }
        if (dense_down || all_rows)
            for (int64_t i = 0; i < n; i++)
                if (!mask[i]) g[i] = 0.0f;
    }

    /* 5. down only for neurons with a non-zero x1 in some token */
    int64_t n_down = 0;
    for (int64_t j = 0; j < n_idx; j++) {
        const int32_t i = idx[j];
        int nz = 0;
        for (int32_t t = 0; t < n_tok && !nz; t++) nz = s->hb[(int64_t)t * n + i] != 0.0f;
        idx[n_down] = i;
        n_down += nz;
    }
    if (n_down == n || (all_rows && n_down >= dense_rows(n))) PS_TRY(down_projection(s, L, n_tok, NULL, n));
    else PS_TRY(down_projection(s, L, n_tok, idx, n_down));

    count->active = active;
    count->kept = kept;
    return PS_OK;
}

/* The path this layer takes for the batch: the session's mode, except that
 * predict decides prompt batches (and paused layers) by the gate, and a
 * paused exact layer runs dense (ffn.h). */
static int choose_path(ps_session *s, int il, int32_t n_tok) {
    ps_ffn_pause *pause = &s->ffn_pause[il];
    int path = s->mode;
    if (path == PS_MODE_PREDICT) {
        int exact = n_tok > 1;
        if (n_tok == 1 && pause->predictor > 0) {
            pause->predictor--;
            exact = 1;
        }
        if (exact) path = ps_act_smooth(s->model->hp.act) ? PS_MODE_DENSE : PS_MODE_SPARSE;
    }
    if (n_tok == 1 && path == PS_MODE_SPARSE && pause->sparse > 0) {
        pause->sparse--;
        path = PS_MODE_DENSE;
    }
    return path;
}

int ps_ffn_forward(ps_session *s, int il, int32_t n_tok) {
    const int64_t n_ff = s->model->hp.n_ff;
    const ps_layer *L = &s->model->layers[il];
    const int path = choose_path(s, il, n_tok);
    ffn_count count = {0, 0};
    PS_TRY(path == PS_MODE_DENSE ? ffn_dense(s, L, n_tok, &count) : ffn_sparse(s, path, L, il, n_tok, &count));

    /* the pause policy: a decode token whose decision kept nearly every
     * neuron pauses that decision for the layer's next tokens */
    if (n_tok == 1 && count.kept >= dense_rows(n_ff)) {
        if (path == PS_MODE_PREDICT) s->ffn_pause[il].predictor = PS_FFN_PAUSE_TOKENS;
        if (path == PS_MODE_SPARSE) s->ffn_pause[il].sparse = PS_FFN_PAUSE_TOKENS;
    }

    ps_layer_stats *st = &s->stats[il];
    st->tokens += n_tok;
    st->neurons_total += (int64_t)n_tok * n_ff;
    st->neurons_active += count.active;
    if (s->mode == PS_MODE_PREDICT || s->mode == PS_MODE_THRESHOLD) st->neurons_predicted += count.kept;
    return PS_OK;
}
