/* test_attention.c: attention.h's chunk kernels. Every SIMD level gives the
 * scalar reference's bits for each cache type, head_dim, query count and
 * chunk length (tails included); the reference, merged over chunks, agrees
 * with a float64 softmax attention over the decoded cache rows. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "attention.h"
#include "check.h"
#include "prosparse.h"
#include "quant.h"
#include "util.h"

static float frand(unsigned *seed) {
    *seed = *seed * 1103515245u + 12345u;
    return ((float)((*seed >> 8) & 0xffff) / 65535.0f - 0.5f) * 4.0f;
}

/* the cached row j as floats */
static void decode_row(int type, const uint8_t *row, int hd, float *out) {
    if (type == PS_CACHE_F32) {
        memcpy(out, row, sizeof(float) * (size_t)hd);
    } else if (type == PS_CACHE_F16) {
        for (int d = 0; d < hd; d++) out[d] = ps_fp16_to_f32(((const uint16_t *)row)[d]);
    } else {
        const ps_block_q8_0 *b = (const ps_block_q8_0 *)row;
        for (int d = 0; d < hd; d++) out[d] = ps_fp16_to_f32(b[d / PS_QK].d) * b[d / PS_QK].qs[d % PS_QK];
    }
}

typedef struct case_data {
    int type, hd, nq, n;
    float *q;
    ps_block_q8a *qq;
    uint8_t *k, *v;
    size_t rb;
} case_data;

static case_data make_case(int type, int hd, int nq, int n, unsigned seed) {
    case_data c = {.type = type, .hd = hd, .nq = nq, .n = n};
    c.rb = ps_cache_row_bytes(type, hd);
    c.q = malloc(sizeof(float) * (size_t)nq * hd);
    c.k = malloc(c.rb * (size_t)n);
    c.v = malloc(c.rb * (size_t)n);
    float *row = malloc(sizeof(float) * (size_t)hd);
    for (int i = 0; i < nq * hd; i++) c.q[i] = frand(&seed);
    for (int j = 0; j < n; j++) {
        for (int d = 0; d < hd; d++) row[d] = frand(&seed);
        ps_cache_store_row(type, row, hd, c.k + (size_t)j * c.rb);
        for (int d = 0; d < hd; d++) row[d] = frand(&seed);
        ps_cache_store_row(type, row, hd, c.v + (size_t)j * c.rb);
    }
    free(row);
    c.qq = NULL;
    if (type == PS_CACHE_Q8_0) {
        c.qq = malloc(sizeof(ps_block_q8a) * (size_t)nq * hd / PS_QK);
        ps_quantize_q8a_scalar(c.q, c.qq, (int64_t)nq * hd);
    }
    return c;
}

static void free_case(case_data *c) {
    free(c->q);
    free(c->qq);
    free(c->k);
    free(c->v);
}

/* chunk partials of kernels kk for positions [j0, j0+n) */
static void run_chunk(const ps_attn_kernels *kk, const case_data *c, int j0, int n, float *m, float *l, float *o) {
    float *s = malloc(sizeof(float) * (size_t)c->nq * PS_ATTN_CHUNK);
    const ps_attn_chunk a = {.q = c->q, .qq = c->qq, .k = c->k + (size_t)j0 * c->rb, .v = c->v + (size_t)j0 * c->rb,
                             .row_bytes = c->rb, .n = n, .hd = c->hd, .nq = c->nq,
                             .scale = 1.0f / sqrtf((float)c->hd), .s = s, .m = m, .l = l, .o = o};
    kk->chunk[c->type](&a);
    free(s);
}

/* Same bits at every level, for chunk lengths with and without tails. */
TEST(test_levels_identical) {
    static const int types[] = {PS_CACHE_F32, PS_CACHE_F16, PS_CACHE_Q8_0};
    /* head_dim: one or several 64-wide stretches and their 32/16/8 tails,
     * odd block counts for Q8_0; queries: the register groups and their
     * remainders; rows: the 4-, 8- and 16-row groups and their tails */
    static const int hds[] = {64, 96, 128, 32, 8, 40, 24, 160, 256};
    static const int nqs[] = {1, 2, 3, 4, 5, 7, 12};
    static const int ns[] = {1, 3, 4, 7, 8, 9, 13, 15, 16, 17, 33, 64, 127, 128};
    enum { N_HD = sizeof hds / sizeof hds[0], N_NQ = sizeof nqs / sizeof nqs[0], N_N = sizeof ns / sizeof ns[0] };
    for (int level = 1; level < PS_SIMD_COUNT; level++) {
        if (ps_simd_set(level) != level) continue; /* a level this CPU (or build) does not run */
        const ps_attn_kernels *kernels = ps_level_ops_at(level)->attn;
        for (int ti = 0; ti < 3; ti++)
            for (int hi = 0; hi < N_HD; hi++)
                for (int qi = 0; qi < N_NQ; qi++)
                    for (int ni = 0; ni < N_N; ni++) {
                        const int type = types[ti], hd = hds[hi], nq = nqs[qi], n = ns[ni];
                        if (!ps_cache_row_bytes(type, hd)) continue;
                        case_data c = make_case(type, hd, nq, n, 77u + (unsigned)(ti * 10000 + hi * 1000 + nq * 100 + ni));
                        float m0[12], l0[12], m1[12], l1[12];
                        float *o0 = calloc((size_t)nq * hd, sizeof(float)), *o1 = calloc((size_t)nq * hd, sizeof(float));
                        run_chunk(&ps_attn_kernels_scalar, &c, 0, n, m0, l0, o0);
                        run_chunk(kernels, &c, 0, n, m1, l1, o1);
                        int same = memcmp(m0, m1, sizeof(float) * nq) == 0 && memcmp(l0, l1, sizeof(float) * nq) == 0 &&
                                   memcmp(o0, o1, sizeof(float) * (size_t)nq * hd) == 0;
                        if (!same) fprintf(stderr, "level %d type %d hd %d nq %d n %d differ\n", level, type, hd, nq, n);
                        CHECK(same);
                        free(o0);
                        free(o1);
                        free_case(&c);
                    }
    }
    ps_simd_set(ps_simd_supported());
}

/* The reference, chunk by chunk and merged, against float64 attention over
 * the same (decoded) rows: only float rounding apart. */
TEST(test_reference_matches_float64) {
    static const int types[] = {PS_CACHE_F32, PS_CACHE_F16, PS_CACHE_Q8_0};
    const int hd = 64, nq = 3, n = 300;
    for (int ti = 0; ti < 3; ti++) {
        case_data c = make_case(types[ti], hd, nq, n, 5u + (unsigned)ti);
        float M[3], L[3], O[3 * 64], m[3], l[3], o[3 * 64];
        for (int j0 = 0; j0 < n; j0 += PS_ATTN_CHUNK) {
            const int len = n - j0 < PS_ATTN_CHUNK ? n - j0 : PS_ATTN_CHUNK;
            run_chunk(&ps_attn_kernels_scalar, &c, j0, len, m, l, o);
            for (int i = 0; i < nq; i++) {
                if (j0 == 0) {
                    M[i] = m[i], L[i] = l[i];
                    memcpy(O + i * hd, o + i * hd, sizeof(float) * hd);
                } else {
                    ps_attn_merge(&M[i], &L[i], O + i * hd, m[i], l[i], o + i * hd, hd);
                }
            }
        }
        float kr[64], vr[64];
        for (int i = 0; i < nq; i++) {
            /* the Q8_0 kernel dots against the quantized query */
            float q[64];
            for (int d = 0; d < hd; d++)
                q[d] = c.qq ? c.qq[i * 2 + d / PS_QK].d * c.qq[i * 2 + d / PS_QK].qs[d % PS_QK] : c.q[i * hd + d];
            double sc[300], mx = -INFINITY, sum = 0, out[64] = {0};
            for (int j = 0; j < n; j++) {
                decode_row(c.type, c.k + (size_t)j * c.rb, hd, kr);
                double dot = 0;
                for (int d = 0; d < hd; d++) dot += (double)q[d] * kr[d];
                sc[j] = dot / sqrt((double)hd);
                if (sc[j] > mx) mx = sc[j];
            }
            for (int j = 0; j < n; j++) {
                const double p = exp(sc[j] - mx);
                sum += p;
                decode_row(c.type, c.v + (size_t)j * c.rb, hd, vr);
                for (int d = 0; d < hd; d++) out[d] += p * vr[d];
            }
            for (int d = 0; d < hd; d++) CHECK_NEAR(O[i * hd + d] / L[i], out[d] / sum, 2e-5 * (1 + fabs(out[d] / sum)));
        }
        free_case(&c);
    }
}

/* Row sizes: F16 half of F32, Q8_0 34 bytes per 32, none for odd head_dim. */
TEST(test_row_bytes) {
    CHECK(ps_cache_row_bytes(PS_CACHE_F32, 64) == 256);
    CHECK(ps_cache_row_bytes(PS_CACHE_F16, 64) == 128);
    CHECK(ps_cache_row_bytes(PS_CACHE_Q8_0, 64) == 68);
    CHECK(ps_cache_row_bytes(PS_CACHE_Q8_0, 40) == 0);
    CHECK(ps_cache_row_bytes(7, 64) == 0);
}

/* The reference exp: within 2 ulp-ish of expf over the softmax range. */
TEST(test_exp_ref) {
    for (float x = -100.0f; x <= 0.0f; x += 0.01f) {
        const float e = ps_attn_exp_ref(x), r = expf(x);
        if (x < -87.3f) CHECK(e == 0.0f || fabsf(e - r) <= 1e-37f);
        else CHECK(fabsf(e - r) <= 3e-7f * r + 1e-38f);
    }
}

int main(void) {
    RUN(test_levels_identical);
    RUN(test_reference_matches_float64);
    RUN(test_row_bytes);
    RUN(test_exp_ref);
    return CHECK_DONE();
}
