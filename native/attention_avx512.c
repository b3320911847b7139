/* attention_avx512.c: the AVX-512 (F/BW/VL/VNNI) level's chunk kernels
 * (attention.h), for head_dim a multiple of 8 (32 for Q8_0); the same bits
 * as the scalar reference in attention.c.
 *
 * Float scores: one 512-bit register holds the reference's 8 lanes for two
 * cached rows (row a in lanes 0-7, row b in 8-15), so each FMA advances two
 * rows; 8 rows are scored against up to 4 queries at a time, each row
 * converted once for all of them, and the rows' lanes are folded pairwise
 * in the order of the reference's tree.
 * Q8_0 scores: VNNI's dpbusd multiplies unsigned by signed bytes, so the
 * query goes in as q + 128 and 128 * sum(k) (one more dpbusd per row, shared
 * by the queries) is taken off: exact int32 sums, as the reference's. 16
 * rows' block sums are folded into one register per block, and the block
 * steps (scales, FMA over blocks) then run 16 rows wide.
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

static inline __m512i fold_epi32(__m512i a, __m512i b) {
    const __m512i ev = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    const __m512i od = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
    return _mm512_add_epi32(_mm512_permutex2var_epi32(a, ev, b), _mm512_permutex2var_epi32(a, od, b));
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

/* ---- Q8_0 -------------------------------------------------------------- */

/* The quants of blocks 2P and 2P+1 of a row (the upper half zero when the
 * row has no block 2P+1). */
static inline __m512i block_pair(const uint8_t *row, int32_t P, int two) {
    const ps_block_q8_0 *b = (const ps_block_q8_0 *)row + 2 * P;
    const __m256i lo = _mm256_loadu_si256((const __m256i *)b[0].qs);
    if (!two) return _mm512_zextsi256_si512(lo);
    return _mm512_inserti64x4(_mm512_castsi256_si512(lo), _mm256_loadu_si256((const __m256i *)b[1].qs), 1);
}

/* [r0 block 2P, r0 block 2P+1, r1 .., ..., r7 block 2P+1]: the int32 sums of
 * dpbusd(u, row r's block pair) for 8 rows. */
static inline __m512i pair_sums8(const __m512i R[8], __m512i u) {
    __m512i x[8];
    for (int i = 0; i < 8; i++) x[i] = _mm512_dpbusd_epi32(_mm512_setzero_si512(), u, R[i]);
    return fold_epi32(fold_epi32(fold_epi32(x[0], x[1]), fold_epi32(x[2], x[3])),
                      fold_epi32(fold_epi32(x[4], x[5]), fold_epi32(x[6], x[7])));
}

/* The fp16 scales of block b of rows j..j+15 (row offsets idx from row j),
 * as floats: the dword at each block's start, its low half. */
static inline __m512 block_scales16(const uint8_t *rows, __m512i idx, int32_t j, size_t rb, int32_t b) {
    const __m512i dw = _mm512_i32gather_epi32(idx, rows + (size_t)j * rb + (size_t)b * sizeof(ps_block_q8_0), 1);
    return _mm512_cvtph_ps(_mm512_cvtepi32_epi16(dw));
}

/* Offsets of rows j..j+15 from row j, those past n - 1 at row n - 1. */
static inline __m512i row_offsets16(int32_t j, int32_t n, size_t rb) {
    const __m512i off = _mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                                           _mm512_set1_epi32((int)rb));
    return _mm512_min_epi32(off, _mm512_set1_epi32((int)((size_t)(n - 1 - j) * rb)));
}

/* s[i*n + j..j+15] for queries i0..i0+NQ-1 and Q8_0 rows j..j+15; u holds
 * each query's block pairs as unsigned q + 128 (u[qi * 4 + P]). */
static inline __attribute__((always_inline)) void scores_q8_16(const ps_attn_chunk *a, const __m512i *u,
                                                               int32_t i0, int32_t j, const int NQ) {
    const int32_t n = a->n, nb = a->hd / PS_QK;
    const size_t rb = a->row_bytes;
    const uint8_t *r[16];
    rows_at(a->k, rb, j, n, 16, r);
    const __m512i ev = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    const __m512i od = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
    const __m512i idx = row_offsets16(j, n, rb);
    const __m512i u128 = _mm512_set1_epi8((char)0x80);
    __m512 acc[4];
    for (int qi = 0; qi < NQ; qi++) acc[qi] = _mm512_setzero_ps();
    for (int32_t P = 0; 2 * P < nb; P++) {
        const int two = 2 * P + 1 < nb;
        __m512i half[2][5]; /* [rows 0-7 | 8-15][query 0..NQ-1, then the 128*sum(k) term] */
        for (int h = 0; h < 2; h++) {
            __m512i R[8];
            for (int i = 0; i < 8; i++) R[i] = block_pair(r[8 * h + i], P, two);
            half[h][4] = pair_sums8(R, u128); /* (a missing block 2P+1 reads as zeros) */
            for (int qi = 0; qi < NQ; qi++) half[h][qi] = pair_sums8(R, u[qi * 4 + P]);
        }
        for (int e = 0; e < 1 + two; e++) {
            const int32_t b = 2 * P + e;
            const __m512 dk = block_scales16(a->k, idx, j, rb, b);
            const __m512i corr = _mm512_permutex2var_epi32(half[0][4], e ? od : ev, half[1][4]);
            for (int qi = 0; qi < NQ; qi++) {
                const __m512i isum =
                    _mm512_sub_epi32(_mm512_permutex2var_epi32(half[0][qi], e ? od : ev, half[1][qi]), corr);
                const __m512 dd = _mm512_mul_ps(dk, _mm512_set1_ps(a->qq[(size_t)(i0 + qi) * nb + b].d));
                acc[qi] = _mm512_fmadd_ps(dd, _mm512_cvtepi32_ps(isum), acc[qi]);
            }
        }
    }
    const __mmask16 keep = n - j >= 16 ? 0xffff : (__mmask16)((1u << (n - j)) - 1);
    for (int qi = 0; qi < NQ; qi++)
        _mm512_mask_storeu_ps(a->s + (size_t)(i0 + qi) * n + j, keep, _mm512_mul_ps(acc[qi], _mm512_set1_ps(a->scale)));
}

/* queries i0..i0+NQ-1 against all the chunk's rows */
static inline __attribute__((always_inline)) void scores_q8_group(const ps_attn_chunk *a, int32_t i0, const int NQ) {
    const int32_t nb = a->hd / PS_QK;
    __m512i u[4 * PS_ATTN_MAX_HEAD_DIM / 64];
    const __m256i flip = _mm256_set1_epi8((char)0x80);
    for (int qi = 0; qi < NQ; qi++)
        for (int32_t P = 0; 2 * P < nb; P++) {
            const ps_block_q8a *q = a->qq + (size_t)(i0 + qi) * nb + 2 * P;
            const __m256i lo = _mm256_xor_si256(_mm256_loadu_si256((const __m256i *)q[0].qs), flip);
            u[qi * 4 + P] = 2 * P + 1 < nb
                                ? _mm512_inserti64x4(_mm512_castsi256_si512(lo),
                                                     _mm256_xor_si256(_mm256_loadu_si256((const __m256i *)q[1].qs), flip), 1)
                                : _mm512_zextsi256_si512(lo);
        }
    for (int32_t j = 0; j < a->n; j += 16) {
        if (i0 == 0) {
            k_rows_ahead(a, j, 8);
            k_rows_ahead(a, j + 8, 8);
        }
        scores_q8_16(a, u, i0, j, NQ);
    }
}

static void scores_q8_0(const ps_attn_chunk *a) {
    prefetch_rows(a->k, PREFETCH_BYTES);
    int32_t i = 0;
    for (; i + 4 <= a->nq; i += 4) scores_q8_group(a, i, 4);
    if (a->nq - i == 3) scores_q8_group(a, i, 3);
    else if (a->nq - i == 2) scores_q8_group(a, i, 2);
    else if (a->nq - i == 1) scores_q8_group(a, i, 1);
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
    /* Q8_0: the weights p_j * dv_j of the (one or two) blocks of this stretch,
     * 16 rows at a time, so the loop below broadcasts them from memory */
    _Alignas(64) float w[4][2][PS_ATTN_CHUNK];
    if (type == PS_CACHE_Q8_0)
        for (int e = 0; e < (NV + 1) / 2; e++)
            for (int32_t j = 0; j < n; j += 16) {
                const __m512 dv = block_scales16(a->v, row_offsets16(j, n, rb), j, rb, d0 / PS_QK + e);
                const __mmask16 keep = n - j >= 16 ? 0xffff : (__mmask16)((1u << (n - j)) - 1);
                for (int qi = 0; qi < NQ; qi++)
                    _mm512_store_ps(w[qi][e] + j, _mm512_mul_ps(_mm512_maskz_loadu_ps(keep, p[qi] + j), dv));
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
            if (type == PS_CACHE_Q8_0) {
                const ps_block_q8_0 *blk = (const ps_block_q8_0 *)row + d / PS_QK;
                const __m512 vq = _mm512_cvtepi32_ps(
                    _mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(blk->qs + d % PS_QK))));
                for (int qi = 0; qi < NQ; qi++)
                    acc[qi][b] = _mm512_fmadd_ps(_mm512_set1_ps(w[qi][b / 2][j]), vq, acc[qi][b]);
            } else {
                const __m512 vv = type == PS_CACHE_F32
                                      ? _mm512_maskz_loadu_ps(m, (const float *)row + d)
                                      : _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, row + 2 * (size_t)d));
                for (int qi = 0; qi < NQ; qi++)
                    acc[qi][b] = _mm512_fmadd_ps(_mm512_set1_ps(p[qi][j]), vv, acc[qi][b]);
            }
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
    if (type == PS_CACHE_Q8_0) scores_q8_0(a);
    else scores_float(a, type);
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
static void chunk_q8_0(const ps_attn_chunk *a) { chunk_body(a, PS_CACHE_Q8_0); }

const ps_attn_kernels ps_attn_kernels_avx512 = {
    .chunk = {[PS_CACHE_F16] = chunk_f16, [PS_CACHE_F32] = chunk_f32, [PS_CACHE_Q8_0] = chunk_q8_0},
    .head_multiple = 8,
};
