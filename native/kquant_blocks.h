/* kquant_blocks.h: the Q5 and K-quant block formats in plain C, shared by
 * every level: their scale unpacking, dequantization (bit-exact with
 * gguf-py's dequantize: the same float operations, each rounded once, in
 * separate statements so no compiler fuses them) and a block's decoding into
 * the integer form the products use (quant.h):
 *   u[256]  unsigned quants in element order,
 *   s[16]   the integer scale of each 16 elements,
 *   m[16]   the integer weight of each 16 elements' activation sum,
 * so that the block's dot with a q8k block x is
 *   min types (Q2_K, Q4_K, Q5_K): D*dx * sum_j s_j*(u.x)_j - M*dx * sum_j m_j*bsums_j
 *   offset types (Q3_K, Q6_K):    D*dx * (sum_j s_j*(u.x)_j - sum_j m_j*bsums_j)
 * with m_j = offset * s_j (quants are u - offset) for the offset types.
 * Element e of a block: sub-block e/16 (e/32 for the 6-bit scales of Q4_K
 * and Q5_K, each covering two 16-element groups).
 */
#ifndef PS_KQUANT_BLOCKS_H
#define PS_KQUANT_BLOCKS_H

#include <stdint.h>
#include <string.h>

#include "quant.h"
#include "util.h"

/* Q4_K / Q5_K: 8 six-bit scales and mins from 12 bytes. */
/* byte j of the 32-bit words: sc[j] = s[j] & 63, mn[j] = s[j+4] & 63,
 * sc[j+4] = (s[j+8] & 15) | (s[j] >> 6) << 4, mn[j+4] = (s[j+8] >> 4) | (s[j+4] >> 6) << 4
 * (a word shifted right by 6 puts each byte's top two bits at its bottom). */
static inline void kq_scales_q4k(const uint8_t s[12], uint8_t sc[8], uint8_t mn[8]) {
    uint32_t w0, w1, w2;
    memcpy(&w0, s, 4), memcpy(&w1, s + 4, 4), memcpy(&w2, s + 8, 4);
    const uint32_t lo6 = 0x3f3f3f3fu, lo4 = 0x0f0f0f0fu, lo2 = 0x03030303u;
    const uint32_t v[4] = {w0 & lo6, (w2 & lo4) | (((w0 >> 6) & lo2) << 4), w1 & lo6,
                           ((w2 >> 4) & lo4) | (((w1 >> 6) & lo2) << 4)};
    memcpy(sc, v, 8), memcpy(mn, v + 2, 8);
}

/* Q3_K: 16 six-bit scales from 12 bytes, minus 32. */
static inline void kq_scales_q3k(const uint8_t s[12], int8_t sc[16]) {
    for (int j = 0; j < 16; j++) {
        const int lo = (s[j % 8] >> (4 * (j / 8))) & 0x0f;
        const int hi = (s[8 + j % 4] >> (2 * (j / 4))) & 3;
        sc[j] = (int8_t)((lo | (hi << 4)) - 32);
    }
}

/* Unsigned quant of element e (0..255) of each K-quant type. */
static inline int kq_u_q2k(const ps_block_q2_k *b, int e) {
    return (b->qs[32 * (e / 128) + e % 32] >> (2 * ((e % 128) / 32))) & 3;
}
static inline int kq_u_q3k(const ps_block_q3_k *b, int e) {
    const int lo = (b->qs[32 * (e / 128) + e % 32] >> (2 * ((e % 128) / 32))) & 3;
    return lo | (((b->hmask[e % 32] >> (e / 32)) & 1) << 2);
}
static inline int kq_u_q4k(const ps_block_q4_k *b, int e) {
    return (b->qs[32 * (e / 64) + e % 32] >> (4 * ((e / 32) & 1))) & 0x0f;
}
static inline int kq_u_q5k(const ps_block_q5_k *b, int e) {
    return ((b->qs[32 * (e / 64) + e % 32] >> (4 * ((e / 32) & 1))) & 0x0f) | (((b->qh[e % 32] >> (e / 32)) & 1) << 4);
}
static inline int kq_u_q6k(const ps_block_q6_k *b, int e) {
    const int h = e / 128, j = (e % 128) / 32, l = e % 32;
    const int lo = (b->ql[64 * h + 32 * (j & 1) + l] >> (4 * (j >> 1))) & 0x0f;
    return lo | (((b->qh[32 * h + l] >> (2 * j)) & 3) << 4);
}
/* Q5_0 / Q5_1 (32 elements): nibble plus bit e of qh. */
static inline int kq_u_q5(const uint8_t qh[4], const uint8_t qs[16], int e) {
    uint32_t h;
    memcpy(&h, qh, 4);
    return ((qs[e % 16] >> (4 * (e / 16))) & 0x0f) | (int)(((h >> e) & 1) << 4);
}

/* ---- dequantization ----------------------------------------------------- */
static inline void kq_dequant_q5_0(const void *src, float *dst, int64_t n) {
    const ps_block_q5_0 *b = src;
    for (int64_t i = 0; i < n / 32; i++, dst += 32) {
        const float d = ps_fp16_to_f32(b[i].d);
        for (int e = 0; e < 32; e++) dst[e] = d * (float)(kq_u_q5(b[i].qh, b[i].qs, e) - 16);
    }
}

static inline void kq_dequant_q5_1(const void *src, float *dst, int64_t n) {
    const ps_block_q5_1 *b = src;
    for (int64_t i = 0; i < n / 32; i++, dst += 32) {
        const float d = ps_fp16_to_f32(b[i].d), m = ps_fp16_to_f32(b[i].m);
        for (int e = 0; e < 32; e++) {
            const float t = d * (float)kq_u_q5(b[i].qh, b[i].qs, e);
            dst[e] = t + m;
        }
    }
}

static inline void kq_dequant_q2_k(const void *src, float *dst, int64_t n) {
    const ps_block_q2_k *b = src;
    for (int64_t i = 0; i < n / PS_QK_K; i++, dst += PS_QK_K) {
        const float d = ps_fp16_to_f32(b[i].d), dmin = ps_fp16_to_f32(b[i].dmin);
        for (int j = 0; j < 16; j++) {
            const float dl = d * (float)(b[i].scales[j] & 0x0f), ml = dmin * (float)(b[i].scales[j] >> 4);
            for (int e = 16 * j; e < 16 * j + 16; e++) {
                const float t = dl * (float)kq_u_q2k(&b[i], e);
                dst[e] = t - ml;
            }
        }
    }
}

static inline void kq_dequant_q3_k(const void *src, float *dst, int64_t n) {
    const ps_block_q3_k *b = src;
    for (int64_t i = 0; i < n / PS_QK_K; i++, dst += PS_QK_K) {
        const float d = ps_fp16_to_f32(b[i].d);
        int8_t sc[16];
        kq_scales_q3k(b[i].scales, sc);
        for (int j = 0; j < 16; j++) {
            const float dl = d * (float)sc[j];
            for (int e = 16 * j; e < 16 * j + 16; e++) dst[e] = dl * (float)(kq_u_q3k(&b[i], e) - 4);
        }
    }
}

/* Q4_K and Q5_K: (d*sc)*q - (dmin*m) per 32 elements. */
#define KQ_DEQUANT_Q45K(name, btype, ufn)                                                    \
    static inline void name(const void *src, float *dst, int64_t n) {                       \
        const btype *b = src;                                                                \
        for (int64_t i = 0; i < n / PS_QK_K; i++, dst += PS_QK_K) {                          \
            const float d = ps_fp16_to_f32(b[i].d), dmin = ps_fp16_to_f32(b[i].dmin);        \
            uint8_t sc[8], mn[8];                                                            \
            kq_scales_q4k(b[i].scales, sc, mn);                                              \
            for (int j = 0; j < 8; j++) {                                                    \
                const float dl = d * (float)sc[j], ml = dmin * (float)mn[j];                 \
                for (int e = 32 * j; e < 32 * j + 32; e++) {                                 \
                    const float t = dl * (float)ufn(&b[i], e);                               \
                    dst[e] = t - ml;                                                         \
                }                                                                            \
            }                                                                                \
        }                                                                                    \
    }
KQ_DEQUANT_Q45K(kq_dequant_q4_k, ps_block_q4_k, kq_u_q4k)
KQ_DEQUANT_Q45K(kq_dequant_q5_k, ps_block_q5_k, kq_u_q5k)

static inline void kq_dequant_q6_k(const void *src, float *dst, int64_t n) {
    const ps_block_q6_k *b = src;
    for (int64_t i = 0; i < n / PS_QK_K; i++, dst += PS_QK_K) {
        const float d = ps_fp16_to_f32(b[i].d);
        for (int j = 0; j < 16; j++) {
            const float dl = d * (float)b[i].scales[j];
            for (int e = 16 * j; e < 16 * j + 16; e++) dst[e] = dl * (float)(kq_u_q6k(&b[i], e) - 32);
        }
    }
}

/* ---- integer form for the products ---------------------------------------- */
typedef struct kq_decoded {
    uint8_t u[PS_QK_K];
    int16_t s[16], m[16];
    float D, M;    /* M == 0 with has_min == 0: the offset is inside the integer sum */
    int has_min;
} kq_decoded;

static inline void kq_decode(int32_t type, const void *blk, kq_decoded *o) {
    switch (type) {
    case PS_TYPE_Q2_K: {
        const ps_block_q2_k *b = blk;
        for (int e = 0; e < PS_QK_K; e++) o->u[e] = (uint8_t)kq_u_q2k(b, e);
        for (int j = 0; j < 16; j++) o->s[j] = b->scales[j] & 0x0f, o->m[j] = b->scales[j] >> 4;
        o->D = ps_fp16_to_f32(b->d), o->M = ps_fp16_to_f32(b->dmin), o->has_min = 1;
        break;
    }
    case PS_TYPE_Q3_K: {
        const ps_block_q3_k *b = blk;
        int8_t sc[16];
        kq_scales_q3k(b->scales, sc);
        for (int e = 0; e < PS_QK_K; e++) o->u[e] = (uint8_t)kq_u_q3k(b, e);
        for (int j = 0; j < 16; j++) o->s[j] = sc[j], o->m[j] = (int16_t)(4 * sc[j]);
        o->D = ps_fp16_to_f32(b->d), o->M = 0.0f, o->has_min = 0;
        break;
    }
    case PS_TYPE_Q4_K:
    case PS_TYPE_Q5_K: {
        const ps_block_q4_k *b4 = blk;
        const ps_block_q5_k *b5 = blk;
        uint8_t sc[8], mn[8];
        kq_scales_q4k(b4->scales, sc, mn); /* (same offsets in both blocks) */
        for (int e = 0; e < PS_QK_K; e++) o->u[e] = (uint8_t)(type == PS_TYPE_Q4_K ? kq_u_q4k(b4, e) : kq_u_q5k(b5, e));
        for (int j = 0; j < 16; j++) o->s[j] = sc[j / 2], o->m[j] = mn[j / 2];
        o->D = ps_fp16_to_f32(b4->d), o->M = ps_fp16_to_f32(b4->dmin), o->has_min = 1;
        break;
    }
    default: { /* PS_TYPE_Q6_K */
        const ps_block_q6_k *b = blk;
        for (int e = 0; e < PS_QK_K; e++) o->u[e] = (uint8_t)kq_u_q6k(b, e);
        for (int j = 0; j < 16; j++) o->s[j] = b->scales[j], o->m[j] = (int16_t)(32 * b->scales[j]);
        o->D = ps_fp16_to_f32(b->d), o->M = 0.0f, o->has_min = 0;
        break;
    }
    }
}

#endif
