/* gguf.c: a bounds-checked GGUF (v2/v3, little-endian) reader over a
 * read-only mmap.
 *
 * ps_gguf_open parses and validates the whole header in one pass: every
 * length is checked against the bytes left before it is used, so a
 * truncated or hostile file fails with one line of error text and nothing
 * later reads outside the mapping. Key and tensor names are hashed (open
 * addressing) for O(1) lookups; string arrays are indexed once at open so
 * ps_gguf_arr_str is O(1) (the tokenizer reads ~100k strings this way).
 *
 * File layout (all little-endian):
 *   "GGUF" u32 version  u64 n_tensors  u64 n_kv
 *   (PowerInfer's files put "PWRI" in the magic; the rest is GGUF v3)
 *   n_kv x { str key, u32 vtype, value }     str = u64 len + bytes (no NUL)
 *   n_tensors x { str name, u32 n_dims, u64 ne[n_dims], u32 type, u64 offset }
 *   padding to general.alignment (default 32)
 *   tensor data; each tensor at data_start + offset, offset aligned
 */
#include "gguf.h"
#include "compute.h"
#include "prosparse.h"
#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define GGUF_DEFAULT_ALIGNMENT 32
#define GGUF_MAX_DIMS 4

/* One key/value pair. Scalars and fixed-size arrays point into the map. */
typedef struct gguf_kv {
    ps_str key;
    int type;              /* enum ps_gguf_vtype */
    int elem_type;         /* arrays: element type */
    uint64_t n;            /* arrays: element count */
    const uint8_t *data;   /* scalar value / array elements (unaligned) */
    ps_str str;            /* PS_GGUF_STRING value */
    ps_str *strs;          /* string arrays: n entries, owned */
} gguf_kv;

struct ps_gguf {
    const uint8_t *map;    /* the whole file, read-only */
    uint64_t size;         /* file size in bytes */
    uint32_t version;
    int powerinfer;        /* magic "PWRI" */
    uint64_t alignment;
    uint64_t data_start;   /* file offset of the tensor data section */

    int64_t n_kv;
    gguf_kv *kv;           /* [n_kv] */
    int64_t n_tensors;
    ps_gguf_tensor *tensors; /* [n_tensors] */

    /* open-addressing hash tables of indices (-1 = empty), power-of-two sizes */
    int64_t *kv_hash;  uint64_t kv_hash_cap;
    int64_t *t_hash;   uint64_t t_hash_cap;
};

/* ---- byte cursor --------------------------------------------------------- */

typedef struct cursor {
    const uint8_t *base;
    uint64_t size, pos;
    const char *path;
    int powerinfer; /* PWRI file: its integer tensor ids (below) are known */
} cursor;

/* PowerInfer's GPU neuron split (gpu_idx / gpu_bucket) holds integer tensors:
 * ids 16-18 (I8, I16, I32) in PowerInfer's gguf-py, 24-26 in current ggml's.
 * The engine never reads them; they are sized here so the file validates. */
static const ps_type_traits *powerinfer_int_type(uint32_t type) {
    static const ps_type_traits ints[3] = {{"i8", 1, 1, 0, 0}, {"i16", 1, 2, 0, 0}, {"i32", 1, 4, 0, 0}};
    if (type >= 16 && type <= 18) return &ints[type - 16];
    if (type >= 24 && type <= 26) return &ints[type - 24];
    return NULL;
}

static uint64_t left(const cursor *c) { return c->size - c->pos; }

static int need(cursor *c, uint64_t n, const char *what) {
    if (n > left(c))
        return ps_fail(PS_ERR_FORMAT, "%s: truncated: %s needs %llu bytes at offset %llu, file has %llu",
                       c->path, what, (unsigned long long)n, (unsigned long long)c->pos,
                       (unsigned long long)c->size);
    return PS_OK;
}

/* The next n bytes into v (a little-endian scalar of that size). */
static int rd(cursor *c, void *v, size_t n, const char *what) {
    int rc = need(c, n, what);
    if (rc) return rc;
    memcpy(v, c->base + c->pos, n);
    c->pos += n;
    return PS_OK;
}

static int rd_u32(cursor *c, uint32_t *v, const char *what) { return rd(c, v, 4, what); }

static int rd_u64(cursor *c, uint64_t *v, const char *what) { return rd(c, v, 8, what); }

static int rd_str(cursor *c, ps_str *s, const char *what) {
    uint64_t n;
    int rc = rd_u64(c, &n, what);
    if (rc) return rc;
    if (n > left(c))
        return ps_fail(PS_ERR_FORMAT, "%s: %s: string length %llu at offset %llu exceeds the %llu bytes left",
                       c->path, what, (unsigned long long)n, (unsigned long long)(c->pos - 8),
                       (unsigned long long)left(c));
    s->p = (const char *)(c->base + c->pos);
    s->n = n;
    c->pos += n;
    return PS_OK;
}

/* Size in bytes of a fixed-size value type; 0 for string/array/unknown. */
static uint64_t vtype_size(int t) {
    switch (t) {
    case PS_GGUF_UINT8: case PS_GGUF_INT8: case PS_GGUF_BOOL: return 1;
    case PS_GGUF_UINT16: case PS_GGUF_INT16: return 2;
    case PS_GGUF_UINT32: case PS_GGUF_INT32: case PS_GGUF_FLOAT32: return 4;
    case PS_GGUF_UINT64: case PS_GGUF_INT64: case PS_GGUF_FLOAT64: return 8;
    default: return 0;
    }
}

static int vtype_valid(uint32_t t) { return t <= PS_GGUF_FLOAT64; }

/* A printable, bounded rendering of a name for error messages. */
static const char *show(ps_str s, char *buf, size_t cap) {
    size_t n = s.n < cap - 1 ? (size_t)s.n : cap - 1;
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s.p[i];
        buf[i] = (ch >= 32 && ch < 127) ? (char)ch : '?';
    }
    buf[n] = '\0';
    return buf;
}

/* ---- hashing --------------------------------------------------------------- */

static uint64_t hash_bytes(const char *p, uint64_t n) {
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (uint64_t i = 0; i < n; i++) {
        h ^= (unsigned char)p[i];
        h *= 1099511628211ull;
    }
    return h;
}

static int str_eq(ps_str a, ps_str b) { return a.n == b.n && (a.n == 0 || memcmp(a.p, b.p, a.n) == 0); }

static uint64_t hash_cap_for(int64_t n) {
    uint64_t cap = 16;
    while (cap < (uint64_t)n * 2) cap <<= 1;
    return cap;
}

/* Insert index i named name; returns the index of an existing equal name, or -1. */
static int64_t hash_insert(int64_t *tab, uint64_t cap, ps_str name, int64_t i, ps_str (*name_of)(const void *, int64_t),
                           const void *ctx) {
    uint64_t h = hash_bytes(name.p, name.n) & (cap - 1);
    while (tab[h] >= 0) {
        if (str_eq(name_of(ctx, tab[h]), name)) return tab[h];
        h = (h + 1) & (cap - 1);
    }
    tab[h] = i;
    return -1;
}

static int64_t hash_find(const int64_t *tab, uint64_t cap, const char *name, ps_str (*name_of)(const void *, int64_t),
                         const void *ctx) {
    if (!tab || !name) return -1;
    ps_str s = {name, strlen(name)};
    uint64_t h = hash_bytes(s.p, s.n) & (cap - 1);
    while (tab[h] >= 0) {
        if (str_eq(name_of(ctx, tab[h]), s)) return tab[h];
        h = (h + 1) & (cap - 1);
    }
    return -1;
}

static ps_str kv_name_of(const void *ctx, int64_t i) { return ((const ps_gguf *)ctx)->kv[i].key; }
static ps_str t_name_of(const void *ctx, int64_t i) { return ((const ps_gguf *)ctx)->tensors[i].name; }

/* ---- parsing ---------------------------------------------------------------- */

static int parse_kv(cursor *c, gguf_kv *kv) {
    char nb[96];
    int rc = rd_str(c, &kv->key, "key name");
    if (rc) return rc;
    uint32_t t;
    if ((rc = rd_u32(c, &t, "key value type"))) return rc;
    if (!vtype_valid(t))
        return ps_fail(PS_ERR_FORMAT, "%s: key '%s' has unknown value type %u", c->path,
                       show(kv->key, nb, sizeof nb), t);
    kv->type = (int)t;
    if (t == PS_GGUF_STRING) {
        char what[128];
        snprintf(what, sizeof what, "value of key '%s'", show(kv->key, nb, sizeof nb));
        return rd_str(c, &kv->str, what);
    }
    if (t != PS_GGUF_ARRAY) {
        uint64_t sz = vtype_size((int)t);
        if (need(c, sz, "key value"))
            return ps_fail(PS_ERR_FORMAT, "%s: truncated: value of key '%s' at offset %llu past end of file (size %llu)",
                           c->path, show(kv->key, nb, sizeof nb), (unsigned long long)c->pos,
                           (unsigned long long)c->size);
        kv->data = c->base + c->pos;
        c->pos += sz;
        return PS_OK;
    }
    /* array: u32 element type, u64 count, elements */
    uint32_t et;
    uint64_t n;
    if ((rc = rd_u32(c, &et, "array element type"))) return rc;
    if ((rc = rd_u64(c, &n, "array length"))) return rc;
    if (et == PS_GGUF_ARRAY)
        return ps_fail(PS_ERR_UNSUPPORTED, "%s: key '%s' is an array of arrays (nested arrays are not supported)",
                       c->path, show(kv->key, nb, sizeof nb));
    if (!vtype_valid(et))
        return ps_fail(PS_ERR_FORMAT, "%s: array key '%s' has unknown element type %u", c->path,
                       show(kv->key, nb, sizeof nb), et);
    kv->elem_type = (int)et;
    kv->n = n;
    kv->data = c->base + c->pos;
    if (et != PS_GGUF_STRING) {
        uint64_t sz = vtype_size((int)et);
        if (n > left(c) / sz)
            return ps_fail(PS_ERR_FORMAT, "%s: array key '%s': %llu elements of %llu bytes exceed the %llu bytes left",
                           c->path, show(kv->key, nb, sizeof nb), (unsigned long long)n, (unsigned long long)sz,
                           (unsigned long long)left(c));
        c->pos += n * sz;
        return PS_OK;
    }
    /* string array: each element needs at least its 8-byte length */
    if (n > left(c) / 8)
        return ps_fail(PS_ERR_FORMAT, "%s: array key '%s': %llu strings cannot fit in the %llu bytes left",
                       c->path, show(kv->key, nb, sizeof nb), (unsigned long long)n, (unsigned long long)left(c));
    kv->strs = ps_malloc((n ? n : 1) * sizeof *kv->strs);
    if (!kv->strs) return ps_fail(PS_ERR_MEMORY, "%s: out of memory indexing %llu strings", c->path,
                                  (unsigned long long)n);
    for (uint64_t i = 0; i < n; i++) {
        char what[160];
        if (need(c, 8, "string")) {
            snprintf(what, sizeof what, "string %llu of array '%s'", (unsigned long long)i,
                     show(kv->key, nb, sizeof nb));
            return rd_str(c, &kv->strs[i], what);
        }
        uint64_t len;
        memcpy(&len, c->base + c->pos, 8);
        if (len > left(c) - 8) {
            snprintf(what, sizeof what, "string %llu of array '%s'", (unsigned long long)i,
                     show(kv->key, nb, sizeof nb));
            return rd_str(c, &kv->strs[i], what);
        }
        kv->strs[i].p = (const char *)(c->base + c->pos + 8);
        kv->strs[i].n = len;
        c->pos += 8 + len;
    }
    return PS_OK;
}

/* Multiply with overflow check against INT64_MAX. */
static int mul_ok(uint64_t a, uint64_t b, uint64_t *out) {
    if (a != 0 && b > (uint64_t)INT64_MAX / a) return 0;
    *out = a * b;
    return 1;
}

static int parse_tensor_info(cursor *c, ps_gguf_tensor *t) {
    char nb[96];
    int rc = rd_str(c, &t->name, "tensor name");
    if (rc) return rc;
    uint32_t nd;
    if ((rc = rd_u32(c, &nd, "tensor n_dims"))) return rc;
    if (nd < 1 || nd > GGUF_MAX_DIMS)
        return ps_fail(PS_ERR_FORMAT, "%s: tensor '%s' has %u dimensions (1..4 allowed)", c->path,
                       show(t->name, nb, sizeof nb), nd);
    t->n_dims = (int32_t)nd;
    for (int d = 0; d < GGUF_MAX_DIMS; d++) t->ne[d] = 1;
    uint64_t count = 1;
    for (uint32_t d = 0; d < nd; d++) {
        uint64_t ne;
        if ((rc = rd_u64(c, &ne, "tensor dimension"))) return rc;
        if (ne < 1 || ne > (uint64_t)INT64_MAX)
            return ps_fail(PS_ERR_FORMAT, "%s: tensor '%s' dimension %u is %llu (must be >= 1)", c->path,
                           show(t->name, nb, sizeof nb), d, (unsigned long long)ne);
        if (!mul_ok(count, ne, &count))
            return ps_fail(PS_ERR_FORMAT, "%s: tensor '%s' element count overflows (dimension %u = %llu)", c->path,
                           show(t->name, nb, sizeof nb), d, (unsigned long long)ne);
        t->ne[d] = (int64_t)ne;
    }
    uint32_t type;
    uint64_t off;
    if ((rc = rd_u32(c, &type, "tensor type"))) return rc;
    if ((rc = rd_u64(c, &off, "tensor offset"))) return rc;
    const ps_type_traits *tr = type <= INT32_MAX ? ps_type_get((int32_t)type) : NULL;
    if (!tr && c->powerinfer) tr = powerinfer_int_type(type);
    if (!tr)
        return ps_fail(PS_ERR_UNSUPPORTED, "%s: tensor '%s' has unknown ggml type id %u", c->path,
                       show(t->name, nb, sizeof nb), type);
    t->type = (int32_t)type;
    if (t->ne[0] % tr->block_size != 0)
        return ps_fail(PS_ERR_FORMAT, "%s: tensor '%s' row length %lld is not a multiple of the %s block size %d",
                       c->path, show(t->name, nb, sizeof nb), (long long)t->ne[0], tr->name, tr->block_size);
    uint64_t rows = count / (uint64_t)t->ne[0];
    uint64_t row_bytes;
    if (!mul_ok((uint64_t)(t->ne[0] / tr->block_size), (uint64_t)tr->block_bytes, &row_bytes) ||
        !mul_ok(row_bytes, rows, &t->nbytes))
        return ps_fail(PS_ERR_FORMAT, "%s: tensor '%s' byte size overflows", c->path, show(t->name, nb, sizeof nb));
    /* the offset is stored for now; checked once the data section is known */
    t->data = (const void *)(uintptr_t)off;
    return PS_OK;
}

static int get_alignment(ps_gguf *g, const char *path) {
    g->alignment = GGUF_DEFAULT_ALIGNMENT;
    int64_t i = ps_gguf_find_key(g, "general.alignment");
    if (i < 0) return PS_OK;
    const gguf_kv *kv = &g->kv[i];
    uint64_t a;
    if (kv->type == PS_GGUF_UINT32) {
        uint32_t v;
        memcpy(&v, kv->data, 4);
        a = v;
    } else if (kv->type == PS_GGUF_UINT64) {
        memcpy(&a, kv->data, 8);
    } else {
        return ps_fail(PS_ERR_FORMAT, "%s: general.alignment has value type %d (expected uint32)", path, kv->type);
    }
    if (a == 0 || (a & (a - 1)) != 0 || a > (1u << 30))
        return ps_fail(PS_ERR_FORMAT, "%s: general.alignment %llu is not a power of two (1..2^30)", path,
                       (unsigned long long)a);
    g->alignment = a;
    return PS_OK;
}

static int parse(ps_gguf *g, const char *path) {
    cursor c = {g->map, g->size, 0, path, 0};
    g->powerinfer = g->size >= 4 && memcmp(g->map, "PWRI", 4) == 0;
    if (g->size < 4 || (memcmp(g->map, "GGUF", 4) != 0 && !g->powerinfer)) {
        char m[5] = {0};
        for (int i = 0; i < 4 && (uint64_t)i < g->size; i++) {
            unsigned char ch = g->map[i];
            m[i] = (ch >= 32 && ch < 127) ? (char)ch : '?';
        }
        return ps_fail(PS_ERR_FORMAT, "%s: not a GGUF file (magic '%s', expected 'GGUF' or PowerInfer's 'PWRI')", path, m);
    }
    c.pos = 4;
    c.powerinfer = g->powerinfer;
    int rc;
    if ((rc = rd_u32(&c, &g->version, "version"))) return rc;
    if (g->version == 0x02000000u || g->version == 0x03000000u)
        return ps_fail(PS_ERR_UNSUPPORTED, "%s: big-endian GGUF files are not supported", path);
    if (g->version != 2 && g->version != 3)
        return ps_fail(PS_ERR_UNSUPPORTED, "%s: GGUF version %u is not supported (2 and 3 are)", path, g->version);
    if (g->powerinfer && g->version != 3)
        return ps_fail(PS_ERR_UNSUPPORTED, "%s: PowerInfer (PWRI) file of GGUF version %u (only 3 is known)", path,
                       g->version);
    uint64_t nt, nkv;
    if ((rc = rd_u64(&c, &nt, "tensor count"))) return rc;
    if ((rc = rd_u64(&c, &nkv, "key/value count"))) return rc;
    /* each kv takes >= 13 bytes (key length, type, 1-byte value); each tensor info >= 32 */
    if (nkv > left(&c) / 13)
        return ps_fail(PS_ERR_FORMAT, "%s: key/value count %llu cannot fit in a %llu-byte file", path,
                       (unsigned long long)nkv, (unsigned long long)g->size);
    if (nt > left(&c) / 32)
        return ps_fail(PS_ERR_FORMAT, "%s: tensor count %llu cannot fit in a %llu-byte file", path,
                       (unsigned long long)nt, (unsigned long long)g->size);

    g->kv = ps_calloc(nkv ? nkv : 1, sizeof *g->kv);
    g->tensors = ps_calloc(nt ? nt : 1, sizeof *g->tensors);
    g->kv_hash_cap = hash_cap_for((int64_t)nkv);
    g->t_hash_cap = hash_cap_for((int64_t)nt);
    g->kv_hash = ps_malloc(g->kv_hash_cap * sizeof *g->kv_hash);
    g->t_hash = ps_malloc(g->t_hash_cap * sizeof *g->t_hash);
    if (!g->kv || !g->tensors || !g->kv_hash || !g->t_hash)
        return ps_fail(PS_ERR_MEMORY, "%s: out of memory for %llu keys / %llu tensors", path,
                       (unsigned long long)nkv, (unsigned long long)nt);
    memset(g->kv_hash, 0xff, g->kv_hash_cap * sizeof *g->kv_hash);
    memset(g->t_hash, 0xff, g->t_hash_cap * sizeof *g->t_hash);

    char nb[96];
    for (uint64_t i = 0; i < nkv; i++) {
        g->n_kv = (int64_t)i + 1; /* so close() frees what was indexed */
        if ((rc = parse_kv(&c, &g->kv[i]))) return rc;
        if (hash_insert(g->kv_hash, g->kv_hash_cap, g->kv[i].key, (int64_t)i, kv_name_of, g) >= 0)
            return ps_fail(PS_ERR_FORMAT, "%s: duplicate key '%s'", path, show(g->kv[i].key, nb, sizeof nb));
    }
    g->n_kv = (int64_t)nkv;
    if ((rc = get_alignment(g, path))) return rc;

    for (uint64_t i = 0; i < nt; i++) {
        if ((rc = parse_tensor_info(&c, &g->tensors[i]))) return rc;
        g->n_tensors = (int64_t)i + 1;
        if (hash_insert(g->t_hash, g->t_hash_cap, g->tensors[i].name, (int64_t)i, t_name_of, g) >= 0)
            return ps_fail(PS_ERR_FORMAT, "%s: duplicate tensor name '%s'", path,
                           show(g->tensors[i].name, nb, sizeof nb));
    }
    g->n_tensors = (int64_t)nt;

    /* data section: starts at the next multiple of the alignment */
    uint64_t ds = c.pos;
    uint64_t pad = (g->alignment - ds % g->alignment) % g->alignment;
    if (nt > 0 && pad > left(&c))
        return ps_fail(PS_ERR_FORMAT, "%s: truncated: tensor data section at offset %llu past end of file (size %llu)",
                       path, (unsigned long long)(ds + pad), (unsigned long long)g->size);
    g->data_start = ds + pad;
    uint64_t data_size = g->data_start <= g->size ? g->size - g->data_start : 0;
    for (uint64_t i = 0; i < nt; i++) {
        ps_gguf_tensor *t = &g->tensors[i];
        uint64_t off = (uint64_t)(uintptr_t)t->data;
        t->data = NULL;
        if (off % g->alignment != 0)
            return ps_fail(PS_ERR_FORMAT, "%s: tensor '%s' data offset %llu is not a multiple of the alignment %llu",
                           path, show(t->name, nb, sizeof nb), (unsigned long long)off,
                           (unsigned long long)g->alignment);
        if (off > data_size || t->nbytes > data_size - off)
            return ps_fail(PS_ERR_FORMAT, "%s: tensor '%s' data [%llu, %llu) past end of file (size %llu)", path,
                           show(t->name, nb, sizeof nb), (unsigned long long)(g->data_start + off),
                           (unsigned long long)(g->data_start + off + t->nbytes), (unsigned long long)g->size);
        t->data = g->map + g->data_start + off;
    }
    return PS_OK;
}

/* ---- open / close ------------------------------------------------------------ */

ps_gguf *ps_gguf_open(const char *path) {
    if (!path) {
        ps_fail(PS_ERR_ARG, "gguf: path is NULL");
        return NULL;
    }
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        ps_fail(PS_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
        return NULL;
    }
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        ps_fail(PS_ERR_IO, "%s: not a regular file", path);
        close(fd);
        return NULL;
    }
    if (st.st_size < 24) {
        close(fd);
        if (st.st_size >= 4) {
            /* still tell a wrong magic apart from a truncated header */
            unsigned char m[4];
            int fd2 = open(path, O_RDONLY | O_CLOEXEC);
            ssize_t r = fd2 >= 0 ? read(fd2, m, 4) : -1;
            if (fd2 >= 0) close(fd2);
            if (r == 4 && memcmp(m, "GGUF", 4) != 0 && memcmp(m, "PWRI", 4) != 0) {
                ps_fail(PS_ERR_FORMAT, "%s: not a GGUF file (bad magic)", path);
                return NULL;
            }
        }
        ps_fail(PS_ERR_FORMAT, "%s: truncated: %lld bytes is shorter than a GGUF header (24 bytes)", path,
                (long long)st.st_size);
        return NULL;
    }
    void *map = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (map == MAP_FAILED) {
        ps_fail(PS_ERR_IO, "%s: cannot mmap: %s", path, strerror(errno));
        return NULL;
    }
    ps_gguf *g = ps_calloc(1, sizeof *g);
    if (!g) {
        munmap(map, (size_t)st.st_size);
        ps_fail(PS_ERR_MEMORY, "%s: out of memory", path);
        return NULL;
    }
    g->map = map;
    g->size = (uint64_t)st.st_size;
    if (parse(g, path) != PS_OK) {
        ps_gguf_close(g);
        return NULL;
    }
    return g;
}

void ps_gguf_close(ps_gguf *g) {
    if (!g) return;
    if (g->kv)
        for (int64_t i = 0; i < g->n_kv; i++) free(g->kv[i].strs);
    free(g->kv);
    free(g->tensors);
    free(g->kv_hash);
    free(g->t_hash);
    if (g->map) munmap((void *)g->map, (size_t)g->size);
    free(g);
}

uint64_t ps_gguf_file_size(const ps_gguf *g) { return g ? g->size : 0; }

int ps_gguf_is_powerinfer(const ps_gguf *g) { return g ? g->powerinfer : 0; }

/* ---- key/value access ------------------------------------------------------- */

int64_t ps_gguf_n_kv(const ps_gguf *g) { return g ? g->n_kv : 0; }

int64_t ps_gguf_find_key(const ps_gguf *g, const char *key) {
    if (!g) return -1;
    return hash_find(g->kv_hash, g->kv_hash_cap, key, kv_name_of, g);
}

ps_str ps_gguf_key_name(const ps_gguf *g, int64_t i) {
    ps_str none = {"", 0};
    if (!g || i < 0 || i >= g->n_kv) return none;
    return g->kv[i].key;
}

int ps_gguf_kv_type(const ps_gguf *g, int64_t i) {
    if (!g || i < 0 || i >= g->n_kv) return -1;
    return g->kv[i].type;
}

/* Read an integer-typed scalar as int64/uint64. Returns 1 if kv is an integer. */
static int kv_int(const gguf_kv *kv, int64_t *sv, uint64_t *uv, int *is_signed) {
    const uint8_t *p = kv->data;
    switch (kv->type) {
    case PS_GGUF_UINT8: { uint8_t v; memcpy(&v, p, 1); *uv = v; *is_signed = 0; return 1; }
    case PS_GGUF_UINT16: { uint16_t v; memcpy(&v, p, 2); *uv = v; *is_signed = 0; return 1; }
    case PS_GGUF_UINT32: { uint32_t v; memcpy(&v, p, 4); *uv = v; *is_signed = 0; return 1; }
    case PS_GGUF_UINT64: { uint64_t v; memcpy(&v, p, 8); *uv = v; *is_signed = 0; return 1; }
    case PS_GGUF_INT8: { int8_t v; memcpy(&v, p, 1); *sv = v; *is_signed = 1; return 1; }
    case PS_GGUF_INT16: { int16_t v; memcpy(&v, p, 2); *sv = v; *is_signed = 1; return 1; }
    case PS_GGUF_INT32: { int32_t v; memcpy(&v, p, 4); *sv = v; *is_signed = 1; return 1; }
    case PS_GGUF_INT64: { int64_t v; memcpy(&v, p, 8); *sv = v; *is_signed = 1; return 1; }
    default: return 0;
    }
}

/* kv_int, or one error line naming the key and what was expected: 1 or -1. */
static int kv_int_or_fail(const gguf_kv *kv, const char *key, const char *expected, int64_t *sv, uint64_t *uv,
                          int *sgn) {
    *sv = 0, *uv = 0, *sgn = 0;
    if (kv_int(kv, sv, uv, sgn)) return 1;
    ps_fail(PS_ERR_FORMAT, "key '%s' has value type %d, expected %s", key, kv->type, expected);
    return -1;
}

static int get_int_range(const ps_gguf *g, const char *key, int64_t lo, uint64_t hi, int64_t *out) {
    int64_t i = ps_gguf_find_key(g, key);
    if (i < 0) return 0;
    int64_t sv;
    uint64_t uv;
    int sgn;
    if (kv_int_or_fail(&g->kv[i], key, "an integer", &sv, &uv, &sgn) < 0) return -1;
    if (sgn) {
        if (sv < lo || (sv >= 0 && (uint64_t)sv > hi)) {
            ps_fail(PS_ERR_FORMAT, "key '%s' value %lld is out of range", key, (long long)sv);
            return -1;
        }
        *out = sv;
    } else {
        if (uv > hi) {
            ps_fail(PS_ERR_FORMAT, "key '%s' value %llu is out of range", key, (unsigned long long)uv);
            return -1;
        }
        *out = (int64_t)uv;
    }
    return 1;
}

int ps_gguf_get_u32(const ps_gguf *g, const char *key, uint32_t *out) {
    int64_t v;
    int r = get_int_range(g, key, 0, UINT32_MAX, &v);
    if (r == 1 && out) *out = (uint32_t)v;
    return r;
}

int ps_gguf_get_i32(const ps_gguf *g, const char *key, int32_t *out) {
    int64_t v;
    int r = get_int_range(g, key, INT32_MIN, INT32_MAX, &v);
    if (r == 1 && out) *out = (int32_t)v;
    return r;
}

int ps_gguf_get_f32(const ps_gguf *g, const char *key, float *out) {
    int64_t i = ps_gguf_find_key(g, key);
    if (i < 0) return 0;
    const gguf_kv *kv = &g->kv[i];
    float f;
    if (kv->type == PS_GGUF_FLOAT32) {
        memcpy(&f, kv->data, 4);
    } else if (kv->type == PS_GGUF_FLOAT64) {
        double d;
        memcpy(&d, kv->data, 8);
        f = (float)d;
    } else {
        int64_t sv;
        uint64_t uv;
        int sgn;
        if (kv_int_or_fail(kv, key, "a number", &sv, &uv, &sgn) < 0) return -1;
        f = sgn ? (float)sv : (float)uv;
    }
    if (out) *out = f;
    return 1;
}

int ps_gguf_get_bool(const ps_gguf *g, const char *key, int *out) {
    int64_t i = ps_gguf_find_key(g, key);
    if (i < 0) return 0;
    const gguf_kv *kv = &g->kv[i];
    int v;
    if (kv->type == PS_GGUF_BOOL) {
        v = kv->data[0] != 0;
    } else {
        int64_t sv;
        uint64_t uv;
        int sgn;
        if (kv_int_or_fail(kv, key, "a bool", &sv, &uv, &sgn) < 0) return -1;
        v = sgn ? sv != 0 : uv != 0;
    }
    if (out) *out = v;
    return 1;
}

int ps_gguf_get_str(const ps_gguf *g, const char *key, ps_str *out) {
    int64_t i = ps_gguf_find_key(g, key);
    if (i < 0) return 0;
    if (g->kv[i].type != PS_GGUF_STRING) {
        ps_fail(PS_ERR_FORMAT, "key '%s' has value type %d, expected a string", key, g->kv[i].type);
        return -1;
    }
    if (out) *out = g->kv[i].str;
    return 1;
}

int ps_gguf_arr_info(const ps_gguf *g, const char *key, int *elem_type, uint64_t *n) {
    int64_t i = ps_gguf_find_key(g, key);
    if (i < 0 || g->kv[i].type != PS_GGUF_ARRAY) return -1;
    if (elem_type) *elem_type = g->kv[i].elem_type;
    if (n) *n = g->kv[i].n;
    return 0;
}

/* Note: the pointer is only byte-aligned (GGUF does not pad arrays); read
 * elements with memcpy. */
const void *ps_gguf_arr_data(const ps_gguf *g, const char *key) {
    int64_t i = ps_gguf_find_key(g, key);
    if (i < 0 || g->kv[i].type != PS_GGUF_ARRAY || g->kv[i].elem_type == PS_GGUF_STRING) return NULL;
    return g->kv[i].data;
}

ps_str ps_gguf_arr_str(const ps_gguf *g, const char *key, uint64_t idx) {
    ps_str none = {"", 0};
    int64_t i = ps_gguf_find_key(g, key);
    if (i < 0 || g->kv[i].type != PS_GGUF_ARRAY || g->kv[i].elem_type != PS_GGUF_STRING || idx >= g->kv[i].n)
        return none;
    return g->kv[i].strs[idx];
}

/* ---- tensors ------------------------------------------------------------------ */

int64_t ps_gguf_n_tensors(const ps_gguf *g) { return g ? g->n_tensors : 0; }

const ps_gguf_tensor *ps_gguf_tensor_at(const ps_gguf *g, int64_t i) {
    if (!g || i < 0 || i >= g->n_tensors) return NULL;
    return &g->tensors[i];
}

const ps_gguf_tensor *ps_gguf_find_tensor(const ps_gguf *g, const char *name) {
    if (!g) return NULL;
    int64_t i = hash_find(g->t_hash, g->t_hash_cap, name, t_name_of, g);
    return i < 0 ? NULL : &g->tensors[i];
}

int ps_str_eq(ps_str s, const char *c) {
    if (!c) return 0;
    size_t n = strlen(c);
    return s.n == n && (n == 0 || memcmp(s.p, c, n) == 0);
}
