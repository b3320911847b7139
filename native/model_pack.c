/* model_pack.c: row-interleaved copies (quant.h) of the weight matrices that
 * every mode of this file multiplies whole, made at load time when the
 * kernels in force have a packed product for their type.
 *
 * Row lists (sparse gate/up) and row lookups (embeddings, ffn_down_t) need
 * the file's row-major layout, so a matrix that some mode reads by rows
 * stays as it is: a packed copy as well would hold it in memory twice. The
 * packed copy has the same bytes in another order; after packing, the
 * original pages are dropped from the mapping (they are re-read from the
 * page cache if ever touched). Packing runs on every core. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

#include "model.h"
#include "prosparse.h"
#include "quant.h"
#include "util.h"

#define MAX_PACK_THREADS 8

/* One matrix to pack: allocated up front, filled by any of the threads. */
typedef struct pack_job {
    ps_matrix *w;
    uint8_t *dst;
    int drop_original;
} pack_job;

typedef struct pack_list {
    pack_job *jobs;
    int n;
    atomic_int next;
} pack_list;

static void pack_one(const pack_job *j) {
    ps_matrix *w = j->w;
    ps_pack_matrix(w->type, w->data, w->n_rows, w->n_cols, j->dst);
    if (j->drop_original) { /* whole pages inside the tensor only */
        const uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
        const uintptr_t a = ((uintptr_t)w->data + page - 1) & ~(page - 1);
        const uintptr_t b = ((uintptr_t)w->data + ps_row_bytes(w->type, w->n_cols) * (size_t)w->n_rows) & ~(page - 1);
        if (b > a) madvise((void *)a, b - a, MADV_DONTNEED);
    }
}

static void *pack_worker(void *arg) {
    pack_list *l = arg;
    for (int i; (i = atomic_fetch_add(&l->next, 1)) < l->n;) pack_one(&l->jobs[i]);
    return NULL;
}

/* Queue w if the kernels in force have a packed product for its type. */
static int add(pack_list *l, ps_matrix *w, int drop_original) {
    if (!w || !w->data) return PS_OK;
    const ps_kernels *k = ps_kernels_get(w->type, ps_simd_level());
    const size_t bytes = ps_packed_bytes(w->type, w->n_rows, w->n_cols);
    if (!k || !k->gemm_packed || !bytes) return PS_OK;
    uint8_t *p = ps_alloc(bytes);
    if (!p) return ps_fail(PS_ERR_MEMORY, "out of memory packing a %lld x %lld matrix",
                           (long long)w->n_rows, (long long)w->n_cols);
    w->packed = p; /* freed by ps_model_unpack, even if packing stops early */
    l->jobs[l->n++] = (pack_job){w, p, drop_original};
    return PS_OK;
}

int ps_model_pack(ps_model *m) {
    const ps_hparams *hp = &m->hp;
    /* gate is read by rows only in predict mode; up in every sparse mode */
    const int gate_whole = hp->predictor_rank == 0;
    const int up_whole = hp->act == PS_ACT_SILU && !m->cutoffs && hp->predictor_rank == 0;
    enum { PER_LAYER = 9 };
    pack_list l = {calloc((size_t)hp->n_layer * PER_LAYER + 1, sizeof(pack_job)), 0, 0};
    if (!l.jobs) return ps_fail(PS_ERR_MEMORY, "out of memory");
    int rc = add(&l, &m->output, !m->tied_output);
    for (int il = 0; il < hp->n_layer && rc == PS_OK; il++) {
        ps_layer *L = &m->layers[il];
        ps_matrix *whole[PER_LAYER] = {&L->wq, &L->wk, &L->wv, &L->wo, &L->down, &L->pred_in, &L->pred_out,
                                       gate_whole ? &L->gate : NULL, up_whole ? &L->up : NULL};
        for (int i = 0; i < PER_LAYER && rc == PS_OK; i++) rc = add(&l, whole[i], 1);
    }
    if (rc == PS_OK) { /* the copying is memory-bound: every core helps */
        long n_cpu = sysconf(_SC_NPROCESSORS_ONLN);
        int n_extra = n_cpu > MAX_PACK_THREADS ? MAX_PACK_THREADS - 1 : n_cpu > 1 ? (int)n_cpu - 1 : 0;
        pthread_t tid[MAX_PACK_THREADS];
        int started = 0;
        while (started < n_extra && pthread_create(&tid[started], NULL, pack_worker, &l) == 0) started++;
        pack_worker(&l);
        for (int i = 0; i < started; i++) pthread_join(tid[i], NULL);
    }
    free(l.jobs);
    return rc;
}

static void unpack(ps_matrix *w) {
    ps_free((void *)w->packed);
    w->packed = NULL;
}

void ps_model_unpack(ps_model *m) {
    unpack(&m->output);
    for (int il = 0; m->layers && il < m->hp.n_layer; il++) {
        ps_layer *L = &m->layers[il];
        ps_matrix *all[] = {&L->wq, &L->wk, &L->wv, &L->wo, &L->down, &L->pred_in, &L->pred_out, &L->gate, &L->up};
        for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) unpack(all[i]);
    }
}
