/* quantize_k.c: K-quant super-blocks of PS_QK_K weights (ggml's layouts).
 *
 * Each sub-block (16 or 32 weights) gets its own least-squares scale (and
 * minimum) first; those are then stored as small integers times one fp16
 * super-scale (and one for the minimums). Rounding a sub-block's integer
 * scale to the nearest is not the best choice for its weights, so both
 * neighbours of the ideal value (and of the minimum's) are tried with the
 * weights rounded again under each, and the pair with the smallest squared
 * error is kept.
 */
#include <math.h>
#include <string.h>

#include "quant.h"
#include "quantize.h"
#include "util.h"

/* Integer scale(s) for a sub-block under fp16 super-scales d (and dm):
 * x ~= (d * q) * L + o, o = -(dm * m) when dm is given. Writes the chosen
 * q (and m) and the group's levels; ideal_q/ideal_m are the float ratios. */
static void pick_scale(const float *x, int n, float d, float ideal_q, int qlo, int qhi, const float *dm,
                       float ideal_m, int mhi, int lo, int hi, int *q_out, int *m_out, int8_t *L) {
    int8_t T[32];
    const int q0 = ps_qround(floorf(ideal_q), qlo, qhi), m0 = dm ? ps_qround(floorf(ideal_m), 0, mhi) : 0;
    float best = INFINITY;
    *q_out = q0;
    *m_out = m0;
    for (int a = 0; a < 2; a++) {
        const int q = q0 + a > qhi ? qhi : q0 + a;
        for (int b = 0; b < (dm ? 2 : 1); b++) {
            const int m = m0 + b > mhi ? mhi : m0 + b;
            const float o = dm ? -(*dm * (float)m) : 0.0f;
            const float e = ps_round_group(x, n, d * (float)q, o, lo, hi, T);
            if (e < best) {
                best = e;
                *q_out = q;
                *m_out = m;
                memcpy(L, T, (size_t)n);
            }
        }
    }
}

/* fp16 super-scale for `top` (the largest sub-scale in magnitude, signed)
 * at integer `levels`; 0 when it does not survive fp16. */
static float super_scale(float top, float levels, uint16_t *stored) {
    *stored = ps_f32_to_fp16(top / levels);
    const float d = ps_fp16_to_f32(*stored);
    if (!(d != 0.0f) || !isfinite(d)) {
        *stored = 0;
        return 0.0f;
    }
    return d;
}

/* One super-block of n_sub sub-blocks of `len` weights with levels in
 * [0, hi] and a minimum each (Q2_K, Q4_K, Q5_K): integer sub-scales q[j] and
 * minimums m[j] in [0, qmax] under the fp16 super-scales *d16 and *dmin16
 * (the largest of each at qmax), and the levels L. */
static void asym_levels(const float *x, int n_sub, int len, int hi, int qmax, uint16_t *d16, uint16_t *dmin16,
                        int *q, int *m, int8_t *L) {
    float s[16], mn[16], smax = 0.0f, mmax = 0.0f;
    for (int j = 0; j < n_sub; j++) {
        float o;
        s[j] = ps_fit_scale_offset(x + len * j, len, hi, 1, L + len * j, &o);
        mn[j] = -o;
        smax = fmaxf(smax, s[j]);
        mmax = fmaxf(mmax, mn[j]);
    }
    const float d = super_scale(smax, (float)qmax, d16), dm = super_scale(mmax, (float)qmax, dmin16);
    for (int j = 0; j < n_sub; j++)
        pick_scale(x + len * j, len, d, d ? s[j] / d : 0.0f, 0, qmax, &dm, dm ? mn[j] / dm : 0.0f, qmax, 0, hi,
                   &q[j], &m[j], L + len * j);
}

/* One super-block of 16 sub-blocks of 16 weights with levels in [lo, hi]
 * and no minimum (Q3_K, Q6_K): integer sub-scales q[j] in [-qn, qn - 1]
 * under the fp16 super-scale *d16, the largest sub-scale in magnitude at
 * -qn (the end of the range with the most room), and the levels L. */
static void sym_levels(const float *x, int lo, int hi, int qn, uint16_t *d16, int q[16], int8_t *L) {
    float s[16], top = 0.0f;
    for (int j = 0; j < 16; j++) {
        s[j] = ps_fit_scale(x + 16 * j, 16, lo, hi, L + 16 * j);
        if (fabsf(s[j]) > fabsf(top)) top = s[j];
    }
    const float d = super_scale(top, -(float)qn, d16);
    for (int j = 0; j < 16; j++) {
        int unused;
        pick_scale(x + 16 * j, 16, d, d ? s[j] / d : 0.0f, -qn, qn - 1, NULL, 0.0f, 0, lo, hi, &q[j], &unused,
                   L + 16 * j);
    }
}

/* ---- Q4_K / Q5_K: 8 sub-blocks of 32, 6-bit scales and minimums ------------- */

static void pack_scales_k4(uint8_t sc[12], const int ls[8], const int lm[8]) {
    memset(sc, 0, 12);
    for (int j = 0; j < 8; j++) {
        if (j < 4) {
            sc[j] = (uint8_t)ls[j];
            sc[j + 4] = (uint8_t)lm[j];
        } else {
            sc[j + 4] = (uint8_t)((ls[j] & 15) | ((lm[j] & 15) << 4));
            sc[j - 4] |= (uint8_t)((ls[j] >> 4) << 6);
            sc[j] |= (uint8_t)((lm[j] >> 4) << 6);
        }
    }
}

/* Levels L[256] in [0, hi] for one super-block; d and dmin as stored. */
static void quantize_k4_levels(const float *x, int hi, uint16_t *d16, uint16_t *dmin16, uint8_t sc[12],
                               int8_t *L) {
    int ls[8], lm[8];
    asym_levels(x, 8, 32, hi, 63, d16, dmin16, ls, lm, L);
    pack_scales_k4(sc, ls, lm);
}

void ps_quantize_row_q4_k(const float *x, void *dst, int64_t n) {
    ps_block_q4_k *y = dst;
    int8_t L[PS_QK_K];
    for (int64_t b = 0; b < n / PS_QK_K; b++, x += PS_QK_K) {
        quantize_k4_levels(x, 15, &y[b].d, &y[b].dmin, y[b].scales, L);
        for (int c = 0; c < 4; c++) /* 64 weights: low nibbles, then high */
            for (int l = 0; l < 32; l++)
                y[b].qs[32 * c + l] = (uint8_t)(L[64 * c + l] | (L[64 * c + 32 + l] << 4));
    }
}

void ps_quantize_row_q5_k(const float *x, void *dst, int64_t n) {
    ps_block_q5_k *y = dst;
    int8_t L[PS_QK_K];
    for (int64_t b = 0; b < n / PS_QK_K; b++, x += PS_QK_K) {
        quantize_k4_levels(x, 31, &y[b].d, &y[b].dmin, y[b].scales, L);
        memset(y[b].qh, 0, sizeof y[b].qh);
        for (int c = 0; c < 4; c++)
            for (int l = 0; l < 32; l++) {
                const int lo = L[64 * c + l], up = L[64 * c + 32 + l];
                y[b].qs[32 * c + l] = (uint8_t)((lo & 15) | ((up & 15) << 4));
                y[b].qh[l] |= (uint8_t)(((lo >> 4) << (2 * c)) | ((up >> 4) << (2 * c + 1)));
            }
    }
}

/* ---- Q6_K: 16 sub-blocks of 16, levels -32..31, int8 scales ------------------- */

void ps_quantize_row_q6_k(const float *x, void *dst, int64_t n) {
    ps_block_q6_k *y = dst;
    int8_t L[PS_QK_K];
    for (int64_t b = 0; b < n / PS_QK_K; b++, x += PS_QK_K) {
        int q[16];
        sym_levels(x, -32, 31, 128, &y[b].d, q, L); /* int8 scales */
        for (int j = 0; j < 16; j++) y[b].scales[j] = (int8_t)q[j];
        for (int h = 0; h < 2; h++) {
            const int8_t *Lh = L + 128 * h;
            uint8_t *ql = y[b].ql + 64 * h, *qh = y[b].qh + 32 * h;
            for (int l = 0; l < 32; l++) {
                const int q1 = Lh[l] + 32, q2 = Lh[l + 32] + 32, q3 = Lh[l + 64] + 32, q4 = Lh[l + 96] + 32;
                ql[l] = (uint8_t)((q1 & 15) | ((q3 & 15) << 4));
                ql[l + 32] = (uint8_t)((q2 & 15) | ((q4 & 15) << 4));
                qh[l] = (uint8_t)((q1 >> 4) | ((q2 >> 4) << 2) | ((q3 >> 4) << 4) | ((q4 >> 4) << 6));
            }
        }
    }
}

/* ---- Q3_K and Q2_K: 16 sub-blocks of 16, 2-bit low parts ------------------------ */

/* 2-bit fields of levels in [0, 3]: byte 32h + l holds weights 128h + l + 32k
 * at bits 2k. */
static void pack_2bit(uint8_t qs[64], const int8_t *L, int bias) {
    for (int h = 0; h < 2; h++)
        for (int l = 0; l < 32; l++) {
            uint8_t v = 0;
            for (int k = 0; k < 4; k++) v |= (uint8_t)(((L[128 * h + 32 * k + l] + bias) & 3) << (2 * k));
            qs[32 * h + l] = v;
        }
}

void ps_quantize_row_q3_k(const float *x, void *dst, int64_t n) {
    ps_block_q3_k *y = dst;
    int8_t L[PS_QK_K];
    for (int64_t b = 0; b < n / PS_QK_K; b++, x += PS_QK_K) {
        int q[16];
        sym_levels(x, -4, 3, 32, &y[b].d, q, L); /* 6-bit scales */
        memset(y[b].scales, 0, sizeof y[b].scales);
        for (int j = 0; j < 16; j++) {
            const int u = q[j] + 32; /* 6 bits: low 4 in a nibble, high 2 in bytes 8..11 */
            y[b].scales[j % 8] |= (uint8_t)((u & 15) << (j < 8 ? 0 : 4));
            y[b].scales[8 + j % 4] |= (uint8_t)((u >> 4) << (2 * (j / 4)));
        }
        /* level + 4 in [0, 7]: bit 2 in hmask (weight j: byte j % 32, bit j / 32) */
        memset(y[b].hmask, 0, sizeof y[b].hmask);
        for (int j = 0; j < PS_QK_K; j++)
            if (L[j] + 4 > 3) y[b].hmask[j % 32] |= (uint8_t)(1u << (j / 32));
        pack_2bit(y[b].qs, L, 4);
    }
}

void ps_quantize_row_q2_k(const float *x, void *dst, int64_t n) {
    ps_block_q2_k *y = dst;
    int8_t L[PS_QK_K];
    for (int64_t b = 0; b < n / PS_QK_K; b++, x += PS_QK_K) {
        int q[16], m[16];
        asym_levels(x, 16, 16, 3, 15, &y[b].d, &y[b].dmin, q, m, L); /* 4-bit scales and minimums */
        for (int j = 0; j < 16; j++) y[b].scales[j] = (uint8_t)(q[j] | (m[j] << 4));
        pack_2bit(y[b].qs, L, 0);
    }
}
