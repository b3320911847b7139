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
 */
#include "ffn.h"

#include <math.h>
#include <string.h>

#include "util.h"

/* ---- activations ------------------------------------------------------- */

static inline float silu(float g) { return g / (1.0f + expf(-g)); }

/* act(gate) for the activations whose x1 = act(gate) * up. */
static inline float act_gate(ps_act a, float g, float thr) {
    switch (a) {
    case PS_ACT_SILU: return silu(g);
    case PS_ACT_RELU: return g > 0.0f ? g : 0.0f;
    case PS_ACT_FATRELU: return g >= thr ? g : 0.0f;
    case PS_ACT_RELU2: return g > 0.0f ? g * g : 0.0f;
    case PS_ACT_DRELU: return g > 0.0f ? g : 0.0f; /* and relu(up) below */
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
    }
    return 0.0f;
}

int ps_ffn_check_mode(const ps_model *m, int32_t mode) {
    const ps_hparams *hp = &m->hp;
    switch (mode) {
    case PS_MODE_DENSE:
        return PS_OK;
    case PS_MODE_SPARSE:
        if (hp->act == PS_ACT_SILU)
            return ps_fail(PS_ERR_UNSUPPORTED,
                           "mode 'sparse' needs a ReLU-family activation; this model uses silu, whose "
                           "activations are never exactly zero (use mode 'threshold' with cut-offs from "
                           "prosparse-convert --calibrate)");
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
        return PS_OK;
    }
    return ps_fail(PS_ERR_ARG, "unknown mode %d", (int)mode);
}

/* ---- dense ------------------------------------------------------------- */

typedef struct act_ctx {
    ps_session *s;
} act_ctx;

/* x1 = act(gate) * up into hb for tokens [t0, t1), counting non-zero x1. */
static void activation_rows(void *vc, int64_t t0, int64_t t1, int ith) {
    ps_session *s = ((act_ctx *)vc)->s;
    const ps_hparams *hp = &s->model->hp;
    const int n = hp->n_ff;
    const float thr = hp->act_threshold;
    int64_t active = 0;
    for (int64_t t = t0; t < t1; t++) {
        float *g = s->hb + t * n;
        const float *u = s->hb2 + t * n;
        switch (hp->act) {
        case PS_ACT_SILU:
            ps_silu_mul(g, u, n); /* vectorised exp in the AVX2 path */
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

static void down_projection(ps_session *s, const ps_layer *L, int32_t n_tok, const int32_t *idx,
                            int64_t n_idx) {
    if (L->has_down_t)
        ps_accum_rows(s->pool, &L->down_t, s->hb, n_tok, idx, n_idx, s->xb2);
    else /* llama files: x1 holds zeros where skipped, so the dense product is exact */
        ps_matmul(s->pool, &L->down, s->hb, n_tok, s->xb2);
}

/* x1 and down for every neuron, with gate in s->hb and up in s->hb2. */
static void dense_tail(ps_session *s, const ps_layer *L, int32_t n_tok, ps_layer_stats *st) {
    memset(s->active_by_thread, 0, sizeof(int64_t) * s->n_threads);
    act_ctx c = {s};
    if (n_tok == 1) activation_rows(&c, 0, 1, 0);
    else ps_parallel_for(s->pool, n_tok, 8, activation_rows, &c);
    down_projection(s, L, n_tok, NULL, s->model->hp.n_ff);
    for (int i = 0; i < s->n_threads; i++) st->neurons_active += s->active_by_thread[i];
}

static void ffn_dense(ps_session *s, const ps_layer *L, int32_t n_tok, ps_layer_stats *st) {
    const ps_matrix *gu[2] = {&L->gate, &L->up};
    float *gu_out[2] = {s->hb, s->hb2};
    ps_matmul_multi(s->pool, 2, gu, s->xb, n_tok, gu_out);
    dense_tail(s, L, n_tok, st);
}

/* ---- sparse modes -------------------------------------------------------- */

/* Predict mode, measure option: the dense gate (and up for drelu) in
 * ref_g/ref_u, to count how many truly active neurons the predictor kept. */
static void measure_recall(ps_session *s, const ps_layer *L, int32_t n_tok, ps_layer_stats *st) {
    const ps_hparams *hp = &s->model->hp;
    const int64_t n = hp->n_ff;
    if (hp->act == PS_ACT_DRELU) {
        const ps_matrix *gu[2] = {&L->gate, &L->up};
        float *out[2] = {s->ref_g, s->ref_u};
        ps_matmul_multi(s->pool, 2, gu, s->xb, n_tok, out);
    } else {
        ps_matmul(s->pool, &L->gate, s->xb, n_tok, s->ref_g);
    }
    int64_t hits = 0, total = 0;
    for (int64_t k = 0; k < (int64_t)n_tok * n; k++) {
        int act = act_gate(hp->act, s->ref_g[k], hp->act_threshold) != 0.0f;
        if (hp->act == PS_ACT_DRELU) act = act && s->ref_u[k] > 0.0f;
        if (!act) continue;
        total++;
        hits += s->pred_l[k] > hp->pred_threshold;
    }
    st->recall_hits += hits;
    st->recall_total += total;
}

/* Step 1's decision for one token's row of n neurons: keep[i] = 1 when the
 * token keeps neuron i; returns how many it keeps. v is the gate (sparse),
 * silu(gate) (threshold on SiLU models), or the predictor logits (predict). */
static int64_t decide_row(const ps_session *s, int mode, const float *v, float cutoff, int pre_act,
                          uint8_t *keep) {
    const ps_hparams *hp = &s->model->hp;
    const int64_t n = hp->n_ff;
    const float thr = hp->act_threshold;
    int64_t kept = 0;
    if (mode == PS_MODE_PREDICT) {
        const float pt = hp->pred_threshold;
        for (int64_t i = 0; i < n; i++) kept += keep[i] = v[i] > pt;
    } else if (mode == PS_MODE_THRESHOLD) {
        if (pre_act)
            for (int64_t i = 0; i < n; i++) kept += keep[i] = fabsf(v[i]) >= cutoff;
        else
            for (int64_t i = 0; i < n; i++) kept += keep[i] = fabsf(act_gate(hp->act, v[i], thr)) >= cutoff;
    } else if (hp->act == PS_ACT_FATRELU) {
        for (int64_t i = 0; i < n; i++) kept += keep[i] = v[i] >= thr;
    } else { /* relu, relu2, drelu: act(gate) != 0 exactly when gate > 0 */
        for (int64_t i = 0; i < n; i++) kept += keep[i] = v[i] > 0.0f;
    }
    return kept;
}

static void ffn_sparse(ps_session *s, int mode, const ps_layer *L, int il, int32_t n_tok,
                       ps_layer_stats *st) {
    const ps_model *m = s->model;
    const ps_hparams *hp = &m->hp;
    const int64_t n = hp->n_ff;
    const float cutoff = mode == PS_MODE_THRESHOLD ? m->cutoffs[il] : 0.0f;
    /* threshold on SiLU: hb holds silu(gate) from step 1 on (vectorised once) */
    const int pre_act = mode == PS_MODE_THRESHOLD && hp->act == PS_ACT_SILU;
    uint8_t *mask = s->ffn_mask;
    int32_t *idx = s->ffn_idx;

    /* 1. what decides: the full gate, or the predictor's two small products */
    const float *decider = s->hb;
    if (mode == PS_MODE_PREDICT) {
        const int64_t r = hp->predictor_rank;
        ps_matmul(s->pool, &L->pred_in, hp->pred_on_normed ? s->xb : s->x, n_tok, s->pred_h);
        if (hp->pred_hidden_relu)
            for (int64_t k = 0; k < (int64_t)n_tok * r; k++)
                if (s->pred_h[k] < 0.0f) s->pred_h[k] = 0.0f;
        ps_matmul(s->pool, &L->pred_out, s->pred_h, n_tok, s->pred_l);
        if (s->measure) measure_recall(s, L, n_tok, st);
        decider = s->pred_l;
    } else {
        ps_matmul(s->pool, &L->gate, s->xb, n_tok, s->hb);
        if (pre_act)
            for (int32_t t = 0; t < n_tok; t++) ps_silu_mul(s->hb + (int64_t)t * n, s->ones, n);
    }

    /* 2. each token's decisions, and their union over the batch in index order */
    int64_t kept = 0, n_union = 0;
    if (n_tok > 1) memset(mask, 0, (size_t)n);
    for (int32_t t = 0; t < n_tok; t++) {
        const uint8_t *k = s->ffn_keep + (int64_t)t * n;
        kept += decide_row(s, mode, decider + (int64_t)t * n, cutoff, pre_act, s->ffn_keep + (int64_t)t * n);
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
        if (mode == PS_MODE_SPARSE && n_union >= (int64_t)(PS_FFN_DENSE_SHARE * (double)n)) {
            ps_matmul(s->pool, &L->up, s->xb, n_tok, s->hb2);
            dense_tail(s, L, n_tok, st);
            if (s->mode != PS_MODE_SPARSE) st->neurons_predicted += (int64_t)n_tok * n;
            if (n_tok == 1) s->dense_rest[il] = PS_FFN_PRED_REST;
            return;
        }
    }
    int64_t n_idx = 0;
    for (int64_t i = 0; i < n; i++) {
        idx[n_idx] = (int32_t)i;
        n_idx += mask[i];
    }
    const int all_rows = n_idx >= (int64_t)(PS_FFN_DENSE_SHARE * (double)n);

    /* 3. the rows still missing, for the list only (or all of them) */
    if (mode == PS_MODE_PREDICT) {
        const ps_matrix *gu[2] = {&L->gate, &L->up};
        float *gu_out[2] = {s->hb, s->hb2};
        if (all_rows) ps_matmul_multi(s->pool, 2, gu, s->xb, n_tok, gu_out);
        else ps_matmul_rows_multi(s->pool, 2, gu, s->xb, n_tok, idx, n_idx, gu_out);
    } else if (all_rows) {
        ps_matmul(s->pool, &L->up, s->xb, n_tok, s->hb2);
    } else {
        ps_matmul_rows(s->pool, &L->up, s->xb, n_tok, idx, n_idx, s->hb2);
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
            if (k[i]) v = pre_act ? g[i] * u[i] : x1_of(hp->act, g[i], u[i], hp->act_threshold);
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
    if (n_down == n || (all_rows && n_down >= (int64_t)(PS_FFN_DENSE_SHARE * (double)n)))
        down_projection(s, L, n_tok, NULL, n);
    else
        down_projection(s, L, n_tok, idx, n_down);

    st->neurons_active += active;
    if (s->mode != PS_MODE_SPARSE) st->neurons_predicted += kept;
}

void ps_ffn_forward(ps_session *s, int il, int32_t n_tok) {
    const ps_hparams *hp = &s->model->hp;
    const ps_layer *L = &s->model->layers[il];
    ps_layer_stats *st = &s->stats[il];
    int mode = s->mode;
    if (mode == PS_MODE_PREDICT) {
        /* Prompt batches: the union of many tokens' candidates covers most
         * rows, so the predictor's two products would only add to a dense
         * cost; the exact union of the really active neurons (sparse mode's
         * gate-driven path) is never slower than dense. Likewise, when this
         * layer's predictor kept nearly every neuron for a token (little
         * sparsity in this model or text), the next PS_FFN_PRED_REST tokens
         * of the layer take the exact path before the predictor is asked
         * again. SiLU models have no exact sparse path: dense. */
        int exact = n_tok > 1;
        if (n_tok == 1 && s->pred_rest[il] > 0) {
            s->pred_rest[il]--;
            exact = 1;
        }
        if (exact) {
            mode = hp->act == PS_ACT_SILU ? PS_MODE_DENSE : PS_MODE_SPARSE;
            if (mode == PS_MODE_DENSE) st->neurons_predicted += (int64_t)n_tok * hp->n_ff;
        }
    }
    /* a layer whose last exact token was dense: dense for a while (same values) */
    if (n_tok == 1 && mode == PS_MODE_SPARSE && s->dense_rest[il] > 0) {
        s->dense_rest[il]--;
        mode = PS_MODE_DENSE;
        if (s->mode == PS_MODE_PREDICT) st->neurons_predicted += hp->n_ff;
    }
    const int64_t predicted_before = st->neurons_predicted;
    if (mode == PS_MODE_DENSE) ffn_dense(s, L, n_tok, st);
    else ffn_sparse(s, mode, L, il, n_tok, st);
    if (mode == PS_MODE_PREDICT &&
        st->neurons_predicted - predicted_before >= (int64_t)(PS_FFN_DENSE_SHARE * (double)hp->n_ff))
        s->pred_rest[il] = PS_FFN_PRED_REST;
    st->tokens += n_tok;
    st->neurons_total += (int64_t)n_tok * hp->n_ff;
}
