/* attention_avx512.c: the AVX-512 (F/BW/VL/VNNI) level's chunk kernels
 * (attention.h) for the float caches, for head_dim a multiple of 8; the
 * same bits as the scalar reference in attention.c. The Q8_0 cache runs
 * AVX2's kernel: a 16-row VNNI version was slower at depth here.
 *
 * Float scores: one 512-bit register holds the reference's 8 lanes for two
 * cached rows (row a in lanes 0-7, row b in 8-15), so each FMA advances two
 * rows; 8 rows are scored against up to 4 queries at a time, each row
 * converted once for all of them, and the rows' lanes are folded pairwise
 * in the order of the reference's tree.
 * V: 16 dimensions per register, up to 4 queries x 64 dimensions held in
 * registers while the chunk's rows stream past once. */
#include "attention_x86.h"
#include "prosparse.h"

/* Lanes 0-7 = a[0..7] + a[8..15] pairwise, i.e. (a0+a1, a2+a3, ...), then
 * lanes 8-15 the same of b: each fold halves the lanes of two registers. */
static inline __m512 fold_ps(__m512 a, __m512 b) {
    const __m512i ev = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    const __m512i od = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
    return _mm512_add_ps(_mm512_permutex2var_ps(a, ev, b), _mm512_permutex2var_ps(a, od, b));
}

/* rows ra and rb's elements d..d+7, as floats, in one register */
static inline __m512 row_pair(const int type, const uint8_t *ra, const uint8_t *rb, int32_t d) {
    if (type == PS_CACHE_F32) {
        const __m256d lo = _mm256_castps_pd(_mm256_loadu_ps((const float *)ra + d));
        const __m256d hi = _mm256_castps_pd(_mm256_loadu_ps((const float *)rb + d));
        return _mm512_castpd_ps(_mm512_insertf64x4(_mm512_castpd256_pd512(lo), hi, 1));
    }
    const __m128i lo = _mm_loadu_si128((const __m128i *)(ra + 2 * (size_t)d));
    const __m128i hi = _mm_loadu_si128((const __m128i *)(rb + 2 * (size_t)d));
    return _mm512_cvtph_ps(_mm256_inserti128_si256(_mm256_castsi128_si256(lo), hi, 1));
}

/* Rows j..j+count-1 of K or V, an index past n - 1 reading row n - 1 (so
 * a tail group stays inside the chunk; its lanes are never stored). */
static inline void rows_at(const uint8_t *base, size_t rb, int32_t j, int32_t n, int count, const uint8_t **r) {
    for (int i = 0; i < count; i++) r[i] = base + (size_t)(j + i < n ? j + i : n - 1) * rb;
}

/* s[i*n + j..j+7] for queries i0..i0+NQ-1 and float rows j..j+7 (rows past
 * n are not stored). */
static inline __attribute__((always_inline)) void scores_8x(const ps_attn_chunk *a, const int type,
                                                            const uint8_t *const r[8], int32_t i0, int32_t j,
                                                            const int NQ) {
    const int32_t hd = a->hd, n = a->n;
    __m512 acc[4][4];
    for (int qi = 0; qi < NQ; qi++)
        for (int p = 0; p < 4; p++) acc[qi][p] = _mm512_setzero_ps();
    for (int32_t d = 0; d < hd; d += 8) {
        __m512 k[4];
        for (int p = 0; p < 4; p++) k[p] = row_pair(type, r[2 * p], r[2 * p + 1], d);
        for (int qi = 0; qi < NQ; qi++) {
            const __m256 q8 = _mm256_loadu_ps(a->q + (size_t)(i0 + qi) * hd + d);
            const __m512 qv = _mm512_castpd_ps(_mm512_broadcast_f64x4(_mm256_castps_pd(q8)));
            for (int p = 0; p < 4; p++) acc[qi][p] = _mm512_fmadd_ps(qv, k[p], acc[qi][p]);
        }
    }
    const __mmask8 keep = n - j >= 8 ? 0xff : (__mmask8)((1u << (n - j)) - 1);
    const __m256 vscale = _mm256_set1_ps(a->scale);
    for (int qi = 0; qi < NQ; qi++) {
        /* pairs (l0+l1).., then their pairs, then the two halves: the tree */
        const __m512 e = fold_ps(fold_ps(acc[qi][0], acc[qi][1]), fold_ps(acc[qi][2], acc[qi][3]));
        const __m256 t = _mm512_castps512_ps256(fold_ps(e, e));
        _mm256_mask_storeu_ps(a->s + (size_t)(i0 + qi) * n + j, keep, _mm256_mul_ps(t, vscale));
    }
}

static inline __attribute__((always_inline)) void scores_float(const ps_attn_chunk *a, const int type) {
    prefetch_rows(a->k, PREFETCH_BYTES);
    for (int32_t j = 0; j < a->n; j += 8) {
        const uint8_t *r[8];
        k_rows_ahead(a, j, 8);
        rows_at(a->k, a->row_bytes, j, a->n, 8, r);
        int32_t i = 0;
        for (; i + 4 <= a->nq; i += 4) scores_8x(a, type, r, i, j, 4);
        if (a->nq - i == 3) scores_8x(a, type, r, i, j, 3);
        else if (a->nq - i == 2) scores_8x(a, type, r, i, j, 2);
        else if (a->nq - i == 1) scores_8x(a, type, r, i, j, 1);
    }
}

/* ---- values ------------------------------------------------------------ */

/* o for queries i0..i0+NQ-1 over dims d0..d0+16*NV-1, the last register's
 * lanes cut to `last` (8 of 16 when head_dim is an odd multiple of 8). */
static inline __attribute__((always_inline)) void values_block(const ps_attn_chunk *a, const int type,
                                                               int32_t d0, int32_t i0, const int NQ,
                                                               const int NV, __mmask16 last) {
    const int32_t n = a->n;
    const size_t rb = a->row_bytes;
    __m512 acc[4][4];
    const float *p[4];
    for (int qi = 0; qi < NQ; qi++) {
        p[qi] = a->s + (size_t)(i0 + qi) * n;
        for (int b = 0; b < NV; b++) acc[qi][b] = _mm512_setzero_ps();
    }
    for (int32_t j = 0; j < n; j++) {
        const uint8_t *row = a->v + (size_t)j * rb;
        if (d0 == 0 && i0 == 0) { /* this chunk's V ahead, and the next chunk's K */
            prefetch_rows(row + PREFETCH_V_BYTES, rb);
            prefetch_rows(a->k + (size_t)(n + j) * rb, rb);
        }
        for (int b = 0; b < NV; b++) {
            const int32_t d = d0 + 16 * b;
            const __mmask16 m = b == NV - 1 ? last : 0xffff;
            const __m512 vv = type == PS_CACHE_F32
                                  ? _mm512_maskz_loadu_ps(m, (const float *)row + d)
                                  : _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, row + 2 * (size_t)d));
            for (int qi = 0; qi < NQ; qi++)
                acc[qi][b] = _mm512_fmadd_ps(_mm512_set1_ps(p[qi][j]), vv, acc[qi][b]);
        }
    }
    for (int qi = 0; qi < NQ; qi++)
        for (int b = 0; b < NV; b++)
            _mm512_mask_storeu_ps(a->o + (size_t)(i0 + qi) * a->hd + d0 + 16 * b, b == NV - 1 ? last : 0xffff,
                                  acc[qi][b]);
}

/* values_block for NQ queries at d0, as wide as the dims left allow */
static inline __attribute__((always_inline)) int32_t values_stretch(const ps_attn_chunk *a, const int type,
                                                                    int32_t d0, int32_t i0, const int NQ) {
    const int32_t left = a->hd - d0;
    if (left >= 64) values_block(a, type, d0, i0, NQ, 4, 0xffff);
    else if (left >= 32) values_block(a, type, d0, i0, NQ, 2, 0xffff);
    else values_block(a, type, d0, i0, NQ, 1, left >= 16 ? 0xffff : 0x00ff);
    return left >= 64 ? 64 : left >= 32 ? 32 : left >= 16 ? 16 : 8;
}

static inline __attribute__((always_inline)) void chunk_body(const ps_attn_chunk *a, const int type) {
    scores_float(a, type);
    for (int32_t i = 0; i < a->nq; i++) softmax_part(a->s + (size_t)i * a->n, a->n, &a->m[i], &a->l[i]);
    for (int32_t d0 = 0, step = 0; d0 < a->hd; d0 += step) {
        for (int32_t i0 = 0; i0 < a->nq; i0 += 4) {
            const int nq = a->nq - i0 < 4 ? a->nq - i0 : 4;
            if (nq == 4) step = values_stretch(a, type, d0, i0, 4);
            else if (nq == 3) step = values_stretch(a, type, d0, i0, 3);
            else if (nq == 2) step = values_stretch(a, type, d0, i0, 2);
            else step = values_stretch(a, type, d0, i0, 1);
        }
    }
}

static void chunk_f32(const ps_attn_chunk *a) { chunk_body(a, PS_CACHE_F32); }
static void chunk_f16(const ps_attn_chunk *a) { chunk_body(a, PS_CACHE_F16); }

const ps_attn_kernels ps_attn_kernels_avx512 = {
    .chunk = {[PS_CACHE_F16] = chunk_f16, [PS_CACHE_F32] = chunk_f32, [PS_CACHE_Q8_0] = ps_attn_chunk_q8_0_avx2},
    .head_multiple = 8,
};
