/* matmul_attention.c: attention for one query head and the SwiGLU product:
 * the scalar reference and the dispatch to the AVX2 versions
 * (matmul_attention_avx2.c). Contract in compute.h. */
#include <math.h>
#include <string.h>

#include "prosparse.h"
#include "quant.h"

void ps_attention_head(const float *q, const float *k, const float *v, int64_t kv_stride,
                       int64_t n_keys, int32_t head_dim, float scale, float *att, float *out) {
    if (n_keys <= 0) {
        memset(out, 0, sizeof(float) * (size_t)head_dim);
        return;
    }
    if (ps_simd_level() >= PS_SIMD_AVX2 && head_dim % 8 == 0) {
        ps_attention_head_avx2(q, k, v, kv_stride, n_keys, head_dim, scale, att, out);
        return;
    }
    float mx = -INFINITY;
    for (int64_t j = 0; j < n_keys; j++) {
        const float *kj = k + j * kv_stride;
        float s = 0.0f;
        for (int32_t d = 0; d < head_dim; d++) s += q[d] * kj[d];
        att[j] = s * scale;
        if (att[j] > mx) mx = att[j];
    }
    float sum = 0.0f;
    for (int64_t j = 0; j < n_keys; j++) {
        att[j] = expf(att[j] - mx);
        sum += att[j];
    }
    const float inv = 1.0f / sum;
    memset(out, 0, sizeof(float) * (size_t)head_dim);
    for (int64_t j = 0; j < n_keys; j++) {
        const float p = att[j] * inv;
        const float *vj = v + j * kv_stride;
        for (int32_t d = 0; d < head_dim; d++) out[d] += p * vj[d];
    }
}

void ps_silu_mul(float *g, const float *u, int64_t n) {
    if (ps_simd_level() >= PS_SIMD_AVX2) {
        ps_silu_mul_avx2(g, u, n);
        return;
    }
    for (int64_t i = 0; i < n; i++) g[i] = g[i] / (1.0f + expf(-g[i])) * u[i];
}
