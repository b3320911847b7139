/* compute.h: weight types, matrix kernels and the thread pool (not public).
 *
 * Everything the forward pass multiplies goes through here, so kernels can
 * be swapped (scalar reference / SIMD levels) without the model code knowing.
 * Every product returns PS_OK or a PS_ERR_* with ps_last_error() set; none
 * allocates (the pool's scratch is sized when it is created).
 * Convention: a weight matrix W has ne[1] rows of ne[0] elements each
 * (ggml order), stored row-major in its block type; y = W x.
 */
#ifndef PS_COMPUTE_H
#define PS_COMPUTE_H

#include <stddef.h>
#include <stdint.h>

/* ggml type ids (the numbers are the file format's). */
enum ps_type {
    PS_TYPE_F32 = 0, PS_TYPE_F16 = 1, PS_TYPE_BF16 = 30,                      /* float */
    PS_TYPE_Q4_0 = 2, PS_TYPE_Q4_1 = 3, PS_TYPE_Q5_0 = 6, PS_TYPE_Q5_1 = 7,   /* 32-element blocks */
    PS_TYPE_Q8_0 = 8, PS_TYPE_Q8_1 = 9,
    PS_TYPE_Q2_K = 10, PS_TYPE_Q3_K = 11, PS_TYPE_Q4_K = 12, PS_TYPE_Q5_K = 13, /* 256-element blocks */
    PS_TYPE_Q6_K = 14, PS_TYPE_Q8_K = 15,
    PS_TYPE_COUNT = 31, /* table size: ids are below this */
};

typedef struct ps_type_traits {
    const char *name;     /* "q4_0" */
    int32_t block_size;   /* elements per block (1 for float types) */
    int32_t block_bytes;  /* bytes per block */
    /* packed (row-interleaved) form, quant.h: quant bytes per block in
     * 32-bit groups (0: no packed form), and whether they are signed (stored
     * as w + 128 for the unsigned-by-signed dot product) */
    int32_t pack_dwords, pack_signed;
} ps_type_traits;

/* Traits for a ggml type id, NULL for ids this engine does not know. */
const ps_type_traits *ps_type_get(int32_t type);
/* 1 if the engine runs this type (it has kernels), 0 if not. */
int ps_type_supported(int32_t type);
/* Bytes of one row of n elements, 0 if n is not a multiple of the block size. */
size_t ps_row_bytes(int32_t type, int64_t n);

/* A weight matrix: a view into the mapping. */
typedef struct ps_matrix {
    const void *data;
    int32_t type;
    int64_t n_cols;   /* ne[0]: elements per row */
    int64_t n_rows;   /* ne[1] */
    /* NULL, or a row-interleaved copy of data (quant.h) that the full-matrix
     * products use where the SIMD level has a kernel for it; row lists and
     * row lookups always read data */
    const void *packed;
} ps_matrix;

/* Dequantize row r of W into out (n_cols floats): embedding lookup. */
int ps_dequant_row(const ps_matrix *W, int64_t r, float *out);

/* ---- thread pool + scratch -------------------------------------------- */
typedef struct ps_compute ps_compute;

#define PS_MAX_THREADS 64

/* A persistent pool of n_threads-1 workers plus the calling thread (<= 0:
 * one per core; at most PS_MAX_THREADS), and all the scratch the products
 * below need for matrices of up to max_cols columns and batches of up to
 * max_tokens tokens. NULL on failure (error set). */
ps_compute *ps_compute_new(int n_threads, int64_t max_cols, int32_t max_tokens);
void ps_compute_free(ps_compute *c);
int ps_compute_n_threads(const ps_compute *c);

/* The pool's scratch: slot 0 is shared (quantized activations), slot 1+ith
 * belongs to thread ith. NULL when the slot holds fewer than `bytes` (the
 * pool was created for smaller matrices or batches); ps_debug_fail_alloc
 * counts each claim as an allocation. */
void *ps_compute_scratch(ps_compute *c, int slot, size_t bytes);
/* Scratch bytes the products need for max_cols and max_tokens (matmul.c):
 * the shared slot, each per-thread slot, and thread 0's slot (which also
 * holds accum_rows' partial sums). */
typedef struct ps_scratch_sizes {
    size_t shared, per_thread, first_thread;
} ps_scratch_sizes;
ps_scratch_sizes ps_matmul_scratch_sizes(int64_t max_cols, int32_t max_tokens);

/* Run fn(ctx, i0, i1, ith) over [0, n) split into chunks claimed
 * dynamically by all threads; returns when every chunk is done. */
typedef void (*ps_range_fn)(void *ctx, int64_t i0, int64_t i1, int ith);
void ps_parallel_for(ps_compute *c, int64_t n, int64_t chunk, ps_range_fn fn, void *ctx);

/* ---- matrix products ------------------------------------------------- */
/* Y_t = W X_t for t < n_tok: X is n_tok x W.n_cols (row-major floats),
 * Y is n_tok x W.n_rows. The activations are quantized once per call
 * (to the type W's integer kernel needs), then rows are split across threads. */
int ps_matmul(ps_compute *c, const ps_matrix *W, const float *X, int32_t n_tok, float *Y);

/* Several matrices sharing one input (Q/K/V, gate/up): one quantization of
 * X and one parallel dispatch for all of them. All W[i] must have the same
 * n_cols. Y[i] is n_tok x W[i].n_rows. */
int ps_matmul_multi(ps_compute *c, int n_w, const ps_matrix *const *W,
                    const float *X, int32_t n_tok, float *const *Y);

/* Neuron-major product for ffn_down_t (n_ff rows of n_embd): for each token t,
 * Y_t = sum over i in idx of X_t[i] * W[i, :]. idx == NULL means all rows
 * (i = 0..n_idx-1). Y (n_tok x W.n_cols) is overwritten, not accumulated.
 * Threads split the output columns, so the result is deterministic. */
int ps_accum_rows(ps_compute *c, const ps_matrix *W, const float *X, int32_t n_tok,
                  const int32_t *idx, int64_t n_idx, float *Y);

/* Sparse rows (activation-sparse FFN): as ps_matmul_multi, but only
 * the rows idx[0..n_idx) of every W[i] (each idx[j] < W[i].n_rows) are
 * computed: Y[i][t * W[i].n_rows + idx[j]] = W[i] row idx[j] . X_t; all other
 * entries of Y[i] are left untouched. One activation quantization and one
 * dispatch for all matrices; each computed value equals, bit for bit, the
 * one ps_matmul_multi gives. idx == NULL computes nothing. */
int ps_matmul_rows_multi(ps_compute *c, int n_w, const ps_matrix *const *W, const float *X,
                         int32_t n_tok, const int32_t *idx, int64_t n_idx, float *const *Y);
int ps_matmul_rows(ps_compute *c, const ps_matrix *W, const float *X, int32_t n_tok,
                   const int32_t *idx, int64_t n_idx, float *Y);

#endif
