/* kernels_avx512_kquant.h: packed (row-interleaved, quant.h) Q4_K and Q6_K
 * products in 16 lanes, one row per 32-bit lane; included by quant_avx512.c.
 *
 * A packed block of 16 rows is the rows' fp16 scales, then their other
 * bytes as 32-bit groups, group k of row r at 64k + 4r: each load is 4
 * quant bytes of all 16 rows, which dpbusd multiplies with 4 broadcast
 * activation bytes. A sub-block's dot (32 or 16 elements) is exact in
 * int32, then multiplied by its integer scale (vpmulld) and summed: the
 * block's integer sums of kernels_x86_kquant.h, from which the float steps
 * per (row, token) are kq_token_step's, so the results are the row-major
 * kernels' bits. The work per block runs in four parts of 16 unpacked
 * quant vectors, each met by every token of the tile before the next part.
 */
#ifndef PS_KERNELS_AVX512_KQUANT_H
#define PS_KERNELS_AVX512_KQUANT_H

#include "simd_x86.h"

INLINE __m512i bcast4(const int8_t *p) { return _mm512_set1_epi32(ld32((const uint8_t *)p)); }

/* Byte `i` (0..3) of each 32-bit lane as an unsigned / signed int32. */
INLINE __m512i lane_u8(__m512i v, const int i) {
    return _mm512_and_si512(_mm512_srli_epi32(v, 8 * i), _mm512_set1_epi32(0xff));
}
INLINE __m512i lane_s8(__m512i v, const int i) { return _mm512_srai_epi32(_mm512_slli_epi32(v, 24 - 8 * i), 24); }

/* Q4_K packed block: d[16], dmin[16], the 12 scale bytes as 3 dwords, then
 * 32 dwords of quants (dword 8c + k: low nibbles elements 64c + 4k.., high
 * nibbles 64c + 32 + 4k..). */

/* The 8 scales (sc) and mins (mn) of 16 rows, byte j of lane r of sc[j/4]
 * (mn[j/4]) = row r's scale (min) j: kq_scales_q4k on 16 lanes. */
INLINE void pk4k_scales(const uint8_t *p, __m512i sc[2], __m512i mn[2]) {
    const __m512i s0 = _mm512_loadu_si512((const void *)(p + 64)), s1 = _mm512_loadu_si512((const void *)(p + 128));
    const __m512i s2 = _mm512_loadu_si512((const void *)(p + 192));
    const __m512i m6 = _mm512_set1_epi8(63), m4 = _mm512_set1_epi8(0x0f), top = _mm512_set1_epi8(0x30);
    sc[0] = _mm512_and_si512(s0, m6);
    mn[0] = _mm512_and_si512(s1, m6);
    /* (s2 & 0x0f) | ((s0 >> 6) << 4), and for the mins s2's high nibble and s1's top bits */
    sc[1] = _mm512_or_si512(_mm512_and_si512(s2, m4), _mm512_and_si512(_mm512_srli_epi32(s0, 2), top));
    mn[1] = _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi32(s2, 4), m4), _mm512_and_si512(_mm512_srli_epi32(s1, 2), top));
}

/* Part c (elements 64c..64c+63) of a Q4_K block for nt tokens: is[t] +=
 * sc[2c] * dot(low nibbles) + sc[2c+1] * dot(high nibbles). */
INLINE void pk4k_part(const uint8_t *p, int c, __m512i s_lo, __m512i s_hi, const ps_block_q8k *xb, int64_t nb,
                      int32_t nt, __m512i *is) {
    const __m512i m4 = _mm512_set1_epi8(0x0f);
    __m512i lo[8], hi[8];
    for (int k = 0; k < 8; k++) {
        const __m512i v = _mm512_loadu_si512((const void *)(p + PK4K_Q + 64 * (8 * c + k)));
        lo[k] = _mm512_and_si512(v, m4);
        hi[k] = _mm512_and_si512(_mm512_srli_epi16(v, 4), m4);
    }
    for (int32_t t = 0; t < nt; t++, xb += nb) {
        const int8_t *x = xb->qs + 64 * c;
        __m512i a = _mm512_setzero_si512(), b = _mm512_setzero_si512();
        for (int k = 0; k < 8; k++) {
            a = _mm512_dpbusd_epi32(a, lo[k], bcast4(x + 4 * k));
            b = _mm512_dpbusd_epi32(b, hi[k], bcast4(x + 32 + 4 * k));
        }
        is[t] = _mm512_add_epi32(is[t], _mm512_add_epi32(_mm512_mullo_epi32(a, s_lo), _mm512_mullo_epi32(b, s_hi)));
    }
}

/* Q6_K packed block: d[16], then 32 ql dwords, 16 qh dwords, 4 scale dwords
 * (the block's bytes after d... in their order: ql, qh, scales). */

/* Part (h, half) of a Q6_K block: elements 128h + 32j + 16*half + 0..15 for
 * j = 0..3 (sub-block g = 8h + 2j + half, scale sc[g]); is[t] += sum_j
 * sc_g * (dot_g - 32 * bsums_g), the offset folded in per sub-block. */
INLINE void pk6k_part(const uint8_t *p, int h, int half, const __m512i scv[4], const ps_block_q8k *xb, int64_t nb,
                      int32_t nt, __m512i *is) {
    const __m512i m4 = _mm512_set1_epi8(0x0f), m2 = _mm512_set1_epi8(0x30);
    __m512i u[4][4]; /* [j][k]: 4 elements 128h + 32j + 16*half + 4k.. */
    for (int k = 0; k < 4; k++) {
        const int kk = 4 * half + k;
        const __m512i A = _mm512_loadu_si512((const void *)(p + PK6K_QL + 64 * (16 * h + kk)));
        const __m512i B = _mm512_loadu_si512((const void *)(p + PK6K_QL + 64 * (16 * h + 8 + kk)));
        const __m512i H = _mm512_loadu_si512((const void *)(p + PK6K_QH + 64 * (8 * h + kk)));
        u[0][k] = _mm512_or_si512(_mm512_and_si512(A, m4), _mm512_and_si512(_mm512_slli_epi16(H, 4), m2));
        u[1][k] = _mm512_or_si512(_mm512_and_si512(B, m4), _mm512_and_si512(_mm512_slli_epi16(H, 2), m2));
        u[2][k] = _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16(A, 4), m4), _mm512_and_si512(H, m2));
        u[3][k] = _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16(B, 4), m4),
                                  _mm512_and_si512(_mm512_srli_epi16(H, 2), m2));
    }
    for (int32_t t = 0; t < nt; t++, xb += nb) {
        __m512i sum = is[t];
        for (int j = 0; j < 4; j++) {
            const int8_t *x = xb->qs + 128 * h + 32 * j + 16 * half;
            __m512i a = _mm512_set1_epi32(-32 * xb->bsums[8 * h + 2 * j + half]);
            for (int k = 0; k < 4; k++) a = _mm512_dpbusd_epi32(a, u[j][k], bcast4(x + 4 * k));
            sum = _mm512_add_epi32(sum, _mm512_mullo_epi32(a, scv[j]));
        }
        is[t] = sum;
    }
}

/* One 16-row tile against nt tokens: acc[t] = sum over blocks of the float
 * steps; type PS_TYPE_Q4_K or PS_TYPE_Q6_K (quant_avx512.c's gemm_packed
 * runs the tiles). */
INLINE void pk_kq_tile(const uint8_t *tile, int64_t nb, const ps_block_q8k *X, int32_t nt, __m512 *acc,
                       const int32_t type) {
    const size_t tb = (size_t)PS_PACK_ROWS * (type == PS_TYPE_Q4_K ? sizeof(ps_block_q4_k) : sizeof(ps_block_q6_k));
    __m512i is[TOK_TILE];
    __m512 corr[TOK_TILE];
    for (int32_t t = 0; t < nt; t++) corr[t] = _mm512_setzero_ps();
    for (int64_t b = 0; b < nb; b++) {
        const uint8_t *p = tile + (size_t)b * tb;
        for (size_t o = 0; o < tb; o += 64) _mm_prefetch((const char *)(p + 2 * tb + o), _MM_HINT_T0);
        const __m512 D = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)p));
        const ps_block_q8k *xb = X + b;
        for (int32_t t = 0; t < nt; t++) is[t] = _mm512_setzero_si512();
        if (type == PS_TYPE_Q4_K) {
            __m512i sc[2], mn[2];
            pk4k_scales(p, sc, mn);
            for (int c = 0; c < 4; c++)
                pk4k_part(p, c, lane_u8(sc[c / 2], 2 * (c % 2)), lane_u8(sc[c / 2], 2 * (c % 2) + 1), xb, nb, nt, is);
            const __m512 M = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(p + 32)));
            __m512i mv[8];
            for (int g = 0; g < 8; g++) mv[g] = lane_u8(mn[g / 4], g % 4);
            for (int32_t t = 0; t < nt; t++, xb += nb) {
                __m512i ms = _mm512_setzero_si512();
                for (int g = 0; g < 8; g++)
                    ms = _mm512_add_epi32(ms, _mm512_mullo_epi32(mv[g], _mm512_set1_epi32(xb->bsums[2 * g] + xb->bsums[2 * g + 1])));
                const __m512 dx = _mm512_set1_ps(xb->d);
                acc[t] = _mm512_fmadd_ps(_mm512_mul_ps(D, dx), _mm512_cvtepi32_ps(is[t]), acc[t]);
                corr[t] = _mm512_fmadd_ps(_mm512_mul_ps(M, dx), _mm512_cvtepi32_ps(ms), corr[t]);
            }
        } else {
            const __m512i s4[4] = {_mm512_loadu_si512((const void *)(p + PK6K_SC)),
                                   _mm512_loadu_si512((const void *)(p + PK6K_SC + 64)),
                                   _mm512_loadu_si512((const void *)(p + PK6K_SC + 128)),
                                   _mm512_loadu_si512((const void *)(p + PK6K_SC + 192))};
            for (int h = 0; h < 2; h++)
                for (int half = 0; half < 2; half++) {
                    __m512i scv[4];
                    for (int j = 0; j < 4; j++) {
                        const int g = 8 * h + 2 * j + half;
                        scv[j] = lane_s8(s4[g / 4], g % 4);
                    }
                    pk6k_part(p, h, half, scv, xb, nb, nt, is);
                }
            for (int32_t t = 0; t < nt; t++, xb += nb)
                acc[t] = _mm512_fmadd_ps(_mm512_mul_ps(D, _mm512_set1_ps(xb->d)), _mm512_cvtepi32_ps(is[t]), acc[t]);
        }
    }
    for (int32_t t = 0; t < nt; t++) acc[t] = _mm512_sub_ps(acc[t], corr[t]);
}

#endif
