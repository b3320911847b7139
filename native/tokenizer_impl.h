/* tokenizer_impl.h: the tokenizer's internals, shared by tokenizer.c (loading,
 * pieces) and tokenizer_encode.c (text -> ids). Not public. */
#ifndef PS_TOKENIZER_IMPL_H
#define PS_TOKENIZER_IMPL_H

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "pretokenize.h"
#include "tokenizer.h"

enum { KIND_BPE = 0, KIND_SPM = 1 };

/* token attributes (bits), from tokenizer.ggml.token_type */
enum {
    ATTR_NORMAL = 1, ATTR_UNKNOWN = 2, ATTR_CONTROL = 4, ATTR_USER = 8,
    ATTR_UNUSED = 16, ATTR_BYTE = 32,
};

struct ps_tokenizer {
    int kind;                /* KIND_BPE / KIND_SPM */
    int pre;                 /* enum ps_pre (BPE only) */
    int32_t n_vocab;
    char *text;              /* all token texts back to back */
    uint32_t *text_off;      /* [n_vocab+1]: token i is text[text_off[i] .. text_off[i+1]) */
    float *score;            /* [n_vocab] SentencePiece scores (0 when absent) */
    uint8_t *attr;           /* [n_vocab] ATTR_* bits */
    uint8_t *eog;            /* [n_vocab] 1: ends generation */
    int32_t *vocab_hash;     /* [vocab_cap] token ids by text, -1 = empty */
    uint32_t vocab_cap;

    uint64_t *merge_key;     /* [merge_cap] (left id << 32 | right id), UINT64_MAX = empty */
    int32_t *merge_rank;     /* [merge_cap] position in tokenizer.ggml.merges */
    int32_t *merge_out;      /* [merge_cap] id of the merged text (-1 if not a token) */
    uint32_t merge_cap;

    int32_t byte_id[256];    /* BPE: token of byte b's byte-level char; SPM: <0xXX> */
    int32_t *special;        /* [n_special] control/user/unknown ids, longest text first */
    int32_t n_special;
    char *piece;             /* decoded bytes of every token (special rendering) */
    uint32_t *piece_off;     /* [n_vocab+1] */

    int32_t bos, eos, eot, eom, unk;
    int add_bos, add_space_prefix, ignore_merges;
};

/* ---- small growable arrays ---------------------------------------------------- */

typedef ps_ivec ivec;
typedef struct { char *v; size_t n, cap; } cvec;

#define ivec_push ps_ivec_push

static inline int cvec_put(cvec *a, const void *p, size_t n) {
    if (a->n + n > a->cap) {
        size_t cap = a->cap ? a->cap : 256;
        while (cap < a->n + n) cap *= 2;
        char *v = realloc(a->v, cap);
        if (!v) return -1;
        a->v = v;
        a->cap = cap;
    }
    memcpy(a->v + a->n, p, n);
    a->n += n;
    return 0;
}

/* ---- hashing: token text -> id ------------------------------------------------- */

static inline uint64_t fnv1a(const char *p, size_t n) {
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)p[i];
        h *= 1099511628211ull;
    }
    return h;
}

static inline const char *tok_text(const ps_tokenizer *t, int32_t id, size_t *n) {
    *n = t->text_off[id + 1] - t->text_off[id];
    return t->text + t->text_off[id];
}

static inline int32_t vocab_find(const ps_tokenizer *t, const char *p, size_t n) {
    uint32_t mask = t->vocab_cap - 1;
    for (uint32_t h = (uint32_t)fnv1a(p, n) & mask;; h = (h + 1) & mask) {
        int32_t id = t->vocab_hash[h];
        if (id < 0) return -1;
        size_t m;
        const char *q = tok_text(t, id, &m);
        if (m == n && memcmp(p, q, n) == 0) return id;
    }
}

static inline uint64_t mix64(uint64_t x) {
    x ^= x >> 33; x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33; x *= 0xc4ceb9fe1a85ec53ull;
    return x ^ (x >> 33);
}

/* Rank of merging (l, r), -1 if no such merge; *out gets the merged id. */
static inline int32_t merge_find(const ps_tokenizer *t, int32_t l, int32_t r, int32_t *out) {
    if (!t->merge_cap || l < 0 || r < 0) return -1;
    uint64_t key = ((uint64_t)(uint32_t)l << 32) | (uint32_t)r;
    uint32_t mask = t->merge_cap - 1;
    for (uint32_t h = (uint32_t)mix64(key) & mask;; h = (h + 1) & mask) {
        if (t->merge_key[h] == UINT64_MAX) return -1;
        if (t->merge_key[h] == key) {
            *out = t->merge_out[h];
            return t->merge_rank[h];
        }
    }
}

#endif
