/* test_quant.c: weight types, kernels and the thread pool.
 *
 * References: hand-built blocks for dequantization, float64 loops over the
 * dequantized weights for every product; the scalar path is the reference
 * for the AVX2 one. The bit-exactness with gguf-py is tests/test_kernels.py.
 */
#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "attention.h"
#include "check.h"
#include "compute.h"
#include "prosparse.h"
#include "quant.h"
#include "util.h"

static const int32_t TYPES[] = {PS_TYPE_F32, PS_TYPE_F16, PS_TYPE_BF16, PS_TYPE_Q8_0, PS_TYPE_Q4_0,
                                PS_TYPE_Q4_1, PS_TYPE_Q5_0, PS_TYPE_Q5_1, PS_TYPE_Q2_K, PS_TYPE_Q3_K,
                                PS_TYPE_Q4_K, PS_TYPE_Q5_K, PS_TYPE_Q6_K};
#define N_TYPES (int)(sizeof TYPES / sizeof TYPES[0])
/* Levels run in a loop: those this CPU runs (ps_simd_set gives another for the rest). */
#define FOR_LEVELS(level) \
    for (int level = 0; level < PS_SIMD_COUNT; level++) if (ps_simd_set(level) == level)
#if defined(__aarch64__)
#define ps_exp_simd ps_exp_neon
#elif defined(__x86_64__) || defined(__i386__)
#define ps_exp_simd ps_exp_avx2
#endif

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;
static uint32_t rnd(void) {
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (uint32_t)(rng_state >> 16);
}
static float frand(void) { return (float)(rnd() % 2000001) / 1000000.0f - 1.0f; } /* [-1, 1] */

/* A column count valid for the type near n: the K-quants need multiples of
 * 256 (32 -> 256, 96 -> 512, 576 -> 768, ...). */
static int64_t cols_for(int32_t type, int64_t n) {
    const ps_type_traits *t = ps_type_get(type);
    if (t->block_size < 256) return n;
    return (n / 256 + 1) * 256;
}

/* Byte offsets of a block's fp16 scales: d, and the minimum (dmin / m) or -1. */
static void scale_offsets(int32_t type, int *d, int *m) {
    *m = -1;
    switch (type) {
    case PS_TYPE_Q4_1: case PS_TYPE_Q5_1: case PS_TYPE_Q4_K: case PS_TYPE_Q5_K: *d = 0, *m = 2; break;
    case PS_TYPE_Q2_K: *d = 80, *m = 82; break;
    case PS_TYPE_Q3_K: *d = 108; break;
    case PS_TYPE_Q6_K: *d = 208; break;
    default: *d = 0;
    }
}

/* A random but valid matrix of the given type (n_cols a multiple of its
 * block size): random bytes with finite fp16 scales. */
static void *random_matrix(int32_t type, int64_t n_rows, int64_t n_cols) {
    const size_t rb = ps_row_bytes(type, n_cols);
    uint8_t *w = malloc(rb * (size_t)n_rows);
    for (int64_t r = 0; r < n_rows; r++) {
        uint8_t *row = w + (size_t)r * rb;
        switch (type) {
        case PS_TYPE_F32:
            for (int64_t i = 0; i < n_cols; i++) ((float *)row)[i] = frand();
            break;
        case PS_TYPE_F16:
            for (int64_t i = 0; i < n_cols; i++) ((uint16_t *)row)[i] = ps_f32_to_fp16(frand());
            break;
        case PS_TYPE_BF16:
            for (int64_t i = 0; i < n_cols; i++) {
                float f = frand();
                uint32_t bits;
                memcpy(&bits, &f, 4);
                ((uint16_t *)row)[i] = (uint16_t)(bits >> 16);
            }
            break;
        default: {
            const ps_type_traits *t = ps_type_get(type);
            for (size_t i = 0; i < rb; i++) row[i] = (uint8_t)rnd();
            int od, om;
            scale_offsets(type, &od, &om);
            for (int64_t b = 0; b < n_cols / t->block_size; b++) {
                uint8_t *blk = row + (size_t)b * t->block_bytes;
                uint16_t d = ps_f32_to_fp16(0.001f + 0.02f * (frand() + 1.0f));
                memcpy(blk + od, &d, 2);
                if (om >= 0) {
                    uint16_t m = ps_f32_to_fp16(0.1f * frand());
                    memcpy(blk + om, &m, 2);
                }
            }
        }
        }
    }
    return w;
}

static float *random_floats(int64_t n) {
    float *x = malloc((size_t)n * sizeof(float));
    for (int64_t i = 0; i < n; i++) x[i] = frand();
    return x;
}

/* float64 reference of Y = X W^T on dequantized W; activations quantized
 * first (as the kernels do) for the integer types. */
static void reference_matmul(int32_t type, const void *W, int64_t n_rows, int64_t n_cols,
                             const float *X, int32_t n_tok, double *Y, double *bound) {
    ps_matrix M = {W, type, n_cols, n_rows, NULL};
    float *row = malloc((size_t)n_cols * sizeof(float));
    float *xd = malloc((size_t)n_cols * n_tok * sizeof(float));
    const ps_type_kernels *k = ps_kernels_get(type, &ps_ops_scalar);
    if (k->q8a_input == PS_ACT_Q8K) {
        ps_block_q8k *q = malloc((size_t)n_cols / 256 * sizeof(ps_block_q8k));
        for (int32_t t = 0; t < n_tok; t++) {
            ps_quantize_q8k(X + (size_t)t * n_cols, q, n_cols);
            for (int64_t i = 0; i < n_cols; i++)
                xd[(size_t)t * n_cols + i] = q[i / 256].d * (float)q[i / 256].qs[i % 256];
        }
        free(q);
    } else if (k->q8a_input) {
        ps_block_q8a *q = malloc((size_t)n_cols / 32 * sizeof(ps_block_q8a));
        for (int32_t t = 0; t < n_tok; t++) {
            ps_quantize_q8a_scalar(X + (size_t)t * n_cols, q, n_cols);
            for (int64_t i = 0; i < n_cols; i++)
                xd[(size_t)t * n_cols + i] = q[i / 32].d * (float)q[i / 32].qs[i % 32];
        }
        free(q);
    } else {
        memcpy(xd, X, (size_t)n_cols * n_tok * sizeof(float));
    }
    for (int64_t r = 0; r < n_rows; r++) {
        ps_dequant_row(&M, r, row);
        for (int32_t t = 0; t < n_tok; t++) {
            double s = 0, a = 0;
            for (int64_t i = 0; i < n_cols; i++) {
                s += (double)row[i] * xd[(size_t)t * n_cols + i];
                a += fabs((double)row[i] * xd[(size_t)t * n_cols + i]);
            }
            Y[(size_t)t * n_rows + r] = s;
            bound[(size_t)t * n_rows + r] = a;
        }
    }
    free(row);
    free(xd);
}

TEST(test_traits) {
    CHECK(ps_row_bytes(PS_TYPE_Q4_0, 64) == 36);
    CHECK(ps_row_bytes(PS_TYPE_Q4_1, 32) == 20);
    CHECK(ps_row_bytes(PS_TYPE_Q8_0, 96) == 102);
    CHECK(ps_row_bytes(PS_TYPE_F16, 7) == 14);
    CHECK(ps_row_bytes(PS_TYPE_Q4_0, 33) == 0);
    CHECK(ps_type_get(PS_TYPE_Q8_1) && !ps_type_supported(PS_TYPE_Q8_1));
    CHECK(ps_type_get(PS_TYPE_Q8_K) && !ps_type_supported(PS_TYPE_Q8_K));
    CHECK(ps_row_bytes(PS_TYPE_Q4_K, 512) == 288 && ps_row_bytes(PS_TYPE_Q6_K, 256) == 210);
    CHECK(ps_row_bytes(PS_TYPE_Q4_K, 576) == 0 && ps_row_bytes(PS_TYPE_Q5_0, 64) == 44);
    CHECK(ps_type_get(99) == NULL);
    CHECK(strcmp(ps_type_get(PS_TYPE_BF16)->name, "bf16") == 0);
}

/* Hand-made blocks with known values, every SIMD level. */
TEST(test_dequant_known) {
    ps_block_q4_0 b0;
    b0.d = ps_f32_to_fp16(0.5f);
    for (int j = 0; j < 16; j++) b0.qs[j] = (uint8_t)(j | ((15 - j) << 4));
    ps_block_q4_1 b1;
    b1.d = ps_f32_to_fp16(0.25f);
    b1.m = ps_f32_to_fp16(-1.0f);
    memcpy(b1.qs, b0.qs, 16);
    ps_block_q8_0 b8;
    b8.d = ps_f32_to_fp16(2.0f);
    for (int j = 0; j < 32; j++) b8.qs[j] = (int8_t)(j * 8 - 128);
    FOR_LEVELS(level) {
        float out[32];
        CHECK(ps_debug_dequantize(PS_TYPE_Q4_0, &b0, 32, out) == PS_OK);
        for (int j = 0; j < 16; j++) {
            CHECK(out[j] == 0.5f * (float)(j - 8));
            CHECK(out[j + 16] == 0.5f * (float)(15 - j - 8));
        }
        CHECK(ps_debug_dequantize(PS_TYPE_Q4_1, &b1, 32, out) == PS_OK);
        for (int j = 0; j < 16; j++) {
            CHECK(out[j] == 0.25f * (float)j - 1.0f);
            CHECK(out[j + 16] == 0.25f * (float)(15 - j) - 1.0f);
        }
        CHECK(ps_debug_dequantize(PS_TYPE_Q8_0, &b8, 32, out) == PS_OK);
        for (int j = 0; j < 32; j++) CHECK(out[j] == 2.0f * (float)(j * 8 - 128));
        uint16_t h[3] = {0x3c00, 0xc000, 0x3555}; /* 1, -2, ~1/3 */
        CHECK(ps_debug_dequantize(PS_TYPE_F16, h, 3, out) == PS_OK);
        CHECK(out[0] == 1.0f && out[1] == -2.0f && fabsf(out[2] - 0.333251953125f) < 1e-9f);
        uint16_t bf[2] = {0x3f80, 0xc040}; /* 1, -3 */
        CHECK(ps_debug_dequantize(PS_TYPE_BF16, bf, 2, out) == PS_OK);
        CHECK(out[0] == 1.0f && out[1] == -3.0f);
    }
    ps_simd_set(ps_simd_supported());
    float out[32];
    CHECK(ps_debug_dequantize(PS_TYPE_Q4_0, &b0, 31, out) == PS_ERR_ARG);
    CHECK(ps_debug_dequantize(PS_TYPE_Q8_1, &b0, 32, out) == PS_ERR_UNSUPPORTED);
    CHECK(ps_debug_dequantize(PS_TYPE_Q4_K, &b0, 32, out) == PS_ERR_ARG); /* not a multiple of 256 */
}

/* Every level quantizes activations to the scalar bytes (ties included). */
TEST(test_quantize_activations) {
    enum { N = 32 * 40 };
    float *x = random_floats(N);
    for (int i = 0; i < 32; i++) x[i] = 0.0f;                    /* all-zero block */
    for (int i = 32; i < 64; i++) x[i] = (float)(i - 48) * 0.5f; /* exact .5 ties */
    x[64] = 1e-30f;
    ps_block_q8a a[N / 32], b[N / 32];
    ps_quantize_q8a_scalar(x, a, N);
    FOR_LEVELS(level) {
        ps_ops()->quantize_q8a(x, b, N);
        CHECK(memcmp(a, b, sizeof a) == 0);
    }
    ps_simd_set(ps_simd_supported());
    ps_block_q8k ka[N / 256], kb[N / 256]; /* the K-quants' blocks likewise */
    ps_quantize_q8k(x, ka, N / 256 * 256);
    FOR_LEVELS(level) {
        memset(kb, 0x55, sizeof kb);
        ps_ops()->quantize_q8k(x, kb, N / 256 * 256);
        CHECK(memcmp(ka, kb, sizeof ka) == 0);
    }
    ps_simd_set(ps_simd_supported());
    CHECK(a[0].d == 0.0f && a[0].s == 0.0f);
    for (int blk = 1; blk < N / 32; blk++) {
        int sum = 0;
        for (int j = 0; j < 32; j++) {
            sum += a[blk].qs[j];
            CHECK(fabsf(a[blk].d * a[blk].qs[j] - x[blk * 32 + j]) <= a[blk].d * 0.5001f);
        }
        CHECK(a[blk].s == a[blk].d * (float)sum);
    }
    free(x);
}

/* Every type, odd shapes, both SIMD levels: close to float64 on the same
 * quantized activations; scalar and AVX2 agree to float rounding. */
TEST(test_matmul_vs_reference) {
    static const int64_t rows[] = {1, 7, 33, 100};
    static const int64_t cols[] = {32, 96, 576};
    static const int32_t toks[] = {1, 3, 70};
    for (int ti = 0; ti < N_TYPES; ti++)
        for (int ri = 0; ri < 4; ri++)
            for (int ci = 0; ci < 3; ci++)
                for (int ki = 0; ki < 3; ki++) {
                    const int32_t type = TYPES[ti];
                    const int64_t nr = rows[ri], nc = cols_for(type, cols[ci]);
                    const int32_t nt = toks[ki];
                    void *W = random_matrix(type, nr, nc);
                    float *X = random_floats(nc * nt);
                    double *ref = malloc(sizeof(double) * nr * nt), *bnd = malloc(sizeof(double) * nr * nt);
                    float *Ys = malloc(sizeof(float) * nr * nt), *Yv = malloc(sizeof(float) * nr * nt);
                    reference_matmul(type, W, nr, nc, X, nt, ref, bnd);
                    ps_simd_set(PS_SIMD_SCALAR);
                    CHECK(ps_debug_matmul(type, W, nr, nc, X, nt, Ys, 2) == PS_OK);
                    ps_simd_set(ps_simd_supported());
                    CHECK(ps_debug_matmul(type, W, nr, nc, X, nt, Yv, 2) == PS_OK);
                    int bad = 0;
                    for (int64_t i = 0; i < nr * nt; i++) {
                        const double tol = 2e-6 * bnd[i] + 1e-6;
                        if (fabs(Ys[i] - ref[i]) > tol || fabs(Yv[i] - ref[i]) > tol) {
                            if (!bad)
                                fprintf(stderr, "type %d %lldx%lld tok %d at %lld: scalar %g avx2 %g ref %g\n",
                                        type, (long long)nr, (long long)nc, nt, (long long)i, Ys[i], Yv[i], ref[i]);
                            bad++;
                        }
                    }
                    CHECK(bad == 0);
                    free(W), free(X), free(ref), free(bnd), free(Ys), free(Yv);
                }
}

/* The activation-quantization error of the integer types stays within its bound. */
TEST(test_matmul_vs_float_input) {
    const int64_t nr = 64;
    for (int ti = 3; ti < N_TYPES; ti++) {
        const int64_t nc = cols_for(TYPES[ti], 576);
        const int qb = ps_kernels_get(TYPES[ti], &ps_ops_scalar)->q8a_input == PS_ACT_Q8K ? 256 : 32;
        void *W = random_matrix(TYPES[ti], nr, nc);
        float *X = random_floats(nc);
        float *Y = malloc(sizeof(float) * nr), *row = malloc(sizeof(float) * nc);
        CHECK(ps_debug_matmul(TYPES[ti], W, nr, nc, X, 1, Y, 1) == PS_OK);
        ps_matrix M = {W, TYPES[ti], nc, nr, NULL};
        for (int64_t r = 0; r < nr; r++) {
            ps_dequant_row(&M, r, row);
            double s = 0, bound = 0;
            for (int64_t b = 0; b < nc / qb; b++) {
                float amax = 0;
                for (int j = 0; j < qb; j++) amax = fmaxf(amax, fabsf(X[b * qb + j]));
                for (int j = 0; j < qb; j++) {
                    s += (double)row[b * qb + j] * X[b * qb + j];
                    bound += fabs(row[b * qb + j]) * (amax / 127.0 * 0.5);
                }
            }
            CHECK(fabs(Y[r] - s) <= bound * 1.01 + 1e-5);
        }
        free(W), free(X), free(Y), free(row);
    }
}

/* Chunking never changes results: 1 vs 2 threads bit-identical, multi ==
 * separate calls bit-identical, batched == one token at a time. */
TEST(test_matmul_deterministic) {
    const int32_t nt = 5;
    ps_compute *c1 = ps_compute_new(1, 768, nt), *c2 = ps_compute_new(2, 768, nt);
    CHECK(c1 && c2);
    for (int ti = 0; ti < N_TYPES; ti++) {
        const int64_t nc = cols_for(TYPES[ti], 576);
        const int64_t nr[3] = {576, 192, 100};
        void *W[3];
        ps_matrix M[3];
        const ps_matrix *Mp[3];
        float *Ya[3], *Yb[3], *Yc[3];
        for (int i = 0; i < 3; i++) {
            W[i] = random_matrix(TYPES[ti], nr[i], nc);
            M[i] = (ps_matrix){W[i], TYPES[ti], nc, nr[i], NULL};
            Mp[i] = &M[i];
            Ya[i] = malloc(sizeof(float) * nr[i] * nt);
            Yb[i] = malloc(sizeof(float) * nr[i] * nt);
            Yc[i] = malloc(sizeof(float) * nr[i] * nt);
        }
        float *X = random_floats(nc * nt);
        for (int t = 1; t <= nt; t += 4) {
            ps_matmul_multi(c2, 3, Mp, X, t, Ya);
            for (int i = 0; i < 3; i++) {
                ps_matmul(c2, &M[i], X, t, Yb[i]);
                ps_matmul(c1, &M[i], X, t, Yc[i]);
                CHECK(memcmp(Ya[i], Yb[i], sizeof(float) * nr[i] * t) == 0);
                CHECK(memcmp(Ya[i], Yc[i], sizeof(float) * nr[i] * t) == 0);
            }
        }
        /* batching does not change a token's result: token t of a 5-token product
         * equals the 1-token product (both SIMD levels) */
        FOR_LEVELS(level) {
            ps_matmul(c2, &M[0], X, nt, Ya[0]);
            for (int t = 0; t < nt; t++) {
                ps_matmul(c2, &M[0], X + (size_t)t * nc, 1, Yb[0]);
                CHECK(memcmp(Ya[0] + (size_t)t * nr[0], Yb[0], sizeof(float) * nr[0]) == 0);
            }
        }
        ps_simd_set(ps_simd_supported());
        for (int i = 0; i < 3; i++) free(W[i]), free(Ya[i]), free(Yb[i]), free(Yc[i]);
        free(X);
    }
    ps_compute_free(c1);
    ps_compute_free(c2);
}

/* matmul_rows(_multi): listed rows equal the dense product bit for bit, the
 * other outputs stay untouched; every type, both SIMD levels. */
TEST(test_matmul_rows) {
    const int64_t nr = 77;
    ps_compute *c = ps_compute_new(2, 512, 5);
    int32_t idx[37];
    for (int j = 0; j < 37; j++) idx[j] = (int32_t)((j * 29 + 5) % nr); /* unsorted, distinct */
    for (int ti = 0; ti < N_TYPES; ti++)
        FOR_LEVELS(level) {
            const int64_t nc = cols_for(TYPES[ti], 96);
            void *W1 = random_matrix(TYPES[ti], nr, nc), *W2 = random_matrix(TYPES[ti], nr + 3, nc);
            ps_matrix M[2] = {{W1, TYPES[ti], nc, nr, NULL}, {W2, TYPES[ti], nc, nr + 3, NULL}};
            const ps_matrix *Mp[2] = {&M[0], &M[1]};
            float *X = random_floats(nc * 5);
            for (int32_t nt = 1; nt <= 5; nt += 4)
                for (int64_t n_idx = 0; n_idx <= 37; n_idx += 37) {
                    float *D[2], *S[2];
                    for (int i = 0; i < 2; i++) {
                        D[i] = malloc(sizeof(float) * (nr + 3) * nt);
                        S[i] = malloc(sizeof(float) * (nr + 3) * nt);
                        for (int64_t e = 0; e < (nr + 3) * nt; e++) S[i][e] = -12345.0f;
                    }
                    ps_matmul_multi(c, 2, Mp, X, nt, D);
                    ps_matmul_rows_multi(c, 2, Mp, X, nt, idx, n_idx, S);
                    for (int i = 0; i < 2; i++) {
                        const int64_t rows = M[i].n_rows;
                        int bad = 0;
                        for (int32_t t = 0; t < nt; t++)
                            for (int64_t r = 0; r < rows; r++) {
                                int listed = 0;
                                for (int64_t j = 0; j < n_idx; j++) listed |= idx[j] == r;
                                const float got = S[i][t * rows + r];
                                if (listed ? memcmp(&got, &D[i][t * rows + r], 4) != 0 : got != -12345.0f) bad++;
                            }
                        CHECK(bad == 0);
                        free(D[i]), free(S[i]);
                    }
                }
            free(W1), free(W2), free(X);
        }
    ps_simd_set(ps_simd_supported());
    ps_compute_free(c);
}

/* accum_rows: float64 reference, index lists, determinism across threads. */
TEST(test_accum_rows) {
    const int64_t n_ff = 200; /* 352 columns: 11 blocks, several column units per thread, or list parts */
    for (int ti = 0; ti < N_TYPES; ti++)
        FOR_LEVELS(level) {
            const int64_t n_embd = cols_for(TYPES[ti], 352);
            void *W = random_matrix(TYPES[ti], n_ff, n_embd);
            ps_matrix M = {W, TYPES[ti], n_embd, n_ff, NULL};
            for (int32_t nt = 1; nt <= 9; nt += 8) {
                float *X = random_floats(n_ff * nt);
                for (int64_t i = 0; i < n_ff * nt; i += 3) X[i] = 0.0f; /* some inactive neurons */
                /* lists of 50 (column units) and 100 (one token: the list split in parts) */
                int32_t idx[100];
                for (int j = 0; j < 100; j++) idx[j] = (j * 37) % (int)n_ff;
                for (int use_idx = 0; use_idx < 3; use_idx++) {
                    const int64_t n_idx = use_idx == 1 ? 50 : use_idx == 2 ? 100 : n_ff;
                    float *Y1 = malloc(sizeof(float) * n_embd * nt), *Y2 = malloc(sizeof(float) * n_embd * nt);
                    CHECK(ps_debug_accum_rows(TYPES[ti], W, n_ff, n_embd, X, nt, use_idx ? idx : NULL,
                                              n_idx, Y1, 1) == PS_OK);
                    CHECK(ps_debug_accum_rows(TYPES[ti], W, n_ff, n_embd, X, nt, use_idx ? idx : NULL,
                                              n_idx, Y2, 2) == PS_OK);
                    CHECK(memcmp(Y1, Y2, sizeof(float) * n_embd * nt) == 0);
                    float *row = malloc(sizeof(float) * n_embd);
                    int bad = 0;
                    for (int32_t t = 0; t < nt; t++)
                        for (int64_t col = 0; col < n_embd; col++) {
                            double s = 0, a = 0;
                            for (int64_t j = 0; j < n_idx; j++) {
                                int64_t i = use_idx ? idx[j] : j;
                                ps_dequant_row(&M, i, row);
                                s += (double)X[t * n_ff + i] * row[col];
                                a += fabs((double)X[t * n_ff + i] * row[col]);
                            }
                            if (fabs(Y1[t * n_embd + col] - s) > 1e-6 * a + 1e-7) bad++;
                        }
                    CHECK(bad == 0);
                    free(Y1), free(Y2), free(row);
                }
                free(X);
            }
            free(W);
        }
    ps_simd_set(ps_simd_supported());
}

/* The AVX-512 table gives the AVX2 table's results bit for bit: products
 * (single and batched, also through packed copies) and accum_rows, every type. */
TEST(test_avx512_matches_avx2) {
    if (ps_simd_supported() < PS_SIMD_AVX512) return;
    static const int64_t cols[] = {32, 96, 576};
    static const int32_t toks[] = {1, 3, 70};
    int32_t idx[40];
    for (int j = 0; j < 40; j++) idx[j] = (int32_t)((j * 29 + 5) % 101);
    for (int ti = 0; ti < N_TYPES; ti++)
        for (int ci = 0; ci < 3; ci++)
            for (int ki = 0; ki < 3; ki++) {
                const int32_t type = TYPES[ti], nt = toks[ki];
                const int64_t nc = cols_for(type, cols[ci]), nr = 101;
                void *W = random_matrix(type, nr, nc);
                float *X = random_floats(nc * nt), *Xa = random_floats(nr * nt);
                for (int64_t i = 0; i < nr * nt; i += 3) Xa[i] = 0.0f;
                float *Y[2], *A[2], *R[2];
                for (int l = 0; l < 2; l++) {
                    ps_simd_set(PS_SIMD_AVX2 + l);
                    Y[l] = malloc(sizeof(float) * nr * nt);
                    A[l] = malloc(sizeof(float) * nc * nt);
                    R[l] = malloc(sizeof(float) * nc * nt);
                    CHECK(ps_debug_matmul(type, W, nr, nc, X, nt, Y[l], 2) == PS_OK);
                    if (ps_packed_bytes(type, nr, nc)) { /* the packed copy: the same bits */
                        float *P = malloc(sizeof(float) * nr * nt);
                        CHECK(ps_debug_matmul_packed(type, W, nr, nc, X, nt, P, 2) == PS_OK);
                        CHECK(memcmp(P, Y[l], sizeof(float) * nr * nt) == 0);
                        free(P);
                    }
                    CHECK(ps_debug_accum_rows(type, W, nr, nc, Xa, nt, NULL, nr, A[l], 2) == PS_OK);
                    CHECK(ps_debug_accum_rows(type, W, nr, nc, Xa, nt, idx, 40, R[l], 2) == PS_OK);
                }
                CHECK(memcmp(Y[0], Y[1], sizeof(float) * nr * nt) == 0);
                CHECK(memcmp(A[0], A[1], sizeof(float) * nc * nt) == 0);
                CHECK(memcmp(R[0], R[1], sizeof(float) * nc * nt) == 0);
                for (int l = 0; l < 2; l++) free(Y[l]), free(A[l]), free(R[l]);
                free(W), free(X), free(Xa);
            }
    ps_simd_set(ps_simd_supported());
}

/* axpy4 is exactly four axpy calls (grouping never changes accum_rows). */
TEST(test_axpy4) {
    for (int ti = 0; ti < N_TYPES; ti++)
        FOR_LEVELS(level) {
            const int64_t n = cols_for(TYPES[ti], 96);
            const ps_type_kernels *k = ps_kernels_get(TYPES[ti], ps_level_ops_at(level));
            uint8_t *W = random_matrix(TYPES[ti], 4, n);
            const size_t rb = ps_row_bytes(TYPES[ti], n);
            const void *src[4] = {W, W + rb, W + 2 * rb, W + 3 * rb};
            const float a[4] = {0.5f, -1.25f, 3.0f, 1e-3f};
            float y1[512], y2[512];
            for (int i = 0; i < n; i++) y1[i] = y2[i] = frand();
            k->axpy4(src, a, y1, n);
            for (int r = 0; r < 4; r++) k->axpy(src[r], a[r], y2, n);
            CHECK(memcmp(y1, y2, sizeof(float) * (size_t)n) == 0);
            free(W);
        }
    ps_simd_set(ps_simd_supported());
}

/* At the x86 levels a Q5 or K-quant axpy is, per element, y = fma(a, w, y)
 * with w the level's dequantized weight: decoding rows in registers gives
 * the bits of dequantizing into a buffer and adding it. */
TEST(test_kquant_axpy_fused) {
    static const int32_t KQ[] = {PS_TYPE_Q5_0, PS_TYPE_Q5_1, PS_TYPE_Q2_K, PS_TYPE_Q3_K,
                                 PS_TYPE_Q4_K, PS_TYPE_Q5_K, PS_TYPE_Q6_K};
    for (int ti = 0; ti < (int)(sizeof KQ / sizeof KQ[0]); ti++)
        FOR_LEVELS(level) {
            if (level != PS_SIMD_AVX2 && level != PS_SIMD_AVX512) continue;
            const int64_t n = cols_for(KQ[ti], 96);
            const ps_type_kernels *k = ps_kernels_get(KQ[ti], ps_level_ops_at(level));
            uint8_t *W = random_matrix(KQ[ti], 1, n);
            float y[512], ref[512], w[512];
            for (int i = 0; i < n; i++) y[i] = ref[i] = frand();
            k->dequant(W, w, n);
            k->axpy(W, -0.31830988f, y, n); /* (a with a full mantissa: a*w is rarely exact) */
            for (int i = 0; i < n; i++) ref[i] = fmaf(-0.31830988f, w[i], ref[i]);
            CHECK(memcmp(y, ref, sizeof(float) * (size_t)n) == 0);
            free(W);
        }
    ps_simd_set(ps_simd_supported());
}

TEST(test_silu_mul) {
    enum { N = 2003 };
    float g[N], u[N], ref[N];
    for (int i = 0; i < N; i++) {
        g[i] = -95.0f + 190.0f * (float)i / (N - 1); /* past both ends of exp's range */
        u[i] = frand();
    }
    FOR_LEVELS(level) {
        float out[N];
        memcpy(out, g, sizeof g);
        ps_ops()->silu_mul(out, u, N);
        int bad = 0;
        for (int i = 0; i < N; i++) {
            ref[i] = (float)((double)g[i] / (1.0 + exp(-(double)g[i])) * u[i]);
            if (!(fabsf(out[i] - ref[i]) <= 4e-7f * fabsf(ref[i]) + 1e-30f)) bad++;
        }
        CHECK(bad == 0);
    }
    ps_simd_set(ps_simd_supported());
}

/* The one vectorised exp (SwiGLU and softmax): within 1.5 ulp of exp over
 * [-87.3, 88], the range where exp(x) is a normal float and 2^n finite;
 * 0 below it (exp < FLT_MIN there), exp(88) above it, never inf or NaN. */
static double ulps(float got, double want) {
    const float w = (float)want;
    return fabs((double)got - want) / (double)(nextafterf(w, INFINITY) - w);
}

#define EXP_GRID_HASH 0xa404669f85152e60ull
TEST(test_exp_error_bound) {
#ifdef ps_exp_simd
    if (ps_simd_supported() == PS_SIMD_SCALAR) return;
    enum { N = 1 << 20 };
    float *x = malloc(N * sizeof(float)), *y = malloc(N * sizeof(float));
    for (int i = 0; i < N; i++) x[i] = -87.3f + (88.0f + 87.3f) * (float)i / (float)(N - 1);
    memcpy(y, x, N * sizeof(float));
    ps_exp_simd(y, N);
    double worst = 0;
    for (int i = 0; i < N; i++) {
        const double e = ulps(y[i], exp((double)x[i]));
        if (e > worst) worst = e;
    }
    CHECK(worst <= 1.5);
    /* x86's exp8 and aarch64's exp4 are the same operations: the same bits
     * over the whole grid on both (FNV-1a of the results, taken on x86) */
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < (size_t)N * sizeof(float); i++) h = (h ^ ((const uint8_t *)y)[i]) * 0x100000001b3ull;
    if (h != EXP_GRID_HASH) fprintf(stderr, "exp grid hash %016llx\n", (unsigned long long)h);
    CHECK(h == EXP_GRID_HASH);
    const float edge[] = {-87.34f, -88.0f, -103.0f, -1e30f, 88.5f, 1e30f, 0.0f, -0.0f};
    float v[8];
    memcpy(v, edge, sizeof v);
    ps_exp_simd(v, 8);
    for (int i = 0; i < 4; i++) CHECK(v[i] == 0.0f && exp((double)edge[i]) < FLT_MIN);
    float e88 = 88.0f;
    ps_exp_simd(&e88, 1);
    CHECK(v[4] == v[5] && isfinite(v[4]) && ulps(v[4], exp(88.0)) <= 1.5);
    CHECK(v[6] == 1.0f && v[7] == 1.0f);
    free(x);
    free(y);
#endif
}

/* Every type the scalar level runs has a complete row at every level, with
 * the same activation format; no level runs a type the scalar level lacks. */
TEST(test_tables_complete) {
    for (int32_t type = 0; type < PS_TYPE_COUNT; type++) {
        const ps_type_kernels *ref = ps_kernels_get(type, &ps_ops_scalar);
        int tested = 0; /* a type that runs is in TYPES, so the level tests cover it */
        for (int ti = 0; ti < N_TYPES; ti++) tested |= TYPES[ti] == type;
        CHECK(tested == (ref != NULL));
        for (int level = 0; level < PS_SIMD_COUNT; level++) {
            if (!ps_level_ops_at(level)) continue;
            const ps_type_kernels *k = ps_kernels_get(type, ps_level_ops_at(level));
            if (!ref) {
                CHECK(k == NULL);
                continue;
            }
            CHECK(k && k->gemm && k->dequant && k->axpy && k->axpy4 && k->q8a_input == ref->q8a_input);
            CHECK(ps_type_get(type) != NULL);
        }
        const ps_type_traits *t = ps_type_get(type);
        if (t) CHECK((ps_packed_bytes(type, 16, cols_for(type, 64)) > 0) == (t->pack_dwords > 0 && ref != NULL));
    }
    for (int level = 0; level < PS_SIMD_COUNT; level++) {
        const ps_level_ops *o = ps_level_ops_at(level);
        if (!o) continue;
        CHECK(o->level == level && o->quantize_q8a && o->quantize_q8k && o->gemm_acc && o->silu_mul && o->attn &&
              o->attn->chunk[0] && o->attn->chunk[1] && o->attn->chunk[2] && o->attn->head_multiple >= 1);
    }
}

/* A pool made for smaller matrices or batches than a product needs: the
 * product returns an error and writes nothing, instead of overrunning. */
TEST(test_scratch_too_small) {
    enum { ROWS = 64, COLS = 256 };
    ps_compute *c = ps_compute_new(2, 64, 1);
    uint8_t *W = random_matrix(PS_TYPE_Q8_0, ROWS, COLS);
    float *X = random_floats(2 * ROWS > 2 * COLS ? 2 * ROWS : 2 * COLS), Y[2 * COLS];
    for (int i = 0; i < 2 * COLS; i++) Y[i] = -7.0f;
    ps_matrix M = {W, PS_TYPE_Q8_0, COLS, ROWS, NULL};
    ps_clear_error();
    CHECK(ps_matmul(c, &M, X, 1, Y) == PS_ERR_MEMORY);
    CHECK(strstr(ps_last_error(), "scratch") != NULL);
    CHECK(ps_accum_rows(c, &M, X, 2, NULL, ROWS, Y) == PS_ERR_MEMORY);   /* 2 tokens: no per-thread rows */
    CHECK(ps_accum_rows(c, &M, X, 1, NULL, ROWS, Y) == PS_ERR_MEMORY);   /* partial sums of 256 columns */
    int untouched = 1;
    for (int i = 0; i < 2 * COLS; i++) untouched &= Y[i] == -7.0f;
    CHECK(untouched);
    ps_compute_free(c);
    c = ps_compute_new(2, COLS, 2); /* big enough: the same calls work */
    CHECK(ps_matmul(c, &M, X, 1, Y) == PS_OK);
    CHECK(ps_accum_rows(c, &M, X, 2, NULL, ROWS, Y) == PS_OK);
    CHECK(ps_accum_rows(c, &M, X, 1, NULL, ROWS, Y) == PS_OK);
    ps_compute_free(c);
    free(W), free(X);
}

/* Every allocation of a pool can fail: the constructor then returns NULL
 * with an error, frees what it had, and the next try works. */
TEST(test_pool_allocation_failures) {
    int failures = 0;
    for (int64_t n = 1; n < 200; n++) {
        ps_debug_fail_alloc(n);
        ps_clear_error();
        ps_compute *c = ps_compute_new(2, 4096, 64);
        ps_debug_fail_alloc(0);
        if (c) {
            ps_compute_free(c);
            break;
        }
        failures++;
        CHECK(ps_last_error_code() == PS_ERR_MEMORY && ps_last_error()[0]);
    }
    CHECK(failures >= 4); /* the pool has at least its slots and workers to allocate */
}

/* The pool: every index visited exactly once, many dispatches in a row. */
static void count_range(void *ctx, int64_t i0, int64_t i1, int ith) {
    int *hits = ctx;
    for (int64_t i = i0; i < i1; i++) __atomic_fetch_add(&hits[i], 1 + ith * 0, __ATOMIC_RELAXED);
}

TEST(test_parallel_for) {
    ps_compute *c = ps_compute_new(2, 64, 1);
    CHECK(c && ps_compute_n_threads(c) == 2);
    enum { N = 1000 };
    int *hits = calloc(N, sizeof(int));
    for (int rep = 0; rep < 2000; rep++) ps_parallel_for(c, N - rep % 7, 1 + rep % 13, count_range, hits);
    int ok = 1;
    for (int i = 0; i < N; i++) {
        int expect = 0;
        for (int rep = 0; rep < 2000; rep++) expect += i < N - rep % 7;
        ok &= hits[i] == expect;
    }
    CHECK(ok);
    free(hits);
    ps_compute_free(c);
}

TEST(test_simd_select) {
    int best = ps_simd_supported();
    CHECK(ps_simd_get() == best);
    CHECK(ps_simd_set(PS_SIMD_SCALAR) == PS_SIMD_SCALAR);
    CHECK(ps_simd_get() == PS_SIMD_SCALAR);
    CHECK(ps_simd_set(99) == best);
    CHECK(ps_simd_set(-5) == PS_SIMD_SCALAR);
#if defined(__aarch64__)
    CHECK(best == PS_SIMD_NEON || best == PS_SIMD_NEON_DOT);
    CHECK(ps_simd_set(PS_SIMD_AVX512) == PS_SIMD_SCALAR); /* another architecture's level */
    CHECK(ps_simd_set(PS_SIMD_NEON) == PS_SIMD_NEON);
#elif defined(__x86_64__)
    CHECK(ps_simd_set(PS_SIMD_NEON_DOT) == PS_SIMD_SCALAR); /* another architecture's level */
    CHECK(ps_simd_set(PS_SIMD_AVX512) == best);
#endif
    /* the level the caller knows this CPU has (make test-neon runs emulated CPUs) */
    const char *want = getenv("PS_EXPECT_SIMD");
    if (want && *want) CHECK(best == atoi(want));
    ps_simd_set(best);
}

int main(void) {
    RUN(test_simd_select);
    RUN(test_traits);
    RUN(test_dequant_known);
    RUN(test_quantize_activations);
    RUN(test_matmul_vs_reference);
    RUN(test_matmul_vs_float_input);
    RUN(test_matmul_deterministic);
    RUN(test_matmul_rows);
    RUN(test_accum_rows);
    RUN(test_avx512_matches_avx2);
    RUN(test_axpy4);
    RUN(test_kquant_axpy_fused);
    RUN(test_silu_mul);
    RUN(test_exp_error_bound);
    RUN(test_tables_complete);
    RUN(test_scratch_too_small);
    RUN(test_pool_allocation_failures);
    RUN(test_parallel_for);
    return CHECK_DONE();
}
