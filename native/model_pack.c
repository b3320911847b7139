/* model_pack.c: the weight copies a model makes at load time, all in one
 * arena backed by transparent huge pages where the kernel allows it.
 *
 * Packed copies: row-interleaved (quant.h) copies of the matrices that every
 * mode of this file multiplies whole, when the kernels in force have a
 * packed product for their type. Row lists (sparse gate/up) and row lookups
 * (ffn_down_t) need the file's row-major layout, so a matrix that some mode
 * reads by rows is not packed.
 *
 * Row-major copies: every other weight matrix, as in the file, when huge
 * pages are available (else it stays in the mapping): the file's 4 KiB
 * pages cost a TLB miss every few rows, which the scattered row reads of
 * the sparse modes feel most. Embedding rows and norms stay in the mapping.
 *
 * Either way a copy has the file's bytes (in the file's neuron order); after copying,
 * the original pages are dropped from the mapping (re-read from the page
 * cache if ever touched). The copying runs on every core. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "model.h"
#include "prosparse.h"
#include "quant.h"
#include "util.h"

#define MAX_COPY_THREADS 8
#define HUGE_PAGE ((size_t)2 << 20)
#define PER_LAYER 10 /* weight matrices of a layer */

/* One matrix to copy to arena offset `off`, by any of the threads. */
typedef struct copy_job {
    ps_matrix *w;
    const uint8_t *src; /* the file's bytes */
    size_t off;
    int packed;         /* 1: ps_pack_matrix, 0: plain copy */
    int drop;           /* 1: drop the original pages afterwards */
} copy_job;

typedef struct copy_list {
    copy_job *jobs;
    int n;
    size_t bytes; /* arena size so far */
    uint8_t *arena;
    atomic_int next;
} copy_list;

static size_t matrix_bytes(const ps_matrix *w) { return ps_row_bytes(w->type, w->n_cols) * (size_t)w->n_rows; }

static void copy_one(const copy_list *l, const copy_job *j) {
    const size_t bytes = matrix_bytes(j->w);
    uint8_t *dst = l->arena + j->off;
    if (j->packed) ps_pack_matrix(j->w->type, j->src, j->w->n_rows, j->w->n_cols, dst);
    else memcpy(dst, j->src, bytes);
    if (!j->drop) return;
    /* drop the original: whole pages inside the tensor only */
    const uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
    const uintptr_t a = ((uintptr_t)j->src + page - 1) & ~(page - 1);
    const uintptr_t b = ((uintptr_t)j->src + bytes) & ~(page - 1);
    if (b > a) madvise((void *)a, b - a, MADV_DONTNEED);
}

static void *copy_worker(void *arg) {
    copy_list *l = arg;
    for (int i; (i = atomic_fetch_add(&l->next, 1)) < l->n;) copy_one(l, &l->jobs[i]);
    return NULL;
}

static void add(copy_list *l, ps_matrix *w, size_t bytes, int packed, int drop) {
    l->jobs[l->n++] = (copy_job){w, w->data, l->bytes, packed, drop};
    l->bytes += (bytes + 63) & ~(size_t)63;
}

/* Queue w's copy: packed if every mode multiplies it whole and the kernels
 * in force have a packed product for its type, else row-major on huge pages
 * (when there are none, it stays in the mapping). */
static void add_matrix(copy_list *l, ps_matrix *w, int whole, int huge, int drop) {
    if (!w->data) return;
    const ps_type_kernels *k = ps_kernels_get(w->type, ps_ops());
    const size_t packed = ps_packed_bytes(w->type, w->n_rows, w->n_cols);
    if (whole && k && k->gemm_packed && packed) add(l, w, packed, 1, drop);
    else if (huge) add(l, w, matrix_bytes(w), 0, drop);
}

/* Transparent huge pages available on request ("always" or "madvise")? */
static int thp_available(void) {
    FILE *f = fopen("/sys/kernel/mm/transparent_hugepage/enabled", "r");
    if (!f) return 0;
    char buf[128] = {0};
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    return strstr(buf, "[always]") || strstr(buf, "[madvise]");
}

int ps_model_copy_weights(ps_model *m) {
    const ps_hparams *hp = &m->hp;
    /* gate is read by rows only in predict mode; up in every sparse mode */
    const int gate_whole = hp->predictor_rank == 0;
    const int up_whole = ps_act_smooth(hp->act) && !m->cutoffs && hp->predictor_rank == 0;
    const int huge = thp_available();
    copy_list l = {ps_calloc((size_t)hp->n_layer * PER_LAYER + 1, sizeof(copy_job)), 0, 0, NULL, 0};
    if (!l.jobs) return ps_fail(PS_ERR_MEMORY, "out of memory");
    /* a tied output matrix is also the embedding table: its rows stay mapped */
    add_matrix(&l, &m->output, 1, huge, !m->tied_output);
    for (int il = 0; il < hp->n_layer; il++) {
        ps_layer *L = &m->layers[il];
        ps_matrix *w[PER_LAYER] = {&L->wq, &L->wk, &L->wv, &L->wo, &L->down, &L->pred_in, &L->pred_out,
                                   &L->gate, &L->up, &L->down_t};
        const int whole[PER_LAYER] = {1, 1, 1, 1, 1, 1, 1, gate_whole, up_whole, 0};
        for (int i = 0; i < PER_LAYER; i++) add_matrix(&l, w[i], whole[i], huge, 1);
    }
    if (l.n == 0) {
        free(l.jobs);
        return PS_OK;
    }
    const size_t alloc = (l.bytes + HUGE_PAGE - 1) & ~(HUGE_PAGE - 1);
    l.arena = aligned_alloc(HUGE_PAGE, alloc);
    if (!l.arena) { /* no room for copies: run from the mapping, as it is */
        free(l.jobs);
        return PS_OK;
    }
#ifdef MADV_HUGEPAGE /* Linux */
    madvise(l.arena, alloc, MADV_HUGEPAGE); /* a hint: without it the copies still work */
#endif
    m->weight_arena = l.arena;
    m->weight_arena_bytes = l.bytes;
    for (int i = 0; i < l.n; i++) {
        ps_matrix *w = l.jobs[i].w;
        if (l.jobs[i].packed) w->packed = l.arena + l.jobs[i].off;
        else w->data = l.arena + l.jobs[i].off;
    }
    /* the copying is memory-bound: every core helps */
    long n_cpu = sysconf(_SC_NPROCESSORS_ONLN);
    int n_extra = n_cpu > MAX_COPY_THREADS ? MAX_COPY_THREADS - 1 : n_cpu > 1 ? (int)n_cpu - 1 : 0;
    pthread_t tid[MAX_COPY_THREADS];
    int started = 0;
    while (started < n_extra && pthread_create(&tid[started], NULL, copy_worker, &l) == 0) started++;
    copy_worker(&l);
    for (int i = 0; i < started; i++) pthread_join(tid[i], NULL);
    free(l.jobs);
    return PS_OK;
}

void ps_model_free_copies(ps_model *m) {
    free(m->weight_arena);
    m->weight_arena = NULL;
    m->weight_arena_bytes = 0;
}
