/* vec_avx2.c: the AVX2 level's operations outside the weight tables
 * (quant.h's ps_level_ops; the AVX-512 level uses them too): activation
 * quantization, the small float GEMM of accum_rows and the SwiGLU product. */
#include "math_avx2.h"
#include "simd_x86.h"

/* Same float operations as ps_quantize_q8a_scalar, so the bytes are identical. */
void ps_quantize_q8a_avx2(const float *x, ps_block_q8a *y, int64_t n) {
    const __m256 sign = _mm256_set1_ps(-0.0f);
    for (int64_t b = 0; b < n / PS_QK; b++, x += PS_QK) {
        __m256 v0 = _mm256_loadu_ps(x), v1 = _mm256_loadu_ps(x + 8);
        __m256 v2 = _mm256_loadu_ps(x + 16), v3 = _mm256_loadu_ps(x + 24);
        __m256 m = _mm256_max_ps(_mm256_max_ps(_mm256_andnot_ps(sign, v0), _mm256_andnot_ps(sign, v1)),
                                 _mm256_max_ps(_mm256_andnot_ps(sign, v2), _mm256_andnot_ps(sign, v3)));
        __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
        m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
        m4 = _mm_max_ss(m4, _mm_movehdup_ps(m4));
        const float amax = _mm_cvtss_f32(m4);
        const float d = amax / 127.0f;
        const float id = amax != 0.0f ? 127.0f / amax : 0.0f;
        const __m256 mul = _mm256_set1_ps(id);
        __m256i i0 = _mm256_cvtps_epi32(_mm256_round_ps(_mm256_mul_ps(v0, mul), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
        __m256i i1 = _mm256_cvtps_epi32(_mm256_round_ps(_mm256_mul_ps(v1, mul), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
        __m256i i2 = _mm256_cvtps_epi32(_mm256_round_ps(_mm256_mul_ps(v2, mul), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
        __m256i i3 = _mm256_cvtps_epi32(_mm256_round_ps(_mm256_mul_ps(v3, mul), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
        /* block sum from the int32 lanes (exact) */
        __m256i s = _mm256_add_epi32(_mm256_add_epi32(i0, i1), _mm256_add_epi32(i2, i3));
        __m128i s4 = _mm_add_epi32(_mm256_castsi256_si128(s), _mm256_extracti128_si256(s, 1));
        s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0x4e));
        s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0xb1));
        /* pack to int8 in element order: packs interleave 128-bit lanes, fix with a permute */
        __m256i p01 = _mm256_packs_epi32(i0, i1), p23 = _mm256_packs_epi32(i2, i3);
        __m256i p = _mm256_packs_epi16(p01, p23);
        p = _mm256_permutevar8x32_epi32(p, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
        _mm256_storeu_si256((__m256i *)y[b].qs, p);
        y[b].d = d;
        y[b].s = d * (float)_mm_cvtsi128_si32(s4);
    }
}

/* The K-quants' activations (quant.h's ps_quantize_q8k): the scalar
 * function's float operations (max of |x|, one multiply and round to
 * nearest even per element), so the bytes are its bytes. */
void ps_quantize_q8k_avx2(const float *x, ps_block_q8k *y, int64_t n) {
    const __m256 sign = _mm256_set1_ps(-0.0f);
    for (int64_t b = 0; b < n / PS_QK_K; b++, x += PS_QK_K) {
        __m256 m = _mm256_setzero_ps();
        for (int j = 0; j < PS_QK_K; j += 8) m = _mm256_max_ps(m, _mm256_andnot_ps(sign, _mm256_loadu_ps(x + j)));
        __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
        m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
        m4 = _mm_max_ss(m4, _mm_movehdup_ps(m4));
        const float amax = _mm_cvtss_f32(m4);
        const __m256 mul = _mm256_set1_ps(amax != 0.0f ? 127.0f / amax : 0.0f);
        for (int j = 0; j < PS_QK_K; j += 32) { /* two groups of 16 */
            __m256i i[4];
            for (int k = 0; k < 4; k++)
                i[k] = _mm256_cvtps_epi32(_mm256_round_ps(_mm256_mul_ps(_mm256_loadu_ps(x + j + 8 * k), mul),
                                                          _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
            /* the groups' sums (exact), then the int8 in element order (as ps_quantize_q8a_avx2) */
            __m256i s = _mm256_hadd_epi32(_mm256_add_epi32(i[0], i[1]), _mm256_add_epi32(i[2], i[3]));
            s = _mm256_hadd_epi32(s, s); /* per 128-bit lane: half of group 0, of group 1, again */
            const __m128i s2 = _mm_add_epi32(_mm256_castsi256_si128(s), _mm256_extracti128_si256(s, 1));
            y[b].bsums[j / 16] = (int16_t)_mm_cvtsi128_si32(s2);
            y[b].bsums[j / 16 + 1] = (int16_t)_mm_extract_epi32(s2, 1);
            __m256i p = _mm256_packs_epi16(_mm256_packs_epi32(i[0], i[1]), _mm256_packs_epi32(i[2], i[3]));
            p = _mm256_permutevar8x32_epi32(p, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
            _mm256_storeu_si256((__m256i *)(y[b].qs + j), p);
        }
        y[b].d = amax / 127.0f;
    }
}

/* ---- small float GEMM for accum_rows: 6 tokens x 16 columns per tile -------- */
INLINE void gemm_acc_tile(const float *A, int64_t lda, const float *B, int64_t ldb, float *Y,
                          int64_t ldy, int64_t k, const int RN) {
    __m256 acc[6][2];
    for (int t = 0; t < RN; t++) acc[t][0] = acc[t][1] = _mm256_setzero_ps();
    for (int64_t j = 0; j < k; j++) {
        const __m256 b0 = _mm256_loadu_ps(B + j * ldb), b1 = _mm256_loadu_ps(B + j * ldb + 8);
        for (int t = 0; t < RN; t++) {
            const __m256 a = _mm256_broadcast_ss(A + t * lda + j);
            acc[t][0] = _mm256_fmadd_ps(a, b0, acc[t][0]);
            acc[t][1] = _mm256_fmadd_ps(a, b1, acc[t][1]);
        }
    }
    for (int t = 0; t < RN; t++) {
        _mm256_storeu_ps(Y + t * ldy, _mm256_add_ps(_mm256_loadu_ps(Y + t * ldy), acc[t][0]));
        _mm256_storeu_ps(Y + t * ldy + 8, _mm256_add_ps(_mm256_loadu_ps(Y + t * ldy + 8), acc[t][1]));
    }
}

void ps_gemm_acc_avx2(const float *A, int64_t lda, const float *B, int64_t ldb, float *Y,
                      int64_t ldy, int64_t m, int64_t k, int64_t n) {
    int64_t c = 0;
    for (; c + 16 <= n; c += 16) {
        int64_t t = 0;
        for (; t + 6 <= m; t += 6) gemm_acc_tile(A + t * lda, lda, B + c, ldb, Y + t * ldy + c, ldy, k, 6);
        for (; t < m; t++) gemm_acc_tile(A + t * lda, lda, B + c, ldb, Y + t * ldy + c, ldy, k, 1);
    }
    /* leftover columns: the same per-element steps (fused multiply-add chain, then add) */
    for (; c < n; c++)
        for (int64_t t = 0; t < m; t++) {
            float acc = 0.0f;
            for (int64_t j = 0; j < k; j++) acc = fmaf(A[t * lda + j], B[j * ldb + c], acc);
            Y[t * ldy + c] += acc;
        }
}

void ps_silu_mul_avx2(float *g, const float *u, int64_t n) {
    const __m256 one = _mm256_set1_ps(1.0f), sign = _mm256_set1_ps(-0.0f);
    int64_t i = 0;
    if (!u) { /* silu alone: the same steps without the product */
        for (; i + 8 <= n; i += 8) {
            const __m256 x = _mm256_loadu_ps(g + i);
            _mm256_storeu_ps(g + i, _mm256_div_ps(x, _mm256_add_ps(one, exp8(_mm256_xor_ps(x, sign)))));
        }
        for (; i < n; i++) g[i] = g[i] / (1.0f + expf(-g[i]));
        return;
    }
    for (; i + 8 <= n; i += 8) {
        const __m256 x = _mm256_loadu_ps(g + i);
        const __m256 e = exp8(_mm256_xor_ps(x, sign)); /* exp(-x) */
        const __m256 s = _mm256_div_ps(x, _mm256_add_ps(one, e));
        _mm256_storeu_ps(g + i, _mm256_mul_ps(s, _mm256_loadu_ps(u + i)));
    }
    for (; i < n; i++) g[i] = g[i] / (1.0f + expf(-g[i])) * u[i];
}

void ps_exp_avx2(float *x, int64_t n) {
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(x + i, exp8(_mm256_loadu_ps(x + i)));
    for (; i < n; i++) x[i] = expf(x[i]);
}
