/* tokenizer_encode.c: text -> token ids (ps_tokenizer_encode).
 *
 * 1. partition: special tokens are cut out of the text, longest first;
 * 2. byte-level BPE: each raw fragment is split into words by the
 *    pre-tokenizer, each word's bytes are merged by rank with a heap;
 *    SentencePiece-style: spaces become U+2581 (one prefixed at the start and
 *    after a special token), symbols merge best score first, leftovers fall
 *    back to <0xXX> bytes.
 * Everything is O(n log n) per word/fragment and uses per-call scratch, so
 * a tokenizer can be shared by threads.
 */
#include "tokenizer_impl.h"
#include "prosparse.h"
#include "util.h"

/* ---- merge loops --------------------------------------------------------------- */

/* A candidate merge in the heap; smaller key first. */
typedef struct { uint64_t key; int32_t left, right, a, b; } bigram;
typedef struct { bigram *v; size_t n, cap; } heap;

static int heap_push(heap *h, bigram x) {
    PS_RESERVE_ONE(h, 64);
    size_t i = h->n++;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (h->v[p].key <= x.key) break;
        h->v[i] = h->v[p];
        i = p;
    }
    h->v[i] = x;
    return 0;
}

static bigram heap_pop(heap *h) {
    bigram top = h->v[0], x = h->v[--h->n];
    size_t i = 0;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= h->n) break;
        if (c + 1 < h->n && h->v[c + 1].key < h->v[c].key) c++;
        if (x.key <= h->v[c].key) break;
        h->v[i] = h->v[c];
        i = c;
    }
    if (h->n) h->v[i] = x;
    return top;
}

/* A symbol of the word being merged: a byte range and its token id. */
typedef struct { int32_t start, n, prev, next, id; } symbol;

typedef struct {       /* per-call scratch, so a tokenizer can be shared by threads */
    ivec out;          /* token ids produced */
    symbol *sym; size_t sym_cap;
    heap h;
    cvec buf;
    uint32_t *cp; uint8_t *fl; size_t cp_cap;
    ivec words, words2;
} scratch;

static int sym_reserve(scratch *sc, size_t n) {
    if (n <= sc->sym_cap) return 0;
    symbol *s = ps_realloc(sc->sym, n * sizeof *s);
    if (!s) return -1;
    sc->sym = s;
    sc->sym_cap = n;
    return 0;
}

static int bpe_try_pair(const ps_tokenizer *t, scratch *sc, int32_t l, int32_t r) {
    if (l < 0 || r < 0) return 0;
    int32_t out;
    int32_t rank = merge_find(t, sc->sym[l].id, sc->sym[r].id, &out);
    if (rank < 0) return 0;
    bigram b = {((uint64_t)(uint32_t)rank << 32) | (uint32_t)l, l, r, sc->sym[l].id, sc->sym[r].id};
    return heap_push(&sc->h, b);
}

/* Byte-level BPE over one word (bytes w[0..n) of canonical UTF-8). */
static int bpe_word(const ps_tokenizer *t, scratch *sc, const unsigned char *w, int32_t n) {
    if (t->ignore_merges) { /* a word that is a whole token is taken as it is */
        sc->buf.n = 0;
        for (int32_t i = 0; i < n; i++) {
            char u[4];
            if (cvec_put(&sc->buf, u, (size_t)ps_utf8_put(ps_byte_to_cp(w[i]), u))) return -1;
        }
        int32_t id = vocab_find(t, sc->buf.v, sc->buf.n);
        if (id >= 0) return ivec_push(&sc->out, id);
    }
    if (sym_reserve(sc, (size_t)n)) return -1;
    symbol *sym = sc->sym;
    for (int32_t i = 0; i < n; i++)
        sym[i] = (symbol){i, 1, i - 1, i + 1 < n ? i + 1 : -1, t->byte_id[w[i]]};
    sc->h.n = 0;
    for (int32_t i = 1; i < n; i++)
        if (bpe_try_pair(t, sc, i - 1, i)) return -1;
    while (sc->h.n) {
        bigram b = heap_pop(&sc->h);
        symbol *l = &sym[b.left], *r = &sym[b.right];
        if (l->n == 0 || r->n == 0 || l->next != b.right || l->id != b.a || r->id != b.b) continue; /* stale */
        int32_t out = -1;
        merge_find(t, l->id, r->id, &out);
        l->n += r->n;
        l->id = out;
        r->n = 0;
        l->next = r->next;
        if (r->next >= 0) sym[r->next].prev = b.left;
        if (bpe_try_pair(t, sc, l->prev, b.left) || bpe_try_pair(t, sc, b.left, l->next)) return -1;
    }
    for (int32_t i = 0; i >= 0 && i < n; i = sym[i].next) {
        if (sym[i].id >= 0) {
            if (ivec_push(&sc->out, sym[i].id)) return -1;
        } else { /* not a token (a vocabulary without every byte): per byte, skipping the unknown */
            for (int32_t k = sym[i].start; k < sym[i].start + sym[i].n; k++)
                if (t->byte_id[w[k]] >= 0 && ivec_push(&sc->out, t->byte_id[w[k]])) return -1;
        }
    }
    return 0;
}

static int bpe_fragment(const ps_tokenizer *t, scratch *sc, const char *text, size_t len) {
    /* decode to code points; re-encode canonically (bad bytes become U+FFFD) */
    if (len + 1 > sc->cp_cap) {
        uint32_t *cp = ps_realloc(sc->cp, (len + 1) * sizeof *cp);
        if (!cp) return -1;
        sc->cp = cp;
        uint8_t *fl = ps_realloc(sc->fl, len + 1);
        if (!fl) return -1;
        sc->fl = fl;
        sc->cp_cap = len + 1;
    }
    size_t n = 0;
    for (size_t i = 0; i < len;) sc->cp[n++] = ps_utf8_next((const unsigned char *)text, len, &i);
    if (n == 0) return 0;
    if (ps_pretokenize(t->pre, sc->cp, sc->fl, n, &sc->words, &sc->words2)) return -1;
    /* BPE each word over its canonical UTF-8 bytes */
    cvec wb = {0};
    size_t c = 0;
    int rc = 0;
    for (size_t w = 0; w < sc->words.n && !rc; w++) {
        wb.n = 0;
        for (int32_t k = 0; k < sc->words.v[w] && !rc; k++, c++) {
            char u[4];
            rc = cvec_put(&wb, u, (size_t)ps_utf8_put(sc->cp[c], u));
        }
        if (!rc) rc = bpe_word(t, sc, (const unsigned char *)wb.v, (int32_t)wb.n);
    }
    free(wb.v);
    return rc;
}

/* SentencePiece-style merges over one fragment: best score first, ties to the left. */
static int spm_try_pair(const ps_tokenizer *t, scratch *sc, int32_t l, int32_t r) {
    if (l < 0 || r < 0) return 0;
    symbol *a = &sc->sym[l], *b = &sc->sym[r];
    int32_t id = vocab_find(t, sc->buf.v + a->start, (size_t)(a->n + b->n));
    if (id < 0) return 0;
    float s = t->score[id];
    if (s == 0.0f) s = 0.0f; /* -0 ties with +0 */
    uint32_t u;
    memcpy(&u, &s, 4);
    u = (u & 0x80000000u) ? ~u : (u | 0x80000000u); /* order-preserving bits */
    bigram g = {((uint64_t)(~u) << 32) | (uint32_t)l, l, r, a->n + b->n, 0};
    return heap_push(&sc->h, g);
}

static int spm_fragment(const ps_tokenizer *t, scratch *sc, const char *text, size_t len, int prefix_space) {
    sc->buf.n = 0;
    if (prefix_space && cvec_put(&sc->buf, "\xe2\x96\x81", 3)) return -1;
    for (size_t i = 0; i < len; i++)
        if (text[i] == ' ' ? cvec_put(&sc->buf, "\xe2\x96\x81", 3) : cvec_put(&sc->buf, text + i, 1)) return -1;
    const unsigned char *s = (const unsigned char *)sc->buf.v;
    size_t n = sc->buf.n;
    if (n == 0) return 0;
    if (sym_reserve(sc, n)) return -1;
    int32_t ns = 0;
    for (size_t off = 0; off < n;) {
        int32_t k = ps_utf8_len(s[off]);
        if ((size_t)k > n - off) k = (int32_t)(n - off);
        sc->sym[ns] = (symbol){(int32_t)off, k, ns - 1, -1, -1};
        if (ns > 0) sc->sym[ns - 1].next = ns;
        ns++;
        off += (size_t)k;
    }
    sc->h.n = 0;
    for (int32_t i = 1; i < ns; i++)
        if (spm_try_pair(t, sc, i - 1, i)) return -1;
    while (sc->h.n) {
        bigram b = heap_pop(&sc->h);
        symbol *l = &sc->sym[b.left], *r = &sc->sym[b.right];
        if (l->n == 0 || r->n == 0 || l->n + r->n != b.a) continue; /* stale */
        l->n += r->n;
        r->n = 0;
        l->next = r->next;
        if (r->next >= 0) sc->sym[r->next].prev = b.left;
        if (spm_try_pair(t, sc, l->prev, b.left) || spm_try_pair(t, sc, b.left, l->next)) return -1;
    }
    for (int32_t i = 0; i >= 0; i = sc->sym[i].next) {
        symbol *y = &sc->sym[i];
        int32_t id = vocab_find(t, (const char *)s + y->start, (size_t)y->n);
        if (id >= 0) {
            if (ivec_push(&sc->out, id)) return -1;
            continue;
        }
        for (int32_t k = 0; k < y->n; k++) { /* byte fallback */
            int32_t b = t->byte_id[s[y->start + k]];
            if (b < 0) b = t->unk;
            if (b >= 0 && ivec_push(&sc->out, b)) return -1;
        }
    }
    return 0;
}

/* ---- special-token partition ------------------------------------------------------ */

/* A piece of the input: raw text [off, off+len) or one token (id >= 0). */
typedef struct { int32_t id; size_t off, len; } fragment;
typedef struct { fragment *v; size_t n, cap; } fvec;

static int fvec_push(fvec *a, fragment f) {
    PS_RESERVE_ONE(a, 16);
    a->v[a->n++] = f;
    return 0;
}

/* For each special token, longest first, split every raw fragment at its
 * occurrences (llama.cpp's order: this is not a leftmost-longest scan). */
static int partition(const ps_tokenizer *t, const char *text, size_t len, int parse_special, fvec *frags) {
    fvec next = {0};
    frags->n = 0;
    if (len && fvec_push(frags, (fragment){-1, 0, len})) return -1;
    for (int32_t k = 0; k < t->n_special; k++) {
        int32_t id = t->special[k];
        if (!parse_special && (t->attr[id] & (ATTR_CONTROL | ATTR_UNKNOWN))) continue;
        size_t sn;
        const char *sp = tok_text(t, id, &sn);
        if (sn == 0) continue;
        next.n = 0;
        for (size_t f = 0; f < frags->n; f++) {
            fragment fr = frags->v[f];
            if (fr.id >= 0) {
                if (fvec_push(&next, fr)) goto oom;
                continue;
            }
            size_t off = fr.off, end = fr.off + fr.len;
            for (;;) {
                const char *m = end - off >= sn ? memmem(text + off, end - off, sp, sn) : NULL;
                if (!m) break;
                size_t at = (size_t)(m - text);
                if (at > off && fvec_push(&next, (fragment){-1, off, at - off})) goto oom;
                if (fvec_push(&next, (fragment){id, at, sn})) goto oom;
                off = at + sn;
            }
            if (off < end && fvec_push(&next, (fragment){-1, off, end - off})) goto oom;
        }
        fvec tmp = *frags;
        *frags = next;
        next = tmp;
    }
    free(next.v);
    return 0;
oom:
    free(next.v);
    return -1;
}

/* ---- public entry points ------------------------------------------------------------ */

int ps_tokenizer_encode(const ps_tokenizer *t, const char *text, int32_t len,
                        int32_t *out, int32_t max_tokens, int add_bos, int parse_special) {
    if (!t) return ps_fail(PS_ERR_ARG, "tokenize: no tokenizer");
    if (len < 0 || (len > 0 && !text)) return ps_fail(PS_ERR_ARG, "tokenize: bad text (len %d)", len);
    if (max_tokens < 0 || (max_tokens > 0 && !out))
        return ps_fail(PS_ERR_ARG, "tokenize: bad output buffer (max_tokens %d)", max_tokens);
    scratch sc;
    memset(&sc, 0, sizeof sc);
    fvec frags = {0};
    int rc = 0;
    if (add_bos && t->bos >= 0) rc = ivec_push(&sc.out, t->bos);
    if (!rc) rc = partition(t, text, (size_t)len, parse_special, &frags);
    int prev_special = 1; /* SentencePiece: a space is prefixed at the start and after specials */
    for (size_t f = 0; f < frags.n && !rc; f++) {
        fragment fr = frags.v[f];
        if (fr.id >= 0) {
            rc = ivec_push(&sc.out, fr.id);
            prev_special = 1;
        } else if (t->kind == KIND_BPE) {
            rc = bpe_fragment(t, &sc, text + fr.off, fr.len);
        } else {
            rc = spm_fragment(t, &sc, text + fr.off, fr.len, t->add_space_prefix && prev_special);
            prev_special = 0;
        }
    }
    int result;
    if (rc) {
        result = ps_fail(PS_ERR_MEMORY, "tokenize: out of memory (%d bytes of text)", len);
    } else if (sc.out.n > (size_t)INT32_MAX) {
        result = ps_fail(PS_ERR_ARG, "tokenize: too many tokens");
    } else {
        result = (int)sc.out.n;
        if (sc.out.n <= (size_t)max_tokens && sc.out.n) memcpy(out, sc.out.v, sc.out.n * sizeof *out);
    }
    free(frags.v);
    free(sc.out.v);
    free(sc.sym);
    free(sc.h.v);
    free(sc.buf.v);
    free(sc.cp);
    free(sc.fl);
    free(sc.words.v);
    free(sc.words2.v);
    return result;
}

