/* quant.h: block formats and the kernel table behind compute.h (not public).
 *
 * Shared by quant.c (scalar reference), quant_avx2.c (AVX2/FMA/F16C; built
 * again as quant_avx512.c for AVX-512 VNNI) and matmul.c (work splitting). Block layouts are ggml's, byte for byte.
 *
 * Activations for the integer kernels are quantized once per matmul call to
 * ps_block_q8a: a Q8_0-style block with an fp32 scale and, as in ggml's Q8_1,
 * the block sum s = d * sum(qs), which the Q4 kernels need:
 *   Q8_0: dot = dw*dx * sum(w_q * x_q)
 *   Q4_0: dot = dw*dx * sum(q * x_q) + (-8*dw) * s     (q = unsigned nibble)
 *   Q4_1: dot = dw*dx * sum(q * x_q) + m * s
 * Scalar and AVX2 quantize bit-identically (same float ops, round to nearest
 * even), so the two paths differ only in float summation order.
 */
#ifndef PS_QUANT_H
#define PS_QUANT_H

#include <stddef.h>
#include <stdint.h>

#include "compute.h"

#define PS_QK 32 /* elements per block of every quantized type here */

typedef struct { uint16_t d; int8_t qs[PS_QK]; } ps_block_q8_0;             /* 34 B */
typedef struct { uint16_t d; uint8_t qs[PS_QK / 2]; } ps_block_q4_0;         /* 18 B */
typedef struct { uint16_t d, m; uint8_t qs[PS_QK / 2]; } ps_block_q4_1;      /* 20 B */
typedef struct { float d; float s; int8_t qs[PS_QK]; } ps_block_q8a;         /* 40 B */

_Static_assert(sizeof(ps_block_q8_0) == 34, "q8_0 block");
_Static_assert(sizeof(ps_block_q4_0) == 18, "q4_0 block");
_Static_assert(sizeof(ps_block_q4_1) == 20, "q4_1 block");
_Static_assert(sizeof(ps_block_q8a) == 40, "q8a block");

/* For list positions j in [r0, r1) and tokens t < n_tok, with row R = idx[j]
 * (R = j when idx is NULL): Y[t*ldy + R] = row R of W . activation t.
 * W: row_bytes per row. X: for quantized W the q8a blocks of each token
 * (n_cols/32 per token, contiguous); for float W the raw floats (n_cols per
 * token). The kernel tiles rows x tokens itself; a row's result never
 * depends on the tiling (nor on n_tok). */
typedef void (*ps_gemm_fn)(const uint8_t *W, size_t row_bytes, int64_t n_cols,
                           const int32_t *idx, int64_t r0, int64_t r1, const void *X,
                           int32_t n_tok, float *Y, int64_t ldy);
/* dst[0..n) = dequantized src (n a multiple of the block size; src points at
 * the first element's block). Bit-exact with gguf-py's dequantize. */
typedef void (*ps_dequant_fn)(const void *src, float *dst, int64_t n);
/* y[c] += a * dequant(src)[c] for c < n (one weight row segment, axpy). */
typedef void (*ps_axpy_fn)(const void *src, float a, float *y, int64_t n);
/* y[c] += a[r] * dequant(src[r])[c] for r = 0..3 in order, c < n: exactly
 * four ps_axpy_fn calls, with y's block kept in registers. */
typedef void (*ps_axpy4_fn)(const void *const src[4], const float a[4], float *y, int64_t n);
/* Quantize n floats (a multiple of 32) into n/32 q8a blocks. */
typedef void (*ps_quantize_fn)(const float *x, ps_block_q8a *y, int64_t n);

/* Row-interleaved ("packed") Q4_0 / Q4_1 / Q8_0 matrices, for a kernel that
 * keeps one row per 32-bit lane of a 16-lane vector (AVX-512) or of two
 * 8-lane vectors (AVX2, Q4 only). Rows are grouped in
 * tiles of PS_PACK_ROWS (the last one padded with zero rows); a tile's
 * blocks are contiguous, and block b of a tile is
 *   d[16] (fp16), for Q4_1 also m[16] (fp16), then K x 64 bytes q[k] where
 *   bytes 4r..4r+3 of q[k] are bytes 4k..4k+3 of row r's quants
 *   (K = 4 nibble dwords for Q4, 8 for Q8_0, whose bytes are stored
 *   XOR 0x80, i.e. w + 128 as unsigned, for dpbusd);
 * the same number of bytes as the 16 rows' blocks, in another order.
 * The same float steps per (row, token) as gemm: results are identical. */
#define PS_PACK_ROWS 16
/* Bytes of the packed copy of an n_rows x n_cols matrix; 0 if this type has
 * no packed form. */
size_t ps_packed_bytes(int32_t type, int64_t n_rows, int64_t n_cols);
/* Write the packed copy of W (row-major, n_rows x n_cols) to dst. */
void ps_pack_matrix(int32_t type, const uint8_t *W, int64_t n_rows, int64_t n_cols, uint8_t *dst);
/* As ps_gemm_fn over rows [r0, r1) of a packed matrix (no row list; r0, r1
 * need not be tile-aligned: only those rows are written). */
typedef void (*ps_gemm_packed_fn)(const uint8_t *P, int64_t n_cols, int64_t r0, int64_t r1,
                                  const void *X, int32_t n_tok, float *Y, int64_t ldy);

typedef struct ps_kernels {
    ps_gemm_fn gemm;
    ps_dequant_fn dequant;
    ps_axpy_fn axpy;
    ps_axpy4_fn axpy4;
    int32_t quantized; /* 1: gemm takes q8a activations */
    ps_gemm_packed_fn gemm_packed; /* NULL: this level has none for the type */
} ps_kernels;

/* Kernels for a type at a SIMD level (NULL: unsupported type). */
const ps_kernels *ps_kernels_get(int32_t type, int level);
const ps_kernels *ps_kernels_scalar(int32_t type);
const ps_kernels *ps_kernels_avx2(int32_t type);
const ps_kernels *ps_kernels_avx512(int32_t type);
ps_quantize_fn ps_quantize_q8a_get(int level);
void ps_quantize_q8a_scalar(const float *x, ps_block_q8a *y, int64_t n);
void ps_quantize_q8a_avx2(const float *x, ps_block_q8a *y, int64_t n);

/* A growable buffer owned by the pool: slot 0 is shared (quantized
 * activations), slot 1+ith belongs to thread ith. Call from the calling
 * thread only, before a dispatch. NULL if the allocation fails. */
void *ps_compute_scratch(ps_compute *c, int slot, size_t bytes);

/* Y[t*ldy + c] += sum_j A[t*lda + j] * B[j*ldb + c] for t < m, j < k, c < n
 * (small float GEMM of accum_rows over decoded rows). Each output element's
 * terms are summed in order of j, whatever its position in the tiling. */
typedef void (*ps_gemm_acc_fn)(const float *A, int64_t lda, const float *B, int64_t ldb, float *Y,
                               int64_t ldy, int64_t m, int64_t k, int64_t n);
void ps_gemm_acc_scalar(const float *A, int64_t lda, const float *B, int64_t ldb, float *Y,
                        int64_t ldy, int64_t m, int64_t k, int64_t n);
void ps_gemm_acc_avx2(const float *A, int64_t lda, const float *B, int64_t ldb, float *Y,
                      int64_t ldy, int64_t m, int64_t k, int64_t n);

/* AVX2 version of compute.h's ps_silu_mul. */
void ps_silu_mul_avx2(float *g, const float *u, int64_t n);

/* The level in force (PS_SIMD_*), cheap to call. */
int ps_simd_level(void);

#endif
