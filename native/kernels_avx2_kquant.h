/* kernels_avx2_kquant.h: packed (row-interleaved, quant.h) Q4_K and Q6_K
 * products for the AVX2 level, on half tiles of 8 rows (one row per 32-bit
 * lane); included by quant_avx2.c.
 *
 * The packed layout is kernels_avx512_kquant.h's; half tile h reads bytes
 * 32h.. of every 64-byte group (16h.. of the fp16 arrays). Without dpbusd,
 * a sub-block's products are summed by maddubs into int16 pairs (exact:
 * 8 pairs of 4-bit, or 2 of 6-bit quants, stay below 2^15), and madd
 * applies the sub-block's scale (each int16 scale twice per lane), giving
 * the same exact integer sums per row and block as the other kernels; the
 * float steps per (row, token) are kq_token_step's, so the results are
 * theirs bit for bit. A sub-block's quants are unpacked once for all the
 * tokens of the tile.
 */
#ifndef PS_KERNELS_AVX2_KQUANT_H
#define PS_KERNELS_AVX2_KQUANT_H

#include "simd_x86.h"

INLINE __m256i ld8(const uint8_t *p) { return _mm256_loadu_si256((const __m256i *)p); }
INLINE __m256i bcast4_8(const int8_t *p) { return _mm256_set1_epi32(ld32((const uint8_t *)p)); }

/* Byte i of each lane as the int16 pair (v_i, v_i) (unsigned), or bytes i, i+1
 * as (v_i, v_{i+1}) sign-extended. */
INLINE __m256i pair_u8(__m256i v, const int i) {
    const char a = (char)i, z = (char)0x80;
    return _mm256_shuffle_epi8(v, _mm256_setr_epi8(a, z, a, z, a + 4, z, a + 4, z, a + 8, z, a + 8, z, a + 12, z,
                                                   a + 12, z, a, z, a, z, a + 4, z, a + 4, z, a + 8, z, a + 8, z,
                                                   a + 12, z, a + 12, z));
}
INLINE __m256i pair_s8(__m256i v, const int i) {
    const char a = (char)i, b = (char)(i + 1), z = (char)0x80;
    return _mm256_srai_epi16(_mm256_shuffle_epi8(v, _mm256_setr_epi8(z, a, z, b, z, a + 4, z, b + 4, z, a + 8, z, b + 8, z,
                                                                      a + 12, z, b + 12, z, a, z, b, z, a + 4, z, b + 4,
                                                                      z, a + 8, z, b + 8, z, a + 12, z, b + 12)),
                             8);
}
INLINE __m256i pair_s8_same(__m256i v, const int i) { /* (v_i, v_i) sign-extended */
    const char a = (char)i, z = (char)0x80;
    return _mm256_srai_epi16(_mm256_shuffle_epi8(v, _mm256_setr_epi8(z, a, z, a, z, a + 4, z, a + 4, z, a + 8, z, a + 8, z,
                                                                      a + 12, z, a + 12, z, a, z, a, z, a + 4, z, a + 4,
                                                                      z, a + 8, z, a + 8, z, a + 12, z, a + 12)),
                             8);
}

/* One half tile (8 rows at p's half h) of one block against nt tokens:
 * is[t] = the block's sum_j s_j (u.x)_j (Q6_K: minus its offset term), ms[t]
 * = Q4_K's sum_j m_j bsums_j. */
INLINE void pk8_q4k_block(const uint8_t *p, int h, const ps_block_q8k *xb, int64_t nb, int32_t nt, __m256i *is,
                          __m256i *ms) {
    const __m256i m4 = _mm256_set1_epi8(0x0f), m6 = _mm256_set1_epi8(63), top = _mm256_set1_epi8(0x30);
    const __m256i s0 = ld8(p + 64 + 32 * h), s1 = ld8(p + 128 + 32 * h), s2 = ld8(p + 192 + 32 * h);
    /* kq_scales_q4k per lane: byte j of sc[j/4] / mn[j/4] */
    const __m256i sc[2] = {_mm256_and_si256(s0, m6),
                           _mm256_or_si256(_mm256_and_si256(s2, m4), _mm256_and_si256(_mm256_srli_epi32(s0, 2), top))};
    const __m256i mn[2] = {_mm256_and_si256(s1, m6),
                           _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi32(s2, 4), m4),
                                           _mm256_and_si256(_mm256_srli_epi32(s1, 2), top))};
    for (int32_t t = 0; t < nt; t++) is[t] = ms[t] = _mm256_setzero_si256();
#pragma GCC unroll 8
    for (int g = 0; g < 8; g++) { /* elements 32g + 4k + j: dword 8(g/2) + k, low or high nibbles */
        __m256i u[8];
        for (int k = 0; k < 8; k++) {
            const __m256i v = ld8(p + PK4K_Q + 64 * (8 * (g / 2) + k) + 32 * h);
            u[k] = _mm256_and_si256(g % 2 ? _mm256_srli_epi16(v, 4) : v, m4);
        }
        const __m256i s16 = pair_u8(sc[g / 4], g % 4);
        const ps_block_q8k *x = xb;
        for (int32_t t = 0; t < nt; t++, x += nb) {
            __m256i s = _mm256_maddubs_epi16(u[0], bcast4_8(x->qs + 32 * g));
            for (int k = 1; k < 8; k++) s = _mm256_add_epi16(s, _mm256_maddubs_epi16(u[k], bcast4_8(x->qs + 32 * g + 4 * k)));
            is[t] = _mm256_add_epi32(is[t], _mm256_madd_epi16(s, s16));
        }
    }
    __m256i m16[8];
    for (int g = 0; g < 8; g++) m16[g] = pair_u8(mn[g / 4], g % 4);
    const ps_block_q8k *x = xb;
    for (int32_t t = 0; t < nt; t++, x += nb) /* (m_g, m_g) . (bsums 2g, 2g+1) */
        for (int g = 0; g < 8; g++)
            ms[t] = _mm256_add_epi32(ms[t], _mm256_madd_epi16(m16[g], _mm256_set1_epi32(ld32((const uint8_t *)(x->bsums + 2 * g)))));
}

INLINE void pk8_q6k_block(const uint8_t *p, int h, const ps_block_q8k *xb, int64_t nb, int32_t nt, __m256i *is) {
    const __m256i m4 = _mm256_set1_epi8(0x0f), m2 = _mm256_set1_epi8(0x30);
    __m256i s4[4];
    for (int i = 0; i < 4; i++) s4[i] = ld8(p + PK6K_SC + 64 * i + 32 * h);
    for (int32_t t = 0; t < nt; t++) is[t] = _mm256_setzero_si256();
#pragma GCC unroll 16 /* (the constants per g must fold: 3x faster) */
    for (int g = 0; g < 16; g++) { /* elements 16g + 4k + j = 128hh + 32j + 16half + 4k + j */
        const int hh = g / 8, j = (g % 8) / 2, half = g % 2;
        __m256i u[4];
        for (int k = 0; k < 4; k++) {
            const int kk = 4 * half + k;
            const __m256i L = ld8(p + PK6K_QL + 64 * (16 * hh + 8 * (j % 2) + kk) + 32 * h);
            const __m256i H = ld8(p + PK6K_QH + 64 * (8 * hh + kk) + 32 * h);
            const __m256i lo = _mm256_and_si256(j < 2 ? L : _mm256_srli_epi16(L, 4), m4);
            const __m256i hb = j == 0 ? _mm256_slli_epi16(H, 4) : j == 1 ? _mm256_slli_epi16(H, 2)
                               : j == 2 ? H : _mm256_srli_epi16(H, 2);
            u[k] = _mm256_or_si256(lo, _mm256_and_si256(hb, m2));
        }
        const __m256i s16 = pair_s8_same(s4[g / 4], g % 4);
        const ps_block_q8k *x = xb;
        for (int32_t t = 0; t < nt; t++, x += nb) {
            const int8_t *xq = x->qs + 16 * g;
            const __m256i a = _mm256_add_epi16(_mm256_maddubs_epi16(u[0], bcast4_8(xq)), _mm256_maddubs_epi16(u[1], bcast4_8(xq + 4)));
            const __m256i b = _mm256_add_epi16(_mm256_maddubs_epi16(u[2], bcast4_8(xq + 8)), _mm256_maddubs_epi16(u[3], bcast4_8(xq + 12)));
            is[t] = _mm256_add_epi32(is[t], _mm256_add_epi32(_mm256_madd_epi16(a, s16), _mm256_madd_epi16(b, s16)));
        }
    }
    __m256i sp[8]; /* (s_2p, s_2p+1) */
    for (int q = 0; q < 8; q++) sp[q] = pair_s8(s4[q / 2], 2 * (q % 2));
    const ps_block_q8k *x = xb;
    for (int32_t t = 0; t < nt; t++, x += nb) { /* the offset: 32 * sum_g s_g bsums_g */
        __m256i o = _mm256_setzero_si256();
        for (int q = 0; q < 8; q++)
            o = _mm256_add_epi32(o, _mm256_madd_epi16(sp[q], _mm256_set1_epi32(ld32((const uint8_t *)(x->bsums + 2 * q)))));
        is[t] = _mm256_sub_epi32(is[t], _mm256_slli_epi32(o, 5));
    }
}

/* One 16-row tile against nt tokens: acc[2t + h] for rows 8h..8h+7. */
INLINE void pk8_kq_tile(const uint8_t *tile, int64_t nb, const ps_block_q8k *X, int32_t nt, __m256 *acc,
                        const int32_t type) {
    const size_t tb = (size_t)PS_PACK_ROWS * (type == PS_TYPE_Q4_K ? sizeof(ps_block_q4_k) : sizeof(ps_block_q6_k));
    __m256i is[TOK_TILE], ms[TOK_TILE];
    __m256 corr[2 * TOK_TILE];
    for (int32_t t = 0; t < 2 * nt; t++) corr[t] = _mm256_setzero_ps();
    for (int64_t b = 0; b < nb; b++) {
        const uint8_t *p = tile + (size_t)b * tb;
        for (size_t o = 0; o < tb; o += 64) _mm_prefetch((const char *)(p + 2 * tb + o), _MM_HINT_T0);
        for (int h = 0; h < 2; h++) {
            const __m256 D = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(p + 16 * h)));
            if (type == PS_TYPE_Q4_K) pk8_q4k_block(p, h, X + b, nb, nt, is, ms);
            else pk8_q6k_block(p, h, X + b, nb, nt, is);
            const ps_block_q8k *x = X + b;
            for (int32_t t = 0; t < nt; t++, x += nb) {
                const __m256 dx = _mm256_set1_ps(x->d);
                acc[2 * t + h] = _mm256_fmadd_ps(_mm256_mul_ps(D, dx), _mm256_cvtepi32_ps(is[t]), acc[2 * t + h]);
                if (type == PS_TYPE_Q4_K) {
                    const __m256 M = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(p + 32 + 16 * h)));
                    corr[2 * t + h] = _mm256_fmadd_ps(_mm256_mul_ps(M, dx), _mm256_cvtepi32_ps(ms[t]), corr[2 * t + h]);
                }
            }
        }
    }
    for (int32_t t = 0; t < 2 * nt; t++) acc[t] = _mm256_sub_ps(acc[t], corr[t]);
}

#endif
