/* gguf.h: a bounds-checked GGUF v3 reader over a read-only mmap (not public).
 *
 * ps_gguf_open validates the whole header before returning: every string
 * and array length, every tensor's type, dimensions, offset and byte size
 * is checked against the file size, so later accessors never read out of
 * bounds. Strings in GGUF are not NUL-terminated: they come back as ps_str.
 * Tensor data pointers point into the mapping (no copies).
 */
#ifndef PS_GGUF_H
#define PS_GGUF_H

#include <stddef.h>
#include <stdint.h>

enum ps_gguf_vtype {
    PS_GGUF_UINT8 = 0, PS_GGUF_INT8 = 1, PS_GGUF_UINT16 = 2, PS_GGUF_INT16 = 3,
    PS_GGUF_UINT32 = 4, PS_GGUF_INT32 = 5, PS_GGUF_FLOAT32 = 6, PS_GGUF_BOOL = 7,
    PS_GGUF_STRING = 8, PS_GGUF_ARRAY = 9, PS_GGUF_UINT64 = 10, PS_GGUF_INT64 = 11,
    PS_GGUF_FLOAT64 = 12,
};

typedef struct { const char *p; uint64_t n; } ps_str;

typedef struct ps_gguf_tensor {
    ps_str name;
    int32_t type;        /* ggml type id */
    int32_t n_dims;      /* 1..4 */
    int64_t ne[4];       /* ggml order: ne[0] is the row length (fastest); unused dims = 1 */
    uint64_t nbytes;
    const void *data;    /* into the mapping, aligned as the file says */
} ps_gguf_tensor;

typedef struct ps_gguf ps_gguf;

/* NULL on error, with ps_last_error() set (PS_ERR_IO / FORMAT / UNSUPPORTED). */
ps_gguf *ps_gguf_open(const char *path);
void ps_gguf_close(ps_gguf *g);

uint64_t ps_gguf_file_size(const ps_gguf *g);

/* 1 when the magic is PowerInfer's "PWRI" (a GGUF v3 file otherwise). */
int ps_gguf_is_powerinfer(const ps_gguf *g);

/* Key/value access. find returns the index or -1. */
int64_t ps_gguf_n_kv(const ps_gguf *g);
int64_t ps_gguf_find_key(const ps_gguf *g, const char *key);
ps_str ps_gguf_key_name(const ps_gguf *g, int64_t i);
int ps_gguf_kv_type(const ps_gguf *g, int64_t i);          /* enum ps_gguf_vtype */

/* Typed getters by key. Return 1 when found and convertible, 0 when the key
 * is absent; a present key of an incompatible type (or an integer out of
 * range) returns -1 with the error recorded. Integers of any width are
 * accepted by the integer getters, any float/int by get_f32. */
int ps_gguf_get_u32(const ps_gguf *g, const char *key, uint32_t *out);
int ps_gguf_get_i32(const ps_gguf *g, const char *key, int32_t *out);
int ps_gguf_get_f32(const ps_gguf *g, const char *key, float *out);
int ps_gguf_get_bool(const ps_gguf *g, const char *key, int *out);
int ps_gguf_get_str(const ps_gguf *g, const char *key, ps_str *out);

/* Arrays: element type and count; -1 if the key is missing or not an array. */
int ps_gguf_arr_info(const ps_gguf *g, const char *key, int *elem_type, uint64_t *n);
/* Raw pointer to a fixed-size-element array's data (not for strings). */
const void *ps_gguf_arr_data(const ps_gguf *g, const char *key);
/* i-th string of a string array (pre-indexed at open: O(1)). */
ps_str ps_gguf_arr_str(const ps_gguf *g, const char *key, uint64_t i);

/* Tensors. */
int64_t ps_gguf_n_tensors(const ps_gguf *g);
const ps_gguf_tensor *ps_gguf_tensor_at(const ps_gguf *g, int64_t i);
const ps_gguf_tensor *ps_gguf_find_tensor(const ps_gguf *g, const char *name); /* NULL if absent */

/* Compare a ps_str with a C string. */
int ps_str_eq(ps_str s, const char *c);

#endif
