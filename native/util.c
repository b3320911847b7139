/* util.c: error text, aligned allocation, half-precision conversions. */
#include "util.h"
#include "prosparse.h"

#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* One line per thread, so concurrent sessions do not overwrite each other. */
static _Thread_local char last_error[512];
static _Thread_local int last_code;

const char *ps_last_error(void) { return last_error; }

int ps_last_error_code(void) { return last_code; }

void ps_clear_error(void) {
    last_error[0] = '\0';
    last_code = PS_OK;
}

int ps_fail(int code, const char *fmt, ...) {
    va_list ap;
    last_code = code;
    va_start(ap, fmt);
    vsnprintf(last_error, sizeof last_error, fmt, ap);
    va_end(ap);
    /* keep it to one line */
    for (char *p = last_error; *p; p++)
        if (*p == '\n' || *p == '\r') *p = ' ';
    return code;
}

/* ps_debug_fail_alloc: allocations left until the one that fails (0: off). */
static _Atomic int64_t fail_countdown;

int ps_alloc_fails(void) {
    if (atomic_load_explicit(&fail_countdown, memory_order_relaxed) <= 0) return 0;
    return atomic_fetch_sub(&fail_countdown, 1) == 1;
}

void ps_debug_fail_alloc(int64_t n) { atomic_store(&fail_countdown, n > 0 ? n : 0); }

void *ps_malloc(size_t n) { return ps_alloc_fails() ? NULL : malloc(n); }

void *ps_calloc(size_t n, size_t size) { return ps_alloc_fails() ? NULL : calloc(n, size); }

void *ps_realloc(void *p, size_t n) { return ps_alloc_fails() ? NULL : realloc(p, n); }

void *ps_grow(void *v, size_t *cap, size_t elem, size_t first) {
    const size_t n = *cap ? *cap * 2 : first;
    if (n < *cap || n > SIZE_MAX / elem) return NULL;
    void *p = ps_realloc(v, n * elem);
    if (p) *cap = n;
    return p;
}

void *ps_alloc(size_t n) {
    void *p = NULL;
    if (ps_alloc_fails()) return NULL;
    if (n == 0) n = 64;
    n = (n + 63) & ~(size_t)63;
    if (posix_memalign(&p, 64, n) != 0) return NULL;
    return p;
}

void ps_free(void *p) { free(p); }

float ps_fp16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    uint32_t exp = (h >> 10) & 0x1f;
    uint32_t man = h & 0x3ff;
    uint32_t bits;
    if (exp == 0) {
        if (man == 0) {
            bits = sign;
        } else { /* subnormal: normalise */
            exp = 127 - 15 + 1;
            while (!(man & 0x400)) { man <<= 1; exp--; }
            man &= 0x3ff;
            bits = sign | (exp << 23) | (man << 13);
        }
    } else if (exp == 31) {
        bits = sign | 0x7f800000u | (man << 13);
    } else {
        bits = sign | ((exp + 127 - 15) << 23) | (man << 13);
    }
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

uint16_t ps_f32_to_fp16(float f) {
    uint32_t x;
    memcpy(&x, &f, 4);
    uint32_t sign = (x >> 16) & 0x8000;
    uint32_t absx = x & 0x7fffffffu;
    if (absx >= 0x7f800000u) /* inf or nan */
        return (uint16_t)(sign | 0x7c00 | (absx > 0x7f800000u ? 0x200 : 0));
    if (absx >= 0x477ff000u) /* rounds to >= 65520: overflow to inf */
        return (uint16_t)(sign | 0x7c00);
    if (absx < 0x38800000u) { /* below the smallest normal half: subnormal or zero */
        if (absx < 0x33000000u) return (uint16_t)sign; /* < 2^-25 rounds to 0 */
        uint32_t e = absx >> 23;
        uint32_t m = (absx & 0x7fffff) | 0x800000;
        uint32_t shift = 126 - e; /* 14 + (113 - e) */
        uint32_t half = m >> shift;
        uint32_t rem = m & ((1u << shift) - 1);
        uint32_t mid = 1u << (shift - 1);
        if (rem > mid || (rem == mid && (half & 1))) half++;
        return (uint16_t)(sign | half);
    }
    uint32_t h = ((absx >> 13) - ((127 - 15) << 10));
    uint32_t rem = absx & 0x1fff;
    if (rem > 0x1000 || (rem == 0x1000 && (h & 1))) h++;
    return (uint16_t)(sign | h);
}

float ps_bf16_to_f32(uint16_t h) {
    uint32_t bits = (uint32_t)h << 16;
    float f;
    memcpy(&f, &bits, 4);
    return f;
}
