/* test_neon.c: every kernel of the NEON levels against the scalar reference
 * on random data, bit for bit (memcmp), except the exp-based SwiGLU and
 * softmax, which are held to float64 bounds. Runs on aarch64 builds
 * (make test-neon, under qemu); elsewhere there is no NEON level and it
 * says so. Kernels are called through the tables directly, with row lists,
 * odd row counts and token counts across the tiles. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "compute.h"
#include "prosparse.h"
#include "quant.h"
#include "util.h"

static const int32_t TYPES[] = {PS_TYPE_F32, PS_TYPE_F16, PS_TYPE_BF16, PS_TYPE_Q8_0, PS_TYPE_Q4_0, PS_TYPE_Q4_1};
#define N_TYPES (int)(sizeof TYPES / sizeof TYPES[0])

static uint64_t rng_state = 0x243f6a8885a308d3ull;
static uint32_t rnd(void) {
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (uint32_t)(rng_state >> 16);
}
static float frand(void) { return (float)(rnd() % 2000001) / 1000000.0f - 1.0f; } /* [-1, 1] */

static float *random_floats(int64_t n) {
    float *x = malloc((size_t)n * sizeof(float));
    for (int64_t i = 0; i < n; i++) x[i] = frand();
    return x;
}

/* Random valid weights: random bytes with sane fp16 scales (and Q4_1
 * minimums), or random floats in the float types (negative zero included). */
static uint8_t *random_matrix(int32_t type, int64_t n_rows, int64_t n_cols) {
    const size_t rb = ps_row_bytes(type, n_cols), n = rb * (size_t)n_rows;
    uint8_t *w = malloc(n);
    if (type == PS_TYPE_F32) {
        for (size_t i = 0; i < n / 4; i++) ((float *)w)[i] = frand();
        ((float *)w)[0] = -0.0f;
        return w;
    }
    if (type == PS_TYPE_F16 || type == PS_TYPE_BF16) {
        for (size_t i = 0; i < n / 2; i++) {
            const float f = frand();
            uint32_t bits;
            memcpy(&bits, &f, 4);
            ((uint16_t *)w)[i] = type == PS_TYPE_F16 ? ps_f32_to_fp16(f) : (uint16_t)(bits >> 16);
        }
        return w;
    }
    for (size_t i = 0; i < n; i++) w[i] = (uint8_t)rnd();
    const ps_type_traits *t = ps_type_get(type);
    for (int64_t r = 0; r < n_rows; r++)
        for (int64_t b = 0; b < n_cols / 32; b++) {
            uint8_t *blk = w + (size_t)r * rb + (size_t)b * t->block_bytes;
            const uint16_t d = ps_f32_to_fp16(0.001f + 0.02f * (frand() + 1.0f));
            memcpy(blk, &d, 2);
            if (type == PS_TYPE_Q4_1) {
                const uint16_t m = ps_f32_to_fp16(0.1f * frand());
                memcpy(blk + 2, &m, 2);
            }
        }
    return w;
}

static int n_neon_levels(void) {
    int n = 0;
    for (int level = PS_SIMD_NEON; level <= PS_SIMD_NEON_DOT; level++) n += ps_simd_set(level) == level;
    ps_simd_set(ps_simd_supported());
    return n;
}

#define FOR_NEON(level, ops)                                                     \
    for (int level = PS_SIMD_NEON; level <= PS_SIMD_NEON_DOT; level++)           \
        for (const ps_level_ops *ops = ps_simd_set(level) == level ? ps_level_ops_at(level) : NULL; ops; ops = NULL)

/* gemm over whole ranges and row lists, 1..37 tokens: the scalar bits. */
TEST(test_gemm_bits) {
    static const int64_t rows[] = {1, 5, 13, 40};
    static const int64_t cols[] = {32, 96, 544};
    static const int32_t toks[] = {1, 2, 3, 5, 17, 37};
    for (int ti = 0; ti < N_TYPES; ti++)
        for (int ri = 0; ri < 4; ri++)
            for (int ci = 0; ci < 3; ci++) {
                const int32_t type = TYPES[ti];
                const int64_t nr = rows[ri], nc = cols[ci] + (ti < 3 ? 3 : 0); /* float: odd widths */
                const size_t rb = ps_row_bytes(type, nc);
                uint8_t *W = random_matrix(type, nr, nc);
                const int32_t max_t = 37;
                float *X = random_floats(nc * max_t);
                ps_block_q8a *Xq = malloc(sizeof(ps_block_q8a) * (size_t)(nc / 32 + 1) * max_t);
                for (int32_t t = 0; t < max_t; t++) ps_quantize_q8a_scalar(X + t * nc, Xq + t * (nc / 32), nc);
                int32_t idx[40];
                for (int j = 0; j < nr; j++) idx[j] = (int32_t)((j * 7 + 3) % nr); /* a permutation */
                const ps_type_kernels *ks = ps_kernels_get(type, &ps_ops_scalar);
                const void *in = ks->q8a_input ? (const void *)Xq : (const void *)X;
                for (int ki = 0; ki < 6; ki++) {
                    const int32_t nt = toks[ki];
                    float *Ys = calloc((size_t)(nr * nt), sizeof(float)), *Yn = malloc(sizeof(float) * nr * nt);
                    for (int use_idx = 0; use_idx < 2; use_idx++) {
                        ks->gemm(W, rb, nc, use_idx ? idx : NULL, 0, nr, in, nt, Ys, nr);
                        FOR_NEON(level, ops) {
                            const ps_type_kernels *kn = ps_kernels_get(type, ops);
                            for (int64_t i = 0; i < nr * nt; i++) Yn[i] = NAN;
                            /* two calls splitting the list, as threads do */
                            kn->gemm(W, rb, nc, use_idx ? idx : NULL, 0, nr / 2, in, nt, Yn, nr);
                            kn->gemm(W, rb, nc, use_idx ? idx : NULL, nr / 2, nr, in, nt, Yn, nr);
                            const int same = memcmp(Ys, Yn, sizeof(float) * nr * nt) == 0;
                            if (!same)
                                fprintf(stderr, "gemm type %d level %d %lldx%lld tok %d idx %d differs\n", type,
                                        level, (long long)nr, (long long)nc, nt, use_idx);
                            CHECK(same);
                        }
                    }
                    free(Ys), free(Yn);
                }
                free(W), free(X), free(Xq);
            }
    ps_simd_set(ps_simd_supported());
}

/* dequant, axpy and axpy4: the scalar bits. */
TEST(test_dequant_axpy_bits) {
    for (int ti = 0; ti < N_TYPES; ti++) {
        const int32_t type = TYPES[ti];
        const int64_t n = ti < 3 ? 299 : 320;
        const size_t rb = ps_row_bytes(type, n);
        uint8_t *W = random_matrix(type, 4, n);
        const void *src[4] = {W, W + rb, W + 2 * rb, W + 3 * rb};
        const float a[4] = {0.75f, -1.5f, 3.0f, 1e-3f};
        const ps_type_kernels *ks = ps_kernels_get(type, &ps_ops_scalar);
        float ds[320], dn[320], ys[320], yn[320], y0[320];
        for (int i = 0; i < n; i++) y0[i] = frand();
        ks->dequant(W, ds, n);
        FOR_NEON(level, ops) {
            const ps_type_kernels *kn = ps_kernels_get(type, ops);
            kn->dequant(W, dn, n);
            CHECK(memcmp(ds, dn, sizeof(float) * n) == 0);
            for (int r = 0; r < 4; r++) {
                memcpy(ys, y0, sizeof ys), memcpy(yn, y0, sizeof yn);
                ks->axpy(src[r], a[r], ys, n);
                kn->axpy(src[r], a[r], yn, n);
                CHECK(memcmp(ys, yn, sizeof(float) * n) == 0);
            }
            memcpy(ys, y0, sizeof ys), memcpy(yn, y0, sizeof yn);
            ks->axpy4(src, a, ys, n);
            kn->axpy4(src, a, yn, n);
            CHECK(memcmp(ys, yn, sizeof(float) * n) == 0);
        }
        free(W);
    }
    ps_simd_set(ps_simd_supported());
}

/* Activation quantization (ties, zero blocks, tiny values) and gemm_acc. */
TEST(test_vector_ops_bits) {
    enum { N = 32 * 24 };
    float *x = random_floats(N);
    for (int i = 0; i < 32; i++) x[i] = 0.0f;
    for (int i = 32; i < 64; i++) x[i] = (float)(i - 48) * 0.5f;
    x[64] = 1e-30f;
    x[100] = -0.0f;
    ps_block_q8a a[N / 32], b[N / 32];
    ps_quantize_q8a_scalar(x, a, N);
    FOR_NEON(level, ops) {
        memset(b, 0x55, sizeof b);
        ops->quantize_q8a(x, b, N);
        CHECK(memcmp(a, b, sizeof a) == 0);
    }
    static const int64_t ms[] = {1, 3, 4, 9}, ks[] = {1, 7, 50}, ns[] = {1, 8, 13, 37};
    for (int mi = 0; mi < 4; mi++)
        for (int ki = 0; ki < 3; ki++)
            for (int ni = 0; ni < 4; ni++) {
                const int64_t m = ms[mi], k = ks[ki], n = ns[ni], lda = k + 2, ldb = n + 1, ldy = n + 3;
                float *A = random_floats(m * lda), *B = random_floats(k * ldb), *Y0 = random_floats(m * ldy);
                float *Ys = malloc(sizeof(float) * m * ldy), *Yn = malloc(sizeof(float) * m * ldy);
                memcpy(Ys, Y0, sizeof(float) * m * ldy);
                ps_gemm_acc_scalar(A, lda, B, ldb, Ys, ldy, m, k, n);
                FOR_NEON(level, ops) {
                    memcpy(Yn, Y0, sizeof(float) * m * ldy);
                    ops->gemm_acc(A, lda, B, ldb, Yn, ldy, m, k, n);
                    CHECK(memcmp(Ys, Yn, sizeof(float) * m * ldy) == 0);
                }
                free(A), free(B), free(Y0), free(Ys), free(Yn);
            }
    ps_simd_set(ps_simd_supported());
    free(x);
}

/* SwiGLU within float rounding of float64, with and without u. */
TEST(test_silu) {
    enum { N = 1001 };
    float g[N], u[N], out[N];
    for (int i = 0; i < N; i++) g[i] = -95.0f + 190.0f * (float)i / (N - 1), u[i] = frand();
    FOR_NEON(level, ops) {
        for (int with_u = 0; with_u < 2; with_u++) {
            memcpy(out, g, sizeof g);
            ops->silu_mul(out, with_u ? u : NULL, N);
            int bad = 0;
            for (int i = 0; i < N; i++) {
                const double ref = (double)g[i] / (1.0 + exp(-(double)g[i])) * (with_u ? u[i] : 1.0);
                bad += !(fabs(out[i] - ref) <= 4e-7 * fabs(ref) + 1e-30);
            }
            CHECK(bad == 0);
        }
    }
    ps_simd_set(ps_simd_supported());
}

int main(void) {
    if (!n_neon_levels()) {
        printf("no NEON level in this build or CPU: nothing to compare (make test-neon runs these)\n");
        return CHECK_DONE();
    }
    RUN(test_gemm_bits);
    RUN(test_dequant_axpy_bits);
    RUN(test_vector_ops_bits);
    RUN(test_silu);
    return CHECK_DONE();
}
