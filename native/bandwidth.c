/* Main-memory read bandwidth through the engine's own thread pool: the figure
 * `prosparse bench` divides bytes-per-token by. Streaming a large buffer
 * (far above the L3) with the pool's threads and chunking is what a decode
 * step does with the weights, so the bound it gives is the engine's own.
 * ps_model_read_bandwidth streams the model's own weight copies: on a VM the
 * same machine can read some memory much faster than other memory (by where
 * the host placed the pages), so the bound of a model is best taken on the
 * memory its weights are in. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#ifdef __SSE2__
#include <emmintrin.h>
#endif

#include "compute.h"
#include "model.h"
#include "prosparse.h"
#include "util.h"

#define BW_CHUNK (1 << 20) /* bytes a thread claims at a time */
#define BW_MAX_REPS 64
#define BW_MODEL_MIN_CHUNKS 64 /* MiB: twice the L3 of the machines we know */

typedef struct {
    const uint8_t *buf;
    uint64_t sink[64]; /* one slot per thread id (8 apart: no false sharing) */
} bw_job;

/* OR-reduce [i0, i1) chunks of 1 MiB; the result goes to a sink so the loads stay. */
static void read_range(void *ctx, int64_t i0, int64_t i1, int ith) {
    bw_job *j = ctx;
    const uint8_t *p = j->buf + i0 * (int64_t)BW_CHUNK, *end = j->buf + i1 * (int64_t)BW_CHUNK;
#ifdef __SSE2__
    __m128i a = _mm_setzero_si128(), b = a, c = a, d = a;
    for (; p < end; p += 64) {
        a = _mm_or_si128(a, _mm_load_si128((const __m128i *)p));
        b = _mm_or_si128(b, _mm_load_si128((const __m128i *)(p + 16)));
        c = _mm_or_si128(c, _mm_load_si128((const __m128i *)(p + 32)));
        d = _mm_or_si128(d, _mm_load_si128((const __m128i *)(p + 48)));
    }
    a = _mm_or_si128(_mm_or_si128(a, b), _mm_or_si128(c, d));
    uint64_t out[2];
    _mm_storeu_si128((__m128i *)out, a);
    uint64_t acc = out[0] | out[1];
#else
    uint64_t acc = 0;
    for (; p < end; p += 8) acc |= *(const uint64_t *)p;
#endif
    j->sink[(ith & 7) * 8] |= acc;
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Median GB/s of `reps` passes over n_chunks chunks of buf with the pool. */
static double stream(const uint8_t *buf, int64_t n_chunks, int n_threads, int reps, uint64_t *sink) {
    ps_compute *c = ps_compute_new(n_threads, 64, 1);
    if (!c) return PS_ERR_MEMORY;
    bw_job job = {.buf = buf};
    ps_parallel_for(c, n_chunks, 1, read_range, &job); /* warm-up: wakes the workers */
    double gbs[BW_MAX_REPS];
    for (int r = 0; r < reps; r++) {
        double t0 = now_s();
        ps_parallel_for(c, n_chunks, 1, read_range, &job);
        double dt = now_s() - t0;
        gbs[r] = dt > 0 ? (double)(n_chunks * BW_CHUNK) / dt / 1e9 : 0.0;
    }
    ps_compute_free(c);
    *sink = 0;
    for (int i = 0; i < 8; i++) *sink |= job.sink[i * 8];
    qsort(gbs, (size_t)reps, sizeof gbs[0], cmp_double);
    return reps % 2 ? gbs[reps / 2] : 0.5 * (gbs[reps / 2 - 1] + gbs[reps / 2]);
}

static int bad_args(int n_threads, int reps) {
    return n_threads < 1 || n_threads > 256 || reps < 1 || reps > BW_MAX_REPS;
}

double ps_debug_read_bandwidth(int n_threads, int64_t bytes, int reps) {
    if (bad_args(n_threads, reps) || bytes < BW_CHUNK)
        return ps_fail(PS_ERR_ARG, "read bandwidth: need 1..256 threads, 1..%d reps, >= 1 MiB", BW_MAX_REPS);
    int64_t n_chunks = bytes / BW_CHUNK;
    uint8_t *buf = aligned_alloc(BW_CHUNK, (size_t)(n_chunks * BW_CHUNK));
    if (!buf) return ps_fail(PS_ERR_MEMORY, "read bandwidth: cannot allocate %lld bytes", (long long)bytes);
    /* on huge pages where allowed, as the engine's weight copies (model_pack.c) */
#ifdef MADV_HUGEPAGE /* Linux */
    madvise(buf, (size_t)(n_chunks * BW_CHUNK), MADV_HUGEPAGE);
#endif
    memset(buf, 1, (size_t)(n_chunks * BW_CHUNK)); /* fault every page in before timing */
    uint64_t sink = 0;
    const double gbs = stream(buf, n_chunks, n_threads, reps, &sink);
    free(buf);
    if (gbs < 0) return gbs;
    if (sink != 0x0101010101010101ull) return ps_fail(PS_ERR_MEMORY, "read bandwidth: buffer read back wrong");
    return gbs;
}

double ps_model_read_bandwidth(const ps_model *m, int32_t n_threads, int32_t reps) {
    if (!m || bad_args(n_threads, reps))
        return ps_fail(PS_ERR_ARG, "read bandwidth: need a model, 1..256 threads, 1..%d reps", BW_MAX_REPS);
    const int64_t n_chunks = (int64_t)(m->weight_arena_bytes / BW_CHUNK);
    if (!m->weight_arena || n_chunks < BW_MODEL_MIN_CHUNKS)
        return ps_fail(PS_ERR_UNSUPPORTED, "read bandwidth: this model holds %lld MiB of weight copies, "
                       "too few to measure main memory (needs %d; none when loaded map-only)", (long long)n_chunks,
                       BW_MODEL_MIN_CHUNKS);
    uint64_t sink = 0;
    return stream(m->weight_arena, n_chunks, n_threads, reps, &sink);
}
