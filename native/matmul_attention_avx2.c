/* matmul_attention_avx2.c: AVX2/FMA attention for one query head, and the
 * SwiGLU product, with a vectorised exp (see matmul_attention.c for the
 * scalar reference and the contract). */
#include <immintrin.h>
#include <math.h>
#include <string.h>

#include "quant.h"

#define INLINE static inline __attribute__((always_inline))

/* exp(x) for 8 lanes: 2^n * p(r), x = n ln2 + r, |r| <= ln2/2, degree-6
 * polynomial (Cephes coefficients); ~1-2 ulp. Inputs below -87.3 give 0,
 * above 88 are clamped to 88 (so 2^n stays finite). */
INLINE __m256 exp8(__m256 x) {
    const __m256 hi = _mm256_set1_ps(88.0f), lo = _mm256_set1_ps(-87.3365478515625f);
    const __m256 underflow = _mm256_cmp_ps(x, lo, _CMP_LT_OQ);
    x = _mm256_max_ps(_mm256_min_ps(x, hi), lo);
    const __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                                     _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
    __m256 p = _mm256_set1_ps(1.9875691500e-4f);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
    p = _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
    /* n in [-126, 127] after the clamp: build 2^n in the exponent field */
    const __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    const __m256 y = _mm256_mul_ps(p, _mm256_castsi256_ps(e));
    return _mm256_andnot_ps(underflow, y);
}

INLINE float hsum8(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/* Lane sums of 8 vectors: lane i = sum of a[i]'s lanes. */
INLINE __m256 transpose_sum8(const __m256 a[8]) {
    const __m256 h0 = _mm256_hadd_ps(_mm256_hadd_ps(a[0], a[1]), _mm256_hadd_ps(a[2], a[3]));
    const __m256 h1 = _mm256_hadd_ps(_mm256_hadd_ps(a[4], a[5]), _mm256_hadd_ps(a[6], a[7]));
    return _mm256_add_ps(_mm256_permute2f128_ps(h0, h1, 0x20), _mm256_permute2f128_ps(h0, h1, 0x31));
}

void ps_attention_head_avx2(const float *q, const float *k, const float *v, int64_t kv_stride,
                            int64_t n_keys, int32_t hd, float scale, float *att, float *out) {
    /* 1. scores, 8 keys at a time */
    const __m256 sc = _mm256_set1_ps(scale);
    __m256 vmax = _mm256_set1_ps(-INFINITY);
    int64_t j = 0;
    for (; j + 8 <= n_keys; j += 8) {
        __m256 a[8];
        for (int i = 0; i < 8; i++) a[i] = _mm256_setzero_ps();
        for (int32_t d = 0; d < hd; d += 8) {
            const __m256 qv = _mm256_loadu_ps(q + d);
            for (int i = 0; i < 8; i++)
                a[i] = _mm256_fmadd_ps(qv, _mm256_loadu_ps(k + (j + i) * kv_stride + d), a[i]);
        }
        const __m256 s = _mm256_mul_ps(transpose_sum8(a), sc);
        _mm256_storeu_ps(att + j, s);
        vmax = _mm256_max_ps(vmax, s);
    }
    float mx = -INFINITY;
    {
        float m8[8];
        _mm256_storeu_ps(m8, vmax);
        for (int i = 0; i < 8; i++) mx = m8[i] > mx ? m8[i] : mx;
    }
    for (; j < n_keys; j++) {
        __m256 a = _mm256_setzero_ps();
        for (int32_t d = 0; d < hd; d += 8)
            a = _mm256_fmadd_ps(_mm256_loadu_ps(q + d), _mm256_loadu_ps(k + j * kv_stride + d), a);
        att[j] = hsum8(a) * scale;
        if (att[j] > mx) mx = att[j];
    }
    /* 2. softmax numerators and their sum */
    const __m256 vm = _mm256_set1_ps(mx);
    __m256 vsum = _mm256_setzero_ps();
    for (j = 0; j + 8 <= n_keys; j += 8) {
        const __m256 e = exp8(_mm256_sub_ps(_mm256_loadu_ps(att + j), vm));
        _mm256_storeu_ps(att + j, e);
        vsum = _mm256_add_ps(vsum, e);
    }
    float sum = hsum8(vsum);
    for (; j < n_keys; j++) {
        float e8[8];
        _mm256_storeu_ps(e8, exp8(_mm256_set1_ps(att[j] - mx)));
        att[j] = e8[0];
        sum += e8[0];
    }
    /* 3. out = sum_j p_j v_j, the output row in registers for head_dim <= 128 */
    const float inv = 1.0f / sum;
    if (hd <= 128) {
        __m256 o[16];
        const int nv = hd / 8;
        for (int i = 0; i < nv; i++) o[i] = _mm256_setzero_ps();
        for (j = 0; j < n_keys; j++) {
            const __m256 p = _mm256_set1_ps(att[j] * inv);
            const float *vj = v + j * kv_stride;
            for (int i = 0; i < nv; i++) o[i] = _mm256_fmadd_ps(p, _mm256_loadu_ps(vj + 8 * i), o[i]);
        }
        for (int i = 0; i < nv; i++) _mm256_storeu_ps(out + 8 * i, o[i]);
    } else {
        memset(out, 0, sizeof(float) * (size_t)hd);
        for (j = 0; j < n_keys; j++) {
            const __m256 p = _mm256_set1_ps(att[j] * inv);
            const float *vj = v + j * kv_stride;
            for (int32_t d = 0; d < hd; d += 8)
                _mm256_storeu_ps(out + d, _mm256_fmadd_ps(p, _mm256_loadu_ps(vj + d), _mm256_loadu_ps(out + d)));
        }
    }
}

void ps_silu_mul_avx2(float *g, const float *u, int64_t n) {
    const __m256 one = _mm256_set1_ps(1.0f), sign = _mm256_set1_ps(-0.0f);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        const __m256 x = _mm256_loadu_ps(g + i);
        const __m256 e = exp8(_mm256_xor_ps(x, sign)); /* exp(-x) */
        const __m256 s = _mm256_div_ps(x, _mm256_add_ps(one, e));
        _mm256_storeu_ps(g + i, _mm256_mul_ps(s, _mm256_loadu_ps(u + i)));
    }
    for (; i < n; i++) g[i] = g[i] / (1.0f + expf(-g[i])) * u[i];
}
