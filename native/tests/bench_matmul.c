/* bench_matmul.c: kernel micro-benchmark (not part of `make test-c`).
 *
 * Times the matrix work of one SmolLM2-135M decode step (30 layers of
 * QKV / O / gate+up / down matvecs plus the 49152-row output matrix) and of
 * prompt processing (the same matrices, n_tok tokens at once), per weight
 * type, 1 and 2 threads, and states decode as bytes per second read.
 *
 *   cc -O3 -std=c11 -D_GNU_SOURCE -pthread -Inative native/tests/bench_matmul.c \
 *      build/quant.o build/quant_avx2.o build/matmul.o build/threads.o build/util.o -lm -o /tmp/bench
 *   /tmp/bench [types=q4_1,q4_0,q8_0,f16] [reps=7] [pp_tokens=128] [simd=1] [hot=0]
 *   /tmp/bench sparse [keep=0.11] [reps=7]     (LLaMA-2-7B-shaped FFN, dense vs exact-sparse)
 *   /tmp/bench dispatch                        (thread-pool round trip)
 *   /tmp/bench scatter [row_bytes=1152] [share=0.16]  (memory: streaming vs
 *                                              reading a sorted random share of rows)
 * hot=1 reuses one layer's matrices (cache-resident) and drops the output
 * matrix: kernel compute speed without the memory bound. Env PACKED=1 gives
 * Q4_0/Q4_1/Q8_0 matrices their packed copy (as the model loader does).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

#include "compute.h"
#include "prosparse.h"
#include "quant.h"
#include "util.h"

enum { N_LAYER = 30, N_EMBD = 576, N_FF = 1536, N_KV = 192, N_VOCAB = 49152 };

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static double cpu_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

typedef struct layer {
    ps_matrix q, k, v, o, gate, up, down;
} layer;

static ps_matrix make(int32_t type, int64_t rows, int64_t cols, size_t *bytes) {
    size_t n = ps_row_bytes(type, cols) * (size_t)rows;
    uint8_t *p = ps_alloc(n);
    /* valid small scales everywhere: fill with a pattern, then fix block scales */
    for (size_t i = 0; i < n; i++) p[i] = (uint8_t)(i * 2654435761u >> 13);
    if (type == PS_TYPE_F16)
        for (size_t i = 0; i < n / 2; i++) ((uint16_t *)p)[i] = ps_f32_to_fp16(((int)(i % 17) - 8) * 0.01f);
    const ps_type_traits *t = ps_type_get(type);
    if (t->block_size == 32)
        for (size_t b = 0; b < n / t->block_bytes; b++) {
            uint16_t d = ps_f32_to_fp16(0.01f);
            memcpy(p + b * t->block_bytes, &d, 2);
            if (type == PS_TYPE_Q4_1) memcpy(p + b * t->block_bytes + 2, &d, 2);
        }
    *bytes += n;
    /* env PACKED=1: add the row-interleaved copy the model makes */
    uint8_t *packed = NULL;
    const size_t pb = getenv("PACKED") && atoi(getenv("PACKED")) ? ps_packed_bytes(type, rows, cols) : 0;
    if (pb) ps_pack_matrix(type, p, rows, cols, packed = ps_alloc(pb));
    return (ps_matrix){p, type, cols, rows, packed};
}

/* One forward pass's matrix work for n_tok tokens. */
static void step(ps_compute *c, layer *L, ps_matrix *out, float *x, float *xf, int32_t n_tok,
                 float *y[3], int with_output) {
    for (int l = 0; l < N_LAYER; l++) {
        const ps_matrix *qkv[3] = {&L[l].q, &L[l].k, &L[l].v};
        ps_matmul_multi(c, 3, qkv, x, n_tok, y);
        ps_matmul(c, &L[l].o, x, n_tok, y[0]);
        const ps_matrix *gu[2] = {&L[l].gate, &L[l].up};
        ps_matmul_multi(c, 2, gu, x, n_tok, y);
        ps_matmul(c, &L[l].down, xf, n_tok, y[0]);
    }
    if (with_output) ps_matmul(c, out, x, 1, y[2]);
}

/* A LLaMA-2-7B-shaped FFN (4096 -> 11008 -> 4096), one token: dense
 * gate+up+down against exact-sparse (full gate, listed rows of up, accum_rows
 * of down_t over the same rows), stated as bandwidth of the bytes each reads. */
static void bench_sparse(int32_t type, double keep, int reps) {
    enum { E = 4096, F = 11008 };
    size_t bytes = 0;
    ps_matrix gate = make(type, F, E, &bytes), up = make(type, F, E, &bytes);
    ps_matrix down = make(type, E, F, &bytes), down_t = make(type, F, E, &bytes);
    const size_t mat = ps_row_bytes(type, E) * F;
    int32_t *idx = malloc(sizeof(int32_t) * F);
    int64_t n_idx = 0;
    for (int i = 0; i < F; i++)
        if ((double)((i * 2654435761u) % 1000003u) / 1000003.0 < keep) idx[n_idx++] = i;
    float *x = malloc(sizeof(float) * F), *g = malloc(sizeof(float) * F), *u = malloc(sizeof(float) * F);
    float *y = malloc(sizeof(float) * E);
    for (int i = 0; i < F; i++) x[i] = (float)((i * 7919) % 2001 - 1000) / 1000.0f;
    for (int nth = 1; nth <= 2; nth++) {
        ps_compute *c = ps_compute_new(nth, F, 1);
        double td[64], ts[64], tgate[64], tup[64], tdn[64];
        for (int r = -1; r < reps && r < 64; r++) {
            double t0 = now();
            const ps_matrix *gu[2] = {&gate, &up};
            float *gy[2] = {g, u};
            ps_matmul_multi(c, 2, gu, x, 1, gy);
            ps_matmul(c, &down, x, 1, y);
            double t1 = now();
            ps_matmul(c, &gate, x, 1, g);
            double tg = now();
            ps_matmul_rows(c, &up, x, 1, idx, n_idx, u);
            double tu = now();
            ps_accum_rows(c, &down_t, x, 1, idx, n_idx, y);
            double t2 = now();
            if (r >= 0) td[r] = t1 - t0, ts[r] = t2 - t1, tgate[r] = tg - t1, tup[r] = tu - tg, tdn[r] = t2 - tu;
        }
        qsort(td, reps, sizeof(double), cmp_double);
        qsort(ts, reps, sizeof(double), cmp_double);
        qsort(tgate, reps, sizeof(double), cmp_double);
        qsort(tup, reps, sizeof(double), cmp_double);
        qsort(tdn, reps, sizeof(double), cmp_double);
        const double sb = mat + 2.0 * mat * n_idx / F, part = (double)mat * n_idx / F;
        printf("   parts: gate %.1f GB/s, up rows %.1f GB/s, down_t rows %.1f GB/s\n", mat / tgate[0] / 1e9,
               part / tup[0] / 1e9, part / tdn[0] / 1e9);
        printf("7B FFN %s thr=%d keep=%.0f%%: dense %.2f ms (%.1f GB/s), sparse %.2f ms (%.1f GB/s), speed-up %.2fx\n",
               ps_type_get(type)->name, nth, 100.0 * n_idx / F, td[0] * 1e3, 3.0 * mat / td[0] / 1e9,
               ts[0] * 1e3, sb / ts[0] / 1e9, td[0] / ts[0]);
        ps_compute_free(c);
    }
    ps_free((void *)gate.data), ps_free((void *)up.data), ps_free((void *)down.data), ps_free((void *)down_t.data);
    free(idx), free(x), free(g), free(u), free(y);
}

static void noop_range(void *ctx, int64_t i0, int64_t i1, int ith) {
    volatile int64_t *sink = ctx;
    sink[ith * 8] += i1 - i0;
}

/* ---- scatter: how fast memory delivers a random share of short rows ---- */
typedef struct scan_task {
    const uint8_t *base;
    const int64_t *rows; /* row numbers, ascending */
    size_t row_bytes;
    uint64_t sum[2 * 8]; /* per thread, a cache line apart */
} scan_task;

static void scan_rows(void *ctx, int64_t i0, int64_t i1, int ith) {
    scan_task *t = ctx;
    uint64_t s = 0;
    for (int64_t i = i0; i < i1; i++) {
        if (i + 2 < i1) /* the next rows are anywhere: request them early, as the kernels do */
            for (size_t o = 0; o < t->row_bytes; o += 64) __builtin_prefetch(t->base + t->rows[i + 2] * t->row_bytes + o);
        const uint64_t *p = (const uint64_t *)(t->base + t->rows[i] * t->row_bytes);
        for (size_t k = 0; k < t->row_bytes / 8; k += 8) s += p[k]; /* one word per cache line */
    }
    t->sum[ith * 8] += s;
}

static void bench_scatter(size_t row_bytes, double share) {
    const size_t total = (size_t)2 << 30;
    const int64_t n_rows = (int64_t)(total / row_bytes);
    uint8_t *base = aligned_alloc((size_t)2 << 20, total); /* on huge pages, as the model's weight copies */
#ifdef MADV_HUGEPAGE /* Linux */
    if (base) madvise(base, total, MADV_HUGEPAGE);
#endif
    int64_t *all = malloc(sizeof(int64_t) * (size_t)n_rows), *some = malloc(sizeof(int64_t) * (size_t)n_rows);
    if (!base || !all || !some) {
        printf("scatter: out of memory\n");
        return;
    }
    memset(base, 1, total);
    int64_t n_some = 0;
    uint64_t rng = 88172645463325252ull;
    for (int64_t r = 0; r < n_rows; r++) {
        all[r] = r;
        rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
        if ((double)(rng >> 11) / 9007199254740992.0 < share) some[n_some++] = r;
    }
    ps_compute *c = ps_compute_new(2, 64, 1);
    const int64_t *lists[2] = {all, some};
    const int64_t counts[2] = {n_rows, n_some};
    double gbs[2];
    for (int k = 0; k < 2; k++) {
        scan_task t = {base, lists[k], row_bytes, {0}};
        double best = 1e9;
        for (int rep = 0; rep < 5; rep++) {
            const double t0 = now();
            ps_parallel_for(c, counts[k], (counts[k] + 1) / 2, scan_rows, &t);
            if (now() - t0 < best) best = now() - t0;
        }
        gbs[k] = (double)counts[k] * (double)row_bytes / best / 1e9;
    }
    printf("2 threads, %zu-byte rows: all rows in order %.1f GB/s; a random %.0f%% of them (ascending) %.1f GB/s "
           "(%.0f%% of streaming)\n", row_bytes, gbs[0], 100.0 * share, gbs[1], 100.0 * gbs[1] / gbs[0]);
    ps_compute_free(c);
    free(base), free(all), free(some);
}

int main(int argc, char **argv) {
    if (argc > 1 && strcmp(argv[1], "scatter") == 0) {
        bench_scatter(argc > 2 ? (size_t)atol(argv[2]) : 1152, argc > 3 ? atof(argv[3]) : 0.16);
        return 0;
    }
    if (argc > 1 && strcmp(argv[1], "dispatch") == 0) { /* cost of one parallel_for, 2 threads */
        ps_compute *c = ps_compute_new(2, 64, 1);
        int64_t sink[16] = {0};
        for (int rep = 0; rep < 3; rep++) {
            double t0 = now();
            for (int i = 0; i < 100000; i++) ps_parallel_for(c, 16, 1, noop_range, sink);
            printf("parallel_for (16 chunks, 2 threads): %.2f us per dispatch\n", (now() - t0) * 10);
        }
        ps_compute_free(c);
        return 0;
    }
    if (argc > 1 && strcmp(argv[1], "sparse") == 0) { /* bench sparse [keep=0.11] [reps=7] */
        const double keep = argc > 2 ? atof(argv[2]) : 0.11;
        const int reps = argc > 3 ? atoi(argv[3]) : 7;
        const int32_t types[] = {PS_TYPE_Q4_0, PS_TYPE_Q8_0, PS_TYPE_F16};
        for (int i = 0; i < 3; i++) bench_sparse(types[i], keep, reps);
        return 0;
    }
    const char *types = argc > 1 ? argv[1] : "q4_1,q4_0,q8_0,f16";
    const int reps = argc > 2 ? atoi(argv[2]) : 7;
    const int32_t pp = argc > 3 ? atoi(argv[3]) : 128;
    if (argc > 4) ps_simd_set(atoi(argv[4]));
    /* hot=1: every layer uses layer 0's matrices (cache-resident): compute speed, not memory */
    const int hot = argc > 5 ? atoi(argv[5]) : 0;
    printf("simd level %d; decode = 30 layers + output (Q8_0, as the file); pp = %d tokens, 30 layers\n",
           ps_simd_get(), pp);
    /* wall: best of reps (the machine is shared); cpu: median process CPU time
     * (for 1 thread the work itself; for 2 threads it includes spinning) */
    printf("%-6s %3s %10s %10s %9s %10s %12s %12s\n", "type", "thr", "tg ms/tok", "tg tok/s", "GB/s",
           "pp tok/s", "tg cpu ms", "pp tok/cpu-s");
    const struct { const char *name; int32_t id; } all[] = {
        {"q4_1", PS_TYPE_Q4_1}, {"q4_0", PS_TYPE_Q4_0}, {"q8_0", PS_TYPE_Q8_0},
        {"f16", PS_TYPE_F16}, {"bf16", PS_TYPE_BF16}, {"f32", PS_TYPE_F32}};
    float *x = malloc(sizeof(float) * N_FF * pp), *xf = malloc(sizeof(float) * N_FF * pp);
    for (int i = 0; i < N_FF * pp; i++) x[i] = xf[i] = (float)((i * 7919) % 2001 - 1000) / 1000.0f;
    float *y[3];
    for (int i = 0; i < 3; i++) y[i] = malloc(sizeof(float) * (size_t)N_VOCAB * (pp > 1 ? pp : 1));
    for (size_t ti = 0; ti < sizeof all / sizeof all[0]; ti++) {
        if (!strstr(types, all[ti].name)) continue;
        const int32_t type = all[ti].id;
        size_t bytes = 0;
        layer *L = calloc(N_LAYER, sizeof *L);
        for (int l = 0; l < N_LAYER; l++) {
            if (hot && l > 0) {
                L[l] = L[0];
                continue;
            }
            L[l].q = make(type, N_EMBD, N_EMBD, &bytes);
            L[l].k = make(type, N_KV, N_EMBD, &bytes);
            L[l].v = make(type, N_KV, N_EMBD, &bytes);
            L[l].o = make(type, N_EMBD, N_EMBD, &bytes);
            L[l].gate = make(type, N_FF, N_EMBD, &bytes);
            L[l].up = make(type, N_FF, N_EMBD, &bytes);
            L[l].down = make(type, N_EMBD, N_FF, &bytes);
        }
        if (hot) bytes *= N_LAYER;
        ps_matrix out = make(PS_TYPE_Q8_0, hot ? 64 : N_VOCAB, N_EMBD, &bytes);
        for (int nth = 1; nth <= 2; nth++) {
            ps_compute *c = ps_compute_new(nth, N_FF, pp);
            double tg[64], ppt[64], tgc[64], ppc[64];
            step(c, L, &out, x, xf, 1, y, 1); /* warm-up */
            for (int r = 0; r < reps && r < 64; r++) {
                double t0 = now(), c0 = cpu_now();
                for (int k = 0; k < 8; k++) step(c, L, &out, x, xf, 1, y, 1);
                tg[r] = (now() - t0) / 8;
                tgc[r] = (cpu_now() - c0) / 8;
            }
            for (int r = 0; r < reps && r < 64; r++) {
                double t0 = now(), c0 = cpu_now();
                step(c, L, &out, x, xf, pp, y, 0);
                ppt[r] = now() - t0;
                ppc[r] = cpu_now() - c0;
            }
            qsort(tg, reps, sizeof(double), cmp_double);
            qsort(ppt, reps, sizeof(double), cmp_double);
            qsort(tgc, reps, sizeof(double), cmp_double);
            qsort(ppc, reps, sizeof(double), cmp_double);
            const double t = tg[0], p = ppt[0];
            printf("%-6s %3d %10.3f %10.1f %9.2f %10.1f %12.3f %12.1f\n", all[ti].name, nth, t * 1e3, 1.0 / t,
                   bytes / t / 1e9, pp / p, tgc[reps / 2] * 1e3, pp / ppc[reps / 2]);
            fflush(stdout);
            ps_compute_free(c);
        }
        for (int l = 0; l < (hot ? 1 : N_LAYER); l++) {
            ps_matrix *m[7] = {&L[l].q, &L[l].k, &L[l].v, &L[l].o, &L[l].gate, &L[l].up, &L[l].down};
            for (int i = 0; i < 7; i++) ps_free((void *)m[i]->data);
        }
        ps_free((void *)out.data);
        free(L);
    }
    return 0;
}
