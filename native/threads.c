/* threads.c: a persistent worker pool with low dispatch latency.
 *
 * A decode step runs ~150 small parallel ops, so dispatch must cost a few
 * microseconds, not a thread creation. Workers wait for a new generation:
 * they spin briefly (the next op usually follows within microseconds), then
 * sleep on a futex so an idle session costs no CPU.
 *
 * Work is claimed chunk by chunk from one 64-bit counter holding
 * (generation << 32 | next chunk). A claim is a compare-and-swap on that
 * word, so a worker that wakes late and read a stale job can never take a
 * chunk of a newer one. Jobs alternate between two slots; a slot is only
 * rewritten two generations later, after every chunk of its job is done.
 */
#include "quant.h"

#include <limits.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>
#ifdef __linux__
#include <linux/futex.h>
#include <sys/syscall.h>
#endif

#include "prosparse.h"
#include "util.h"

static void cpu_relax_(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ volatile("yield");
#endif
}

/* Waiting, in three stages: poll with pause (~50 us: the next op of a decode
 * step usually arrives within that), then poll with sched_yield (on a busy
 * machine this hands the core to whoever holds it up, often our other
 * thread), then sleep on the futex. */
#define SPIN_PAUSE 2000
#define SPIN_YIELD 300

static int wait_step(int *spins) {
    ++*spins;
    if (*spins < SPIN_PAUSE) {
        cpu_relax_();
        return 0;
    }
    if (*spins < SPIN_PAUSE + SPIN_YIELD) {
        sched_yield();
        return 0;
    }
    return 1; /* time to sleep */
}

typedef struct job {
    _Atomic(ps_range_fn) fn;
    _Atomic(void *) ctx;
    atomic_llong n, chunk;
    atomic_uint n_chunks;
    atomic_uint done; /* chunks finished; futex word for the caller */
} job;

typedef struct worker {
    ps_compute *c;
    int ith;
    pthread_t tid;
} worker;

struct ps_compute {
    int n_threads;           /* including the caller */
    int n_started;           /* workers actually running */
    worker *workers;         /* n_threads - 1 */
    job jobs[2];             /* by generation parity */
    _Alignas(64) _Atomic uint64_t counter; /* gen << 32 | next chunk */
    _Alignas(64) atomic_uint gen;           /* futex word workers sleep on */
    atomic_int sleepers;                    /* workers inside futex_wait */
    atomic_int caller_sleeping;
    atomic_int stop;
    uint32_t next_gen;
    /* scratch: slot 0 = shared (quantized activations), 1+ith = per thread */
    void **scratch;
    size_t *scratch_cap;
};


#ifdef __linux__
static void futex_wait(atomic_uint *addr, unsigned expected) {
    syscall(SYS_futex, (unsigned *)addr, FUTEX_WAIT_PRIVATE, expected, NULL, NULL, 0);
}

static void futex_wake(atomic_uint *addr) {
    syscall(SYS_futex, (unsigned *)addr, FUTEX_WAKE_PRIVATE, INT_MAX, NULL, NULL, 0);
}
#else
/* Without futexes (macOS, BSDs): sleep briefly; every waiter re-checks its
 * word in a loop, so a wake-up is never lost, only up to 100 us late. */
static void futex_wait(atomic_uint *addr, unsigned expected) {
    if (atomic_load(addr) != expected) return;
    const struct timespec ts = {0, 100000};
    nanosleep(&ts, NULL);
}

static void futex_wake(atomic_uint *addr) { (void)addr; }
#endif

/* Claim and run chunks of whatever job is current until none is left. */
static void run_chunks(ps_compute *c, int ith) {
    for (;;) {
        uint64_t v = atomic_load_explicit(&c->counter, memory_order_acquire);
        job *j = &c->jobs[(v >> 32) & 1];
        unsigned n_chunks = atomic_load_explicit(&j->n_chunks, memory_order_relaxed);
        ps_range_fn fn = atomic_load_explicit(&j->fn, memory_order_relaxed);
        void *ctx = atomic_load_explicit(&j->ctx, memory_order_relaxed);
        long long n = atomic_load_explicit(&j->n, memory_order_relaxed);
        long long chunk = atomic_load_explicit(&j->chunk, memory_order_relaxed);
        unsigned i = (unsigned)v;
        if (i >= n_chunks) return;
        /* success means the generation did not move, so the fields read above are this job's */
        if (!atomic_compare_exchange_weak_explicit(&c->counter, &v, v + 1, memory_order_acq_rel,
                                                   memory_order_relaxed))
            continue;
        long long i0 = (long long)i * chunk, i1 = i0 + chunk < n ? i0 + chunk : n;
        fn(ctx, i0, i1, ith);
        if (atomic_fetch_add(&j->done, 1) + 1 == n_chunks && atomic_load(&c->caller_sleeping))
            futex_wake(&j->done);
    }
}

static void *worker_main(void *arg) {
    worker *w = arg;
    ps_compute *c = w->c;
    unsigned seen = 0;
    for (;;) {
        unsigned g;
        int spins = 0;
        while ((g = atomic_load_explicit(&c->gen, memory_order_acquire)) == seen) {
            if (!wait_step(&spins)) continue;
            atomic_fetch_add(&c->sleepers, 1);
            futex_wait(&c->gen, seen); /* returns at once if gen already moved */
            atomic_fetch_sub(&c->sleepers, 1);
            spins = 0;
        }
        seen = g;
        if (atomic_load(&c->stop)) break;
        run_chunks(c, w->ith);
    }
    return NULL;
}

ps_compute *ps_compute_new(int n_threads, int64_t max_cols, int32_t max_tokens) {
    if (n_threads <= 0) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        n_threads = n > 0 ? (int)n : 1;
    }
    if (n_threads > PS_MAX_THREADS) n_threads = PS_MAX_THREADS;
    if (max_cols < 0 || max_tokens < 0) {
        ps_fail(PS_ERR_ARG, "ps_compute_new: negative size");
        return NULL;
    }
    ps_compute *c = ps_calloc(1, sizeof *c);
    if (!c) goto oom;
    c->n_threads = n_threads;
    c->scratch = ps_calloc((size_t)n_threads + 1, sizeof *c->scratch);
    c->scratch_cap = ps_calloc((size_t)n_threads + 1, sizeof *c->scratch_cap);
    c->workers = ps_calloc((size_t)n_threads, sizeof *c->workers);
    if (!c->scratch || !c->scratch_cap || !c->workers) goto oom;
    /* all scratch up front: the products never allocate */
    const ps_scratch_sizes z = ps_matmul_scratch_sizes(max_cols, max_tokens);
    for (int slot = 0; slot <= n_threads; slot++) {
        const size_t bytes = slot == 0 ? z.shared : slot == 1 ? z.first_thread : z.per_thread;
        if (!(c->scratch[slot] = ps_alloc(bytes))) goto oom;
        c->scratch_cap[slot] = bytes;
    }
    for (int i = 1; i < n_threads; i++) {
        worker *w = &c->workers[i];
        w->c = c;
        w->ith = i;
        if (pthread_create(&w->tid, NULL, worker_main, w) != 0) {
            ps_compute_free(c);
            ps_fail(PS_ERR_MEMORY, "cannot start worker thread %d of %d", i, n_threads);
            return NULL;
        }
        c->n_started = i;
    }
    return c;
oom:
    ps_compute_free(c);
    ps_fail(PS_ERR_MEMORY, "out of memory creating the thread pool");
    return NULL;
}

void ps_compute_free(ps_compute *c) {
    if (!c) return;
    if (c->n_started > 0) {
        atomic_store(&c->stop, 1);
        atomic_fetch_add(&c->gen, 1);
        futex_wake(&c->gen);
        for (int i = 1; i <= c->n_started; i++) pthread_join(c->workers[i].tid, NULL);
    }
    if (c->scratch)
        for (int i = 0; i <= c->n_threads; i++) ps_free(c->scratch[i]);
    free(c->scratch);
    free(c->scratch_cap);
    free(c->workers);
    free(c);
}

int ps_compute_n_threads(const ps_compute *c) { return c ? c->n_threads : 1; }

void *ps_compute_scratch(ps_compute *c, int slot, size_t bytes) {
    if (slot < 0 || slot > c->n_threads || c->scratch_cap[slot] < bytes || ps_alloc_fails()) return NULL;
    return c->scratch[slot];
}

void ps_parallel_for(ps_compute *c, int64_t n, int64_t chunk, ps_range_fn fn, void *ctx) {
    if (n <= 0) return;
    if (chunk <= 0) chunk = 1;
    if ((n + chunk - 1) / chunk > UINT_MAX / 2) chunk = n / (UINT_MAX / 2) + 1;
    if (!c || c->n_started == 0 || n <= chunk) {
        fn(ctx, 0, n, 0);
        return;
    }
    uint32_t g = ++c->next_gen;
    job *j = &c->jobs[g & 1];
    unsigned n_chunks = (unsigned)((n + chunk - 1) / chunk);
    atomic_store_explicit(&j->fn, fn, memory_order_relaxed);
    atomic_store_explicit(&j->ctx, ctx, memory_order_relaxed);
    atomic_store_explicit(&j->n, n, memory_order_relaxed);
    atomic_store_explicit(&j->chunk, chunk, memory_order_relaxed);
    atomic_store_explicit(&j->n_chunks, n_chunks, memory_order_relaxed);
    atomic_store_explicit(&j->done, 0, memory_order_relaxed);
    atomic_store_explicit(&c->counter, (uint64_t)g << 32, memory_order_release);
    atomic_store(&c->gen, g);
    if (atomic_load(&c->sleepers) > 0) futex_wake(&c->gen);

    run_chunks(c, 0);

    int spins = 0;
    unsigned d;
    while ((d = atomic_load_explicit(&j->done, memory_order_acquire)) < n_chunks) {
        if (!wait_step(&spins)) continue;
        atomic_store(&c->caller_sleeping, 1);
        d = atomic_load(&j->done);
        if (d < n_chunks) futex_wait(&j->done, d);
        atomic_store(&c->caller_sleeping, 0);
    }
}
