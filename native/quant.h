/* quant.h: block formats and the kernel tables behind compute.h (not public).
 *
 * quant.c holds the type traits and the level selection, quant_scalar.c the
 * reference kernels, quant_avx2.c and quant_avx512.c the SIMD ones (their
 * shared bodies are the kernels_x86_*.h headers); matmul.c splits the work.
 * Block layouts are ggml's, byte for byte.
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

/* The 5-bit and K-quant blocks (ggml's layouts; the quantizer is quantize*.c).
 * K-quants hold PS_QK_K elements in sub-blocks of 16 or 32 with small
 * integer scales under one or two fp16 super-scales. */
#define PS_QK_K 256
typedef struct { uint16_t d; uint8_t qh[4]; uint8_t qs[16]; } ps_block_q5_0;            /* 22 B */
typedef struct { uint16_t d, m; uint8_t qh[4]; uint8_t qs[16]; } ps_block_q5_1;         /* 24 B */
typedef struct { uint8_t scales[16]; uint8_t qs[64]; uint16_t d, dmin; } ps_block_q2_k;  /* 84 B */
typedef struct { uint8_t hmask[32]; uint8_t qs[64]; uint8_t scales[12]; uint16_t d; } ps_block_q3_k; /* 110 B */
typedef struct { uint16_t d, dmin; uint8_t scales[12]; uint8_t qs[128]; } ps_block_q4_k; /* 144 B */
typedef struct { uint16_t d, dmin; uint8_t scales[12]; uint8_t qh[32]; uint8_t qs[128]; } ps_block_q5_k; /* 176 B */
typedef struct { uint8_t ql[128]; uint8_t qh[64]; int8_t scales[16]; uint16_t d; } ps_block_q6_k; /* 210 B */
/* Activations for the K-quant kernels (as ggml's Q8_K): 256 int8 with an
 * fp32 scale and the sums of each 16 quants, which the minimum / offset
 * terms need: dot = D*dx * sum_j sc_j * sum(u * x)_j - M*dx * sum_j m_j * bsums_j. */
typedef struct { float d; int8_t qs[PS_QK_K]; int16_t bsums[PS_QK_K / 16]; } ps_block_q8k; /* 292 B */

_Static_assert(sizeof(ps_block_q5_0) == 22, "q5_0 block");
_Static_assert(sizeof(ps_block_q5_1) == 24, "q5_1 block");
_Static_assert(sizeof(ps_block_q2_k) == 84, "q2_k block");
_Static_assert(sizeof(ps_block_q3_k) == 110, "q3_k block");
_Static_assert(sizeof(ps_block_q4_k) == 144, "q4_k block");
_Static_assert(sizeof(ps_block_q5_k) == 176, "q5_k block");
_Static_assert(sizeof(ps_block_q6_k) == 210, "q6_k block");
_Static_assert(sizeof(ps_block_q8k) == 292, "q8k block");

/* Activation formats a gemm kernel takes (ps_type_kernels.q8a_input). */
enum { PS_ACT_FLOAT = 0, PS_ACT_Q8A = 1, PS_ACT_Q8K = 2 };

/* For list positions j in [r0, r1) and tokens t < n_tok, with row R = idx[j]
 * (R = j when idx is NULL): Y[t*ldy + R] = row R of W . activation t.
 * W: row_bytes per row. X: for quantized W the q8a blocks of each token
 * (n_cols/32 per token, contiguous), for the K-quants its q8k blocks
 * (n_cols/256 per token); for float W the raw floats (n_cols per token). The kernel tiles rows x tokens itself; a row's result never
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
/* Quantize n floats (a multiple of 256) into n/256 q8k blocks: per block
 * d = amax/127, q = nearest-even(x * 127/amax), bsums = sums of 16 quants. */
void ps_quantize_q8k(const float *x, ps_block_q8k *y, int64_t n);

/* Row-interleaved ("packed") Q4_0 / Q4_1 / Q5_0 / Q5_1 / Q8_0 / Q4_K / Q6_K
 * matrices, for a kernel that keeps one row per 32-bit lane of a 16-lane
 * vector (AVX-512) or of two 8-lane vectors (AVX2, Q4 only). Rows are
 * grouped in tiles of PS_PACK_ROWS (the last one padded with zero rows); a tile's
 * blocks are contiguous, and block b of a tile is
 *   d[16] (fp16), for Q4_1 also m[16] (fp16), then K x 64 bytes q[k] where
 *   bytes 4r..4r+3 of q[k] are bytes 4k..4k+3 of row r's quants
 *   (K = 4 nibble dwords for Q4, 5 for Q5: its 32 high bits, then the
 *   nibbles; 8 for Q8_0, whose bytes are stored XOR 0x80, i.e. w + 128 as
 *   unsigned, for dpbusd; for the K-quants (256 elements) d[16], for Q4_K
 *   also dmin[16], then all the block's other bytes in order: 35 dwords for
 *   Q4_K, 52 for Q6_K, see kernels_avx512_kquant.h);
 * the same number of bytes as the 16 rows' blocks, in another order.
 * The same float steps per (row, token) as gemm: results are identical. */
#define PS_PACK_ROWS 16
/* Byte offsets in a packed K-quant block of 16 rows: Q4_K's quant dwords
 * (after d, dmin and the 3 scale dwords); Q6_K's ql, qh and scale dwords. */
#define PK4K_Q 256
#define PK6K_QL 32
#define PK6K_QH (32 + 64 * 32)
#define PK6K_SC (32 + 64 * 48)
/* Bytes of the packed copy of an n_rows x n_cols matrix; 0 if this type has
 * no packed form. */
size_t ps_packed_bytes(int32_t type, int64_t n_rows, int64_t n_cols);
/* Write the packed copy of W (row-major, n_rows x n_cols) to dst. */
void ps_pack_matrix(int32_t type, const uint8_t *W, int64_t n_rows, int64_t n_cols, uint8_t *dst);
/* As ps_gemm_fn over rows [r0, r1) of a packed matrix (no row list; r0, r1
 * need not be tile-aligned: only those rows are written). */
typedef void (*ps_gemm_packed_fn)(const uint8_t *P, int64_t n_cols, int64_t r0, int64_t r1,
                                  const void *X, int32_t n_tok, float *Y, int64_t ldy);

/* Y[t*ldy + c] += sum_j A[t*lda + j] * B[j*ldb + c] for t < m, j < k, c < n
 * (small float GEMM of accum_rows over decoded rows). Each output element's
 * terms are summed in order of j, whatever its position in the tiling. */
typedef void (*ps_gemm_acc_fn)(const float *A, int64_t lda, const float *B, int64_t ldb, float *Y,
                               int64_t ldy, int64_t m, int64_t k, int64_t n);
/* SwiGLU: g[i] = silu(g[i]) * u[i] = g[i] / (1 + exp(-g[i])) * u[i]; with
 * u == NULL, g[i] = silu(g[i]) (the same bits as u[i] = 1). */
typedef void (*ps_silu_mul_fn)(float *g, const float *u, int64_t n);
/* ---- the kernel tables ----------------------------------------------------
 * One row per weight type, indexed by the ggml type id; one table per SIMD
 * level (ps_type_kernels_scalar / _avx2 / _avx512), each written with
 * designated initializers in its level's file (PS_KERNEL_ROW below). A row
 * with gemm == NULL means the type does not run. To add a weight type:
 *   1. its block struct in this header, with a _Static_assert on its size;
 *   2. its row in ps_type_traits' table (quant.c: name, block size, bytes);
 *   3. its scalar kernels and row in quant_scalar.c (the reference);
 *   4. its SIMD kernels and row in quant_avx2.c and quant_avx512.c, each
 *      bit-identical to the scalar row;
 *   5. its id in test_quant.c's TYPES (and in random_matrix when a random
 *      block needs more than random bytes after an fp16 scale), so every
 *      level is compared with the reference: test_tables_complete fails
 *      until it is there.
 * Nothing else: the engine finds the type through these tables. */
/* A table row from a level file's kernels named by type: gemm_<t>, dequant_<t>,
 * axpy_<t>, axpy_<t>_4 (and gemm_<t>_packed for PS_KERNEL_ROW_PACKED). */
#define PS_KERNEL_ROW(T, t, q8a)                                                                   \
    [PS_TYPE_##T] = {.gemm = gemm_##t, .dequant = dequant_##t, .axpy = axpy_##t, .axpy4 = axpy_##t##_4, \
                     .q8a_input = q8a}
#define PS_KERNEL_ROW_PACKED(T, t, q8a)                                                             \
    [PS_TYPE_##T] = {.gemm = gemm_##t, .gemm_packed = gemm_##t##_packed, .dequant = dequant_##t,       \
                     .axpy = axpy_##t, .axpy4 = axpy_##t##_4, .q8a_input = q8a}

typedef struct ps_type_kernels {
    ps_gemm_fn gemm;
    ps_gemm_packed_fn gemm_packed; /* NULL: no packed product at this level */
    ps_dequant_fn dequant;
    ps_axpy_fn axpy;
    ps_axpy4_fn axpy4;
    int32_t q8a_input;             /* PS_ACT_*: gemm takes floats, q8a or q8k blocks */
} ps_type_kernels;

extern const ps_type_kernels ps_type_kernels_scalar[PS_TYPE_COUNT];
extern const ps_type_kernels ps_type_kernels_avx2[PS_TYPE_COUNT];
extern const ps_type_kernels ps_type_kernels_avx512[PS_TYPE_COUNT];
extern const ps_type_kernels ps_type_kernels_neon[PS_TYPE_COUNT];     /* aarch64 builds only */
extern const ps_type_kernels ps_type_kernels_neon_dot[PS_TYPE_COUNT];

/* Everything a SIMD level provides, chosen once by ps_simd_set. */
typedef struct ps_level_ops {
    int level;                         /* PS_SIMD_* */
    const ps_type_kernels *types;      /* [PS_TYPE_COUNT] */
    int scalar_fallback;               /* a type this level has no row for runs the
                                        * scalar row (NEON: Q5 and K-quants) */
    ps_quantize_fn quantize_q8a;
    void (*quantize_q8k)(const float *x, ps_block_q8k *y, int64_t n); /* ps_quantize_q8k's bytes */
    ps_gemm_acc_fn gemm_acc;
    ps_silu_mul_fn silu_mul;
    const struct ps_attn_kernels *attn; /* attention.h's chunk kernels */
} ps_level_ops;

/* (x86 builds define the AVX levels, aarch64 builds the NEON ones) */
extern const ps_level_ops ps_ops_scalar, ps_ops_avx2, ps_ops_avx512, ps_ops_neon, ps_ops_neon_dot;
/* The operations of a level built into this library (whether or not this CPU
 * runs it), NULL for levels of another architecture. */
const ps_level_ops *ps_level_ops_at(int level);

/* The level in force (cheap: one relaxed load). */
const ps_level_ops *ps_ops(void);
/* Kernels of a type at a level, NULL when the type does not run. */
const ps_type_kernels *ps_kernels_get(int32_t type, const ps_level_ops *ops);

/* The functions behind the level tables (quant_scalar.c, vec_avx2.c). */
void ps_quantize_q8a_scalar(const float *x, ps_block_q8a *y, int64_t n);
void ps_quantize_q8a_avx2(const float *x, ps_block_q8a *y, int64_t n);
void ps_quantize_q8k_avx2(const float *x, ps_block_q8k *y, int64_t n);
void ps_gemm_acc_scalar(const float *A, int64_t lda, const float *B, int64_t ldb, float *Y,
                        int64_t ldy, int64_t m, int64_t k, int64_t n);
void ps_gemm_acc_avx2(const float *A, int64_t lda, const float *B, int64_t ldb, float *Y,
                      int64_t ldy, int64_t m, int64_t k, int64_t n);
void ps_silu_mul_scalar(float *g, const float *u, int64_t n);
void ps_silu_mul_avx2(float *g, const float *u, int64_t n);
/* exp of n floats in place with the AVX2 level's vectorised exp (tests). */
void ps_exp_avx2(float *x, int64_t n);
/* The NEON levels' (vec_neon.c): the same steps as the scalar functions,
 * except exp (ps_exp_neon: the AVX2 level's formula). */
void ps_quantize_q8a_neon(const float *x, ps_block_q8a *y, int64_t n);
void ps_gemm_acc_neon(const float *A, int64_t lda, const float *B, int64_t ldb, float *Y,
                      int64_t ldy, int64_t m, int64_t k, int64_t n);
void ps_silu_mul_neon(float *g, const float *u, int64_t n);
void ps_exp_neon(float *x, int64_t n);

#endif
