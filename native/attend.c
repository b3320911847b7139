/* attend.c: a layer's causal grouped-query attention over the session's KV
 * cache, with attention.h's chunk kernels.
 *
 * Decode (one token): the work items are (kv head, chunk), so a long cache
 * is spread over all threads; each item leaves its partials in the
 * session's part_* buffers, which are then merged per query head in order
 * of chunk. Prompt processing: the items are (tile of TOKEN_TILE tokens, kv
 * head); a chunk that every token of the tile sees entirely is computed for
 * all of the tile's queries in one kernel call (one pass over its rows), the
 * chunks on the diagonal token by token. Both fold chunk partials in the
 * same order with the same steps, so a token's output does not depend on
 * the batch it came in nor on the thread count.
 *
 * A local (sliding-window) layer's query at position p sees the keys
 * p - window + 1 .. p only: chunks wholly before that are skipped, the
 * first one it sees is cut at its first key. Chunk boundaries stay fixed
 * in positions, so the property above holds there too.
 */
#include "attend.h"

#include <math.h>
#include <string.h>

#include "attention.h"
#include "util.h"

typedef struct attend_ctx {
    ps_session *s;
    int layer;
    int32_t pos0, n_tok, n_chunks;
    int32_t window; /* keys a query sees in a local layer; 0: all before it */
    int32_t ch0;    /* decode: the first chunk the query sees */
    ps_attn_chunk_fn chunk;
    float scale;
} attend_ctx;

/* The first key position a query at position pos sees. */
static int32_t first_key(const attend_ctx *c, int32_t pos) {
    return c->window > 0 && pos - c->window + 1 > 0 ? pos - c->window + 1 : 0;
}

/* The keys [*j, *j + *n) of chunk ch a query at position pos sees; 0 if none. */
static int chunk_keys(const attend_ctx *c, int32_t pos, int32_t ch, int32_t *j, int32_t *n) {
    const int32_t lo = first_key(c, pos), j0 = ch * PS_ATTN_CHUNK;
    const int32_t a = j0 > lo ? j0 : lo, b = j0 + PS_ATTN_CHUNK < pos + 1 ? j0 + PS_ATTN_CHUNK : pos + 1;
    *j = a, *n = b - a;
    return b > a;
}

static const uint8_t *cache_row(const ps_session *s, const uint8_t *cache, int layer, int g, int64_t pos) {
    const int64_t n_kv = s->model->hp.n_head_kv;
    return cache + (size_t)((((int64_t)layer * n_kv + g) * s->n_ctx + pos) * (int64_t)s->cache_row);
}

size_t ps_attend_scratch_floats(const ps_hparams *hp) {
    const size_t nq = (size_t)PS_ATTEND_TOKEN_TILE * (size_t)(hp->n_head / hp->n_head_kv);
    const size_t hd = (size_t)hp->head_dim;
    const size_t qq_floats = hd % PS_QK ? 0 : (hd / PS_QK) * sizeof(ps_block_q8a) / sizeof(float);
    size_t n = nq * (PS_ATTN_CHUNK + 2 * hd + qq_floats + 4);
    return (n + 15) & ~(size_t)15; /* each thread's part 64-byte aligned */
}

/* The pieces of a thread's scratch. */
typedef struct scratch {
    float *s, *q, *pm, *pl, *po, *M, *L;
    ps_block_q8a *qq;
} scratch;

static scratch thread_scratch(const ps_session *s, int ith) {
    const ps_hparams *hp = &s->model->hp;
    const size_t nq = (size_t)PS_ATTEND_TOKEN_TILE * (size_t)(hp->n_head / hp->n_head_kv);
    const size_t hd = (size_t)hp->head_dim;
    float *p = s->att + (size_t)ith * ps_attend_scratch_floats(hp);
    scratch r;
    r.s = p, p += nq * PS_ATTN_CHUNK;
    r.q = p, p += nq * hd;
    r.po = p, p += nq * hd;
    r.pm = p, p += nq;
    r.pl = p, p += nq;
    r.M = p, p += nq;
    r.L = p, p += nq;
    r.qq = (ps_block_q8a *)p;
    return r;
}

/* ---- decode ------------------------------------------------------------ */

static void decode_items(void *vc, int64_t i0, int64_t i1, int ith) {
    const attend_ctx *c = vc;
    const ps_session *s = c->s;
    const ps_hparams *hp = &s->model->hp;
    const int32_t hd = hp->head_dim, G = hp->n_head / hp->n_head_kv;
    const scratch sc = thread_scratch(s, ith);
    for (int64_t item = i0; item < i1; item++) {
        const int g = (int)(item / c->n_chunks);
        const int32_t k = (int32_t)(item % c->n_chunks); /* the query's k-th chunk */
        int32_t j0, n;
        chunk_keys(c, c->pos0, c->ch0 + k, &j0, &n);
        const size_t part = (size_t)k * hp->n_head + (size_t)g * G;
        const ps_attn_chunk a = {
            .q = s->q + (size_t)g * G * hd,
            .qq = s->qq + (size_t)g * G * (hd / PS_QK),
            .k = cache_row(s, s->k_cache, c->layer, g, j0),
            .v = cache_row(s, s->v_cache, c->layer, g, j0),
            .row_bytes = s->cache_row, .n = n, .hd = hd, .nq = G, .scale = c->scale, .s = sc.s,
            .m = s->part_m + part, .l = s->part_l + part, .o = s->part_o + part * hd,
        };
        c->chunk(&a);
    }
}

static void decode_merge(void *vc, int64_t h0, int64_t h1, int ith) {
    const attend_ctx *c = vc;
    const ps_session *s = c->s;
    const ps_hparams *hp = &s->model->hp;
    const int32_t hd = hp->head_dim;
    for (int64_t h = h0; h < h1; h++) {
        float *O = s->att_out + h * hd;
        float M = s->part_m[h], L = s->part_l[h];
        memcpy(O, s->part_o + h * hd, sizeof(float) * (size_t)hd);
        for (int32_t ch = 1; ch < c->n_chunks; ch++) {
            const size_t p = (size_t)ch * hp->n_head + (size_t)h;
            ps_attn_merge(&M, &L, O, s->part_m[p], s->part_l[p], s->part_o + p * hd, hd);
        }
        const float inv = 1.0f / L;
        for (int32_t d = 0; d < hd; d++) O[d] *= inv;
    }
}

/* ---- prompt processing ------------------------------------------------- */

static void prompt_items(void *vc, int64_t i0, int64_t i1, int ith) {
    const attend_ctx *c = vc;
    const ps_session *s = c->s;
    const ps_hparams *hp = &s->model->hp;
    const int32_t hd = hp->head_dim, G = hp->n_head / hp->n_head_kv, n_kv = hp->n_head_kv;
    const int32_t nbq = hd / PS_QK, q_dim = hp->n_head * hd;
    const int quant = s->cache_type == PS_CACHE_Q8_0;
    const scratch sc = thread_scratch(s, ith);
    for (int64_t item = i0; item < i1; item++) {
        const int g = (int)(item % n_kv);
        const int32_t t0 = (int32_t)(item / n_kv) * PS_ATTEND_TOKEN_TILE;
        const int32_t t1 = t0 + PS_ATTEND_TOKEN_TILE < c->n_tok ? t0 + PS_ATTEND_TOKEN_TILE : c->n_tok;
        const int32_t nq = (t1 - t0) * G;
        /* the tile's queries, contiguous: query (t - t0) * G + i is head g*G + i of token t */
        for (int32_t t = t0; t < t1; t++) {
            memcpy(sc.q + (size_t)(t - t0) * G * hd, s->q + (size_t)t * q_dim + (size_t)g * G * hd,
                   sizeof(float) * (size_t)G * hd);
            if (quant)
                memcpy(sc.qq + (size_t)(t - t0) * G * nbq, s->qq + ((size_t)t * q_dim + (size_t)g * G * hd) / PS_QK,
                       sizeof(ps_block_q8a) * (size_t)G * nbq);
        }
        const int32_t n_last = c->pos0 + t1; /* keys of the tile's last token */
        const int32_t ch_first = first_key(c, c->pos0 + t0) / PS_ATTN_CHUNK;
        const int32_t lo_last = first_key(c, c->pos0 + t1 - 1); /* the tile's latest first key */
        const int32_t n_chunks = (n_last + PS_ATTN_CHUNK - 1) / PS_ATTN_CHUNK;
        for (int32_t ch = ch_first; ch < n_chunks; ch++) {
            const int32_t j0 = ch * PS_ATTN_CHUNK;
            ps_attn_chunk a = {
                .k = cache_row(s, s->k_cache, c->layer, g, j0),
                .v = cache_row(s, s->v_cache, c->layer, g, j0),
                .row_bytes = s->cache_row, .hd = hd, .scale = c->scale, .s = sc.s,
            };
            if (j0 >= lo_last && j0 + PS_ATTN_CHUNK <= c->pos0 + t0 + 1) { /* all the tile's tokens see all of it */
                a.q = sc.q, a.qq = sc.qq, a.n = PS_ATTN_CHUNK, a.nq = nq;
                a.m = sc.pm, a.l = sc.pl, a.o = sc.po;
                c->chunk(&a);
            } else {
                for (int32_t t = t0; t < t1; t++) {
                    int32_t j, n;
                    if (!chunk_keys(c, c->pos0 + t, ch, &j, &n)) continue;
                    const size_t qi = (size_t)(t - t0) * G;
                    a.k = cache_row(s, s->k_cache, c->layer, g, j);
                    a.v = cache_row(s, s->v_cache, c->layer, g, j);
                    a.q = sc.q + qi * hd, a.qq = sc.qq + qi * nbq, a.nq = G, a.n = n;
                    a.m = sc.pm + qi, a.l = sc.pl + qi, a.o = sc.po + qi * hd;
                    c->chunk(&a);
                }
            }
            /* fold: each token's queries, over the chunks it sees, from its first */
            for (int32_t t = t0; t < t1; t++) {
                int32_t j, n;
                if (!chunk_keys(c, c->pos0 + t, ch, &j, &n)) continue;
                const int first = ch == first_key(c, c->pos0 + t) / PS_ATTN_CHUNK;
                for (int32_t qi = (t - t0) * G; qi < (t - t0 + 1) * G; qi++) {
                    const int32_t h = g * G + qi % G;
                    float *O = s->att_out + (size_t)t * q_dim + (size_t)h * hd;
                    if (first) {
                        sc.M[qi] = sc.pm[qi], sc.L[qi] = sc.pl[qi];
                        memcpy(O, sc.po + (size_t)qi * hd, sizeof(float) * (size_t)hd);
                    } else {
                        ps_attn_merge(&sc.M[qi], &sc.L[qi], O, sc.pm[qi], sc.pl[qi], sc.po + (size_t)qi * hd, hd);
                    }
                }
            }
        }
        for (int32_t qi = 0; qi < nq; qi++) {
            const int32_t t = t0 + qi / G, h = g * G + qi % G;
            float *O = s->att_out + (size_t)t * q_dim + (size_t)h * hd;
            const float inv = 1.0f / sc.L[qi];
            for (int32_t d = 0; d < hd; d++) O[d] *= inv;
        }
    }
}

void ps_attend(ps_session *s, int layer, int32_t pos0, int32_t n_tok) {
    const ps_hparams *hp = &s->model->hp;
    const ps_level_ops *ops = ps_ops();
    const ps_attn_kernels *K = ops->attn;
    if (hp->head_dim % K->head_multiple || hp->head_dim > PS_ATTN_MAX_HEAD_DIM) K = &ps_attn_kernels_scalar;
    if (s->cache_type == PS_CACHE_Q8_0)
        ops->quantize_q8a(s->q, s->qq, (int64_t)n_tok * hp->n_head * hp->head_dim);
    attend_ctx c = {.s = s, .layer = layer, .pos0 = pos0, .n_tok = n_tok,
                    .window = s->model->layers[layer].sliding ? hp->n_swa : 0,
                    .chunk = K->chunk[s->cache_type], .scale = hp->attn_scale};
    if (n_tok == 1) {
        c.ch0 = first_key(&c, pos0) / PS_ATTN_CHUNK;
        c.n_chunks = pos0 / PS_ATTN_CHUNK - c.ch0 + 1;
        ps_parallel_for(s->pool, (int64_t)hp->n_head_kv * c.n_chunks, 1, decode_items, &c);
        if (c.n_chunks == 1) decode_merge(&c, 0, hp->n_head, 0);
        else ps_parallel_for(s->pool, hp->n_head, 1, decode_merge, &c);
    } else {
        const int64_t tiles = (n_tok + PS_ATTEND_TOKEN_TILE - 1) / PS_ATTEND_TOKEN_TILE;
        ps_parallel_for(s->pool, tiles * hp->n_head_kv, 1, prompt_items, &c);
    }
}
