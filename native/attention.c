/* attention.c: the scalar reference of one query head's attention (quant.h's
 * ps_attn_*_fn; attention_avx2.c has the SIMD level's). */
#include <math.h>
#include <string.h>

#include "quant.h"

/* Dot product with 8 independent partial sums, so the compiler can keep
 * them in SIMD registers without reassociating a single accumulator. */
static inline float dot_f32(const float *a, const float *b, int n) {
    float acc[8] = {0};
    int i = 0;
    for (; i + 8 <= n; i += 8)
        for (int k = 0; k < 8; k++) acc[k] += a[i + k] * b[i + k];
    float sum = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
    for (; i < n; i++) sum += a[i] * b[i];
    return sum;
}

float ps_attn_scores_scalar(const float *q, const float *k, int64_t stride, int64_t n, int hd, float scale,
                            float *att) {
    float mx = -INFINITY;
    for (int64_t j = 0; j < n; j++) {
        att[j] = dot_f32(q, k + j * stride, hd) * scale;
        if (att[j] > mx) mx = att[j];
    }
    return mx;
}

/* (a numerically safe softmax: the max is subtracted first) */
float ps_attn_softmax_scalar(float *att, int64_t n, float mx) {
    float sum = 0.0f;
    for (int64_t j = 0; j < n; j++) {
        att[j] = expf(att[j] - mx);
        sum += att[j];
    }
    return sum;
}

void ps_attn_values_scalar(const float *att, float inv, const float *v, int64_t stride, int64_t n, int hd,
                           float *out) {
    memset(out, 0, sizeof(float) * (size_t)hd);
    for (int64_t j = 0; j < n; j++) {
        const float p = att[j] * inv;
        const float *vj = v + j * stride;
        for (int d = 0; d < hd; d++) out[d] += p * vj[d];
    }
}
