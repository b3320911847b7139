/* simd_neon.h: inline helpers of the aarch64 kernel files (quant_neon.c,
 * quant_neondot.c through kernels_neon.h and vec_neon.c).
 *
 * The NEON levels repeat the scalar reference's float operations in its
 * order, one (row, token) result per vector lane, so their results are the
 * scalar ones bit for bit; only the integer sums are regrouped (exact).
 * quant_neondot.c is built with the dot-product extension, and dot32 then
 * uses SDOT, with the same exact integer result.
 */
#ifndef PS_SIMD_NEON_H
#define PS_SIMD_NEON_H

#include <arm_neon.h>
#include <string.h>

#include "quant.h"

#define INLINE static inline __attribute__((always_inline))

/* Tokens per tile of the integer products: the tile's accumulators stay in
 * registers or L1 while each block's decoded weights meet every token. */
#define TOK_TILE 16

INLINE uint16_t ld16(const uint8_t *p) { uint16_t v; memcpy(&v, p, 2); return v; }

/* Half-precision values at byte offset off of 4 rows, as floats (exact, as
 * ps_fp16_to_f32). */
INLINE float32x4_t halves4(const uint8_t *const row[4], size_t off) {
    const uint16_t h[4] = {ld16(row[0] + off), ld16(row[1] + off), ld16(row[2] + off), ld16(row[3] + off)};
    return vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16(h)));
}

/* Row list convention (quant.h): list position j is matrix row idx[j], or j
 * itself when idx is NULL. */
INLINE int64_t row_at(const int32_t *idx, int64_t j) { return idx ? idx[j] : j; }

/* Rows of list positions r..r+n-1; positions past r1 repeat the last row
 * (computed, never stored). */
INLINE void rows_n(const uint8_t *W, size_t rb, const int32_t *idx, int64_t r, int64_t r1,
                   const uint8_t **row, int n) {
    for (int i = 0; i < n; i++) row[i] = W + (size_t)row_at(idx, r + i < r1 ? r + i : r1 - 1) * rb;
}

/* Lanes 0..3 = list positions r..r+3 (the first `valid` are real) of token row y. */
INLINE void store4(float *y, const int32_t *idx, int64_t r, float32x4_t v, int64_t valid) {
    if (!idx && valid >= 4) {
        vst1q_f32(y + r, v);
        return;
    }
    float tmp[4];
    vst1q_f32(tmp, v);
    for (int64_t i = 0; i < valid && i < 4; i++) y[row_at(idx, r + i)] = tmp[i];
}

/* Int32 lanes whose sum is the dot product of 32 int8 pairs (w0|w1 with
 * x0|x1). SDOT where built with it; else widening products (int16: |w*x| <=
 * 2^14) added pairwise into int32. Exact either way. */
INLINE int32x4_t dot32(int8x16_t w0, int8x16_t w1, int8x16_t x0, int8x16_t x1) {
#ifdef __ARM_FEATURE_DOTPROD
    return vdotq_s32(vdotq_s32(vdupq_n_s32(0), w0, x0), w1, x1);
#else
    int32x4_t a = vpaddlq_s16(vmull_s8(vget_low_s8(w0), vget_low_s8(x0)));
    a = vpadalq_s16(a, vmull_high_s8(w0, x0));
    a = vpadalq_s16(a, vmull_s8(vget_low_s8(w1), vget_low_s8(x1)));
    return vpadalq_s16(a, vmull_high_s8(w1, x1));
#endif
}

/* [sum p0, sum p1, sum p2, sum p3] (exact). */
INLINE int32x4_t rowsum4(const int32x4_t p[4]) {
    return vpaddq_s32(vpaddq_s32(p[0], p[1]), vpaddq_s32(p[2], p[3]));
}

/* ---- float weights ------------------------------------------------------- */
enum { FT_F32, FT_F16, FT_BF16 };

INLINE float32x4_t load4(const uint8_t *row, int64_t k, const int ft) {
    if (ft == FT_F32) return vld1q_f32((const float *)row + k);
    const uint16x4_t h = vld1_u16((const uint16_t *)row + k);
    if (ft == FT_F16) return vcvt_f32_f16(vreinterpret_f16_u16(h));
    return vreinterpretq_f32_u32(vshll_n_u16(h, 16));
}

INLINE float load1(const uint8_t *row, int64_t k, const int ft) {
    if (ft == FT_F32) return ((const float *)row)[k];
    const uint16_t h = ((const uint16_t *)row)[k];
    if (ft == FT_F16) return vgetq_lane_f32(vcvt_f32_f16(vreinterpret_f16_u16(vdup_n_u16(h))), 0);
    const uint32_t bits = (uint32_t)h << 16;
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

/* 4x4 transpose: out[j] lane i = in[i] lane j. */
INLINE void transpose4(const float32x4_t in[4], float32x4_t out[4]) {
    const float32x4_t t0 = vtrn1q_f32(in[0], in[1]), t1 = vtrn2q_f32(in[0], in[1]);
    const float32x4_t t2 = vtrn1q_f32(in[2], in[3]), t3 = vtrn2q_f32(in[2], in[3]);
    out[0] = vreinterpretq_f32_f64(vtrn1q_f64(vreinterpretq_f64_f32(t0), vreinterpretq_f64_f32(t2)));
    out[1] = vreinterpretq_f32_f64(vtrn1q_f64(vreinterpretq_f64_f32(t1), vreinterpretq_f64_f32(t3)));
    out[2] = vreinterpretq_f32_f64(vtrn2q_f64(vreinterpretq_f64_f32(t0), vreinterpretq_f64_f32(t2)));
    out[3] = vreinterpretq_f32_f64(vtrn2q_f64(vreinterpretq_f64_f32(t1), vreinterpretq_f64_f32(t3)));
}

/* exp(x) for 4 lanes: the AVX2 level's exp8 (math_avx2.h) step for step
 * (same constants, the same fused and unfused operations), so within ~1 ulp
 * of exp on [-87.3, 88], 0 below, exp(88) above. */
INLINE float32x4_t exp4(float32x4_t x) {
    const float32x4_t hi = vdupq_n_f32(88.0f), lo = vdupq_n_f32(-87.3365478515625f);
    const uint32x4_t underflow = vcltq_f32(x, lo);
    x = vmaxq_f32(vminq_f32(x, hi), lo);
    const float32x4_t n = vrndnq_f32(vmulq_f32(x, vdupq_n_f32(1.44269504088896341f)));
    float32x4_t r = vfmsq_f32(x, n, vdupq_n_f32(0.693359375f));
    r = vfmsq_f32(r, n, vdupq_n_f32(-2.12194440e-4f));
    float32x4_t p = vdupq_n_f32(1.9875691500e-4f);
    p = vfmaq_f32(vdupq_n_f32(1.3981999507e-3f), p, r);
    p = vfmaq_f32(vdupq_n_f32(8.3334519073e-3f), p, r);
    p = vfmaq_f32(vdupq_n_f32(4.1665795894e-2f), p, r);
    p = vfmaq_f32(vdupq_n_f32(1.6666665459e-1f), p, r);
    p = vfmaq_f32(vdupq_n_f32(5.0000001201e-1f), p, r);
    p = vaddq_f32(vfmaq_f32(r, p, vmulq_f32(r, r)), vdupq_n_f32(1.0f));
    const int32x4_t e = vshlq_n_s32(vaddq_s32(vcvtq_s32_f32(n), vdupq_n_s32(127)), 23);
    const float32x4_t y = vmulq_f32(p, vreinterpretq_f32_s32(e));
    return vreinterpretq_f32_u32(vbicq_u32(vreinterpretq_u32_f32(y), underflow));
}

#endif
