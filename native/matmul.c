/* matmul.c: matrix products of compute.h, split across the thread pool.
 *
 * ps_matmul / ps_matmul_multi: quantize the activations once (integer
 * kernels), then hand out row chunks x token chunks; the per-type kernel of
 * the level in force (quant.h's tables) tiles rows x tokens inside a chunk so
 * a decoded weight block is reused across tokens.
 * ps_accum_rows: each unit owns a range of output columns, so no two threads
 * write the same float and the summation order never depends on timing.
 */
#include <stdlib.h>
#include <string.h>

#include "prosparse.h"
#include "quant.h"
#include "util.h"

#define MULTI_MAX 8      /* matrices per dispatch */
#define TOK_CHUNK 64     /* tokens per unit in prompt processing (activations stay in L2) */
#define ACC_PREFETCH 8   /* rows ahead that accum_rows prefetches */
#define ACC_ROWS 64      /* rows decoded at a time by accum_rows for several tokens */
#define ACC_TOK 64       /* tokens per small GEMM there */
#define ACC_SPLIT_BLOCKS 32 /* one token, rows of fewer blocks: split the list, not the columns */
#define ACC_PARTS 4        /* parts of that split (fixed: sums independent of the thread count) */

/* ---- activation quantization ---------------------------------------------- */
typedef struct quant_task {
    const float *X;
    ps_block_q8a *Xq; /* NULL: not needed by this call's kernels */
    ps_block_q8k *Xk; /* NULL: likewise */
    int64_t n_cols;
    ps_quantize_fn quantize;
    void (*quantize_k)(const float *x, ps_block_q8k *y, int64_t n);
} quant_task;

static void quant_range(void *ctx, int64_t t0, int64_t t1, int ith) {
    quant_task *q = ctx;
    const int64_t nb = q->n_cols / PS_QK, nk = q->n_cols / PS_QK_K;
    for (int64_t t = t0; t < t1; t++) {
        if (q->Xq) q->quantize(q->X + t * q->n_cols, q->Xq + t * nb, q->n_cols);
        if (q->Xk) q->quantize_k(q->X + t * q->n_cols, q->Xk + t * nk, q->n_cols);
    }
}

/* Bytes of the q8a copy of n_tok rows, rounded up so the q8k copy after it
 * stays aligned. */
static size_t q8a_bytes(int64_t n_cols, int32_t n_tok) {
    return ((size_t)n_tok * (size_t)(n_cols / PS_QK) * sizeof(ps_block_q8a) + 63) & ~(size_t)63;
}

/* Quantized copies of X in the pool's scratch (q8a first, then q8k), the
 * formats that `need` has bits for (1 << PS_ACT_*); 0 when the scratch is
 * smaller. */
static int quantize_activations(ps_compute *c, const float *X, int64_t n_cols, int32_t n_tok,
                                const ps_level_ops *ops, int need, ps_block_q8a **Xq, ps_block_q8k **Xk) {
    const size_t qa = q8a_bytes(n_cols, n_tok);
    const size_t qk = (size_t)n_tok * (size_t)(n_cols / PS_QK_K) * sizeof(ps_block_q8k);
    uint8_t *s = ps_compute_scratch(c, 0, qa + qk);
    if (!s) return 0;
    quant_task q = {X, need & (1 << PS_ACT_Q8A) ? (ps_block_q8a *)s : NULL,
                    need & (1 << PS_ACT_Q8K) ? (ps_block_q8k *)(s + qa) : NULL, n_cols, ops->quantize_q8a,
                    ops->quantize_q8k};
    if (n_tok >= 8)
        ps_parallel_for(c, n_tok, 4, quant_range, &q);
    else
        quant_range(&q, 0, n_tok, 0);
    *Xq = q.Xq;
    *Xk = q.Xk;
    return 1;
}

/* ---- row-parallel products -------------------------------------------------- */
typedef struct mm_task {
    int n_w;
    const ps_matrix *W[MULTI_MAX];
    const ps_type_kernels *k[MULTI_MAX];
    int packed[MULTI_MAX];            /* 1: use W's packed copy */
    float *Y[MULTI_MAX];
    int64_t first_row[MULTI_MAX + 1]; /* prefix sums of rows computed per matrix */
    const int32_t *idx;               /* row list shared by all matrices, or NULL */
    const float *X;                   /* n_tok x n_cols floats */
    const ps_block_q8a *Xq;           /* n_tok x n_cols/32 blocks, or NULL */
    const ps_block_q8k *Xk;           /* n_tok x n_cols/256 blocks, or NULL */
    int64_t n_cols;
    int32_t n_tok;
    int64_t row_chunk;  /* rows per unit */
    int64_t n_row_units;
} mm_task;

/* Unit u = (row chunk, token chunk): rows may span several matrices. */
static void mm_range(void *ctx, int64_t u0, int64_t u1, int ith) {
    mm_task *m = ctx;
    for (int64_t u = u0; u < u1; u++) {
        const int64_t ru = u % m->n_row_units, tu = u / m->n_row_units;
        const int32_t t0 = (int32_t)(tu * TOK_CHUNK);
        const int32_t nt = m->n_tok - t0 < TOK_CHUNK ? m->n_tok - t0 : TOK_CHUNK;
        int64_t g0 = ru * m->row_chunk;
        int64_t g1 = g0 + m->row_chunk;
        if (g1 > m->first_row[m->n_w]) g1 = m->first_row[m->n_w];
        for (int w = 0; w < m->n_w && g0 < g1; w++) {
            const int64_t lo = m->first_row[w], hi = m->first_row[w + 1];
            if (g0 >= hi) continue;
            const int64_t r1 = (g1 < hi ? g1 : hi) - lo;
            const ps_matrix *W = m->W[w];
            const int act = m->k[w]->q8a_input;
            const void *X = act == PS_ACT_Q8A   ? (const void *)(m->Xq + (size_t)t0 * (m->n_cols / PS_QK))
                            : act == PS_ACT_Q8K ? (const void *)(m->Xk + (size_t)t0 * (m->n_cols / PS_QK_K))
                                                : (const void *)(m->X + (size_t)t0 * m->n_cols);
            float *Y = m->Y[w] + (size_t)t0 * W->n_rows;
            if (m->packed[w])
                m->k[w]->gemm_packed(W->packed, W->n_cols, g0 - lo, r1, X, nt, Y, W->n_rows);
            else
                m->k[w]->gemm(W->data, ps_row_bytes(W->type, W->n_cols), W->n_cols, m->idx, g0 - lo, r1,
                              X, nt, Y, W->n_rows);
            g0 = hi;
        }
    }
}

static int matmul_batch(ps_compute *c, int n_w, const ps_matrix *const *W, const float *X,
                        int32_t n_tok, const int32_t *idx, int64_t n_idx, float *const *Y) {
    const ps_level_ops *ops = ps_ops();
    mm_task m;
    memset(&m, 0, sizeof m);
    m.n_w = n_w;
    m.idx = idx;
    m.X = X;
    m.n_tok = n_tok;
    m.n_cols = W[0]->n_cols;
    int need_q = 0;
    for (int w = 0; w < n_w; w++) {
        m.W[w] = W[w];
        m.Y[w] = Y[w];
        m.k[w] = ps_kernels_get(W[w]->type, ops);
        /* the model loader validates shapes and types; this only keeps a bad
         * call from reading out of bounds */
        if (!m.k[w] || W[w]->n_cols != m.n_cols || ps_row_bytes(W[w]->type, W[w]->n_cols) == 0)
            return ps_fail(PS_ERR_UNSUPPORTED, "matmul: weight type %d with %lld columns not supported",
                           W[w]->type, (long long)W[w]->n_cols);
        m.packed[w] = !idx && W[w]->packed && m.k[w]->gemm_packed;
        need_q |= m.k[w]->q8a_input == PS_ACT_FLOAT ? 0 : 1 << m.k[w]->q8a_input;
        m.first_row[w + 1] = m.first_row[w] + (idx ? n_idx : W[w]->n_rows);
    }
    if (need_q) {
        ps_block_q8a *Xq;
        ps_block_q8k *Xk;
        if (!quantize_activations(c, X, m.n_cols, n_tok, ops, need_q, &Xq, &Xk))
            return ps_fail(PS_ERR_MEMORY, "matmul: no scratch for %d tokens of %lld columns (the pool was made for less)",
                           (int)n_tok, (long long)m.n_cols);
        m.Xq = Xq;
        m.Xk = Xk;
    }
    const int nth = ps_compute_n_threads(c);
    const int64_t rows = m.first_row[n_w];
    if (rows == 0) return PS_OK;
    const int64_t n_tok_units = (n_tok + TOK_CHUNK - 1) / TOK_CHUNK;
    /* Units claimed dynamically: ~8 per thread for whole matrices (the
     * streaming prefetch runs on across a thread's consecutive units); 2 per
     * thread for row lists, whose prefetch stops at a unit's end, so shorter
     * units would cut it more often */
    int64_t row_units = (int64_t)nth * (idx ? 2 : 8) / n_tok_units;
    if (row_units < 1) row_units = 1;
    int64_t chunk = (rows + row_units - 1) / row_units;
    chunk = (chunk + 15) & ~(int64_t)15; /* whole 16-row tiles (packed kernels) */
    if (chunk < 16) chunk = 16;
    if (chunk > 1024) chunk = 1024;
    m.row_chunk = chunk;
    m.n_row_units = (rows + chunk - 1) / chunk;
    ps_parallel_for(c, m.n_row_units * n_tok_units, 1, mm_range, &m);
    return PS_OK;
}

int ps_matmul_multi(ps_compute *c, int n_w, const ps_matrix *const *W, const float *X,
                    int32_t n_tok, float *const *Y) {
    for (int i = 0; i < n_w; i += MULTI_MAX) {
        int rc = matmul_batch(c, n_w - i < MULTI_MAX ? n_w - i : MULTI_MAX, W + i, X, n_tok, NULL, 0, Y + i);
        if (rc != PS_OK) return rc;
    }
    return PS_OK;
}

int ps_matmul(ps_compute *c, const ps_matrix *W, const float *X, int32_t n_tok, float *Y) {
    return matmul_batch(c, 1, &W, X, n_tok, NULL, 0, &Y);
}

int ps_matmul_rows_multi(ps_compute *c, int n_w, const ps_matrix *const *W, const float *X,
                         int32_t n_tok, const int32_t *idx, int64_t n_idx, float *const *Y) {
    if (!idx) n_idx = 0; /* no list: nothing to compute (use ps_matmul_multi for all rows) */
    for (int i = 0; i < n_w; i += MULTI_MAX) {
        int rc = matmul_batch(c, n_w - i < MULTI_MAX ? n_w - i : MULTI_MAX, W + i, X, n_tok, idx, n_idx, Y + i);
        if (rc != PS_OK) return rc;
    }
    return PS_OK;
}

int ps_matmul_rows(ps_compute *c, const ps_matrix *W, const float *X, int32_t n_tok,
                   const int32_t *idx, int64_t n_idx, float *Y) {
    return ps_matmul_rows_multi(c, 1, &W, X, n_tok, idx, n_idx, &Y);
}

int ps_dequant_row(const ps_matrix *W, int64_t r, float *out) {
    const ps_type_kernels *k = ps_kernels_get(W->type, ps_ops());
    const size_t rb = ps_row_bytes(W->type, W->n_cols);
    if (!k || rb == 0) return ps_fail(PS_ERR_UNSUPPORTED, "dequantize: weight type %d not supported", W->type);
    if (r < 0 || r >= W->n_rows)
        return ps_fail(PS_ERR_ARG, "row %lld is outside [0, %lld)", (long long)r, (long long)W->n_rows);
    k->dequant((const uint8_t *)W->data + (size_t)r * rb, out, W->n_cols);
    return PS_OK;
}

/* ---- neuron-major accumulation (ffn_down_t) -------------------------------- */
typedef struct acc_task {
    const ps_matrix *W;
    const ps_type_kernels *k;
    size_t row_bytes;
    const float *X; /* n_tok x W.n_rows */
    int32_t n_tok;
    const int32_t *idx;
    int64_t n_idx;
    float *Y;        /* n_tok x W.n_cols */
    int64_t col_unit; /* column units: columns per unit, a multiple of the block size */
    int64_t n_parts;  /* row units (one token, narrow rows): list parts, each with ... */
    float *partial;   /* ... its own full-width sum here, added up in part order */
    float *seg[PS_MAX_THREADS]; /* several tokens: each thread's decoded rows, then gathered x */
    ps_gemm_acc_fn gemm_acc;
} acc_task;

/* One token: y[0, width) += X[i] * (row i from `base`, seg_bytes of it) for
 * the rows at list positions [j0, j1), four at a time. */
static void accum_list(const acc_task *a, int64_t j0, int64_t j1, const uint8_t *base, size_t seg_bytes,
                       float *y, int64_t width) {
    const void *pend[4]; /* active rows waiting to be added four at a time */
    float pend_x[4];
    int n_pend = 0;
    for (int64_t j = j0; j < j1; j++) {
        const int64_t i = a->idx ? a->idx[j] : j;
        /* rows come in index order, not memory order: fetch a few ahead */
        if (j + ACC_PREFETCH < j1) {
            const int64_t nxi = a->idx ? a->idx[j + ACC_PREFETCH] : j + ACC_PREFETCH;
            const uint8_t *nx = base + (size_t)nxi * a->row_bytes;
            if (a->X[nxi] != 0.0f)
                for (size_t o = 0; o < seg_bytes; o += 64) __builtin_prefetch(nx + o);
        }
        const float x = a->X[i];
        if (x == 0.0f) continue;
        pend[n_pend] = base + (size_t)i * a->row_bytes;
        pend_x[n_pend++] = x;
        if (n_pend == 4) {
            a->k->axpy4(pend, pend_x, y, width);
            n_pend = 0;
        }
    }
    for (int q = 0; q < n_pend; q++) a->k->axpy(pend[q], pend_x[q], y, width);
}

/* Row unit u (one token): list part u, whole rows, into its own partial sum. */
static void acc_part(void *ctx, int64_t u0, int64_t u1, int ith) {
    const acc_task *a = ctx;
    const int64_t n_cols = a->W->n_cols;
    for (int64_t u = u0; u < u1; u++) {
        float *y = a->partial + u * n_cols;
        memset(y, 0, sizeof(float) * (size_t)n_cols);
        accum_list(a, u * a->n_idx / a->n_parts, (u + 1) * a->n_idx / a->n_parts, a->W->data, a->row_bytes, y,
                   n_cols);
    }
}

/* One column unit: output columns [u * col_unit, (u+1) * col_unit) for every token. */
static void acc_unit(acc_task *a, int64_t u, int ith) {
    const ps_matrix *W = a->W;
    const int64_t n_rows = W->n_rows;
    int64_t c0 = u * a->col_unit, c1 = (u + 1) * a->col_unit;
    if (c1 > W->n_cols) c1 = W->n_cols;
    const int64_t width = c1 - c0;
    const size_t off = ps_row_bytes(W->type, c0);
    const uint8_t *base = (const uint8_t *)W->data + off;
    for (int32_t t = 0; t < a->n_tok; t++) memset(a->Y + (size_t)t * W->n_cols + c0, 0, (size_t)width * sizeof(float));
    if (a->n_tok == 1) {
        accum_list(a, 0, a->n_idx, base, ps_row_bytes(W->type, width), a->Y + c0, width);
        return;
    }
    /* Several tokens: decode ACC_ROWS row segments once, gather the matching
     * activations, and multiply them as a small float GEMM. */
    float *seg = a->seg[ith]; /* (checked by the caller) */
    float *xa = seg + (size_t)ACC_ROWS * a->col_unit;  /* ACC_TOK x ACC_ROWS */
    for (int64_t j0 = 0; j0 < a->n_idx; j0 += ACC_ROWS) {
        const int64_t nj = a->n_idx - j0 < ACC_ROWS ? a->n_idx - j0 : ACC_ROWS;
        for (int64_t j = 0; j < nj; j++) {
            const int64_t i = a->idx ? a->idx[j0 + j] : j0 + j;
            a->k->dequant(base + (size_t)i * a->row_bytes, seg + j * width, width);
        }
        for (int32_t t0 = 0; t0 < a->n_tok; t0 += ACC_TOK) {
            const int32_t mt = a->n_tok - t0 < ACC_TOK ? a->n_tok - t0 : ACC_TOK;
            for (int32_t t = 0; t < mt; t++) {
                const float *x = a->X + (size_t)(t0 + t) * n_rows;
                for (int64_t j = 0; j < nj; j++) xa[t * ACC_ROWS + j] = x[a->idx ? a->idx[j0 + j] : j0 + j];
            }
            a->gemm_acc(xa, ACC_ROWS, seg, width, a->Y + (size_t)t0 * W->n_cols + c0, W->n_cols, mt, nj, width);
        }
    }
}

static void acc_range(void *ctx, int64_t u0, int64_t u1, int ith) {
    for (int64_t u = u0; u < u1; u++) acc_unit(ctx, u, ith);
}

/* Scratch floats of accum_rows for several tokens: ACC_ROWS decoded row
 * segments of up to ACC_MAX_UNIT columns, and the gathered activations. */
#define ACC_MAX_UNIT 256 /* 8 blocks of 32 columns, see col_unit below */
#define ACC_SEG_FLOATS ((size_t)ACC_ROWS * ACC_MAX_UNIT + (size_t)ACC_TOK * ACC_ROWS)

ps_scratch_sizes ps_matmul_scratch_sizes(int64_t max_cols, int32_t max_tokens) {
    if (max_tokens < 1) max_tokens = 1;
    const size_t blocks = (size_t)((max_cols + PS_QK - 1) / PS_QK);
    const size_t kblocks = (size_t)((max_cols + PS_QK_K - 1) / PS_QK_K);
    const size_t partial = sizeof(float) * (size_t)ACC_PARTS * (size_t)max_cols;
    const size_t seg = max_tokens > 1 ? ACC_SEG_FLOATS * sizeof(float) : 0;
    const size_t act = q8a_bytes((int64_t)blocks * PS_QK, max_tokens) + kblocks * (size_t)max_tokens * sizeof(ps_block_q8k);
    ps_scratch_sizes z = {act, seg, seg > partial ? seg : partial};
    return z;
}

int ps_accum_rows(ps_compute *c, const ps_matrix *W, const float *X, int32_t n_tok,
                  const int32_t *idx, int64_t n_idx, float *Y) {
    const ps_level_ops *ops = ps_ops();
    const ps_type_kernels *k = ps_kernels_get(W->type, ops);
    const ps_type_traits *tr = ps_type_get(W->type);
    if (!k || !tr || ps_row_bytes(W->type, W->n_cols) == 0)
        return ps_fail(PS_ERR_UNSUPPORTED, "accum_rows: unsupported weight type %d", W->type);
    const int nth = ps_compute_n_threads(c);
    const int64_t bs = tr->block_size > 1 ? tr->block_size : 32;
    const int64_t n_units_min = (W->n_cols + bs - 1) / bs;
    /* one contiguous column range per thread for a single token (each thread
     * streams its part of every row); smaller units when there is more work */
    int64_t per = (n_units_min + nth - 1) / nth;
    if (n_tok > 1 && per > ACC_MAX_UNIT / bs) per = ACC_MAX_UNIT / bs;
    if (per < 1) per = 1;
    acc_task a = {W, k, ps_row_bytes(W->type, W->n_cols), X, n_tok, idx, n_idx, Y, per * bs, 0, NULL, {NULL},
                  ops->gemm_acc};
    if (n_tok > 1)
        for (int i = 0; i < nth; i++)
            if (!(a.seg[i] = ps_compute_scratch(c, 1 + i, ACC_SEG_FLOATS * sizeof(float))))
                return ps_fail(PS_ERR_MEMORY, "accum_rows: no scratch for %d tokens (the pool was made for less)",
                               (int)n_tok);
    /* One token over narrow rows (fewer than ACC_SPLIT_BLOCKS blocks): column
     * units would spend more on each row's bookkeeping than on its few
     * blocks, so split the list instead, into ACC_PARTS fixed parts with a
     * partial sum each, added in part order: the result depends neither on
     * which thread ran which part nor on the number of threads */
    if (n_tok == 1 && n_idx >= 64 && n_units_min < ACC_SPLIT_BLOCKS) {
        a.n_parts = ACC_PARTS;
        a.partial = ps_compute_scratch(c, 1, sizeof(float) * (size_t)(ACC_PARTS * W->n_cols));
        if (!a.partial)
            return ps_fail(PS_ERR_MEMORY, "accum_rows: no scratch for %lld columns (the pool was made for less)",
                           (long long)W->n_cols);
        ps_parallel_for(c, a.n_parts, 1, acc_part, &a);
        for (int64_t col = 0; col < W->n_cols; col++) {
            float v = a.partial[col];
            for (int64_t u = 1; u < a.n_parts; u++) v += a.partial[u * W->n_cols + col];
            Y[col] = v;
        }
        return PS_OK;
    }
    const int64_t n_units = (W->n_cols + a.col_unit - 1) / a.col_unit;
    ps_parallel_for(c, n_units, 1, acc_range, &a);
    return PS_OK;
}

/* ---- testing hooks (prosparse.h) ------------------------------------------ */
static int check_matrix(int32_t type, const void *W, int64_t n_rows, int64_t n_cols) {
    const ps_type_traits *tr = ps_type_get(type);
    if (!tr || !ps_type_supported(type)) return ps_fail(PS_ERR_UNSUPPORTED, "type %d not supported", type);
    if (!W || n_rows <= 0 || n_cols <= 0 || n_cols % tr->block_size)
        return ps_fail(PS_ERR_ARG, "bad matrix %lld x %lld for %s", (long long)n_rows,
                       (long long)n_cols, tr->name);
    return PS_OK;
}

int ps_debug_dequantize(int32_t type, const void *src, int64_t n, float *dst) {
    int rc = check_matrix(type, src, 1, n);
    if (rc) return rc;
    ps_matrix W = {src, type, n, 1, NULL};
    return ps_dequant_row(&W, 0, dst);
}

static int debug_matmul(int32_t type, const void *W, int64_t n_rows, int64_t n_cols, const float *X,
                        int32_t n_tok, float *Y, int32_t n_threads, int pack) {
    int rc = check_matrix(type, W, n_rows, n_cols);
    if (rc) return rc;
    if (!X || !Y || n_tok <= 0) return ps_fail(PS_ERR_ARG, "bad activations");
    void *P = NULL;
    if (pack) {
        const size_t bytes = ps_packed_bytes(type, n_rows, n_cols);
        if (!bytes) return ps_fail(PS_ERR_UNSUPPORTED, "type %d has no packed form", type);
        if (!(P = ps_alloc(bytes))) return ps_fail(PS_ERR_MEMORY, "out of memory");
        ps_pack_matrix(type, W, n_rows, n_cols, P);
    }
    ps_compute *c = ps_compute_new(n_threads, n_cols, n_tok);
    if (!c) {
        ps_free(P);
        return PS_ERR_MEMORY;
    }
    ps_matrix M = {W, type, n_cols, n_rows, P};
    rc = ps_matmul(c, &M, X, n_tok, Y);
    ps_compute_free(c);
    ps_free(P);
    return rc;
}

int ps_debug_matmul(int32_t type, const void *W, int64_t n_rows, int64_t n_cols, const float *X,
                    int32_t n_tok, float *Y, int32_t n_threads) {
    return debug_matmul(type, W, n_rows, n_cols, X, n_tok, Y, n_threads, 0);
}

int ps_debug_matmul_packed(int32_t type, const void *W, int64_t n_rows, int64_t n_cols, const float *X,
                           int32_t n_tok, float *Y, int32_t n_threads) {
    return debug_matmul(type, W, n_rows, n_cols, X, n_tok, Y, n_threads, 1);
}

int ps_debug_accum_rows(int32_t type, const void *W, int64_t n_rows, int64_t n_cols,
                        const float *X, int32_t n_tok, const int32_t *idx, int64_t n_idx,
                        float *Y, int32_t n_threads) {
    int rc = check_matrix(type, W, n_rows, n_cols);
    if (rc) return rc;
    if (!X || !Y || n_tok <= 0 || n_idx < 0 || (!idx && n_idx > n_rows))
        return ps_fail(PS_ERR_ARG, "bad activations or index list");
    for (int64_t j = 0; idx && j < n_idx; j++)
        if (idx[j] < 0 || idx[j] >= n_rows) return ps_fail(PS_ERR_ARG, "index %lld out of range", (long long)j);
    ps_compute *c = ps_compute_new(n_threads, n_cols, n_tok);
    if (!c) return PS_ERR_MEMORY;
    ps_matrix M = {W, type, n_cols, n_rows, NULL};
    rc = ps_accum_rows(c, &M, X, n_tok, idx, n_idx, Y);
    ps_compute_free(c);
    return rc;
}
