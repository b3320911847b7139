/* attention_neon.c: the NEON levels' attention of one query head over the
 * F32 KV cache (quant.h's ps_attn_*_fn, any head_dim). Scores and values
 * repeat attention.c's float operations in its order (the same bits);
 * softmax uses simd_neon.h's exp. */
#include <math.h>

#include "simd_neon.h"

/* attention.c's dot_f32: 8 partial sums (lanes of lo and hi), combined as
 * ((p0 + p4) + (p1 + p5)) + ((p2 + p6) + (p3 + p7)), then the tail in order. */
INLINE float dot_f32(const float *a, const float *b, int n) {
    float32x4_t lo = vdupq_n_f32(0.0f), hi = lo;
    int i = 0;
    for (; i + 8 <= n; i += 8) {
        lo = vaddq_f32(lo, vmulq_f32(vld1q_f32(a + i), vld1q_f32(b + i)));
        hi = vaddq_f32(hi, vmulq_f32(vld1q_f32(a + i + 4), vld1q_f32(b + i + 4)));
    }
    const float32x4_t s = vaddq_f32(lo, hi);
    const float32x4_t p = vpaddq_f32(s, s); /* p0+p4 + p1+p5, p2+p6 + p3+p7 */
    float sum = vgetq_lane_f32(p, 0) + vgetq_lane_f32(p, 1);
    for (; i < n; i++) sum += a[i] * b[i];
    return sum;
}

float ps_attn_scores_neon(const float *q, const float *k, int64_t stride, int64_t n, int hd, float scale,
                          float *att) {
    float mx = -INFINITY;
    for (int64_t j = 0; j < n; j++) {
        att[j] = dot_f32(q, k + j * stride, hd) * scale;
        if (att[j] > mx) mx = att[j];
    }
    return mx;
}

float ps_attn_softmax_neon(float *att, int64_t n, float mx) {
    const float32x4_t vmx = vdupq_n_f32(mx);
    float32x4_t acc = vdupq_n_f32(0.0f);
    int64_t j = 0;
    for (; j + 4 <= n; j += 4) {
        const float32x4_t e = exp4(vsubq_f32(vld1q_f32(att + j), vmx));
        vst1q_f32(att + j, e);
        acc = vaddq_f32(acc, e);
    }
    float sum = vaddvq_f32(acc);
    for (; j < n; j++) {
        att[j] = expf(att[j] - mx);
        sum += att[j];
    }
    return sum;
}

/* out[d] = sum over j in order of (att[j] * inv) * v_j[d]; a 16-wide stretch
 * of the output stays in four registers across all keys. */
void ps_attn_values_neon(const float *att, float inv, const float *v, int64_t stride, int64_t n, int hd,
                         float *out) {
    int d0 = 0;
    for (; d0 + 16 <= hd; d0 += 16) {
        float32x4_t acc[4];
        for (int b = 0; b < 4; b++) acc[b] = vdupq_n_f32(0.0f);
        for (int64_t j = 0; j < n; j++) {
            const float p = att[j] * inv;
            const float *vj = v + j * stride + d0;
            for (int b = 0; b < 4; b++) acc[b] = vaddq_f32(acc[b], vmulq_n_f32(vld1q_f32(vj + 4 * b), p));
        }
        for (int b = 0; b < 4; b++) vst1q_f32(out + d0 + 4 * b, acc[b]);
    }
    for (; d0 + 4 <= hd; d0 += 4) {
        float32x4_t acc = vdupq_n_f32(0.0f);
        for (int64_t j = 0; j < n; j++) acc = vaddq_f32(acc, vmulq_n_f32(vld1q_f32(v + j * stride + d0), att[j] * inv));
        vst1q_f32(out + d0, acc);
    }
    for (; d0 < hd; d0++) {
        float acc = 0.0f;
        for (int64_t j = 0; j < n; j++) acc += att[j] * inv * v[j * stride + d0];
        out[d0] = acc;
    }
}
