/* Main-memory read bandwidth through the engine's own thread pool: the figure
 * `prosparse bench` divides bytes-per-token by. Streaming one large buffer
 * (far above the L3) with the pool's threads and chunking is what a decode
 * step does with the weights, so the bound it gives is the engine's own. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#ifdef __SSE2__
#include <emmintrin.h>
#endif

#include "compute.h"
#include "prosparse.h"
#include "util.h"

#define BW_CHUNK (1 << 20) /* bytes a thread claims at a time */
#define BW_MAX_REPS 64

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

double ps_debug_read_bandwidth(int n_threads, int64_t bytes, int reps) {
    if (n_threads < 1 || n_threads > 256 || reps < 1 || reps > BW_MAX_REPS || bytes < BW_CHUNK)
        return ps_fail(PS_ERR_ARG, "read bandwidth: need 1..256 threads, 1..%d reps, >= 1 MiB", BW_MAX_REPS);
    int64_t n_chunks = bytes / BW_CHUNK;
    uint8_t *buf = aligned_alloc(BW_CHUNK, (size_t)(n_chunks * BW_CHUNK));
    if (!buf) return ps_fail(PS_ERR_MEMORY, "read bandwidth: cannot allocate %lld bytes", (long long)bytes);
    /* on huge pages where allowed, as the engine's weight copies (model_pack.c) */
    madvise(buf, (size_t)(n_chunks * BW_CHUNK), MADV_HUGEPAGE);
    memset(buf, 1, (size_t)(n_chunks * BW_CHUNK)); /* fault every page in before timing */
    ps_compute *c = ps_compute_new(n_threads, 64, 1);
    if (!c) {
        free(buf);
        return PS_ERR_MEMORY;
    }
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
    uint64_t sink = 0;
    for (int i = 0; i < 8; i++) sink |= job.sink[i * 8];
    free(buf);
    if (sink != 0x0101010101010101ull) return ps_fail(PS_ERR_MEMORY, "read bandwidth: buffer read back wrong");
    qsort(gbs, (size_t)reps, sizeof gbs[0], cmp_double);
    return reps % 2 ? gbs[reps / 2] : 0.5 * (gbs[reps / 2 - 1] + gbs[reps / 2]);
}
