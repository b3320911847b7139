/* model_pack.c: the weight copies a model makes at load time.
 *
 * Packed copies: row-interleaved (quant.h) copies of the matrices that every
 * mode of this file multiplies whole, when the kernels in force have a
 * packed product for their type. Row lists (sparse gate/up) and row lookups
 * (embeddings, ffn_down_t) need the file's row-major layout, so a matrix
 * that some mode reads by rows is not packed: it would be held twice.
 *
 * Huge-page copies: the matrices that sparse modes read row by row (gate,
 * up, ffn_down_t) are copied, row-major as in the file, into memory backed
 * by transparent huge pages where the kernel allows it (madvise mode). A
 * scattered row read then rarely misses the TLB: in `make bench`'s ~1B
 * shape the row kernels ran 19-35% faster than on the file's 4 KiB pages.
 *
 * Either way the copy has the same bytes (reordered or not); after copying,
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

/* One matrix to copy: the destination is allocated up front, filled by any
 * of the threads. */
typedef struct copy_job {
    const ps_matrix *w; /* type and shape */
    const uint8_t *src; /* the file's bytes */
    uint8_t *dst;
    int packed;         /* 1: ps_pack_matrix, 0: plain copy */
    int drop;           /* 1: drop the original pages afterwards */
} copy_job;

typedef struct copy_list {
    copy_job *jobs;
    int n;
    atomic_int next;
} copy_list;

static size_t matrix_bytes(const ps_matrix *w) { return ps_row_bytes(w->type, w->n_cols) * (size_t)w->n_rows; }

static void copy_one(const copy_job *j) {
    const size_t bytes = matrix_bytes(j->w);
    if (j->packed) ps_pack_matrix(j->w->type, j->src, j->w->n_rows, j->w->n_cols, j->dst);
    else memcpy(j->dst, j->src, bytes);
    if (!j->drop) return;
    /* drop the original: whole pages inside the tensor only */
    const uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
    const uintptr_t a = ((uintptr_t)j->src + page - 1) & ~(page - 1);
    const uintptr_t b = ((uintptr_t)j->src + bytes) & ~(page - 1);
    if (b > a) madvise((void *)a, b - a, MADV_DONTNEED);
}

static void *copy_worker(void *arg) {
    copy_list *l = arg;
    for (int i; (i = atomic_fetch_add(&l->next, 1)) < l->n;) copy_one(&l->jobs[i]);
    return NULL;
}

static int out_of_memory(const ps_matrix *w) {
    return ps_fail(PS_ERR_MEMORY, "out of memory copying a %lld x %lld matrix", (long long)w->n_rows,
                   (long long)w->n_cols);
}

/* Queue a packed copy of w if the kernels in force have a packed product for its type. */
static int add_packed(copy_list *l, ps_matrix *w, int drop) {
    if (!w || !w->data) return PS_OK;
    const ps_kernels *k = ps_kernels_get(w->type, ps_simd_level());
    const size_t bytes = ps_packed_bytes(w->type, w->n_rows, w->n_cols);
    if (!k || !k->gemm_packed || !bytes) return PS_OK;
    uint8_t *p = ps_alloc(bytes);
    if (!p) return out_of_memory(w);
    w->packed = p; /* freed by ps_model_free_copies, even if loading stops early */
    l->jobs[l->n++] = (copy_job){w, w->data, p, 1, drop};
    return PS_OK;
}

/* Queue a huge-page copy of w (unless packed: then its rows are never read). */
static int add_huge(ps_model *m, copy_list *l, ps_matrix *w) {
    if (!w || !w->data || w->packed) return PS_OK;
    const size_t bytes = matrix_bytes(w), alloc = (bytes + HUGE_PAGE - 1) & ~(HUGE_PAGE - 1);
    uint8_t *p = aligned_alloc(HUGE_PAGE, alloc);
    if (!p) return out_of_memory(w);
    madvise(p, alloc, MADV_HUGEPAGE); /* a hint: without it the copy still works */
    m->copies[m->n_copies++] = p;
    l->jobs[l->n++] = (copy_job){w, w->data, p, 0, 1};
    w->data = p;
    return PS_OK;
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
    const int up_whole = hp->act == PS_ACT_SILU && !m->cutoffs && hp->predictor_rank == 0;
    const int huge = thp_available();
    enum { PACKED_PER_LAYER = 9, HUGE_PER_LAYER = 3 };
    copy_list l = {calloc((size_t)hp->n_layer * (PACKED_PER_LAYER + HUGE_PER_LAYER) + 1, sizeof(copy_job)), 0, 0};
    m->copies = calloc((size_t)hp->n_layer * HUGE_PER_LAYER + 1, sizeof(void *));
    if (!l.jobs || !m->copies) {
        free(l.jobs);
        return ps_fail(PS_ERR_MEMORY, "out of memory");
    }
    /* a tied output matrix is also the embedding table: its rows stay mapped */
    int rc = add_packed(&l, &m->output, !m->tied_output);
    for (int il = 0; il < hp->n_layer && rc == PS_OK; il++) {
        ps_layer *L = &m->layers[il];
        ps_matrix *whole[PACKED_PER_LAYER] = {&L->wq, &L->wk, &L->wv, &L->wo, &L->down, &L->pred_in, &L->pred_out,
                                              gate_whole ? &L->gate : NULL, up_whole ? &L->up : NULL};
        for (int i = 0; i < PACKED_PER_LAYER && rc == PS_OK; i++) rc = add_packed(&l, whole[i], 1);
        ps_matrix *by_rows[HUGE_PER_LAYER] = {&L->gate, &L->up, &L->down_t};
        for (int i = 0; i < HUGE_PER_LAYER && rc == PS_OK && huge; i++) rc = add_huge(m, &l, by_rows[i]);
    }
    if (rc == PS_OK) { /* the copying is memory-bound: every core helps */
        long n_cpu = sysconf(_SC_NPROCESSORS_ONLN);
        int n_extra = n_cpu > MAX_COPY_THREADS ? MAX_COPY_THREADS - 1 : n_cpu > 1 ? (int)n_cpu - 1 : 0;
        pthread_t tid[MAX_COPY_THREADS];
        int started = 0;
        while (started < n_extra && pthread_create(&tid[started], NULL, copy_worker, &l) == 0) started++;
        copy_worker(&l);
        for (int i = 0; i < started; i++) pthread_join(tid[i], NULL);
    }
    free(l.jobs);
    return rc;
}

static void free_packed(ps_matrix *w) {
    ps_free((void *)w->packed);
    w->packed = NULL;
}

void ps_model_free_copies(ps_model *m) {
    free_packed(&m->output);
    for (int il = 0; m->layers && il < m->hp.n_layer; il++) {
        ps_layer *L = &m->layers[il];
        ps_matrix *all[] = {&L->wq, &L->wk, &L->wv, &L->wo, &L->down, &L->pred_in, &L->pred_out, &L->gate, &L->up};
        for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) free_packed(all[i]);
    }
    for (int i = 0; m->copies && i < m->n_copies; i++) free(m->copies[i]);
    free(m->copies);
    m->copies = NULL;
    m->n_copies = 0;
}
