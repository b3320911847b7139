/* quant_avx2.c: AVX2/FMA/F16C kernels (compiled with those flags only here;
 * called only after a cpuid check, see ps_simd_supported). quant_avx512.c
 * compiles this file a second time for AVX-512 (F/BW/VL/VNNI), where the
 * integer sums use VNNI's dpbusd, and adds the kernels only AVX-512 has.
 *
 *   integer kernels (Q4_0, Q4_1, Q8_0 x q8a activations): 8 weight rows per
 *     tile, one accumulator lane per row; exact integer block sums, then the
 *     same float steps for every lane;
 *   float kernels (F32, F16, BF16): 4 rows x 2 tokens, one 8-lane FMA chain
 *     per (row, token), then a horizontal sum;
 *   dequantization (bit-exact with gguf-py) and axpy for accum_rows.
 * A (row, token) result goes through the same operations in the same order
 * whatever tile, thread or batch size it is computed in, so results do not
 * depend on how work was split. */
#include <immintrin.h>
#include <math.h>
#include <string.h>

#include "quant.h"

#ifndef PS_QUANT_AVX512 /* level-independent helpers: built once, in the AVX2 object */
/* Same float operations as ps_quantize_q8a_scalar, so the bytes are identical. */
void ps_quantize_q8a_avx2(const float *x, ps_block_q8a *y, int64_t n) {
    const __m256 sign = _mm256_set1_ps(-0.0f);
    for (int64_t b = 0; b < n / PS_QK; b++, x += PS_QK) {
        __m256 v0 = _mm256_loadu_ps(x), v1 = _mm256_loadu_ps(x + 8);
        __m256 v2 = _mm256_loadu_ps(x + 16), v3 = _mm256_loadu_ps(x + 24);
        __m256 m = _mm256_max_ps(_mm256_max_ps(_mm256_andnot_ps(sign, v0), _mm256_andnot_ps(sign, v1)),
                                 _mm256_max_ps(_mm256_andnot_ps(sign, v2), _mm256_andnot_ps(sign, v3)));
        __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
        m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
        m4 = _mm_max_ss(m4, _mm_movehdup_ps(m4));
        const float amax = _mm_cvtss_f32(m4);
        const float d = amax / 127.0f;
        const float id = amax != 0.0f ? 127.0f / amax : 0.0f;
        const __m256 mul = _mm256_set1_ps(id);
        __m256i i0 = _mm256_cvtps_epi32(_mm256_round_ps(_mm256_mul_ps(v0, mul), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
        __m256i i1 = _mm256_cvtps_epi32(_mm256_round_ps(_mm256_mul_ps(v1, mul), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
        __m256i i2 = _mm256_cvtps_epi32(_mm256_round_ps(_mm256_mul_ps(v2, mul), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
        __m256i i3 = _mm256_cvtps_epi32(_mm256_round_ps(_mm256_mul_ps(v3, mul), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
        /* block sum from the int32 lanes (exact) */
        __m256i s = _mm256_add_epi32(_mm256_add_epi32(i0, i1), _mm256_add_epi32(i2, i3));
        __m128i s4 = _mm_add_epi32(_mm256_castsi256_si128(s), _mm256_extracti128_si256(s, 1));
        s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0x4e));
        s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0xb1));
        /* pack to int8 in element order: packs interleave 128-bit lanes, fix with a permute */
        __m256i p01 = _mm256_packs_epi32(i0, i1), p23 = _mm256_packs_epi32(i2, i3);
        __m256i p = _mm256_packs_epi16(p01, p23);
        p = _mm256_permutevar8x32_epi32(p, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
        _mm256_storeu_si256((__m256i *)y[b].qs, p);
        y[b].d = d;
        y[b].s = d * (float)_mm_cvtsi128_si32(s4);
    }
}
#endif

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

/* ---- integer kernels: 8 weight rows at a time ------------------------------
 * Per block, the 8 rows' integer sums end up in one vector (lane = row), so
 * the scales are applied to 8 rows at once and each accumulator lane is one
 * (row, token) result: no horizontal sum at the end, and a row's result does
 * not depend on the tile it was computed in. A tile past the end of the row
 * range repeats the last row (computed, never stored). Per block the decoded
 * weights stay in registers while up to TOK_TILE tokens meet them. */
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

/* Lanes of the Q4 kernel's accumulator hold rows in this order (see below);
 * ROW_UNPERM puts them back in natural order for the store. */
static const int ROW_ORDER[8] = {0, 2, 4, 6, 1, 3, 5, 7};
#define ROW_UNPERM _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7)

/* 4 rows' nibbles of one block, regrouped so that 64-bit slot s of v[k]
 * holds elements 8k..8k+7 of row (0, 2, 1, 3)[s]: then each v[k] meets
 * the same 8 activation bytes in every slot, and the sum over k is a plain
 * vertical add (rows stay in their lanes). */
INLINE void q4_regroup(const uint8_t *a0, const uint8_t *a1, const uint8_t *a2, const uint8_t *a3,
                       __m256i v[4]) {
    const __m256i m = _mm256_set1_epi8(0x0f);
    const __m256i u = _mm256_loadu2_m128i((const __m128i *)a1, (const __m128i *)a0);
    const __m256i u2 = _mm256_loadu2_m128i((const __m128i *)a3, (const __m128i *)a2);
    const __m256i lo = _mm256_unpacklo_epi64(u, u2); /* bytes 0..7: elements 0..7 and 16..23 */
    const __m256i hi = _mm256_unpackhi_epi64(u, u2); /* bytes 8..15: elements 8..15 and 24..31 */
    v[0] = _mm256_and_si256(lo, m);
    v[1] = _mm256_and_si256(hi, m);
    v[2] = _mm256_and_si256(_mm256_srli_epi16(lo, 4), m);
    v[3] = _mm256_and_si256(_mm256_srli_epi16(hi, 4), m);
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

/* Q4_0 / Q4_1: acc += dw*dx * sum(q*x) + c*s with c = m or -8*dw (quant.h).
 * Per token and block: one dot4_u8s8 per 4 rows, one hadd for all 8. */
INLINE void gemm_q4(const uint8_t *W, size_t rb, int64_t n_cols, const int32_t *idx, int64_t r0, int64_t r1,
                    const void *Xv, int32_t n_tok, float *Y, int64_t ldy, const int has_min) {
    const int64_t nb = n_cols / PS_QK;
    const size_t bb = has_min ? sizeof(ps_block_q4_1) : sizeof(ps_block_q4_0);
    const size_t qoff = has_min ? 4 : 2;
    const ps_block_q8a *X = Xv;
    __m256 acc[TOK_TILE];
    for (int64_t r = r0; r < r1; r += 8) {
        const uint8_t *row[8], *prow[8];
        rows8(W, rb, idx, r, r1, row);
        for (int i = 0; i < 8; i++) prow[i] = row[ROW_ORDER[i]];
        for (int32_t t0 = 0; t0 < n_tok; t0 += TOK_TILE) {
            const int32_t nt = n_tok - t0 < TOK_TILE ? n_tok - t0 : TOK_TILE;
            for (int32_t t = 0; t < nt; t++) acc[t] = _mm256_setzero_ps();
            for (int64_t b = 0; b < nb; b++) {
                const size_t off = (size_t)b * bb;
                prefetch_tile(W, rb, idx, r, r1, row[0], off, bb);
                __m256 d, c;
                if (has_min) {
                    scales_dm(prow, off, &d, &c);
                } else {
                    d = scales_d(prow, off);
                    c = _mm256_mul_ps(d, _mm256_set1_ps(-8.0f));
                }
                __m256i v[4], w[4];
                q4_regroup(row[0] + off + qoff, row[1] + off + qoff, row[2] + off + qoff, row[3] + off + qoff, v);
                q4_regroup(row[4] + off + qoff, row[5] + off + qoff, row[6] + off + qoff, row[7] + off + qoff, w);
                const ps_block_q8a *xb = X + (size_t)t0 * nb + b;
                for (int32_t t = 0; t < nt; t++, xb += nb) {
                    const __m256i x[4] = {bcast8(xb->qs), bcast8(xb->qs + 8), bcast8(xb->qs + 16),
                                          bcast8(xb->qs + 24)};
                    /* lanes: rows 0 2 4 6 | 1 3 5 7 */
                    const __m256i isum = _mm256_hadd_epi32(dot4_u8s8(v, x), dot4_u8s8(w, x));
                    acc[t] = _mm256_fmadd_ps(_mm256_mul_ps(d, _mm256_set1_ps(xb->d)), _mm256_cvtepi32_ps(isum), acc[t]);
                    acc[t] = _mm256_fmadd_ps(c, _mm256_set1_ps(xb->s), acc[t]);
                }
            }
            for (int32_t t = 0; t < nt; t++)
                store8(Y + (size_t)(t0 + t) * ldy, idx, r, _mm256_permutevar8x32_ps(acc[t], ROW_UNPERM), r1 - r);
        }
    }
}

/* Q8_0: acc += dw*dx * sum(w*x); maddubs takes |w| and x with w's sign. */
/* Q8_0 for one token: each row's products reduced by a horizontal-add tree. */
static void gemm_q8_0_vec(const uint8_t *W, size_t rb, int64_t n_cols, const int32_t *idx, int64_t r0, int64_t r1,
                          const void *Xv, int32_t n_tok, float *Y, int64_t ldy) {
    const int64_t nb = n_cols / PS_QK;
    const ps_block_q8a *X = Xv;
    __m256 acc[TOK_TILE];
    for (int64_t r = r0; r < r1; r += 8) {
        const uint8_t *row[8];
        rows8(W, rb, idx, r, r1, row);
        for (int32_t t0 = 0; t0 < n_tok; t0 += TOK_TILE) {
            const int32_t nt = n_tok - t0 < TOK_TILE ? n_tok - t0 : TOK_TILE;
            for (int32_t t = 0; t < nt; t++) acc[t] = _mm256_setzero_ps();
            for (int64_t b = 0; b < nb; b++) {
                const size_t off = (size_t)b * sizeof(ps_block_q8_0);
                prefetch_tile(W, rb, idx, r, r1, row[0], off, sizeof(ps_block_q8_0));
                const __m256 d = scales_d(row, off);
                /* |w| in registers (w = -128 gives 128, fine as unsigned); the signs
                 * are re-read from L1 per token */
                __m256i aw[8];
                for (int i = 0; i < 8; i++) aw[i] = _mm256_abs_epi8(_mm256_loadu_si256((const __m256i *)(row[i] + off + 2)));
                const ps_block_q8a *xb = X + (size_t)t0 * nb + b;
                for (int32_t t = 0; t < nt; t++, xb += nb) {
                    const __m256i y = _mm256_loadu_si256((const __m256i *)xb->qs);
                    __m256i p[8];
                    for (int i = 0; i < 8; i++) {
                        const __m256i w = _mm256_loadu_si256((const __m256i *)(row[i] + off + 2));
                        p[i] = dot_s8s8(aw[i], w, y);
                    }
                    const __m256 isum = _mm256_cvtepi32_ps(rowsum8_epi32(p));
                    acc[t] = _mm256_fmadd_ps(_mm256_mul_ps(d, _mm256_set1_ps(xb->d)), isum, acc[t]);
                }
            }
            for (int32_t t = 0; t < nt; t++) store8(Y + (size_t)(t0 + t) * ldy, idx, r, acc[t], r1 - r);
        }
    }
}

/* 4 rows' 32-byte blocks transposed in 64-bit pieces: slot s of v[k] holds
 * bytes 8k..8k+7 of row s (as q4_regroup, natural row order). */
INLINE void q8_regroup(const uint8_t *a0, const uint8_t *a1, const uint8_t *a2, const uint8_t *a3,
                       __m256i v[4]) {
    const __m256i A0 = _mm256_loadu_si256((const __m256i *)a0), A1 = _mm256_loadu_si256((const __m256i *)a1);
    const __m256i A2 = _mm256_loadu_si256((const __m256i *)a2), A3 = _mm256_loadu_si256((const __m256i *)a3);
    const __m256i t0 = _mm256_unpacklo_epi64(A0, A1), t1 = _mm256_unpackhi_epi64(A0, A1);
    const __m256i t2 = _mm256_unpacklo_epi64(A2, A3), t3 = _mm256_unpackhi_epi64(A2, A3);
    v[0] = _mm256_permute2x128_si256(t0, t2, 0x20);
    v[1] = _mm256_permute2x128_si256(t1, t3, 0x20);
    v[2] = _mm256_permute2x128_si256(t0, t2, 0x31);
    v[3] = _mm256_permute2x128_si256(t1, t3, 0x31);
}

/* Q8_0 for several tokens: rows regrouped once per block (as the Q4 kernel),
 * then per token 8 sign+maddubs+madd, vertical adds and one hadd. The integer
 * sums are exact, and the float steps per lane are those of gemm_q8_0_vec,
 * so both give identical results. Lanes hold rows 0 1 4 5 | 2 3 6 7. */
static void gemm_q8_0_mat(const uint8_t *W, size_t rb, int64_t n_cols, const int32_t *idx, int64_t r0, int64_t r1,
                          const void *Xv, int32_t n_tok, float *Y, int64_t ldy) {
    static const int order[8] = {0, 1, 4, 5, 2, 3, 6, 7};
    const __m256i unperm = _mm256_setr_epi32(0, 1, 4, 5, 2, 3, 6, 7);
    const int64_t nb = n_cols / PS_QK;
    const ps_block_q8a *X = Xv;
    __m256 acc[TOK_TILE];
    __m256i sw[8]; /* regrouped signed weights, re-read per token for the signs */
    for (int64_t r = r0; r < r1; r += 8) {
        const uint8_t *row[8], *prow[8];
        rows8(W, rb, idx, r, r1, row);
        for (int i = 0; i < 8; i++) prow[i] = row[order[i]];
        for (int32_t t0 = 0; t0 < n_tok; t0 += TOK_TILE) {
            const int32_t nt = n_tok - t0 < TOK_TILE ? n_tok - t0 : TOK_TILE;
            for (int32_t t = 0; t < nt; t++) acc[t] = _mm256_setzero_ps();
            for (int64_t b = 0; b < nb; b++) {
                const size_t off = (size_t)b * sizeof(ps_block_q8_0);
                prefetch_tile(W, rb, idx, r, r1, row[0], off, sizeof(ps_block_q8_0));
                const __m256 d = scales_d(prow, off);
                q8_regroup(row[0] + off + 2, row[1] + off + 2, row[2] + off + 2, row[3] + off + 2, sw);
                q8_regroup(row[4] + off + 2, row[5] + off + 2, row[6] + off + 2, row[7] + off + 2, sw + 4);
                __m256i aw[8];
                for (int i = 0; i < 8; i++) aw[i] = _mm256_abs_epi8(sw[i]);
                const ps_block_q8a *xb = X + (size_t)t0 * nb + b;
                for (int32_t t = 0; t < nt; t++, xb += nb) {
                    __m256i x[4], s2[2];
                    for (int k = 0; k < 4; k++) x[k] = bcast8(xb->qs + 8 * k);
                    for (int g = 0; g < 2; g++) {
                        __m256i p[4];
                        for (int k = 0; k < 4; k++)
                            p[k] = dot_s8s8(aw[4 * g + k], sw[4 * g + k], x[k]);
                        s2[g] = _mm256_add_epi32(_mm256_add_epi32(p[0], p[1]), _mm256_add_epi32(p[2], p[3]));
                    }
                    const __m256i isum = _mm256_hadd_epi32(s2[0], s2[1]);
                    acc[t] = _mm256_fmadd_ps(_mm256_mul_ps(d, _mm256_set1_ps(xb->d)), _mm256_cvtepi32_ps(isum), acc[t]);
                }
            }
            for (int32_t t = 0; t < nt; t++)
                store8(Y + (size_t)(t0 + t) * ldy, idx, r, _mm256_permutevar8x32_ps(acc[t], unperm), r1 - r);
        }
    }
}

static void gemm_q8_0(const uint8_t *W, size_t rb, int64_t n_cols, const int32_t *idx, int64_t r0, int64_t r1,
                      const void *X, int32_t n_tok, float *Y, int64_t ldy) {
    if (n_tok >= 2)
        gemm_q8_0_mat(W, rb, n_cols, idx, r0, r1, X, n_tok, Y, ldy);
    else
        gemm_q8_0_vec(W, rb, n_cols, idx, r0, r1, X, n_tok, Y, ldy);
}

#ifndef PS_QUANT_AVX512 /* (the AVX-512 table has its own, quant_avx512.c) */
static void gemm_q4_0(const uint8_t *W, size_t rb, int64_t n_cols, const int32_t *idx, int64_t r0, int64_t r1,
                      const void *X, int32_t n_tok, float *Y, int64_t ldy) {
    gemm_q4(W, rb, n_cols, idx, r0, r1, X, n_tok, Y, ldy, 0);
}

static void gemm_q4_1(const uint8_t *W, size_t rb, int64_t n_cols, const int32_t *idx, int64_t r0, int64_t r1,
                      const void *X, int32_t n_tok, float *Y, int64_t ldy) {
    gemm_q4(W, rb, n_cols, idx, r0, r1, X, n_tok, Y, ldy, 1);
}
#endif


/* ---- float kernels (activations stay fp32) ---------------------------------- */
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

/* RM rows (pointers) x RN tokens; pf: the contiguous stretch PF_TILES tiles
 * ahead to prefetch (NULL for row lists: the driver prefetches). */
INLINE void tile_float(const uint8_t *const *row, const uint8_t *pf, int64_t n, const float *X,
                       float *const *yout /* [RN] */, const int RM, const int RN, const int ft) {
    __m256 acc[4][4];
    for (int i = 0; i < RM; i++)
        for (int j = 0; j < RN; j++) acc[i][j] = _mm256_setzero_ps();
    const int64_t n8 = n & ~(int64_t)7;
    const size_t esize = ft == FT_F32 ? 4 : 2;
    for (int64_t k = 0; k < n8; k += 8) {
        if (pf) /* as prefetch_ahead: the RM rows are one stretch */
            for (size_t o = (size_t)k * esize * RM; o < (size_t)(k + 8) * esize * RM; o += 64)
                _mm_prefetch((const char *)(pf + o), _MM_HINT_T0);
        __m256 w[4];
        for (int i = 0; i < RM; i++) w[i] = load8(row[i], k, ft);
        for (int j = 0; j < RN; j++) {
            const __m256 x = _mm256_loadu_ps(X + (size_t)j * n + k);
            for (int i = 0; i < RM; i++) acc[i][j] = _mm256_fmadd_ps(w[i], x, acc[i][j]);
        }
    }
    for (int i = 0; i < RM; i++)
        for (int j = 0; j < RN; j++) {
            float s = hsum(acc[i][j]);
            for (int64_t k = n8; k < n; k++) s += load1(row[i], k, ft) * X[(size_t)j * n + k];
            yout[j][i] = s; /* yout[j]: token j's output, already offset to this tile's rows */
        }
}

/* ---- float driver: rows x tokens in tiles, remainders with smaller tiles ---- */
INLINE void gemm_float(const uint8_t *W, size_t rb, int64_t n_cols, const int32_t *idx, int64_t r0,
                       int64_t r1, const void *Xv, int32_t n_tok, float *Y, int64_t ldy, const int ft) {
    const float *X = Xv;
    int64_t r = r0;
    for (; r + 4 <= r1; r += 4) {
        const uint8_t *row[4];
        for (int i = 0; i < 4; i++) row[i] = W + (size_t)row_at(idx, r + i) * rb;
        const uint8_t *pf = idx ? NULL : row[0] + PF_TILES * 4 * rb;
        if (idx) /* row list: fetch the rows two tiles ahead */
            for (int64_t j = r + 8; j < r + 12 && j < r1; j++)
                for (size_t o = 0; o < rb; o += 64) _mm_prefetch((const char *)(W + (size_t)idx[j] * rb + o), _MM_HINT_T0);
        int32_t t = 0;
        for (; t + 2 <= n_tok; t += 2) {
            float *yo[2] = {Y + (size_t)t * ldy, Y + (size_t)(t + 1) * ldy};
            if (idx) {
                float tmp[2][4];
                float *yt[2] = {tmp[0], tmp[1]};
                tile_float(row, pf, n_cols, X + (size_t)t * n_cols, yt, 4, 2, ft);
                for (int j = 0; j < 2; j++)
                    for (int i = 0; i < 4; i++) yo[j][idx[r + i]] = tmp[j][i];
            } else {
                yo[0] += r, yo[1] += r;
                tile_float(row, pf, n_cols, X + (size_t)t * n_cols, yo, 4, 2, ft);
            }
        }
        for (; t < n_tok; t++) {
            float tmp[4];
            float *yo[1] = {idx ? tmp : Y + (size_t)t * ldy + r};
            tile_float(row, pf, n_cols, X + (size_t)t * n_cols, yo, 4, 1, ft);
            if (idx)
                for (int i = 0; i < 4; i++) Y[(size_t)t * ldy + idx[r + i]] = tmp[i];
        }
    }
    for (; r < r1; r++) {
        const uint8_t *row[1] = {W + (size_t)row_at(idx, r) * rb};
        for (int32_t t = 0; t < n_tok; t++) {
            float *yo[1] = {Y + (size_t)t * ldy + row_at(idx, r)};
            tile_float(row, NULL, n_cols, X + (size_t)t * n_cols, yo, 1, 1, ft);
        }
    }
}

static void gemm_f32(const uint8_t *W, size_t rb, int64_t n_cols, const int32_t *idx, int64_t r0,
                     int64_t r1, const void *X, int32_t n_tok, float *Y, int64_t ldy) {
    gemm_float(W, rb, n_cols, idx, r0, r1, X, n_tok, Y, ldy, FT_F32);
}

static void gemm_f16(const uint8_t *W, size_t rb, int64_t n_cols, const int32_t *idx, int64_t r0,
                     int64_t r1, const void *X, int32_t n_tok, float *Y, int64_t ldy) {
    gemm_float(W, rb, n_cols, idx, r0, r1, X, n_tok, Y, ldy, FT_F16);
}

static void gemm_bf16(const uint8_t *W, size_t rb, int64_t n_cols, const int32_t *idx, int64_t r0,
                      int64_t r1, const void *X, int32_t n_tok, float *Y, int64_t ldy) {
    gemm_float(W, rb, n_cols, idx, r0, r1, X, n_tok, Y, ldy, FT_BF16);
}

#ifndef PS_QUANT_AVX512
/* ---- small float GEMM for accum_rows: 6 tokens x 16 columns per tile -------- */
INLINE void gemm_acc_tile(const float *A, int64_t lda, const float *B, int64_t ldb, float *Y,
                          int64_t ldy, int64_t k, const int RN) {
    __m256 acc[6][2];
    for (int t = 0; t < RN; t++) acc[t][0] = acc[t][1] = _mm256_setzero_ps();
    for (int64_t j = 0; j < k; j++) {
        const __m256 b0 = _mm256_loadu_ps(B + j * ldb), b1 = _mm256_loadu_ps(B + j * ldb + 8);
        for (int t = 0; t < RN; t++) {
            const __m256 a = _mm256_broadcast_ss(A + t * lda + j);
            acc[t][0] = _mm256_fmadd_ps(a, b0, acc[t][0]);
            acc[t][1] = _mm256_fmadd_ps(a, b1, acc[t][1]);
        }
    }
    for (int t = 0; t < RN; t++) {
        _mm256_storeu_ps(Y + t * ldy, _mm256_add_ps(_mm256_loadu_ps(Y + t * ldy), acc[t][0]));
        _mm256_storeu_ps(Y + t * ldy + 8, _mm256_add_ps(_mm256_loadu_ps(Y + t * ldy + 8), acc[t][1]));
    }
}

void ps_gemm_acc_avx2(const float *A, int64_t lda, const float *B, int64_t ldb, float *Y,
                      int64_t ldy, int64_t m, int64_t k, int64_t n) {
    int64_t c = 0;
    for (; c + 16 <= n; c += 16) {
        int64_t t = 0;
        for (; t + 6 <= m; t += 6) gemm_acc_tile(A + t * lda, lda, B + c, ldb, Y + t * ldy + c, ldy, k, 6);
        for (; t < m; t++) gemm_acc_tile(A + t * lda, lda, B + c, ldb, Y + t * ldy + c, ldy, k, 1);
    }
    /* leftover columns: the same per-element steps (fused multiply-add chain, then add) */
    for (; c < n; c++)
        for (int64_t t = 0; t < m; t++) {
            float acc = 0.0f;
            for (int64_t j = 0; j < k; j++) acc = fmaf(A[t * lda + j], B[j * ldb + c], acc);
            Y[t * ldy + c] += acc;
        }
}
#endif

/* ---- dequantization (bit-exact with the scalar path and gguf-py) ------------ */
INLINE __m256 q8_to_f32(const int8_t *q) {
    return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)q)));
}

static void dequant_q8_0(const void *src, float *dst, int64_t n) {
    const ps_block_q8_0 *b = src;
    for (int64_t i = 0; i < n / PS_QK; i++, dst += PS_QK) {
        const __m256 d = _mm256_set1_ps(fp16(b[i].d));
        for (int k = 0; k < 4; k++) _mm256_storeu_ps(dst + 8 * k, _mm256_mul_ps(d, q8_to_f32(b[i].qs + 8 * k)));
    }
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

static void dequant_q4_0(const void *src, float *dst, int64_t n) {
    const ps_block_q4_0 *b = src;
    for (int64_t i = 0; i < n / PS_QK; i++, dst += PS_QK) {
        const __m256 d = _mm256_set1_ps(fp16(b[i].d));
        __m256 v[4];
        q4_to_f32(b[i].qs, v, 8);
        for (int k = 0; k < 4; k++) _mm256_storeu_ps(dst + 8 * k, _mm256_mul_ps(d, v[k]));
    }
}

static void dequant_q4_1(const void *src, float *dst, int64_t n) {
    const ps_block_q4_1 *b = src;
    for (int64_t i = 0; i < n / PS_QK; i++, dst += PS_QK) {
        const __m256 d = _mm256_set1_ps(fp16(b[i].d)), m = _mm256_set1_ps(fp16(b[i].m));
        __m256 v[4];
        q4_to_f32(b[i].qs, v, 0);
        /* mul then add, as gguf-py (no fused multiply-add) */
        for (int k = 0; k < 4; k++) _mm256_storeu_ps(dst + 8 * k, _mm256_add_ps(_mm256_mul_ps(d, v[k]), m));
    }
}

static void dequant_f32(const void *src, float *dst, int64_t n) { memcpy(dst, src, (size_t)n * 4); }

static void dequant_f16(const void *src, float *dst, int64_t n) {
    int64_t k = 0;
    for (; k + 8 <= n; k += 8) _mm256_storeu_ps(dst + k, load8(src, k, FT_F16));
    for (; k < n; k++) dst[k] = load1(src, k, FT_F16);
}

static void dequant_bf16(const void *src, float *dst, int64_t n) {
    int64_t k = 0;
    for (; k + 8 <= n; k += 8) _mm256_storeu_ps(dst + k, load8(src, k, FT_BF16));
    for (; k < n; k++) dst[k] = load1(src, k, FT_BF16);
}

/* ---- axpy: y += a * row segment (the down projection over active neurons) ---
 * NR rows at a time keep y's block in registers (axpy4); each row adds into
 * y with the same operation as the one-row version, in row order, so grouping
 * never changes a result. */

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
INLINE void axpy_rows_q(const void *const *src, const float *a, const int NR, float *y, int64_t n,
                        const int type) {
    const size_t bb = type == 0 ? sizeof(ps_block_q4_0) : type == 1 ? sizeof(ps_block_q4_1) : sizeof(ps_block_q8_0);
    for (int64_t i = 0; i < n / PS_QK; i++, y += PS_QK) {
        __m256 acc[4];
        for (int k = 0; k < 4; k++) acc[k] = _mm256_loadu_ps(y + 8 * k);
        for (int r = 0; r < NR; r++) {
            const uint8_t *blk = (const uint8_t *)src[r] + (size_t)i * bb;
            uint16_t h[2];
            memcpy(h, blk, type == 1 ? 4 : 2);
            const __m256 d = _mm256_set1_ps(fp16(h[0]) * a[r]);
            if (type == 2) {
                for (int k = 0; k < 4; k++)
                    acc[k] = _mm256_fmadd_ps(d, q8_to_f32((const int8_t *)blk + 2 + 8 * k), acc[k]);
                continue;
            }
            __m256i g[4];
            q4_groups(blk + (type == 1 ? 4 : 2), g);
            if (type == 1) {
                const __m256 m = _mm256_set1_ps(fp16(h[1]) * a[r]);
                for (int k = 0; k < 4; k++)
                    acc[k] = _mm256_add_ps(_mm256_fmadd_ps(d, _mm256_cvtepi32_ps(g[k]), m), acc[k]);
            } else {
                const __m256i eight = _mm256_set1_epi32(8);
                for (int k = 0; k < 4; k++)
                    acc[k] = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(_mm256_sub_epi32(g[k], eight)), acc[k]);
            }
        }
        for (int k = 0; k < 4; k++) _mm256_storeu_ps(y + 8 * k, acc[k]);
    }
}


INLINE void axpy_rows_float(const void *const *src, const float *a, const int NR, float *y, int64_t n,
                            const int ft) {
    int64_t k = 0;
    for (; k + 8 <= n; k += 8) {
        __m256 acc = _mm256_loadu_ps(y + k);
        for (int r = 0; r < NR; r++) acc = _mm256_fmadd_ps(_mm256_set1_ps(a[r]), load8(src[r], k, ft), acc);
        _mm256_storeu_ps(y + k, acc);
    }
    for (; k < n; k++)
        for (int r = 0; r < NR; r++) y[k] += a[r] * load1(src[r], k, ft);
}

#define AXPY_PAIR(name, body, arg)                                                               \
    static void name(const void *src, float a, float *y, int64_t n) {                            \
        const void *s1[1] = {src};                                                               \
        body(s1, &a, 1, y, n, arg);                                                              \
    }                                                                                            \
    static void name##_4(const void *const src[4], const float a[4], float *y, int64_t n) {     \
        body(src, a, 4, y, n, arg);                                                              \
    }
AXPY_PAIR(axpy_f32, axpy_rows_float, FT_F32)
AXPY_PAIR(axpy_f16, axpy_rows_float, FT_F16)
AXPY_PAIR(axpy_bf16, axpy_rows_float, FT_BF16)

#ifndef PS_QUANT_AVX512 /* (quant_avx512.c has its own table) */
/* Packed Q4_0 / Q4_1 (quant.h: tiles of 16 rows, one row per 32-bit lane):
 * each half tile of 8 rows is one 256-bit vector per 4 quant bytes, so a
 * block needs neither regrouping nor horizontal sums; q[j] meets activation
 * bytes 4j..4j+3 in every lane (dot4_u8s8, exact). The float steps per lane
 * are gemm_q4's: the same bits. */
INLINE __m256i q4_dot8(const __m256i q[8], const int8_t *xq) {
    __m256i x[8];
    for (int j = 0; j < 8; j++) x[j] = _mm256_set1_epi32(ld32((const uint8_t *)xq + 4 * j));
    return _mm256_add_epi32(dot4_u8s8(q, x), dot4_u8s8(q + 4, x + 4));
}

#define PF_PACKED_BLOCKS 8 /* blocks ahead that the packed kernel prefetches */

/* One 16-row tile against nt tokens: acc[2 * t + h] for rows 8h..8h+7. */
INLINE void packed8_tile(const uint8_t *tile, int64_t nb, const ps_block_q8a *X, int32_t nt, __m256 *acc,
                         const int has_min) {
    const size_t tb = (size_t)PS_PACK_ROWS * (has_min ? sizeof(ps_block_q4_1) : sizeof(ps_block_q4_0));
    const size_t qoff = has_min ? 64 : 32;
    const __m256i m4 = _mm256_set1_epi8(0x0f);
    for (int64_t b = 0; b < nb; b++) {
        const uint8_t *p = tile + (size_t)b * tb;
        for (size_t o = 0; o < tb; o += 64) _mm_prefetch((const char *)(p + PF_PACKED_BLOCKS * tb + o), _MM_HINT_T0);
        for (int h = 0; h < 2; h++) {
            const __m256 d = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(p + 16 * h)));
            const __m256 c = has_min ? _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(p + 32 + 16 * h)))
                                     : _mm256_mul_ps(d, _mm256_set1_ps(-8.0f));
            __m256i q[8];
            for (int k = 0; k < 4; k++) {
                const __m256i v = _mm256_loadu_si256((const __m256i *)(p + qoff + 64 * k + 32 * h));
                q[k] = _mm256_and_si256(v, m4);
                q[4 + k] = _mm256_and_si256(_mm256_srli_epi16(v, 4), m4);
            }
            const ps_block_q8a *xb = X + b;
            for (int32_t t = 0; t < nt; t++, xb += nb) {
                __m256 a = acc[2 * t + h];
                a = _mm256_fmadd_ps(_mm256_mul_ps(d, _mm256_set1_ps(xb->d)), _mm256_cvtepi32_ps(q4_dot8(q, xb->qs)), a);
                acc[2 * t + h] = _mm256_fmadd_ps(c, _mm256_set1_ps(xb->s), a);
            }
        }
    }
}

INLINE void gemm_packed8(const uint8_t *P, int64_t n_cols, int64_t r0, int64_t r1, const void *Xv, int32_t n_tok,
                         float *Y, int64_t ldy, const int has_min) {
    const int64_t nb = n_cols / PS_QK;
    const size_t tb = (size_t)PS_PACK_ROWS * (has_min ? sizeof(ps_block_q4_1) : sizeof(ps_block_q4_0));
    const ps_block_q8a *X = Xv;
    __m256 acc[2 * TOK_TILE];
    for (int64_t row0 = r0 - r0 % PS_PACK_ROWS; row0 < r1; row0 += PS_PACK_ROWS) {
        const uint8_t *tile = P + (size_t)(row0 / PS_PACK_ROWS) * nb * tb;
        const int64_t lo = r0 > row0 ? r0 - row0 : 0, hi = r1 < row0 + PS_PACK_ROWS ? r1 - row0 : PS_PACK_ROWS;
        int32_t keep[PS_PACK_ROWS];
        for (int i = 0; i < PS_PACK_ROWS; i++) keep[i] = i >= lo && i < hi ? -1 : 0;
        for (int32_t t0 = 0; t0 < n_tok; t0 += TOK_TILE) {
            const int32_t nt = n_tok - t0 < TOK_TILE ? n_tok - t0 : TOK_TILE;
            for (int32_t t = 0; t < 2 * nt; t++) acc[t] = _mm256_setzero_ps();
            /* (one token, the common decode case, gets its own copy with acc in registers) */
            if (nt == 1) packed8_tile(tile, nb, X + (size_t)t0 * nb, 1, acc, has_min);
            else packed8_tile(tile, nb, X + (size_t)t0 * nb, nt, acc, has_min);
            for (int32_t t = 0; t < nt; t++)
                for (int h = 0; h < 2; h++)
                    _mm256_maskstore_ps(Y + (size_t)(t0 + t) * ldy + row0 + 8 * h,
                                        _mm256_loadu_si256((const __m256i *)(keep + 8 * h)), acc[2 * t + h]);
        }
    }
}

static void gemm_q4_0_packed8(const uint8_t *P, int64_t n_cols, int64_t r0, int64_t r1, const void *X,
                              int32_t n_tok, float *Y, int64_t ldy) {
    gemm_packed8(P, n_cols, r0, r1, X, n_tok, Y, ldy, 0);
}

static void gemm_q4_1_packed8(const uint8_t *P, int64_t n_cols, int64_t r0, int64_t r1, const void *X,
                              int32_t n_tok, float *Y, int64_t ldy) {
    gemm_packed8(P, n_cols, r0, r1, X, n_tok, Y, ldy, 1);
}

AXPY_PAIR(axpy_q4_0, axpy_rows_q, 0)
AXPY_PAIR(axpy_q4_1, axpy_rows_q, 1)
AXPY_PAIR(axpy_q8_0, axpy_rows_q, 2)

static const ps_kernels k_f32 = {gemm_f32, dequant_f32, axpy_f32, axpy_f32_4, 0, NULL};
static const ps_kernels k_f16 = {gemm_f16, dequant_f16, axpy_f16, axpy_f16_4, 0, NULL};
static const ps_kernels k_bf16 = {gemm_bf16, dequant_bf16, axpy_bf16, axpy_bf16_4, 0, NULL};
static const ps_kernels k_q8_0 = {gemm_q8_0, dequant_q8_0, axpy_q8_0, axpy_q8_0_4, 1, NULL};
static const ps_kernels k_q4_0 = {gemm_q4_0, dequant_q4_0, axpy_q4_0, axpy_q4_0_4, 1, gemm_q4_0_packed8};
static const ps_kernels k_q4_1 = {gemm_q4_1, dequant_q4_1, axpy_q4_1, axpy_q4_1_4, 1, gemm_q4_1_packed8};

const ps_kernels *ps_kernels_avx2(int32_t type) {
    switch (type) {
    case PS_TYPE_F32: return &k_f32;
    case PS_TYPE_F16: return &k_f16;
    case PS_TYPE_BF16: return &k_bf16;
    case PS_TYPE_Q8_0: return &k_q8_0;
    case PS_TYPE_Q4_0: return &k_q4_0;
    case PS_TYPE_Q4_1: return &k_q4_1;
    default: return NULL;
    }
}
#endif
