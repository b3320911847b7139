/* attention.c: the scalar reference of attention.h's chunk kernels, the
 * cache row formats and the merge of partials (attention_avx2.c has the
 * SIMD level's kernels). */
#include "attention.h"

#include <math.h>
#include <string.h>

#include "prosparse.h"
#include "util.h"

size_t ps_cache_row_bytes(int32_t cache_type, int32_t hd) {
    if (hd <= 0) return 0;
    switch (cache_type) {
    case PS_CACHE_F32: return sizeof(float) * (size_t)hd;
    case PS_CACHE_F16: return sizeof(uint16_t) * (size_t)hd;
    case PS_CACHE_Q8_0: return hd % PS_QK ? 0 : (size_t)(hd / PS_QK) * sizeof(ps_block_q8_0);
    default: return 0;
    }
}

void ps_cache_store_row(int32_t cache_type, const float *x, int32_t hd, uint8_t *dst) {
    if (cache_type == PS_CACHE_F32) {
        memcpy(dst, x, sizeof(float) * (size_t)hd);
    } else if (cache_type == PS_CACHE_F16) {
        uint16_t *h = (uint16_t *)dst;
        for (int32_t i = 0; i < hd; i++) h[i] = ps_f32_to_fp16(x[i]);
    } else {
        ps_block_q8_0 *b = (ps_block_q8_0 *)dst;
        for (int32_t i0 = 0; i0 < hd; i0 += PS_QK, b++) {
            float amax = 0.0f;
            for (int i = 0; i < PS_QK; i++) amax = fmaxf(amax, fabsf(x[i0 + i]));
            const float d = amax / 127.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
            b->d = ps_f32_to_fp16(d);
            for (int i = 0; i < PS_QK; i++) b->qs[i] = (int8_t)roundf(x[i0 + i] * id);
        }
    }
}

void ps_attn_merge(float *M, float *L, float *O, float m, float l, const float *o, int32_t hd) {
    const float mx = m > *M ? m : *M;
    const float a = expf(*M - mx), b = expf(m - mx);
    *L = *L * a + l * b;
    for (int32_t d = 0; d < hd; d++) O[d] = O[d] * a + o[d] * b;
    *M = mx;
}

float ps_attn_exp_ref(float x) {
    const float hi = 88.0f, lo = -87.3365478515625f;
    const int underflow = x < lo;
    x = fmaxf(fminf(x, hi), lo);
    const float n = rintf(x * 1.44269504088896341f);
    float r = fmaf(-n, 0.693359375f, x);
    r = fmaf(-n, -2.12194440e-4f, r);
    float p = 1.9875691500e-4f;
    p = fmaf(p, r, 1.3981999507e-3f);
    p = fmaf(p, r, 8.3334519073e-3f);
    p = fmaf(p, r, 4.1665795894e-2f);
    p = fmaf(p, r, 1.6666665459e-1f);
    p = fmaf(p, r, 5.0000001201e-1f);
    p = fmaf(p, r * r, r) + 1.0f;
    const uint32_t bits = (uint32_t)((int32_t)n + 127) << 23;
    float e;
    memcpy(&e, &bits, sizeof e);
    return underflow ? 0.0f : p * e;
}

/* ((l0+l1)+(l2+l3))+((l4+l5)+(l6+l7)) */
static inline float tree8(const float l[8]) {
    return ((l[0] + l[1]) + (l[2] + l[3])) + ((l[4] + l[5]) + (l[6] + l[7]));
}

static inline float row_at(int32_t type, const uint8_t *row, int32_t d) {
    if (type == PS_CACHE_F32) return ((const float *)row)[d];
    return ps_fp16_to_f32(((const uint16_t *)row)[d]);
}

/* Scores of query i (float rows): 8 FMA lanes, then tree8, then the tail. */
static float score_float(int32_t type, const float *q, const uint8_t *row, int32_t hd) {
    float lane[8] = {0};
    int32_t d = 0;
    for (; d + 8 <= hd; d += 8)
        for (int k = 0; k < 8; k++) lane[k] = fmaf(q[d + k], row_at(type, row, d + k), lane[k]);
    float s = tree8(lane);
    for (; d < hd; d++) s = fmaf(q[d], row_at(type, row, d), s);
    return s;
}

static float score_q8(const ps_block_q8a *qq, const uint8_t *row, int32_t hd) {
    const ps_block_q8_0 *kb = (const ps_block_q8_0 *)row;
    float acc = 0.0f;
    for (int32_t b = 0; b < hd / PS_QK; b++) {
        int32_t isum = 0;
        for (int i = 0; i < PS_QK; i++) isum += (int32_t)qq[b].qs[i] * kb[b].qs[i];
        acc = fmaf(ps_fp16_to_f32(kb[b].d) * qq[b].d, (float)isum, acc);
    }
    return acc;
}

/* m, p_j = exp(s_j - m) in place, l: the shared steps after the scores. */
static void softmax_part(float *s, int32_t n, float *m_out, float *l_out) {
    float m = -INFINITY;
    for (int32_t j = 0; j < n; j++) m = s[j] > m ? s[j] : m;
    for (int32_t j = 0; j < n; j++) s[j] = ps_attn_exp_ref(s[j] - m);
    float lane[8] = {0};
    int32_t j = 0;
    for (; j + 8 <= n; j += 8)
        for (int k = 0; k < 8; k++) lane[k] += s[j + k];
    float l = tree8(lane);
    for (; j < n; j++) l += s[j];
    *m_out = m;
    *l_out = l;
}

static void chunk_scalar(const ps_attn_chunk *a, int32_t type) {
    const int32_t hd = a->hd, n = a->n;
    for (int32_t i = 0; i < a->nq; i++) {
        float *s = a->s + (size_t)i * n;
        for (int32_t j = 0; j < n; j++) {
            const uint8_t *row = a->k + (size_t)j * a->row_bytes;
            const float dot = type == PS_CACHE_Q8_0 ? score_q8(a->qq + (size_t)i * (hd / PS_QK), row, hd)
                                                    : score_float(type, a->q + (size_t)i * hd, row, hd);
            s[j] = dot * a->scale;
        }
        softmax_part(s, n, &a->m[i], &a->l[i]);
        float *o = a->o + (size_t)i * hd;
        for (int32_t d = 0; d < hd; d++) o[d] = 0.0f;
        for (int32_t j = 0; j < n; j++) {
            const uint8_t *row = a->v + (size_t)j * a->row_bytes;
            if (type == PS_CACHE_Q8_0) {
                const ps_block_q8_0 *vb = (const ps_block_q8_0 *)row;
                for (int32_t d = 0; d < hd; d++) {
                    const float w = s[j] * ps_fp16_to_f32(vb[d / PS_QK].d);
                    o[d] = fmaf(w, (float)vb[d / PS_QK].qs[d % PS_QK], o[d]);
                }
            } else {
                for (int32_t d = 0; d < hd; d++) o[d] = fmaf(s[j], row_at(type, row, d), o[d]);
            }
        }
    }
}

static void chunk_f32(const ps_attn_chunk *a) { chunk_scalar(a, PS_CACHE_F32); }
static void chunk_f16(const ps_attn_chunk *a) { chunk_scalar(a, PS_CACHE_F16); }
static void chunk_q8_0(const ps_attn_chunk *a) { chunk_scalar(a, PS_CACHE_Q8_0); }

const ps_attn_kernels ps_attn_kernels_scalar = {
    .chunk = {[PS_CACHE_F16] = chunk_f16, [PS_CACHE_F32] = chunk_f32, [PS_CACHE_Q8_0] = chunk_q8_0},
    .head_multiple = 1,
};
