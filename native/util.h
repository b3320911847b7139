/* util.h: small helpers shared by the engine's C files (not public). */
#ifndef PS_UTIL_H
#define PS_UTIL_H

#include <stddef.h>
#include <stdint.h>

/* Record one line for ps_last_error() (printf-style) and return code.
 * Usage: return ps_fail(PS_ERR_FORMAT, "tensor %s: shape ...", name); */
int ps_fail(int code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void ps_clear_error(void);

/* Aligned allocation (64 bytes) for scratch buffers; free with ps_free. */
void *ps_alloc(size_t n);
void ps_free(void *p);

/* fp16 / bf16 <-> f32 conversions (scalar; exact round-to-nearest-even). */
float ps_fp16_to_f32(uint16_t h);
uint16_t ps_f32_to_fp16(float f);
float ps_bf16_to_f32(uint16_t h);

#endif
