/* attention_avx2.c: the AVX2/FMA level's attention of one query head over
 * the F32 KV cache (quant.h's ps_attn_*_fn, for head_dim a multiple of 8;
 * attention.c has the scalar reference). */
#include <immintrin.h>
#include <math.h>

#include "math_avx2.h"
#include "quant.h"

/* att[j] = scale * (q . k_j) for j < n, k_j = k + j*stride; returns the max.
 * Four keys at a time, so the horizontal sums share their shuffles. */
float ps_attn_scores_avx2(const float *q, const float *k, int64_t stride, int64_t n, int hd,
                          float scale, float *att) {
    const __m128 vscale = _mm_set1_ps(scale);
    __m128 vmax = _mm_set1_ps(-INFINITY);
    int64_t j = 0;
    for (; j + 4 <= n; j += 4) {
        const float *k0 = k + j * stride, *k1 = k0 + stride, *k2 = k1 + stride, *k3 = k2 + stride;
        __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
        __m256 a2 = _mm256_setzero_ps(), a3 = _mm256_setzero_ps();
        for (int d = 0; d < hd; d += 8) {
            const __m256 qv = _mm256_loadu_ps(q + d);
            a0 = _mm256_fmadd_ps(qv, _mm256_loadu_ps(k0 + d), a0);
            a1 = _mm256_fmadd_ps(qv, _mm256_loadu_ps(k1 + d), a1);
            a2 = _mm256_fmadd_ps(qv, _mm256_loadu_ps(k2 + d), a2);
            a3 = _mm256_fmadd_ps(qv, _mm256_loadu_ps(k3 + d), a3);
        }
        /* per 128-bit half: [sum a0, sum a1, sum a2, sum a3]; then add the halves */
        const __m256 h = _mm256_hadd_ps(_mm256_hadd_ps(a0, a1), _mm256_hadd_ps(a2, a3));
        __m128 s = _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
        s = _mm_mul_ps(s, vscale);
        _mm_storeu_ps(att + j, s);
        vmax = _mm_max_ps(vmax, s);
    }
    vmax = _mm_max_ps(vmax, _mm_movehl_ps(vmax, vmax));
    vmax = _mm_max_ss(vmax, _mm_shuffle_ps(vmax, vmax, 1));
    float mx = _mm_cvtss_f32(vmax);
    for (; j < n; j++) {
        const float *kj = k + j * stride;
        __m256 a = _mm256_setzero_ps();
        for (int d = 0; d < hd; d += 8) a = _mm256_fmadd_ps(_mm256_loadu_ps(q + d), _mm256_loadu_ps(kj + d), a);
        __m128 s = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
        s = _mm_hadd_ps(s, s);
        s = _mm_hadd_ps(s, s);
        att[j] = _mm_cvtss_f32(s) * scale;
        if (att[j] > mx) mx = att[j];
    }
    return mx;
}

/* att[j] = exp(att[j] - mx) for j < n; returns the sum. */
float ps_attn_softmax_avx2(float *att, int64_t n, float mx) {
    const __m256 vmx = _mm256_set1_ps(mx);
    __m256 acc = _mm256_setzero_ps();
    int64_t j = 0;
    for (; j + 8 <= n; j += 8) {
        const __m256 e = exp8(_mm256_sub_ps(_mm256_loadu_ps(att + j), vmx));
        _mm256_storeu_ps(att + j, e);
        acc = _mm256_add_ps(acc, e);
    }
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(acc), _mm256_extractf128_ps(acc, 1));
    s = _mm_hadd_ps(s, s);
    s = _mm_hadd_ps(s, s);
    float sum = _mm_cvtss_f32(s);
    for (; j < n; j++) {
        att[j] = expf(att[j] - mx);
        sum += att[j];
    }
    return sum;
}

/* out[0..hd) = inv * sum_j att[j] * v_j, v_j = v + j*stride. A 64-wide
 * stretch of the output stays in eight registers across all keys. */
void ps_attn_values_avx2(const float *att, float inv, const float *v, int64_t stride, int64_t n, int hd,
                         float *out) {
    const __m256 vinv = _mm256_set1_ps(inv);
    int d0 = 0;
    for (; d0 + 64 <= hd; d0 += 64) {
        __m256 acc[8];
        for (int b = 0; b < 8; b++) acc[b] = _mm256_setzero_ps();
        for (int64_t j = 0; j < n; j++) {
            const __m256 p = _mm256_set1_ps(att[j]);
            const float *vj = v + j * stride + d0;
            for (int b = 0; b < 8; b++) acc[b] = _mm256_fmadd_ps(p, _mm256_loadu_ps(vj + 8 * b), acc[b]);
        }
        for (int b = 0; b < 8; b++) _mm256_storeu_ps(out + d0 + 8 * b, _mm256_mul_ps(acc[b], vinv));
    }
    for (; d0 < hd; d0 += 8) {
        __m256 acc = _mm256_setzero_ps();
        for (int64_t j = 0; j < n; j++)
            acc = _mm256_fmadd_ps(_mm256_set1_ps(att[j]), _mm256_loadu_ps(v + j * stride + d0), acc);
        _mm256_storeu_ps(out + d0, _mm256_mul_ps(acc, vinv));
    }
}
