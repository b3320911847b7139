/* quantize.h: the weight quantizer behind ps_quantize_rows (not public).
 *
 * quantize_fit.c finds, for a small group of floats, the integer levels and
 * the scale (and offset) that minimize the squared error; quantize.c holds
 * the API and the 32-element types, quantize_k.c the K-quant super-blocks,
 * which quantize each group's scale (and minimum) again to a few bits.
 * Every choice minimizes the plain squared error of the dequantized values
 * (no importance weights), so the file's RMSE is what the search optimizes.
 */
#ifndef PS_QUANTIZE_H
#define PS_QUANTIZE_H

#include <stdint.h>
#include <string.h>

/* Round to nearest (ties to even, the default rounding mode), clamped to
 * [lo, hi]; NaN gives lo. Inline and without a libm call: it runs for every
 * weight under every candidate scale. Adding 1.5 * 2^23 leaves the rounded
 * integer in the low mantissa bits, exact for |v| < 2^22, which the clamp
 * (|lo|, |hi| are small) guarantees. */
static inline int ps_qround(float v, int lo, int hi) {
    if (!(v > (float)lo)) return lo;
    if (v >= (float)hi) return hi;
    const float t = v + 12582912.0f;
    int32_t i;
    memcpy(&i, &t, sizeof i);
    return (i & 0x007fffff) - 0x00400000;
}

/* x[0..n) ~= s * L[i] with integers L[i] in [lo, hi] (lo < 0 < hi): returns
 * s (0 with all L = 0 when x is all zero). */
float ps_fit_scale(const float *x, int n, int lo, int hi, int8_t *L);

/* x[0..n) ~= s * L[i] + o with L[i] in [0, hi] and s >= 0; with
 * offset_nonpositive, o <= 0 (K-quants store -o as an unsigned minimum).
 * Returns s and sets *o. */
float ps_fit_scale_offset(const float *x, int n, int hi, int offset_nonpositive, int8_t *L, float *o);

/* Squared error of a group dequantized as s * L[i] + o with L[i] = the
 * nearest level of (x[i] - o) / s in [lo, hi] (s == 0: every value is o);
 * writes those levels. The float steps are the dequantizer's. */
float ps_round_group(const float *x, int n, float s, float o, int lo, int hi, int8_t *L);

/* One row of n elements (a multiple of the type's block) into dst. */
void ps_quantize_row_q5_0(const float *x, void *dst, int64_t n);
void ps_quantize_row_q5_1(const float *x, void *dst, int64_t n);
void ps_quantize_row_q2_k(const float *x, void *dst, int64_t n);
void ps_quantize_row_q3_k(const float *x, void *dst, int64_t n);
void ps_quantize_row_q4_k(const float *x, void *dst, int64_t n);
void ps_quantize_row_q5_k(const float *x, void *dst, int64_t n);
void ps_quantize_row_q6_k(const float *x, void *dst, int64_t n);

#endif
