/* kernels_x86_float.h: float-weight products (F32, F16, BF16: 4 rows x 2
 * tokens, one 8-lane FMA chain per (row, token), then a horizontal sum),
 * dequantization (bit-exact with the scalar path and gguf-py) and the axpy
 * rows of accum_rows, compiled into both x86 levels (quant_avx2.c and
 * quant_avx512.c include this header). A (row, token) result goes through
 * the same operations in the same order whatever tile, thread or batch size
 * it is computed in. */
#ifndef PS_KERNELS_X86_FLOAT_H
#define PS_KERNELS_X86_FLOAT_H

#include "simd_x86.h"

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

GEMM_OF(gemm_f32, gemm_float, FT_F32)
GEMM_OF(gemm_f16, gemm_float, FT_F16)
GEMM_OF(gemm_bf16, gemm_float, FT_BF16)


/* ---- dequantization (bit-exact with the scalar path and gguf-py) ------------ */
static void dequant_q8_0(const void *src, float *dst, int64_t n) {
    const ps_block_q8_0 *b = src;
    for (int64_t i = 0; i < n / PS_QK; i++, dst += PS_QK) {
        const __m256 d = _mm256_set1_ps(fp16(b[i].d));
        for (int k = 0; k < 4; k++) _mm256_storeu_ps(dst + 8 * k, _mm256_mul_ps(d, q8_to_f32(b[i].qs + 8 * k)));
    }
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

/* type: 0 = Q4_0, 1 = Q4_1, 2 = Q8_0 */
INLINE void axpy_rows_q(const void *const *src, const float *a, const int NR, float *y, int64_t n,
                        const int type) {
    for (int64_t i = 0; i < n / PS_QK; i++, y += PS_QK) {
        __m256 acc[4];
        for (int k = 0; k < 4; k++) acc[k] = _mm256_loadu_ps(y + 8 * k);
        for (int r = 0; r < NR; r++) {
            float da, ma;
            const uint8_t *blk = scaled_block(src[r], i, type, a[r], &da, &ma);
            const __m256 d = _mm256_set1_ps(da);
            if (type == 2) {
                for (int k = 0; k < 4; k++)
                    acc[k] = _mm256_fmadd_ps(d, q8_to_f32((const int8_t *)blk + 2 + 8 * k), acc[k]);
                continue;
            }
            __m256i g[4];
            q4_groups(blk + (type == 1 ? 4 : 2), g);
            if (type == 1) {
                const __m256 m = _mm256_set1_ps(ma);
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

AXPY_PAIR(axpy_f32, axpy_rows_float, FT_F32)
AXPY_PAIR(axpy_f16, axpy_rows_float, FT_F16)
AXPY_PAIR(axpy_bf16, axpy_rows_float, FT_BF16)

#endif
