/* vec_neon.c: the NEON levels' operations outside the weight tables
 * (quant.h's ps_level_ops): activation quantization and the small float
 * GEMM of accum_rows with the scalar reference's operations (the same
 * bits), and the SwiGLU product with the vectorised exp of simd_neon.h. */
#include <math.h>

#include "simd_neon.h"

/* The scalar quantizer's steps: max of |x| (maxnm ignores NaN as fmaxf
 * does), the same divisions, round to nearest even, the exact int sum. */
void ps_quantize_q8a_neon(const float *x, ps_block_q8a *y, int64_t n) {
    for (int64_t b = 0; b < n / PS_QK; b++, x += PS_QK) {
        float32x4_t v[8];
        for (int k = 0; k < 8; k++) v[k] = vld1q_f32(x + 4 * k);
        float32x4_t m = vabsq_f32(v[0]);
        for (int k = 1; k < 8; k++) m = vmaxnmq_f32(m, vabsq_f32(v[k]));
        const float amax = vmaxnmvq_f32(m);
        const float d = amax / 127.0f;
        const float id = amax != 0.0f ? 127.0f / amax : 0.0f;
        int32x4_t q[8], s = vdupq_n_s32(0);
        for (int k = 0; k < 8; k++) {
            q[k] = vcvtnq_s32_f32(vmulq_n_f32(v[k], id));
            s = vaddq_s32(s, q[k]);
        }
        for (int h = 0; h < 2; h++) {
            const int16x8_t a = vcombine_s16(vqmovn_s32(q[4 * h]), vqmovn_s32(q[4 * h + 1]));
            const int16x8_t c = vcombine_s16(vqmovn_s32(q[4 * h + 2]), vqmovn_s32(q[4 * h + 3]));
            vst1q_s8(y[b].qs + 16 * h, vcombine_s8(vqmovn_s16(a), vqmovn_s16(c)));
        }
        y[b].d = d;
        y[b].s = d * (float)vaddvq_s32(s);
    }
}

/* ---- small float GEMM for accum_rows: RN tokens x 8 columns per tile --------
 * Each output's terms are added in order of j into its own lane, then to Y. */
INLINE void gemm_acc_tile(const float *A, int64_t lda, const float *B, int64_t ldb, float *Y, int64_t ldy,
                          int64_t k, const int RN) {
    float32x4_t acc[4][2];
    for (int t = 0; t < RN; t++) acc[t][0] = acc[t][1] = vdupq_n_f32(0.0f);
    for (int64_t j = 0; j < k; j++) {
        const float32x4_t b0 = vld1q_f32(B + j * ldb), b1 = vld1q_f32(B + j * ldb + 4);
        for (int t = 0; t < RN; t++) {
            const float a = A[t * lda + j];
            acc[t][0] = vaddq_f32(acc[t][0], vmulq_n_f32(b0, a));
            acc[t][1] = vaddq_f32(acc[t][1], vmulq_n_f32(b1, a));
        }
    }
    for (int t = 0; t < RN; t++) {
        vst1q_f32(Y + t * ldy, vaddq_f32(vld1q_f32(Y + t * ldy), acc[t][0]));
        vst1q_f32(Y + t * ldy + 4, vaddq_f32(vld1q_f32(Y + t * ldy + 4), acc[t][1]));
    }
}

void ps_gemm_acc_neon(const float *A, int64_t lda, const float *B, int64_t ldb, float *Y,
                      int64_t ldy, int64_t m, int64_t k, int64_t n) {
    int64_t c = 0;
    for (; c + 8 <= n; c += 8) {
        int64_t t = 0;
        for (; t + 4 <= m; t += 4) gemm_acc_tile(A + t * lda, lda, B + c, ldb, Y + t * ldy + c, ldy, k, 4);
        for (; t < m; t++) gemm_acc_tile(A + t * lda, lda, B + c, ldb, Y + t * ldy + c, ldy, k, 1);
    }
    if (c < n) ps_gemm_acc_scalar(A, lda, B + c, ldb, Y + c, ldy, m, k, n - c); /* leftover columns */
}

/* ---- SwiGLU: g / (1 + exp(-g)) * u, exp from exp4 ------------------------------ */
void ps_silu_mul_neon(float *g, const float *u, int64_t n) {
    const float32x4_t one = vdupq_n_f32(1.0f);
    int64_t i = 0;
    for (; i + 4 <= n; i += 4) {
        const float32x4_t x = vld1q_f32(g + i);
        const float32x4_t s = vdivq_f32(x, vaddq_f32(one, exp4(vnegq_f32(x))));
        vst1q_f32(g + i, u ? vmulq_f32(s, vld1q_f32(u + i)) : s);
    }
    for (; i < n; i++) g[i] = u ? g[i] / (1.0f + expf(-g[i])) * u[i] : g[i] / (1.0f + expf(-g[i]));
}

void ps_exp_neon(float *x, int64_t n) {
    int64_t i = 0;
    for (; i + 4 <= n; i += 4) vst1q_f32(x + i, exp4(vld1q_f32(x + i)));
    for (; i < n; i++) x[i] = expf(x[i]);
}
