/* kernels_x86_dot.h: row-major integer products (Q4_0, Q4_1, Q5_0, Q5_1,
 * Q8_0 weights against q8a activations), compiled into both x86 levels: quant_avx2.c and
 * quant_avx512.c include this header, and each level's flags decide the
 * instructions (dpbusd at AVX-512, maddubs/madd at AVX2) behind the same
 * exact integer sums and float steps, so the two levels agree bit for bit.
 */
#ifndef PS_KERNELS_X86_DOT_H
#define PS_KERNELS_X86_DOT_H

#include "simd_x86.h"

/* 8 weight rows at a time: per block, the 8 rows' integer sums end up in one
 * vector (lane = row), so the scales are applied to 8 rows at once and each
 * accumulator lane is one (row, token) result: no horizontal sum at the end,
 * and a row's result does not depend on the tile it was computed in. A tile
 * past the end of the row range repeats the last row (computed, never
 * stored). */

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


/* Q5: the high bits of 4 rows' blocks in q4_regroup's order, added to its
 * nibbles: byte j of slot s of v[k] gets 0x10 where bit 8k + j of row
 * (0, 2, 1, 3)[s]'s qh is set. */
INLINE void q5_regroup_high(const uint8_t *h0, const uint8_t *h1, const uint8_t *h2, const uint8_t *h3,
                            __m256i v[4]) {
    const __m256i q = _mm256_setr_epi32(ld32(h0), ld32(h2), 0, 0, ld32(h1), ld32(h3), 0, 0);
    const __m256i bit = _mm256_set1_epi64x(0x8040201008040201LL), high = _mm256_set1_epi8(0x10);
    for (int k = 0; k < 4; k++) {
        const char a = (char)k, b = (char)(4 + k); /* byte k of the slot's qh */
        const __m256i pick = _mm256_setr_epi8(a, a, a, a, a, a, a, a, b, b, b, b, b, b, b, b,
                                              a, a, a, a, a, a, a, a, b, b, b, b, b, b, b, b);
        const __m256i bits = _mm256_and_si256(_mm256_shuffle_epi8(q, pick), bit);
        v[k] = _mm256_or_si256(v[k], _mm256_and_si256(_mm256_cmpeq_epi8(bits, bit), high));
    }
}

/* Q4_0 / Q4_1 / Q5_0 / Q5_1 (kind = has_min + 2 * q5): acc += dw*dx *
 * sum(u*x) + c*s with c = m, or -8*dw / -16*dw (quant.h). Per token and
 * block: one dot4_u8s8 per 4 rows, one hadd for all 8 (its int16 pair sums
 * fit for 5-bit quants too: 4 * 2 * 31 * 127 < 2^15). */
INLINE void gemm_q4(const uint8_t *W, size_t rb, int64_t n_cols, const int32_t *idx, int64_t r0, int64_t r1,
                    const void *Xv, int32_t n_tok, float *Y, int64_t ldy, const int kind) {
    const int has_min = kind & 1, q5 = kind >> 1;
    const int64_t nb = n_cols / PS_QK;
    const size_t bb = q5 ? (has_min ? sizeof(ps_block_q5_1) : sizeof(ps_block_q5_0))
                         : (has_min ? sizeof(ps_block_q4_1) : sizeof(ps_block_q4_0));
    const size_t hoff = has_min ? 4 : 2, qoff = hoff + (q5 ? 4 : 0);
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
                    c = _mm256_mul_ps(d, _mm256_set1_ps(q5 ? -16.0f : -8.0f));
                }
                __m256i v[4], w[4];
                q4_regroup(row[0] + off + qoff, row[1] + off + qoff, row[2] + off + qoff, row[3] + off + qoff, v);
                q4_regroup(row[4] + off + qoff, row[5] + off + qoff, row[6] + off + qoff, row[7] + off + qoff, w);
                if (q5) {
                    q5_regroup_high(row[0] + off + hoff, row[1] + off + hoff, row[2] + off + hoff, row[3] + off + hoff, v);
                    q5_regroup_high(row[4] + off + hoff, row[5] + off + hoff, row[6] + off + hoff, row[7] + off + hoff, w);
                }
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

#endif
