/* test_gguf.c: the GGUF reader on small files written here, valid and broken.
 * Every broken file must give NULL and one line of error text, never a
 * crash or an out-of-bounds read (run under `make asan` too). */
#include "check.h"
#include "gguf.h"
#include "gguf_writer.h"
#include "prosparse.h"
#include "util.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ---- GGUF building blocks on top of gguf_writer.h ------------------------------ */

static void pad_to(buf *b, size_t align) { while (b->n % align) put_u8(b, 0); }

static void header(buf *b, uint32_t version, uint64_t n_tensors, uint64_t n_kv) {
    put(b, "GGUF", 4);
    put_u32(b, version);
    put_u64(b, n_tensors);
    put_u64(b, n_kv);
}
static void tensor_info(buf *b, const char *name, uint32_t nd, const uint64_t *ne, uint32_t type, uint64_t off) {
    put_str(b, name);
    put_u32(b, nd);
    for (uint32_t i = 0; i < nd; i++) put_u64(b, ne[i]);
    put_u32(b, type);
    put_u64(b, off);
}

static char tmpdir[256];
static int file_counter = 0;

static const char *write_file(const void *data, size_t n) {
    static char path[512];
    snprintf(path, sizeof path, "%s/f%d.gguf", tmpdir, file_counter++);
    FILE *f = fopen(path, "wb");
    if (!f) return NULL;
    if (n) fwrite(data, 1, n, f);
    fclose(f);
    return path;
}

/* Open bytes as a file; returns the handle (or NULL) and removes the file. */
static ps_gguf *open_bytes(const void *data, size_t n) {
    const char *path = write_file(data, n);
    ps_gguf *g = ps_gguf_open(path);
    unlink(path);
    return g;
}

/* The reference valid file: every scalar type, arrays, three tensors. */
static buf valid_file(void) {
    buf b = {0};
    header(&b, 3, 3, 15);
    kv_str(&b, "general.architecture", "llama");
    kv_u32(&b, "llama.block_count", 7);
    put_str(&b, "k.u8"); put_u32(&b, PS_GGUF_UINT8); put_u8(&b, 200);
    put_str(&b, "k.i8"); put_u32(&b, PS_GGUF_INT8); put_u8(&b, 0xff); /* -1 */
    put_str(&b, "k.u16"); put_u32(&b, PS_GGUF_UINT16); { uint16_t v = 65535; put(&b, &v, 2); }
    put_str(&b, "k.i16"); put_u32(&b, PS_GGUF_INT16); { int16_t v = -300; put(&b, &v, 2); }
    put_str(&b, "k.i32"); put_u32(&b, PS_GGUF_INT32); { int32_t v = -5; put(&b, &v, 4); }
    put_str(&b, "k.f32"); put_u32(&b, PS_GGUF_FLOAT32); put_f32(&b, 1e-5f);
    put_str(&b, "k.bool"); put_u32(&b, PS_GGUF_BOOL); put_u8(&b, 1);
    put_str(&b, "k.u64"); put_u32(&b, PS_GGUF_UINT64); put_u64(&b, 1ull << 40);
    put_str(&b, "k.i64"); put_u32(&b, PS_GGUF_INT64); put_u64(&b, (uint64_t)-7);
    put_str(&b, "k.f64"); put_u32(&b, PS_GGUF_FLOAT64); { double d = 0.25; put(&b, &d, 8); }
    put_str(&b, "k.arr_i32"); put_u32(&b, PS_GGUF_ARRAY); put_u32(&b, PS_GGUF_INT32); put_u64(&b, 3);
    for (int32_t i = 0; i < 3; i++) put(&b, &(int32_t){10 * i}, 4);
    put_str(&b, "k.arr_str"); put_u32(&b, PS_GGUF_ARRAY); put_u32(&b, PS_GGUF_STRING); put_u64(&b, 3);
    put_str(&b, "hello"); put_str(&b, ""); put_str(&b, "\xc4\xa0world");
    kv_u32(&b, "general.alignment", 64);
    /* tensors: f32 [4,2] at 0, f16 [8] at 64, q8_0 [64,2] at 128 */
    tensor_info(&b, "a.weight", 2, (uint64_t[]){4, 2}, 0, 0);
    tensor_info(&b, "b.weight", 1, (uint64_t[]){8}, 1, 64);
    tensor_info(&b, "blk.0.attn_q.weight", 2, (uint64_t[]){64, 2}, 8, 128);
    pad_to(&b, 64);
    for (int i = 0; i < 8; i++) put_f32(&b, (float)i);
    pad_to(&b, 64);
    for (int i = 0; i < 8; i++) put(&b, &(uint16_t){0x3c00}, 2);
    pad_to(&b, 64);
    for (int i = 0; i < 2 * 2 * 34; i++) put_u8(&b, (uint8_t)i);
    return b;
}

/* ---- tests ------------------------------------------------------------------- */

TEST(valid_file_reads_back) {
    buf b = valid_file();
    ps_gguf *g = open_bytes(b.p, b.n);
    CHECK(g != NULL);
    if (!g) { fprintf(stderr, "error: %s\n", ps_last_error()); free(b.p); return; }
    CHECK(ps_gguf_file_size(g) == b.n);
    CHECK(ps_gguf_n_kv(g) == 15);
    CHECK(ps_gguf_n_tensors(g) == 3);
    CHECK(ps_str_eq(ps_gguf_key_name(g, 0), "general.architecture"));
    CHECK(ps_gguf_kv_type(g, 1) == PS_GGUF_UINT32);
    CHECK(ps_gguf_find_key(g, "k.f64") == 11);
    CHECK(ps_gguf_find_key(g, "missing") == -1);

    ps_str s;
    CHECK(ps_gguf_get_str(g, "general.architecture", &s) == 1 && ps_str_eq(s, "llama"));
    uint32_t u;
    int32_t i;
    float f;
    int bl;
    CHECK(ps_gguf_get_u32(g, "llama.block_count", &u) == 1 && u == 7);
    CHECK(ps_gguf_get_u32(g, "k.u8", &u) == 1 && u == 200);
    CHECK(ps_gguf_get_u32(g, "k.u16", &u) == 1 && u == 65535);
    CHECK(ps_gguf_get_i32(g, "k.i8", &i) == 1 && i == -1);
    CHECK(ps_gguf_get_i32(g, "k.i16", &i) == 1 && i == -300);
    CHECK(ps_gguf_get_i32(g, "k.i64", &i) == 1 && i == -7);
    CHECK(ps_gguf_get_f32(g, "k.f32", &f) == 1 && f == 1e-5f);
    CHECK(ps_gguf_get_f32(g, "k.f64", &f) == 1 && f == 0.25f);
    CHECK(ps_gguf_get_f32(g, "k.i32", &f) == 1 && f == -5.0f);
    CHECK(ps_gguf_get_bool(g, "k.bool", &bl) == 1 && bl == 1);
    /* absent keys */
    CHECK(ps_gguf_get_u32(g, "nope", &u) == 0);
    CHECK(ps_gguf_get_str(g, "nope", &s) == 0);
    /* wrong types and out-of-range integers: -1 with an error */
    ps_clear_error();
    CHECK(ps_gguf_get_u32(g, "k.i8", &u) == -1);      /* negative */
    CHECK(ps_last_error()[0] != '\0');
    CHECK(ps_gguf_get_u32(g, "k.u64", &u) == -1);     /* 2^40 */
    CHECK(ps_gguf_get_i32(g, "k.u64", &i) == -1);
    CHECK(ps_gguf_get_u32(g, "general.architecture", &u) == -1);
    CHECK(ps_gguf_get_str(g, "k.u8", &s) == -1);
    CHECK(ps_gguf_get_f32(g, "k.arr_i32", &f) == -1);
    CHECK(ps_gguf_get_bool(g, "general.architecture", &bl) == -1);

    int et;
    uint64_t n;
    CHECK(ps_gguf_arr_info(g, "k.arr_i32", &et, &n) == 0 && et == PS_GGUF_INT32 && n == 3);
    const uint8_t *d = ps_gguf_arr_data(g, "k.arr_i32");
    CHECK(d != NULL);
    if (d) { int32_t v; memcpy(&v, d + 8, 4); CHECK(v == 20); }
    CHECK(ps_gguf_arr_info(g, "k.u8", &et, &n) == -1);
    CHECK(ps_gguf_arr_info(g, "k.arr_str", &et, &n) == 0 && et == PS_GGUF_STRING && n == 3);
    CHECK(ps_gguf_arr_data(g, "k.arr_str") == NULL);
    CHECK(ps_str_eq(ps_gguf_arr_str(g, "k.arr_str", 0), "hello"));
    CHECK(ps_gguf_arr_str(g, "k.arr_str", 1).n == 0);
    CHECK(ps_str_eq(ps_gguf_arr_str(g, "k.arr_str", 2), "\xc4\xa0world"));
    CHECK(ps_gguf_arr_str(g, "k.arr_str", 3).n == 0); /* out of range: empty */

    const ps_gguf_tensor *t = ps_gguf_find_tensor(g, "a.weight");
    CHECK(t && t->type == 0 && t->n_dims == 2 && t->ne[0] == 4 && t->ne[1] == 2 && t->ne[2] == 1 && t->nbytes == 32);
    if (t) { float v; memcpy(&v, (const char *)t->data + 12, 4); CHECK(v == 3.0f); }
    if (t) CHECK(((uintptr_t)t->data % 64) == 0);
    t = ps_gguf_find_tensor(g, "b.weight");
    CHECK(t && t->type == 1 && t->nbytes == 16);
    t = ps_gguf_find_tensor(g, "blk.0.attn_q.weight");
    CHECK(t && t->type == 8 && t->nbytes == 2 * 2 * 34);
    if (t) CHECK(((const uint8_t *)t->data)[5] == 5);
    CHECK(ps_gguf_tensor_at(g, 2) == t);
    CHECK(ps_gguf_tensor_at(g, 3) == NULL);
    CHECK(ps_gguf_tensor_at(g, -1) == NULL);
    CHECK(ps_gguf_find_tensor(g, "missing") == NULL);
    ps_gguf_close(g);
    free(b.p);
}

/* Every prefix of the valid file (except itself) must fail cleanly. The last
 * tensor ends the file, so any cut loses something. */
TEST(every_truncation_fails_cleanly) {
    buf b = valid_file();
    int bad = 0;
    for (size_t n = 0; n < b.n; n++) {
        ps_clear_error();
        ps_gguf *g = open_bytes(b.p, n);
        if (g || ps_last_error()[0] == '\0' || strchr(ps_last_error(), '\n')) {
            if (bad++ < 5) fprintf(stderr, "prefix %zu: g=%p err='%s'\n", n, (void *)g, ps_last_error());
            ps_gguf_close(g);
        }
    }
    CHECK(bad == 0);
    free(b.p);
}

/* Random byte corruption must never crash; it may open or fail. */
TEST(random_corruption_never_crashes) {
    buf b = valid_file();
    uint64_t s = 12345;
    uint8_t *copy = malloc(b.n);
    int opened = 0, failed = 0;
    for (int it = 0; it < 400; it++) {
        memcpy(copy, b.p, b.n);
        int flips = 1 + it % 4;
        for (int k = 0; k < flips; k++) {
            s = s * 6364136223846793005ull + 1442695040888963407ull;
            size_t pos = (size_t)((s >> 33) % b.n);
            copy[pos] = (uint8_t)(s >> 13);
        }
        ps_gguf *g = open_bytes(copy, b.n);
        if (g) {
            opened++;
            /* touch everything the reader hands out */
            for (int64_t i = 0; i < ps_gguf_n_tensors(g); i++) {
                const ps_gguf_tensor *t = ps_gguf_tensor_at(g, i);
                volatile uint8_t x = ((const uint8_t *)t->data)[t->nbytes - 1];
                (void)x;
            }
            for (int64_t i = 0; i < ps_gguf_n_kv(g); i++) (void)ps_gguf_key_name(g, i);
            ps_gguf_close(g);
        } else {
            failed++;
            CHECK(ps_last_error()[0] != '\0');
        }
    }
    CHECK(opened + failed == 400);
    CHECK(failed > 0);
    free(copy);
    free(b.p);
}

/* A header with n_kv keys, the first an array "k" of count elements of type
 * elem_type; the caller writes the elements. */
static void array_kv(buf *b, uint64_t n_kv, uint32_t elem_type, uint64_t count) {
    header(b, 3, 0, n_kv);
    put_str(b, "k");
    put_u32(b, PS_GGUF_ARRAY);
    put_u32(b, elem_type);
    put_u64(b, count);
}

static int fails_with(buf *b, const char *needle) {
    ps_clear_error();
    ps_gguf *g = open_bytes(b->p, b->n);
    int ok = g == NULL && strstr(ps_last_error(), needle) != NULL;
    if (!ok) fprintf(stderr, "expected failure with '%s', got g=%p err='%s'\n", needle, (void *)g, ps_last_error());
    ps_gguf_close(g);
    free(b->p);
    b->p = NULL;
    b->n = b->cap = 0;
    return ok;
}

/* One tensor file with the given info; data_bytes of payload after the padding. */
static buf one_tensor(uint32_t nd, const uint64_t *ne, uint32_t type, uint64_t off, size_t data_bytes) {
    buf b = {0};
    header(&b, 3, 1, 1);
    kv_str(&b, "general.architecture", "llama");
    tensor_info(&b, "blk.0.attn_q.weight", nd, ne, type, off);
    pad_to(&b, 32);
    for (size_t i = 0; i < data_bytes; i++) put_u8(&b, 0);
    return b;
}

TEST(bad_magic_and_version) {
    buf b = valid_file();
    memcpy(b.p, "GGML", 4);
    CHECK(fails_with(&b, "not a GGUF file"));
    b = valid_file();
    b.p[4] = 1; /* version 1 */
    CHECK(fails_with(&b, "version 1 is not supported"));
    b = valid_file();
    b.p[4] = 4;
    CHECK(fails_with(&b, "version 4"));
    b = valid_file();
    b.p[4] = 0; b.p[7] = 3; /* version 3 written big-endian */
    CHECK(fails_with(&b, "big-endian"));
    /* v2 has the same layout as v3 for little-endian files */
    b = valid_file();
    b.p[4] = 2;
    ps_gguf *g = open_bytes(b.p, b.n);
    CHECK(g != NULL);
    ps_gguf_close(g);
    free(b.p);
    /* empty and tiny files */
    ps_clear_error();
    CHECK(open_bytes("", 0) == NULL && strstr(ps_last_error(), "truncated"));
    CHECK(open_bytes("PK\x03\x04 a zip file, not a gguf", 28) == NULL && strstr(ps_last_error(), "not a GGUF"));
    CHECK(ps_gguf_open("/nonexistent/dir/x.gguf") == NULL && strstr(ps_last_error(), "cannot open"));
    CHECK(ps_gguf_open(tmpdir) == NULL && strstr(ps_last_error(), "not a regular file"));
}

TEST(tensor_data_past_eof) {
    buf b = one_tensor(2, (uint64_t[]){4, 4}, 0, 0, 63); /* needs 64 */
    CHECK(fails_with(&b, "tensor 'blk.0.attn_q.weight' data ["));
    b = one_tensor(2, (uint64_t[]){4, 4}, 0, 0, 64);
    ps_gguf *g = open_bytes(b.p, b.n);
    CHECK(g != NULL);
    ps_gguf_close(g);
    free(b.p);
    b = one_tensor(1, (uint64_t[]){4}, 0, 1ull << 62, 64); /* offset far away */
    CHECK(fails_with(&b, "past end of file"));
    b = one_tensor(1, (uint64_t[]){4}, 0, UINT64_MAX - 31, 64); /* offset + size wraps */
    CHECK(fails_with(&b, "past end of file"));
}

TEST(absurd_dimensions) {
    buf b = one_tensor(1, (uint64_t[]){1ull << 62}, 0, 0, 64); /* 2^62 floats: bytes overflow */
    CHECK(fails_with(&b, "overflow"));
    b = one_tensor(2, (uint64_t[]){1ull << 32, 1ull << 32}, 0, 0, 64); /* product overflows */
    CHECK(fails_with(&b, "overflow"));
    b = one_tensor(4, (uint64_t[]){1 << 16, 1 << 16, 1 << 16, 1 << 16}, 0, 0, 64);
    CHECK(fails_with(&b, "overflow"));
    b = one_tensor(2, (uint64_t[]){1ull << 30, 1ull << 20}, 0, 0, 64); /* fits in int64 but not in the file */
    CHECK(fails_with(&b, "past end of file"));
    b = one_tensor(1, (uint64_t[]){UINT64_MAX}, 0, 0, 64);
    CHECK(fails_with(&b, "dimension 0"));
    b = one_tensor(2, (uint64_t[]){4, 0}, 0, 0, 64);
    CHECK(fails_with(&b, "dimension 1 is 0"));
    b = one_tensor(0, NULL, 0, 0, 64);
    CHECK(fails_with(&b, "0 dimensions"));
    b = one_tensor(5, (uint64_t[]){1, 1, 1, 1, 1}, 0, 0, 64);
    CHECK(fails_with(&b, "5 dimensions"));
    /* q8_0 row length must be a multiple of 32 */
    b = one_tensor(2, (uint64_t[]){48, 1}, 8, 0, 128);
    CHECK(fails_with(&b, "not a multiple"));
}

/* PowerInfer's magic: the same file reads the same; only version 3 is known;
 * its integer tensor ids (16-18) are sized in PWRI files only; the
 * truncation sweep holds for it too. */
TEST(powerinfer_magic) {
    buf b = valid_file();
    memcpy(b.p, "PWRI", 4);
    ps_gguf *g = open_bytes(b.p, b.n);
    CHECK(g != NULL && ps_gguf_is_powerinfer(g) && ps_gguf_n_tensors(g) == 3);
    ps_gguf_close(g);
    int bad = 0;
    for (size_t n = 0; n < b.n; n++) {
        ps_clear_error();
        g = open_bytes(b.p, n);
        if (g || ps_last_error()[0] == '\0' || strchr(ps_last_error(), '\n')) bad++;
        ps_gguf_close(g);
    }
    CHECK(bad == 0);
    b.p[4] = 2;
    CHECK(fails_with(&b, "PowerInfer (PWRI) file of GGUF version 2"));
    b = valid_file();
    g = open_bytes(b.p, b.n);
    CHECK(g != NULL && !ps_gguf_is_powerinfer(g));
    ps_gguf_close(g);
    free(b.p);

    b = one_tensor(1, (uint64_t[]){8}, 18, 0, 32); /* PowerInfer's I32 */
    CHECK(fails_with(&b, "unknown ggml type id 18"));
    b = one_tensor(1, (uint64_t[]){8}, 18, 0, 32);
    memcpy(b.p, "PWRI", 4);
    g = open_bytes(b.p, b.n);
    CHECK(g != NULL && ps_gguf_tensor_at(g, 0)->nbytes == 32);
    ps_gguf_close(g);
    free(b.p);
    b = one_tensor(1, (uint64_t[]){16}, 18, 0, 32); /* 64 bytes needed, 32 there */
    memcpy(b.p, "PWRI", 4);
    CHECK(fails_with(&b, "past end of file"));
}

TEST(unknown_tensor_type) {
    buf b = one_tensor(1, (uint64_t[]){32}, 99, 0, 256);
    CHECK(fails_with(&b, "unknown ggml type id 99"));
    b = one_tensor(1, (uint64_t[]){32}, 0xffffffffu, 0, 256);
    CHECK(fails_with(&b, "unknown ggml type id"));
}

TEST(huge_lengths_and_counts) {
    buf b = {0};
    header(&b, 3, 0, 1);
    put_u64(&b, 1ull << 63); /* key length */
    put(&b, "abcdefghijklmnopqrstuvwxyz", 26);
    CHECK(fails_with(&b, "string length"));

    header(&b, 3, 0, 1);
    put_str(&b, "k");
    put_u32(&b, PS_GGUF_STRING);
    put_u64(&b, UINT64_MAX); /* value length */
    put(&b, "abcdefgh", 8);
    CHECK(fails_with(&b, "string length"));

    array_kv(&b, 1, PS_GGUF_UINT64, 1ull << 61); /* * 8 bytes wraps to 0 */
    put_u64(&b, 0);
    CHECK(fails_with(&b, "exceed"));

    array_kv(&b, 1, PS_GGUF_STRING, 1ull << 40);
    put_str(&b, "x");
    CHECK(fails_with(&b, "cannot fit"));

    array_kv(&b, 2, PS_GGUF_STRING, 2); /* second string of an array runs off the end */
    put_str(&b, "x");
    put_u64(&b, 1000);
    put(&b, "yyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyy", 60);
    CHECK(fails_with(&b, "string 1 of array 'k'"));

    header(&b, 3, 1ull << 60, 0);
    put_u64(&b, 0);
    CHECK(fails_with(&b, "tensor count"));
    header(&b, 3, 0, UINT64_MAX);
    put_u64(&b, 0);
    CHECK(fails_with(&b, "key/value count"));
}

TEST(bad_value_types_and_nesting) {
    buf b = {0};
    header(&b, 3, 0, 1);
    put_str(&b, "k");
    put_u32(&b, 13); /* no such value type */
    put_u64(&b, 0);
    CHECK(fails_with(&b, "unknown value type 13"));

    array_kv(&b, 1, PS_GGUF_ARRAY, 1);
    put_u32(&b, PS_GGUF_UINT8);
    put_u64(&b, 1);
    put_u8(&b, 1);
    CHECK(fails_with(&b, "nested arrays"));

    array_kv(&b, 1, 77, 1);
    put_u64(&b, 0);
    CHECK(fails_with(&b, "unknown element type 77"));
}

/* One F32 tensor after a general.alignment key of the given value (u32, or a string). */
static buf with_alignment(uint32_t align, const char *as_string) {
    buf b = {0};
    header(&b, 3, 1, 1);
    if (as_string) kv_str(&b, "general.alignment", as_string);
    else kv_u32(&b, "general.alignment", align);
    tensor_info(&b, "t", 1, (uint64_t[]){4}, 0, 0);
    pad_to(&b, 32);
    for (int i = 0; i < 16; i++) put_u8(&b, 0);
    return b;
}

TEST(bad_alignment) {
    buf b = with_alignment(3, NULL);
    CHECK(fails_with(&b, "not a power of two"));
    b = with_alignment(0, NULL);
    CHECK(fails_with(&b, "not a power of two"));
    b = with_alignment(0, "32");
    CHECK(fails_with(&b, "general.alignment has value type"));

    /* offset not a multiple of the (default) alignment */
    b = one_tensor(1, (uint64_t[]){4}, 0, 4, 64);
    CHECK(fails_with(&b, "not a multiple of the alignment 32"));
}

TEST(duplicates_rejected) {
    buf b = {0};
    header(&b, 3, 2, 0);
    tensor_info(&b, "same", 1, (uint64_t[]){4}, 0, 0);
    tensor_info(&b, "same", 1, (uint64_t[]){4}, 0, 32);
    pad_to(&b, 32);
    for (int i = 0; i < 64; i++) put_u8(&b, 0);
    CHECK(fails_with(&b, "duplicate tensor name 'same'"));

    header(&b, 3, 0, 2);
    kv_u32(&b, "a.b", 1);
    kv_u32(&b, "a.b", 2);
    CHECK(fails_with(&b, "duplicate key 'a.b'"));
}

TEST(many_tensors_hash_lookup) {
    /* 300 tiny tensors: every name is found at its own index */
    enum { N = 300 };
    buf b = {0};
    header(&b, 3, N, 0);
    char name[32];
    for (int i = 0; i < N; i++) {
        snprintf(name, sizeof name, "blk.%d.w", i);
        tensor_info(&b, name, 1, (uint64_t[]){8}, 0, (uint64_t)i * 32);
    }
    pad_to(&b, 32);
    for (int i = 0; i < N * 32; i++) put_u8(&b, (uint8_t)(i / 32));
    ps_gguf *g = open_bytes(b.p, b.n);
    CHECK(g != NULL);
    int bad = 0;
    for (int i = 0; g && i < N; i++) {
        snprintf(name, sizeof name, "blk.%d.w", i);
        const ps_gguf_tensor *t = ps_gguf_find_tensor(g, name);
        if (t != ps_gguf_tensor_at(g, i) || ((const uint8_t *)t->data)[0] != (uint8_t)i) bad++;
    }
    CHECK(bad == 0);
    ps_gguf_close(g);
    free(b.p);
}

int main(void) {
    if (make_test_dir(tmpdir, sizeof tmpdir, "ps_gguf")) return 1;
    RUN(valid_file_reads_back);
    RUN(every_truncation_fails_cleanly);
    RUN(random_corruption_never_crashes);
    RUN(bad_magic_and_version);
    RUN(tensor_data_past_eof);
    RUN(absurd_dimensions);
    RUN(unknown_tensor_type);
    RUN(powerinfer_magic);
    RUN(huge_lengths_and_counts);
    RUN(bad_value_types_and_nesting);
    RUN(bad_alignment);
    RUN(duplicates_rejected);
    RUN(many_tensors_hash_lookup);
    rmdir(tmpdir);
    return CHECK_DONE();
}
