/* simd_x86.h: inline helpers shared by the x86 kernel files (quant_avx2.c,
 * quant_avx512.c and the kernels_x86_*.h bodies they both compile). Each
 * file is built with its level's flags, so a helper such as dot4_u8s8 uses
 * VNNI's dpbusd where the level has it and maddubs/madd where it does not,
 * with the same exact integer result. */
#ifndef PS_SIMD_X86_H
#define PS_SIMD_X86_H

#include <immintrin.h>
#include <math.h>
#include <string.h>

#include "quant.h"

#define INLINE static inline __attribute__((always_inline))

INLINE float hsum(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

INLINE float fp16(uint16_t h) { return _cvtsh_ss(h); }

/* 16 bytes of nibbles -> 32 bytes 0..15 in element order (low nibbles first). */
INLINE __m256i q4_unpack(const uint8_t *qs) {
    const __m128i t = _mm_loadu_si128((const __m128i *)qs);
    const __m256i v = _mm256_set_m128i(_mm_srli_epi16(t, 4), t);
    return _mm256_and_si256(v, _mm256_set1_epi8(0x0f));
}

/* Tokens per tile: per block, the decoded weights stay in registers while up
 * to TOK_TILE tokens meet them. */
#define TOK_TILE 64

INLINE uint16_t ld16(const uint8_t *p) { uint16_t v; memcpy(&v, p, 2); return v; }
INLINE int32_t ld32(const uint8_t *p) { int32_t v; memcpy(&v, p, 4); return v; }

/* Half-precision scale at byte offset off of each of 8 rows, as floats. */
INLINE __m256 scales_d(const uint8_t *const row[8], size_t off) {
    return _mm256_cvtph_ps(_mm_setr_epi16(
        (short)ld16(row[0] + off), (short)ld16(row[1] + off), (short)ld16(row[2] + off),
        (short)ld16(row[3] + off), (short)ld16(row[4] + off), (short)ld16(row[5] + off),
        (short)ld16(row[6] + off), (short)ld16(row[7] + off)));
}

/* Q4_1's adjacent (d, m) pairs of 8 rows: one 32-bit load per row. */
INLINE void scales_dm(const uint8_t *const row[8], size_t off, __m256 *d, __m256 *m) {
    __m256i v = _mm256_setr_epi32(ld32(row[0] + off), ld32(row[1] + off), ld32(row[2] + off),
                                  ld32(row[3] + off), ld32(row[4] + off), ld32(row[5] + off),
                                  ld32(row[6] + off), ld32(row[7] + off));
    const __m256i split = _mm256_setr_epi8(0, 1, 4, 5, 8, 9, 12, 13, 2, 3, 6, 7, 10, 11, 14, 15,
                                           0, 1, 4, 5, 8, 9, 12, 13, 2, 3, 6, 7, 10, 11, 14, 15);
    v = _mm256_shuffle_epi8(v, split);     /* per lane: d d d d m m m m */
    v = _mm256_permute4x64_epi64(v, 0xd8); /* d0..d7 | m0..m7 */
    *d = _mm256_cvtph_ps(_mm256_castsi256_si128(v));
    *m = _mm256_cvtph_ps(_mm256_extracti128_si256(v, 1));
}

/* Row list convention (quant.h): list position j is matrix row idx[j], or j
 * itself when idx is NULL; its result goes to output column of the same number. */
INLINE int64_t row_at(const int32_t *idx, int64_t j) { return idx ? idx[j] : j; }

INLINE void rows8(const uint8_t *W, size_t rb, const int32_t *idx, int64_t r, int64_t r1,
                  const uint8_t *row[8]) {
    for (int i = 0; i < 8; i++) row[i] = W + (size_t)row_at(idx, r + i < r1 ? r + i : r1 - 1) * rb;
}

/* Sums of 32-bit lanes of 8 vectors. */
INLINE __m256i rowsum8_epi32(const __m256i p[8]) {
    const __m256i h0 = _mm256_hadd_epi32(_mm256_hadd_epi32(p[0], p[1]), _mm256_hadd_epi32(p[2], p[3]));
    const __m256i h1 = _mm256_hadd_epi32(_mm256_hadd_epi32(p[4], p[5]), _mm256_hadd_epi32(p[6], p[7]));
    return _mm256_add_epi32(_mm256_permute2x128_si256(h0, h1, 0x20),
                            _mm256_permute2x128_si256(h0, h1, 0x31));
}

/* The 8 rows of a tile are one contiguous stretch of 8*rb bytes, read as 8
 * interleaved short streams the hardware prefetcher does not pick up well.
 * While working on block b, fetch the same share of the tile PF_TILES ahead,
 * so the whole next stretch is requested over the current tile's blocks.
 * (Past the end of the matrix this is harmless: prefetches do not fault.) */
#define PF_TILES 2
INLINE void prefetch_ahead(const uint8_t *tile, size_t rb, size_t off, size_t bb) {
    const uint8_t *p = tile + PF_TILES * 8 * rb + off * 8;
    for (size_t k = 0; k < 8 * bb; k += 64) _mm_prefetch((const char *)(p + k), _MM_HINT_T0);
}

/* For a row list the next tiles are anywhere: fetch block b of each row of
 * the tile PF_TILES ahead. */
INLINE void prefetch_tile(const uint8_t *W, size_t rb, const int32_t *idx, int64_t r, int64_t r1,
                          const uint8_t *tile, size_t off, size_t bb) {
    if (!idx) {
        prefetch_ahead(tile, rb, off, bb);
        return;
    }
    /* once per cache line: when block b's last byte opens a new one */
    if (off && (off + bb - 1) / 64 == (off - 1) / 64) return;
    const int64_t n = r + (PF_TILES + 1) * 8 < r1 ? r + (PF_TILES + 1) * 8 : r1;
    for (int64_t j = r + PF_TILES * 8; j < n; j++)
        _mm_prefetch((const char *)(W + (size_t)idx[j] * rb + off + bb - 1), _MM_HINT_T0);
}

/* Lanes 0..7 = list positions r..r+7 (the first `valid` are real) of token row y. */
INLINE void store8(float *y, const int32_t *idx, int64_t r, __m256 v, int64_t valid) {
    if (!idx && valid >= 8) {
        _mm256_storeu_ps(y + r, v);
        return;
    }
    float tmp[8];
    _mm256_storeu_ps(tmp, v);
    for (int64_t i = 0; i < valid && i < 8; i++) y[row_at(idx, r + i)] = tmp[i];
}

INLINE __m256i bcast8(const int8_t *p) {
    int64_t v;
    memcpy(&v, p, 8);
    return _mm256_set1_epi64x(v);
}

/* Per 32-bit lane: the sum over k of the four byte products of v[k]
 * (unsigned) and x[k] (signed). Exact on both paths: VNNI's dpbusd, or
 * maddubs (pairs, no saturation for these ranges) then madd. */
INLINE __m256i dot4_u8s8(const __m256i v[4], const __m256i x[4]) {
#ifdef __AVX512VNNI__
    const __m256i z = _mm256_setzero_si256();
    const __m256i a = _mm256_dpbusd_epi32(_mm256_dpbusd_epi32(z, v[0], x[0]), v[2], x[2]);
    const __m256i b = _mm256_dpbusd_epi32(_mm256_dpbusd_epi32(z, v[1], x[1]), v[3], x[3]);
    return _mm256_add_epi32(a, b);
#else
    /* int16 sums over the 4 groups fit: |sum| <= 4*2*15*128 < 2^15 (Q4) */
    const __m256i s = _mm256_add_epi16(
        _mm256_add_epi16(_mm256_maddubs_epi16(v[0], x[0]), _mm256_maddubs_epi16(v[1], x[1])),
        _mm256_add_epi16(_mm256_maddubs_epi16(v[2], x[2]), _mm256_maddubs_epi16(v[3], x[3])));
    return _mm256_madd_epi16(s, _mm256_set1_epi16(1));
#endif
}

/* Per 32-bit lane: the sum of the four byte products of |w| and x signed as
 * w (Q8_0 weights are signed; maddubs/dpbusd want one unsigned side). */
INLINE __m256i dot_s8s8(__m256i aw, __m256i w, __m256i x) {
#ifdef __AVX512VNNI__
    return _mm256_dpbusd_epi32(_mm256_setzero_si256(), aw, _mm256_sign_epi8(x, w));
#else
    return _mm256_madd_epi16(_mm256_maddubs_epi16(aw, _mm256_sign_epi8(x, w)), _mm256_set1_epi16(1));
#endif
}

/* ---- float weights and dequantization helpers ---------------------------- */
enum { FT_F32, FT_F16, FT_BF16 };

INLINE __m256 load8(const uint8_t *row, int64_t k, const int ft) {
    if (ft == FT_F32) return _mm256_loadu_ps((const float *)row + k);
    const __m128i h = _mm_loadu_si128((const __m128i *)((const uint16_t *)row + k));
    if (ft == FT_F16) return _mm256_cvtph_ps(h);
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}

INLINE float load1(const uint8_t *row, int64_t k, const int ft) {
    if (ft == FT_F32) return ((const float *)row)[k];
    const uint16_t h = ((const uint16_t *)row)[k];
    if (ft == FT_F16) return fp16(h);
    const uint32_t bits = (uint32_t)h << 16;
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

INLINE __m256 q8_to_f32(const int8_t *q) {
    return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)q)));
}

/* The 32 values of a Q4 block as floats: (q - off) for Q4_0, q for Q4_1. */
INLINE void q4_to_f32(const uint8_t *qs, __m256 out[4], int off) {
    const __m256i q = q4_unpack(qs);
    const __m256i o = _mm256_set1_epi8((char)off);
    const __m256i s = _mm256_sub_epi8(q, o);
    const __m128i lo = _mm256_castsi256_si128(s), hi = _mm256_extracti128_si256(s, 1);
    out[0] = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(lo));
    out[1] = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(lo, 8)));
    out[2] = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(hi));
    out[3] = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(hi, 8)));
}

/* The 32 nibbles of a Q4 block as int32, in groups of 8 elements
 * (0..7 = low nibbles of bytes 0..7, 8..15, 16..23 = high nibbles, 24..31). */
INLINE void q4_groups(const uint8_t *qs, __m256i g[4]) {
    const __m256i lo = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)qs));
    const __m256i hi = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(qs + 8)));
    const __m256i m = _mm256_set1_epi32(0x0f);
    g[0] = _mm256_and_si256(lo, m);
    g[1] = _mm256_and_si256(hi, m);
    g[2] = _mm256_srli_epi32(lo, 4);
    g[3] = _mm256_srli_epi32(hi, 4);
}

/* type: 0 = Q4_0, 1 = Q4_1, 2 = Q8_0 */
/* Block i of row src of a Q4_0 / Q4_1 / Q8_0 matrix (type 0 / 1 / 2), with
 * its scales times a: *da = d * a and, for Q4_1, *ma = m * a (axpy rows). */
INLINE const uint8_t *scaled_block(const void *src, int64_t i, const int type, float a, float *da, float *ma) {
    const size_t bb = type == 0 ? sizeof(ps_block_q4_0) : type == 1 ? sizeof(ps_block_q4_1) : sizeof(ps_block_q8_0);
    const uint8_t *blk = (const uint8_t *)src + (size_t)i * bb;
    uint16_t h[2] = {0, 0};
    memcpy(h, blk, type == 1 ? 4 : 2);
    *da = fp16(h[0]) * a;
    *ma = type == 1 ? fp16(h[1]) * a : 0.0f;
    return blk;
}

/* Table entries from kernel bodies whose last argument picks the block type:
 * a ps_gemm_fn and a ps_gemm_packed_fn. */
#define GEMM_OF(name, body, arg)                                                                       \
    static void name(const uint8_t *W, size_t rb, int64_t n_cols, const int32_t *idx, int64_t r0,      \
                     int64_t r1, const void *X, int32_t n_tok, float *Y, int64_t ldy) {                 \
        body(W, rb, n_cols, idx, r0, r1, X, n_tok, Y, ldy, arg);                                       \
    }
#define GEMM_PACKED_OF(name, body, arg)                                                                \
    static void name(const uint8_t *P, int64_t n_cols, int64_t r0, int64_t r1, const void *X,         \
                     int32_t n_tok, float *Y, int64_t ldy) {                                           \
        body(P, n_cols, r0, r1, X, n_tok, Y, ldy, arg);                                                \
    }

/* The packed products both x86 levels have, from a driver whose last
 * argument is the ggml type id. */
#define GEMM_PACKED_Q45K_OF(body)                                                                      \
    GEMM_PACKED_OF(gemm_q4_0_packed, body, PS_TYPE_Q4_0)                                               \
    GEMM_PACKED_OF(gemm_q4_1_packed, body, PS_TYPE_Q4_1)                                               \
    GEMM_PACKED_OF(gemm_q5_0_packed, body, PS_TYPE_Q5_0)                                               \
    GEMM_PACKED_OF(gemm_q5_1_packed, body, PS_TYPE_Q5_1)                                               \
    GEMM_PACKED_OF(gemm_q4_k_packed, body, PS_TYPE_Q4_K)                                               \
    GEMM_PACKED_OF(gemm_q6_k_packed, body, PS_TYPE_Q6_K)

/* name (one row) and name##_4 (four rows) from one NR-row axpy body; the
 * three block types' pairs from a body whose last argument picks the type
 * (0 Q4_0, 1 Q4_1, 2 Q8_0). */
#define AXPY_PAIR(name, body, arg)                                                               \
    static void name(const void *src, float a, float *y, int64_t n) {                            \
        const void *s1[1] = {src};                                                               \
        body(s1, &a, 1, y, n, arg);                                                              \
    }                                                                                            \
    static void name##_4(const void *const src[4], const float a[4], float *y, int64_t n) {     \
        body(src, a, 4, y, n, arg);                                                              \
    }
#define AXPY_QUANT_PAIRS(body) \
    AXPY_PAIR(axpy_q4_0, body, 0) AXPY_PAIR(axpy_q4_1, body, 1) AXPY_PAIR(axpy_q8_0, body, 2)

#endif
