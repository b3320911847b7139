/* kernels_x86_kquant.h: K-quant products, and the Q5 and K-quant
 * dequantization and axpy rows, compiled into both x86 levels (quant_avx2.c and
 * quant_avx512.c include this header; the same intrinsics at both, so the
 * two levels agree bit for bit).
 *
 * As in kernels_x86_dot.h, 8 weight rows at a time: each row's exact
 * integer block sums end in one lane of a vector (lane = row), then the
 * float steps run on 8 rows at once, so a row's result never depends on its
 * tile. A block's quants are first decoded into unsigned bytes in element
 * order (kquant_blocks.h's integer form), which maddubs multiplies with the
 * signed activations: no saturation, as u <= 63 and |x| <= 127 give pair
 * sums below 2^14; madd then applies the 16-element scales.
 */
#ifndef PS_KERNELS_X86_KQUANT_H
#define PS_KERNELS_X86_KQUANT_H

#include "kquant_blocks.h"
#include "simd_x86.h"

/* ---- K-quants against q8k ------------------------------------------------- */
/* One row's block decoded: u[k] = elements 32k..32k+31 (unsigned), sc[k] =
 * the int16 scales for madd after maddubs (lanes 0..7: group 2k, 8..15:
 * group 2k+1), mv = the 16 groups' activation-sum weights. */
typedef struct kq_simd {
    __m256i u[8], sc[8], mv;
} kq_simd;

/* sc[k] from the 16 int16 scales in s. */
INLINE void kq_scale_vectors(__m256i s, __m256i sc[8]) {
    const __m256i lo = _mm256_broadcastsi128_si256(_mm256_castsi256_si128(s));
    const __m256i hi = _mm256_broadcastsi128_si256(_mm256_extracti128_si256(s, 1));
    for (int k = 0; k < 4; k++) {
        const char a = (char)(4 * k), b = (char)(4 * k + 2); /* bytes of int16 2k and 2k+1 */
        const __m256i pick = _mm256_setr_epi8(a, a + 1, a, a + 1, a, a + 1, a, a + 1, a, a + 1, a, a + 1, a, a + 1, a,
                                              a + 1, b, b + 1, b, b + 1, b, b + 1, b, b + 1, b, b + 1, b, b + 1, b,
                                              b + 1, b, b + 1);
        sc[k] = _mm256_shuffle_epi8(lo, pick);
        sc[k + 4] = _mm256_shuffle_epi8(hi, pick);
    }
}

INLINE __m256i ld256(const uint8_t *p) { return _mm256_loadu_si256((const __m256i *)p); }

/* kq_scales_q4k in one vector: bytes 0..7 = sc, 8..15 = mn. Dwords
 * (w0, w2, w1, w2 >> 4) masked to six or four bits give the low parts; the
 * top two bits of w0 / w1's bytes move to bits 4..5 of dwords 1 and 3.
 * (The 16-byte load reads 4 bytes past the scales, still inside the block.) */
INLINE __m128i kq_scales_q4k_sse(const uint8_t *s) {
    const __m128i v = _mm_loadu_si128((const __m128i *)s);
    const __m128i lo = _mm_and_si128(_mm_srlv_epi32(_mm_shuffle_epi32(v, _MM_SHUFFLE(2, 1, 2, 0)), _mm_setr_epi32(0, 0, 0, 4)),
                                     _mm_setr_epi32(0x3f3f3f3f, 0x0f0f0f0f, 0x3f3f3f3f, 0x0f0f0f0f));
    const __m128i hi = _mm_and_si128(_mm_srli_epi32(_mm_shuffle_epi32(v, _MM_SHUFFLE(1, 1, 0, 0)), 2),
                                     _mm_setr_epi32(0, 0x30303030, 0, 0x30303030));
    return _mm_or_si128(lo, hi);
}

/* Decode one block of type `type` (a constant after inlining); *D, *M its
 * float scales (M unused for the offset types). */
INLINE void kq_simd_decode(const uint8_t *blk, kq_simd *o, float *D, float *M, const int32_t type) {
    const __m256i m2 = _mm256_set1_epi8(3), m4 = _mm256_set1_epi8(0x0f), one = _mm256_set1_epi8(1);
    __m256i s;
    if (type == PS_TYPE_Q4_K || type == PS_TYPE_Q5_K) {
        const ps_block_q4_k *b = (const void *)blk;
        const uint8_t *qs = type == PS_TYPE_Q4_K ? b->qs : ((const ps_block_q5_k *)(const void *)blk)->qs;
        for (int k = 0; k < 4; k++) {
            const __m256i v = ld256(qs + 32 * k);
            o->u[2 * k] = _mm256_and_si256(v, m4);
            o->u[2 * k + 1] = _mm256_and_si256(_mm256_srli_epi16(v, 4), m4);
        }
        if (type == PS_TYPE_Q5_K) {
            const __m256i h = ld256(((const ps_block_q5_k *)(const void *)blk)->qh);
            for (int k = 0; k < 8; k++) /* bit k of qh[l]: element 32k + l */
                o->u[k] = _mm256_or_si256(o->u[k], _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(h, k), one), 4));
        }
        const __m128i sm = kq_scales_q4k_sse(b->scales);
        s = _mm256_cvtepu8_epi16(_mm_unpacklo_epi8(sm, sm)); /* group j: sc[j/2] */
        o->mv = _mm256_cvtepu8_epi16(_mm_unpackhi_epi8(sm, sm));
        *D = fp16(b->d), *M = fp16(b->dmin);
    } else if (type == PS_TYPE_Q6_K) {
        const ps_block_q6_k *b = (const void *)blk;
        for (int h = 0; h < 2; h++) {
            const __m256i A = ld256(b->ql + 64 * h), B = ld256(b->ql + 64 * h + 32), H = ld256(b->qh + 32 * h);
            const __m256i lo[4] = {_mm256_and_si256(A, m4), _mm256_and_si256(B, m4),
                                   _mm256_and_si256(_mm256_srli_epi16(A, 4), m4),
                                   _mm256_and_si256(_mm256_srli_epi16(B, 4), m4)};
            for (int j = 0; j < 4; j++) {
                const __m256i hb = _mm256_and_si256(_mm256_srli_epi16(H, 2 * j), m2);
                o->u[4 * h + j] = _mm256_or_si256(lo[j], _mm256_slli_epi16(hb, 4));
            }
        }
        s = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)b->scales));
        o->mv = _mm256_slli_epi16(s, 5); /* 32 * s */
        *D = fp16(b->d), *M = 0.0f;
    } else if (type == PS_TYPE_Q3_K) {
        const ps_block_q3_k *b = (const void *)blk;
        const __m256i H = ld256(b->hmask);
        for (int h = 0; h < 2; h++) {
            const __m256i Q = ld256(b->qs + 32 * h);
            for (int j = 0; j < 4; j++) {
                const __m256i lo = _mm256_and_si256(_mm256_srli_epi16(Q, 2 * j), m2);
                const __m256i hb = _mm256_and_si256(_mm256_srli_epi16(H, 4 * h + j), one);
                o->u[4 * h + j] = _mm256_or_si256(lo, _mm256_slli_epi16(hb, 2));
            }
        }
        int8_t sc[16];
        kq_scales_q3k(b->scales, sc);
        s = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)sc));
        o->mv = _mm256_slli_epi16(s, 2); /* 4 * s */
        *D = fp16(b->d), *M = 0.0f;
    } else { /* PS_TYPE_Q2_K */
        const ps_block_q2_k *b = (const void *)blk;
        for (int h = 0; h < 2; h++) {
            const __m256i Q = ld256(b->qs + 32 * h);
            for (int j = 0; j < 4; j++) o->u[4 * h + j] = _mm256_and_si256(_mm256_srli_epi16(Q, 2 * j), m2);
        }
        const __m128i raw = _mm_loadu_si128((const __m128i *)b->scales);
        s = _mm256_cvtepu8_epi16(_mm_and_si128(raw, _mm_set1_epi8(0x0f)));
        o->mv = _mm256_cvtepu8_epi16(_mm_and_si128(_mm_srli_epi16(raw, 4), _mm_set1_epi8(0x0f)));
        *D = fp16(b->d), *M = fp16(b->dmin);
    }
    kq_scale_vectors(s, o->sc);
}

/* One row's exact block sums with one activation block: per 32-bit lane
 * partial sums of sum_j s_j (u.x)_j (*is) and of sum_j m_j bsums_j (*ms). */
INLINE void kq_simd_dot(const kq_simd *d, const __m256i x[8], __m256i bs, __m256i *is, __m256i *ms) {
    __m256i a = _mm256_madd_epi16(_mm256_maddubs_epi16(d->u[0], x[0]), d->sc[0]);
    for (int k = 1; k < 8; k++) a = _mm256_add_epi32(a, _mm256_madd_epi16(_mm256_maddubs_epi16(d->u[k], x[k]), d->sc[k]));
    *is = a;
    *ms = _mm256_madd_epi16(d->mv, bs);
}

INLINE int kq_has_min(const int32_t type) {
    return type == PS_TYPE_Q2_K || type == PS_TYPE_Q4_K || type == PS_TYPE_Q5_K;
}

/* One token's step for 8 decoded rows: acc += (D*dx) * isum, corr += (M*dx) * msum
 * (the offset types fold msum into isum), as gemm_kq in quant_scalar.c. */
INLINE void kq_token_step(const kq_simd dec[8], __m256 D, __m256 M, const ps_block_q8k *xb, __m256 *acc, __m256 *corr,
                          const int32_t type) {
    __m256i x[8], p[8], q[8];
    for (int k = 0; k < 8; k++) x[k] = _mm256_loadu_si256((const __m256i *)(xb->qs + 32 * k));
    const __m256i bs = _mm256_loadu_si256((const __m256i *)xb->bsums);
    for (int i = 0; i < 8; i++) kq_simd_dot(&dec[i], x, bs, &p[i], &q[i]);
    __m256i isum = rowsum8_epi32(p);
    const __m256i msum = rowsum8_epi32(q);
    const __m256 dx = _mm256_set1_ps(xb->d);
    if (!kq_has_min(type)) isum = _mm256_sub_epi32(isum, msum);
    *acc = _mm256_fmadd_ps(_mm256_mul_ps(D, dx), _mm256_cvtepi32_ps(isum), *acc);
    if (kq_has_min(type)) *corr = _mm256_fmadd_ps(_mm256_mul_ps(M, dx), _mm256_cvtepi32_ps(msum), *corr);
}

/* kq_token_step's sums for one token with each row decoded just before its
 * dot (no decoded tile kept): the same integer sums and float steps. */
INLINE void kq_block_step1(const uint8_t *const row[8], size_t off, const ps_block_q8k *xb, __m256 *acc,
                           __m256 *corr, const int32_t type) {
    __m256i x[8], p[8], q[8];
    for (int k = 0; k < 8; k++) x[k] = _mm256_loadu_si256((const __m256i *)(xb->qs + 32 * k));
    const __m256i bs = _mm256_loadu_si256((const __m256i *)xb->bsums);
    float Df[8], Mf[8];
    for (int i = 0; i < 8; i++) {
        kq_simd dec;
        kq_simd_decode(row[i] + off, &dec, &Df[i], &Mf[i], type);
        kq_simd_dot(&dec, x, bs, &p[i], &q[i]);
    }
    __m256i isum = rowsum8_epi32(p);
    const __m256i msum = rowsum8_epi32(q);
    const __m256 dx = _mm256_set1_ps(xb->d), D = _mm256_loadu_ps(Df), M = _mm256_loadu_ps(Mf);
    if (!kq_has_min(type)) isum = _mm256_sub_epi32(isum, msum);
    *acc = _mm256_fmadd_ps(_mm256_mul_ps(D, dx), _mm256_cvtepi32_ps(isum), *acc);
    if (kq_has_min(type)) *corr = _mm256_fmadd_ps(_mm256_mul_ps(M, dx), _mm256_cvtepi32_ps(msum), *corr);
}

/* kq_block_step1 for Q4_K, sub-block by sub-block across the 8 rows: the
 * activations of two sub-blocks and the 8 rows' accumulators stay in the 16
 * registers, and each row's scale reaches madd as a broadcast from a small
 * table (the per-row decode of kq_simd_decode spills at this level). The
 * integer sums are kq_simd_dot's, exact, so the float steps see the same
 * values. */
INLINE void kq_block_step1_q4k(const uint8_t *const row[8], size_t off, const ps_block_q8k *xb, __m256 *acc,
                               __m256 *corr) {
    const __m256i m4 = _mm256_set1_epi8(0x0f), bs = _mm256_loadu_si256((const __m256i *)xb->bsums);
    int32_t sc2[8][8]; /* row i, sub-block k: the int16 pair (sc_k, sc_k) */
    __m256i p[8], q[8];
    uint32_t dm[8];
    for (int i = 0; i < 8; i++) {
        const ps_block_q4_k *b = (const void *)(row[i] + off);
        const __m128i sm = kq_scales_q4k_sse(b->scales);
        const __m128i s16 = _mm_cvtepu8_epi16(sm);
        _mm_storeu_si128((__m128i *)sc2[i], _mm_unpacklo_epi16(s16, s16));
        _mm_storeu_si128((__m128i *)(sc2[i] + 4), _mm_unpackhi_epi16(s16, s16));
        q[i] = _mm256_madd_epi16(_mm256_cvtepu8_epi16(_mm_unpackhi_epi8(sm, sm)), bs);
        memcpy(&dm[i], b, 4);
    }
    const __m256i msum = rowsum8_epi32(q);
    for (int i = 0; i < 8; i++) p[i] = _mm256_setzero_si256();
    for (int k = 0; k < 4; k++) {
        const __m256i x0 = _mm256_loadu_si256((const __m256i *)(xb->qs + 64 * k));
        const __m256i x1 = _mm256_loadu_si256((const __m256i *)(xb->qs + 64 * k + 32));
        for (int i = 0; i < 8; i++) {
            const __m256i v = ld256(((const ps_block_q4_k *)(const void *)(row[i] + off))->qs + 32 * k);
            const __m256i a = _mm256_maddubs_epi16(_mm256_and_si256(v, m4), x0);
            const __m256i c = _mm256_maddubs_epi16(_mm256_and_si256(_mm256_srli_epi16(v, 4), m4), x1);
            p[i] = _mm256_add_epi32(p[i], _mm256_madd_epi16(a, _mm256_set1_epi32(sc2[i][2 * k])));
            p[i] = _mm256_add_epi32(p[i], _mm256_madd_epi16(c, _mm256_set1_epi32(sc2[i][2 * k + 1])));
        }
    }
    const __m256i isum = rowsum8_epi32(p);
    const __m256i dmv = _mm256_loadu_si256((const __m256i *)dm); /* lane i: d | dmin << 16 */
    const __m256i pk = _mm256_permute4x64_epi64(_mm256_shuffle_epi8(dmv, _mm256_setr_epi8(
        0, 1, 4, 5, 8, 9, 12, 13, 2, 3, 6, 7, 10, 11, 14, 15, 0, 1, 4, 5, 8, 9, 12, 13, 2, 3, 6, 7, 10, 11, 14, 15)),
        _MM_SHUFFLE(3, 1, 2, 0)); /* qwords: d 0..3, d 4..7, dmin 0..3, dmin 4..7 */
    const __m256 D = _mm256_cvtph_ps(_mm256_castsi256_si128(pk)), M = _mm256_cvtph_ps(_mm256_extracti128_si256(pk, 1));
    const __m256 dx = _mm256_set1_ps(xb->d);
    *acc = _mm256_fmadd_ps(_mm256_mul_ps(D, dx), _mm256_cvtepi32_ps(isum), *acc);
    *corr = _mm256_fmadd_ps(_mm256_mul_ps(M, dx), _mm256_cvtepi32_ps(msum), *corr);
}

INLINE void gemm_kq(const uint8_t *W, size_t rb, int64_t n_cols, const int32_t *idx, int64_t r0, int64_t r1,
                    const void *Xv, int32_t n_tok, float *Y, int64_t ldy, const int32_t type) {
    const int64_t nb = n_cols / PS_QK_K;
    const size_t bb = type == PS_TYPE_Q2_K ? sizeof(ps_block_q2_k)
                      : type == PS_TYPE_Q3_K ? sizeof(ps_block_q3_k)
                      : type == PS_TYPE_Q4_K ? sizeof(ps_block_q4_k)
                      : type == PS_TYPE_Q5_K ? sizeof(ps_block_q5_k) : sizeof(ps_block_q6_k);
    const ps_block_q8k *X = Xv;
    __m256 acc[TOK_TILE], corr[TOK_TILE];
    kq_simd dec[8];
    for (int64_t r = r0; r < r1; r += 8) {
        const uint8_t *row[8];
        rows8(W, rb, idx, r, r1, row);
        for (int32_t t0 = 0; t0 < n_tok; t0 += TOK_TILE) {
            const int32_t nt = n_tok - t0 < TOK_TILE ? n_tok - t0 : TOK_TILE;
            for (int32_t t = 0; t < nt; t++) acc[t] = corr[t] = _mm256_setzero_ps();
            for (int64_t b = 0; b < nb; b++) {
                const size_t off = (size_t)b * bb;
                prefetch_tile(W, rb, idx, r, r1, row[0], off, bb);
                if (nt == 1) { /* (decode: one token, no tile worth keeping) */
                    if (type == PS_TYPE_Q4_K) kq_block_step1_q4k(row, off, X + (size_t)t0 * nb + b, &acc[0], &corr[0]);
                    else kq_block_step1(row, off, X + (size_t)t0 * nb + b, &acc[0], &corr[0], type);
                    continue;
                }
                float Df[8], Mf[8];
                for (int i = 0; i < 8; i++) kq_simd_decode(row[i] + off, &dec[i], &Df[i], &Mf[i], type);
                const __m256 D = _mm256_loadu_ps(Df), M = _mm256_loadu_ps(Mf);
                const ps_block_q8k *xb = X + (size_t)t0 * nb + b;
                for (int32_t t = 0; t < nt; t++, xb += nb) kq_token_step(dec, D, M, xb, &acc[t], &corr[t], type);
            }
            for (int32_t t = 0; t < nt; t++)
                store8(Y + (size_t)(t0 + t) * ldy, idx, r, _mm256_sub_ps(acc[t], corr[t]), r1 - r);
        }
    }
}
GEMM_OF(gemm_q2_k, gemm_kq, PS_TYPE_Q2_K)
GEMM_OF(gemm_q3_k, gemm_kq, PS_TYPE_Q3_K)
GEMM_OF(gemm_q4_k, gemm_kq, PS_TYPE_Q4_K)
GEMM_OF(gemm_q5_k, gemm_kq, PS_TYPE_Q5_K)
GEMM_OF(gemm_q6_k, gemm_kq, PS_TYPE_Q6_K)

/* ---- dequantization and axpy ------------------------------------------------
 * Dequantization is kquant_blocks.h's (the gguf-py operations); axpy adds
 * a * each dequantized block with one fused multiply-add per element, row
 * after row, so axpy4 is exactly four axpy calls. */
#define KQ_X86_ROWS(t, bs)                                                                         \
    static void dequant_##t(const void *s, float *d, int64_t n) { kq_dequant_##t(s, d, n); }       \
    INLINE void axpy_rows_##t(const void *const *src, const float *a, const int NR, float *y,     \
                              int64_t n, const int unused) {                                      \
        const size_t bb = (size_t)ps_type_get(PS_TYPE_##bs)->block_bytes;                         \
        const int64_t bsz = ps_type_get(PS_TYPE_##bs)->block_size;                                 \
        float buf[PS_QK_K];                                                                       \
        for (int64_t i = 0; i < n / bsz; i++, y += bsz)                                            \
            for (int r = 0; r < NR; r++) {                                                        \
                kq_dequant_##t((const uint8_t *)src[r] + (size_t)i * bb, buf, bsz);               \
                const __m256 av = _mm256_set1_ps(a[r]);                                           \
                for (int64_t k = 0; k < bsz; k += 8)                                              \
                    _mm256_storeu_ps(y + k, _mm256_fmadd_ps(av, _mm256_loadu_ps(buf + k), _mm256_loadu_ps(y + k))); \
            }                                                                                     \
    }                                                                                             \
    AXPY_PAIR(axpy_##t, axpy_rows_##t, 0)
KQ_X86_ROWS(q5_0, Q5_0)
KQ_X86_ROWS(q5_1, Q5_1)
KQ_X86_ROWS(q2_k, Q2_K)
KQ_X86_ROWS(q3_k, Q3_K)
KQ_X86_ROWS(q5_k, Q5_K)

/* ---- Q4_K / Q6_K axpy with the rows decoded in registers -------------------
 * The float steps of kq_dequant_q4_k / kq_dequant_q6_k per element (t = dl*u,
 * w = t - ml; or w = dl*(u-32)), then y += a*w in one fused multiply-add,
 * rows in order: the same bits as dequantizing into a buffer and adding it,
 * with no buffer. 32 elements of y (four vectors) stay in registers while
 * the NR rows add into them. */
INLINE void axpy_rows_q4_k(const void *const *src, const float *a, const int NR, float *y, int64_t n,
                           const int unused) {
    const __m256i m4 = _mm256_set1_epi32(0x0f);
    for (int64_t i = 0; i < n / PS_QK_K; i++, y += PS_QK_K) {
        float dl[4][8], ml[4][8];
        const ps_block_q4_k *b[4];
        for (int r = 0; r < NR; r++) {
            b[r] = (const ps_block_q4_k *)src[r] + i;
            const float d = ps_fp16_to_f32(b[r]->d), dmin = ps_fp16_to_f32(b[r]->dmin);
            uint8_t sc[8], mn[8];
            kq_scales_q4k(b[r]->scales, sc, mn);
            for (int j = 0; j < 8; j++) dl[r][j] = d * (float)sc[j], ml[r][j] = dmin * (float)mn[j];
        }
        for (int j = 0; j < 8; j++) {
            __m256 acc[4];
            for (int k = 0; k < 4; k++) acc[k] = _mm256_loadu_ps(y + 32 * j + 8 * k);
            for (int r = 0; r < NR; r++) {
                const uint8_t *q = b[r]->qs + 32 * (j / 2);
                const __m256 d = _mm256_set1_ps(dl[r][j]), m = _mm256_set1_ps(ml[r][j]);
                const __m256 av = _mm256_set1_ps(a[r]);
                for (int k = 0; k < 4; k++) {
                    __m256i u = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(q + 8 * k)));
                    u = (j & 1) ? _mm256_srli_epi32(u, 4) : _mm256_and_si256(u, m4);
                    const __m256 t = _mm256_mul_ps(d, _mm256_cvtepi32_ps(u));
                    acc[k] = _mm256_fmadd_ps(av, _mm256_sub_ps(t, m), acc[k]);
                }
            }
            for (int k = 0; k < 4; k++) _mm256_storeu_ps(y + 32 * j + 8 * k, acc[k]);
        }
    }
}

INLINE void axpy_rows_q6_k(const void *const *src, const float *a, const int NR, float *y, int64_t n,
                           const int unused) {
    const __m256i m4 = _mm256_set1_epi32(0x0f), m3 = _mm256_set1_epi32(3), off = _mm256_set1_epi32(32);
    for (int64_t i = 0; i < n / PS_QK_K; i++, y += PS_QK_K) {
        float dl[4][16];
        const ps_block_q6_k *b[4];
        for (int r = 0; r < NR; r++) {
            b[r] = (const ps_block_q6_k *)src[r] + i;
            const float d = ps_fp16_to_f32(b[r]->d);
            for (int j = 0; j < 16; j++) dl[r][j] = d * (float)b[r]->scales[j];
        }
        /* 32 elements s: half h = s/4 of the block, quarter j = s%4 */
        for (int s = 0; s < 8; s++) {
            const int h = s / 4, j = s % 4;
            __m256 acc[4];
            for (int k = 0; k < 4; k++) acc[k] = _mm256_loadu_ps(y + 32 * s + 8 * k);
            for (int r = 0; r < NR; r++) {
                const uint8_t *ql = b[r]->ql + 64 * h + 32 * (j & 1), *qh = b[r]->qh + 32 * h;
                const __m256 av = _mm256_set1_ps(a[r]);
                for (int k = 0; k < 4; k++) {
                    const __m256i lo = _mm256_and_si256(
                        _mm256_srli_epi32(_mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(ql + 8 * k))), 4 * (j >> 1)), m4);
                    const __m256i hi = _mm256_and_si256(
                        _mm256_srli_epi32(_mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(qh + 8 * k))), 2 * j), m3);
                    const __m256i u = _mm256_sub_epi32(_mm256_or_si256(lo, _mm256_slli_epi32(hi, 4)), off);
                    const __m256 w = _mm256_mul_ps(_mm256_set1_ps(dl[r][2 * s + k / 2]), _mm256_cvtepi32_ps(u));
                    acc[k] = _mm256_fmadd_ps(av, w, acc[k]);
                }
            }
            for (int k = 0; k < 4; k++) _mm256_storeu_ps(y + 32 * s + 8 * k, acc[k]);
        }
    }
}
static void dequant_q4_k(const void *s, float *d, int64_t n) { kq_dequant_q4_k(s, d, n); }
static void dequant_q6_k(const void *s, float *d, int64_t n) { kq_dequant_q6_k(s, d, n); }
AXPY_PAIR(axpy_q4_k, axpy_rows_q4_k, 0)
AXPY_PAIR(axpy_q6_k, axpy_rows_q6_k, 0)

/* Table rows of the K-quants that both x86 levels run with these kernels
 * alone (the Q5, Q4_K and Q6_K rows are each level's: AVX-512 adds packed
 * products). */
#define KQ_X86_TABLE_ROWS                                                                           \
    PS_KERNEL_ROW(Q2_K, q2_k, PS_ACT_Q8K), PS_KERNEL_ROW(Q3_K, q3_k, PS_ACT_Q8K),                   \
    PS_KERNEL_ROW(Q5_K, q5_k, PS_ACT_Q8K)

#endif
