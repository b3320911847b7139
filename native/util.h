/* util.h: small helpers shared by the engine's C files (not public). */
#ifndef PS_UTIL_H
#define PS_UTIL_H

#include <stddef.h>
#include <stdint.h>

/* Record one line for ps_last_error() (printf-style) and return code.
 * Usage: return ps_fail(PS_ERR_FORMAT, "tensor %s: shape ...", name); */
int ps_fail(int code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void ps_clear_error(void);

/* Return from the calling function with expr's status unless it is PS_OK. */
#define PS_TRY(expr)                  \
    do {                              \
        const int ps_rc_ = (expr);    \
        if (ps_rc_ != 0) return ps_rc_; \
    } while (0)

/* Every allocation of the engine goes through these (malloc, calloc,
 * realloc; free them with free), so ps_debug_fail_alloc can make any one
 * of them fail. */
void *ps_malloc(size_t n);
/* 1 when ps_debug_fail_alloc says this allocation fails (for allocators of
 * their own, such as the pool's scratch). */
int ps_alloc_fails(void);
void *ps_calloc(size_t n, size_t size);
void *ps_realloc(void *p, size_t n);
/* Room for more elements of a growable array v holding *cap of elem bytes:
 * the array at twice the capacity (first when empty), *cap updated; NULL
 * when out of memory (v is then still valid and unchanged). */
void *ps_grow(void *v, size_t *cap, size_t elem, size_t first);
/* In a function returning int: make room for one more element of a, a
 * struct {T *v; size_t n, cap;}, or return -1 when out of memory. */
#define PS_RESERVE_ONE(a, first)                                              \
    do {                                                                      \
        if ((a)->n == (a)->cap) {                                             \
            void *grown_ = ps_grow((a)->v, &(a)->cap, sizeof *(a)->v, first); \
            if (!grown_) return -1;                                           \
            (a)->v = grown_;                                                  \
        }                                                                     \
    } while (0)
/* Aligned allocation (64 bytes) for scratch buffers; free with ps_free. */
void *ps_alloc(size_t n);
void ps_free(void *p);

/* fp16 / bf16 <-> f32 conversions (scalar; exact round-to-nearest-even). */
float ps_fp16_to_f32(uint16_t h);
uint16_t ps_f32_to_fp16(float f);
float ps_bf16_to_f32(uint16_t h);

#endif
