/* attention_avx2.c: the AVX2/FMA/F16C level's chunk kernels (attention.h),
 * for head_dim a multiple of 8 (32 for Q8_0); the same bits as the scalar
 * reference in attention.c.
 *
 * Scores take four cached rows at a time (F16 rows converted once into an
 * L1 buffer, then dotted with every query of the group, so the group's
 * heads share each row read); V is read once per 32-wide stretch for up to
 * three queries, whose accumulators stay in registers. */
#include "attention_x86.h"
#include "prosparse.h"

static inline __m256 load_f16(const uint8_t *row, int32_t d) {
    return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(row + 2 * (size_t)d)));
}

/* int32 lanes of sum(x*y) over 32 int8 pairs (|x|, |y| <= 127). */
static inline __m256i dot_i8(__m256i x, __m256i y) {
    const __m256i p = _mm256_maddubs_epi16(_mm256_sign_epi8(x, x), _mm256_sign_epi8(y, x));
    return _mm256_madd_epi16(p, _mm256_set1_epi16(1));
}

/* s[i*n + j..j+3] for queries i0..i0+NQ-1 against four float rows: 4*NQ
 * accumulators, so each row and query vector loaded serves several FMAs. */
static inline __attribute__((always_inline)) void scores_4x(const ps_attn_chunk *a, const float *const kr[4],
                                                            int32_t i0, int32_t j, const int NQ) {
    const int32_t hd = a->hd, n = a->n;
    const __m128 vscale = _mm_set1_ps(a->scale);
    __m256 acc[3][4];
    for (int qi = 0; qi < NQ; qi++)
        for (int r = 0; r < 4; r++) acc[qi][r] = _mm256_setzero_ps();
    for (int32_t d = 0; d < hd; d += 8) {
        const __m256 k0 = _mm256_loadu_ps(kr[0] + d), k1 = _mm256_loadu_ps(kr[1] + d);
        const __m256 k2 = _mm256_loadu_ps(kr[2] + d), k3 = _mm256_loadu_ps(kr[3] + d);
        for (int qi = 0; qi < NQ; qi++) {
            const __m256 qv = _mm256_loadu_ps(a->q + (size_t)(i0 + qi) * hd + d);
            acc[qi][0] = _mm256_fmadd_ps(qv, k0, acc[qi][0]);
            acc[qi][1] = _mm256_fmadd_ps(qv, k1, acc[qi][1]);
            acc[qi][2] = _mm256_fmadd_ps(qv, k2, acc[qi][2]);
            acc[qi][3] = _mm256_fmadd_ps(qv, k3, acc[qi][3]);
        }
    }
    for (int qi = 0; qi < NQ; qi++)
        _mm_storeu_ps(a->s + (size_t)(i0 + qi) * n + j,
                      _mm_mul_ps(tree8x4(acc[qi][0], acc[qi][1], acc[qi][2], acc[qi][3]), vscale));
}

/* s[i*n + j] for float rows (F32 or F16). */
static inline __attribute__((always_inline)) void scores_float(const ps_attn_chunk *a, const int type) {
    const int32_t hd = a->hd, n = a->n;
    const size_t rb = a->row_bytes;
    _Alignas(32) float kb[4][PS_ATTN_MAX_HEAD_DIM];
    prefetch_rows(a->k, PREFETCH_BYTES);
    int32_t j = 0;
    for (; j + 4 <= n; j += 4) {
        const uint8_t *r0 = k_rows_ahead(a, j, 4);
        const float *kr[4];
        for (int r = 0; r < 4; r++) {
            if (type == PS_CACHE_F32) {
                kr[r] = (const float *)(r0 + r * rb);
            } else {
                for (int32_t d = 0; d < hd; d += 8) _mm256_store_ps(kb[r] + d, load_f16(r0 + r * rb, d));
                kr[r] = kb[r];
            }
        }
        int32_t i = 0;
        for (; i + 3 <= a->nq; i += 3) scores_4x(a, kr, i, j, 3);
        if (a->nq - i == 2) scores_4x(a, kr, i, j, 2);
        else if (a->nq - i == 1) scores_4x(a, kr, i, j, 1);
    }
    for (; j < n; j++) {
        const uint8_t *row = a->k + (size_t)j * rb;
        for (int32_t i = 0; i < a->nq; i++) {
            const float *q = a->q + (size_t)i * hd;
            __m256 acc = _mm256_setzero_ps();
            for (int32_t d = 0; d < hd; d += 8) {
                const __m256 kv = type == PS_CACHE_F32 ? _mm256_loadu_ps((const float *)row + d) : load_f16(row, d);
                acc = _mm256_fmadd_ps(_mm256_loadu_ps(q + d), kv, acc);
            }
            a->s[(size_t)i * n + j] = _mm_cvtss_f32(tree8x4(acc, acc, acc, acc)) * a->scale;
        }
    }
}

/* s[i*n + j] for Q8_0 rows against the queries' q8a blocks. */
static void scores_q8_0(const ps_attn_chunk *a) {
    const int32_t n = a->n, nb = a->hd / PS_QK;
    const size_t rb = a->row_bytes;
    const __m128 vscale = _mm_set1_ps(a->scale);
    prefetch_rows(a->k, PREFETCH_BYTES);
    int32_t j = 0;
    for (; j + 4 <= n; j += 4) {
        const uint8_t *r0 = k_rows_ahead(a, j, 4);
        const ps_block_q8_0 *kr[4];
        for (int r = 0; r < 4; r++) kr[r] = (const ps_block_q8_0 *)(r0 + r * rb);
        for (int32_t i = 0; i < a->nq; i++) {
            const ps_block_q8a *qq = a->qq + (size_t)i * nb;
            __m128 acc = _mm_setzero_ps();
            for (int32_t b = 0; b < nb; b++) {
                const __m256i y = _mm256_loadu_si256((const __m256i *)qq[b].qs);
                const __m256i s0 = dot_i8(_mm256_loadu_si256((const __m256i *)kr[0][b].qs), y);
                const __m256i s1 = dot_i8(_mm256_loadu_si256((const __m256i *)kr[1][b].qs), y);
                const __m256i s2 = dot_i8(_mm256_loadu_si256((const __m256i *)kr[2][b].qs), y);
                const __m256i s3 = dot_i8(_mm256_loadu_si256((const __m256i *)kr[3][b].qs), y);
                const __m256i h = _mm256_hadd_epi32(_mm256_hadd_epi32(s0, s1), _mm256_hadd_epi32(s2, s3));
                const __m128i isum = _mm_add_epi32(_mm256_castsi256_si128(h), _mm256_extracti128_si256(h, 1));
                const __m128 dk = _mm_cvtph_ps(_mm_setr_epi16((short)kr[0][b].d, (short)kr[1][b].d,
                                                              (short)kr[2][b].d, (short)kr[3][b].d, 0, 0, 0, 0));
                acc = _mm_fmadd_ps(_mm_mul_ps(dk, _mm_set1_ps(qq[b].d)), _mm_cvtepi32_ps(isum), acc);
            }
            _mm_storeu_ps(a->s + (size_t)i * n + j, _mm_mul_ps(acc, vscale));
        }
    }
    for (; j < n; j++) {
        const ps_block_q8_0 *kr = (const ps_block_q8_0 *)(a->k + (size_t)j * rb);
        for (int32_t i = 0; i < a->nq; i++) {
            const ps_block_q8a *qq = a->qq + (size_t)i * nb;
            float acc = 0.0f;
            for (int32_t b = 0; b < nb; b++) {
                const __m256i s = dot_i8(_mm256_loadu_si256((const __m256i *)kr[b].qs),
                                         _mm256_loadu_si256((const __m256i *)qq[b].qs));
                __m128i t = _mm_add_epi32(_mm256_castsi256_si128(s), _mm256_extracti128_si256(s, 1));
                t = _mm_hadd_epi32(t, t);
                t = _mm_hadd_epi32(t, t);
                acc = fmaf(_cvtsh_ss(kr[b].d) * qq[b].d, (float)_mm_cvtsi128_si32(t), acc);
            }
            a->s[(size_t)i * n + j] = acc * a->scale;
        }
    }
}

/* o for queries i0..i0+NQ-1 over dims d0..d0+8*NV-1. */
static inline __attribute__((always_inline)) void values_block(const ps_attn_chunk *a, const int type,
                                                               int32_t d0, int32_t i0, const int NQ,
                                                               const int NV) {
    const int32_t n = a->n;
    const size_t rb = a->row_bytes;
    __m256 acc[3][4];
    const float *p[3];
    for (int qi = 0; qi < NQ; qi++) {
        p[qi] = a->s + (size_t)(i0 + qi) * n;
        for (int b = 0; b < NV; b++) acc[qi][b] = _mm256_setzero_ps();
    }
    for (int32_t j = 0; j < n; j++) {
        const uint8_t *row = a->v + (size_t)j * rb;
        if (d0 == 0 && i0 == 0) { /* this chunk's V ahead, and the next chunk's K */
            prefetch_rows(row + PREFETCH_V_BYTES, rb);
            prefetch_rows(a->k + (size_t)(n + j) * rb, rb);
        }
        if (type == PS_CACHE_Q8_0) {
            const ps_block_q8_0 *blk = (const ps_block_q8_0 *)row + d0 / PS_QK;
            const float dv = _cvtsh_ss(blk->d);
            float w[3];
            for (int qi = 0; qi < NQ; qi++) w[qi] = p[qi][j] * dv;
            for (int b = 0; b < NV; b++) {
                const __m256 vq = _mm256_cvtepi32_ps(
                    _mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(blk->qs + 8 * b))));
                for (int qi = 0; qi < NQ; qi++) acc[qi][b] = _mm256_fmadd_ps(_mm256_set1_ps(w[qi]), vq, acc[qi][b]);
            }
        } else {
            for (int b = 0; b < NV; b++) {
                const int32_t d = d0 + 8 * b;
                const __m256 vv = type == PS_CACHE_F32 ? _mm256_loadu_ps((const float *)row + d) : load_f16(row, d);
                for (int qi = 0; qi < NQ; qi++)
                    acc[qi][b] = _mm256_fmadd_ps(_mm256_set1_ps(p[qi][j]), vv, acc[qi][b]);
            }
        }
    }
    for (int qi = 0; qi < NQ; qi++)
        for (int b = 0; b < NV; b++) _mm256_storeu_ps(a->o + (size_t)(i0 + qi) * a->hd + d0 + 8 * b, acc[qi][b]);
}

static inline __attribute__((always_inline)) void chunk_body(const ps_attn_chunk *a, const int type) {
    if (type == PS_CACHE_Q8_0) scores_q8_0(a);
    else scores_float(a, type);
    for (int32_t i = 0; i < a->nq; i++) softmax_part(a->s + (size_t)i * a->n, a->n, &a->m[i], &a->l[i]);
    const int32_t hd = a->hd;
    for (int32_t d0 = 0; d0 < hd;) {
        const int wide = hd - d0 >= 32;
        for (int32_t i0 = 0; i0 < a->nq; i0 += 3) {
            const int nq = a->nq - i0 < 3 ? a->nq - i0 : 3;
            if (wide) {
                if (nq == 3) values_block(a, type, d0, i0, 3, 4);
                else if (nq == 2) values_block(a, type, d0, i0, 2, 4);
                else values_block(a, type, d0, i0, 1, 4);
            } else if (type != PS_CACHE_Q8_0) { /* (Q8_0 rows are whole 32-blocks) */
                if (nq == 3) values_block(a, type, d0, i0, 3, 1);
                else if (nq == 2) values_block(a, type, d0, i0, 2, 1);
                else values_block(a, type, d0, i0, 1, 1);
            }
        }
        d0 += wide ? 32 : 8;
    }
}

static void chunk_f32(const ps_attn_chunk *a) { chunk_body(a, PS_CACHE_F32); }
static void chunk_f16(const ps_attn_chunk *a) { chunk_body(a, PS_CACHE_F16); }
void ps_attn_chunk_q8_0_avx2(const ps_attn_chunk *a) { chunk_body(a, PS_CACHE_Q8_0); }

const ps_attn_kernels ps_attn_kernels_avx2 = {
    .chunk = {[PS_CACHE_F16] = chunk_f16, [PS_CACHE_F32] = chunk_f32, [PS_CACHE_Q8_0] = ps_attn_chunk_q8_0_avx2},
    .head_multiple = 8,
};
