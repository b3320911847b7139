/* gguf_writer.h: a tiny GGUF writer into a growable buffer, shared by the C
 * tests that build small valid and broken files (test_gguf.c, test_tokenizer.c). */
#ifndef PS_TEST_GGUF_WRITER_H
#define PS_TEST_GGUF_WRITER_H
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "gguf.h"

typedef struct buf { uint8_t *p; size_t n, cap; } buf;

static inline void put(buf *b, const void *src, size_t n) {
    if (b->n + n > b->cap) {
        b->cap = (b->n + n) * 2 + 64;
        b->p = realloc(b->p, b->cap);
    }
    memcpy(b->p + b->n, src, n);
    b->n += n;
}
static inline void put_u8(buf *b, uint8_t v) { put(b, &v, 1); }
static inline void put_u32(buf *b, uint32_t v) { put(b, &v, 4); }
static inline void put_u64(buf *b, uint64_t v) { put(b, &v, 8); }
static inline void put_f32(buf *b, float v) { put(b, &v, 4); }
static inline void put_str(buf *b, const char *s) { put_u64(b, strlen(s)); put(b, s, strlen(s)); }
static inline void kv_u32(buf *b, const char *k, uint32_t v) { put_str(b, k); put_u32(b, PS_GGUF_UINT32); put_u32(b, v); }
static inline void kv_str(buf *b, const char *k, const char *v) { put_str(b, k); put_u32(b, PS_GGUF_STRING); put_str(b, v); }
#endif
