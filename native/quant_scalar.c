/* quant_scalar.c: the scalar reference level: weight kernels, activation
 * quantization, the small float GEMM and the SwiGLU product.
 *
 * These are the definition the SIMD levels are tested against: the same
 * activation quantization (bit-identical), the same per-block formulas
 * (quant.h), plain loops. They also run on CPUs without AVX2.
 */
#include "quant.h"

#include <math.h>
#include <string.h>

#include "kquant_blocks.h"
#include "util.h"

/* ---- activation quantization --------------------------------------------- */
void ps_quantize_q8a_scalar(const float *x, ps_block_q8a *y, int64_t n) {
    for (int64_t b = 0; b < n / PS_QK; b++, x += PS_QK) {
        float amax = 0.0f;
        for (int j = 0; j < PS_QK; j++) amax = fmaxf(amax, fabsf(x[j]));
        const float d = amax / 127.0f;
        const float id = amax != 0.0f ? 127.0f / amax : 0.0f;
        int sum = 0;
        for (int j = 0; j < PS_QK; j++) {
            int q = (int)nearbyintf(x[j] * id); /* nearest even, like _mm256_round_ps */
            y[b].qs[j] = (int8_t)q;
            sum += q;
        }
        y[b].d = d;
        y[b].s = d * (float)sum;
    }
}

/* The K-quants' activations; one definition for every level (the product
 * dominates, and one function cannot give two levels different bytes). */
void ps_quantize_q8k(const float *x, ps_block_q8k *y, int64_t n) {
    for (int64_t b = 0; b < n / PS_QK_K; b++, x += PS_QK_K) {
        float amax = 0.0f;
        for (int j = 0; j < PS_QK_K; j++) amax = fmaxf(amax, fabsf(x[j]));
        const float id = amax != 0.0f ? 127.0f / amax : 0.0f;
        for (int g = 0; g < PS_QK_K / 16; g++) {
            int sum = 0;
            for (int j = 16 * g; j < 16 * g + 16; j++) {
                const int q = (int)nearbyintf(x[j] * id);
                y[b].qs[j] = (int8_t)q;
                sum += q;
            }
            y[b].bsums[g] = (int16_t)sum;
        }
        y[b].d = amax / 127.0f;
    }
}

/* ---- small float GEMM for accum_rows --------------------------------------- */
void ps_gemm_acc_scalar(const float *A, int64_t lda, const float *B, int64_t ldb, float *Y,
                        int64_t ldy, int64_t m, int64_t k, int64_t n) {
    for (int64_t t = 0; t < m; t++)
        for (int64_t c = 0; c < n; c++) {
            float acc = 0.0f;
            for (int64_t j = 0; j < k; j++) acc += A[t * lda + j] * B[j * ldb + c];
            Y[t * ldy + c] += acc;
        }
}

/* ---- SwiGLU ------------------------------------------------------------------- */
void ps_silu_mul_scalar(float *g, const float *u, int64_t n) {
    if (!u) {
        for (int64_t i = 0; i < n; i++) g[i] = g[i] / (1.0f + expf(-g[i]));
        return;
    }
    for (int64_t i = 0; i < n; i++) g[i] = g[i] / (1.0f + expf(-g[i])) * u[i];
}

/* ---- dequantization (bit-exact with gguf-py) ------------------------------ */
static void dequant_f32(const void *src, float *dst, int64_t n) {
    memcpy(dst, src, (size_t)n * sizeof(float));
}

static void dequant_f16(const void *src, float *dst, int64_t n) {
    const uint16_t *s = src;
    for (int64_t i = 0; i < n; i++) dst[i] = ps_fp16_to_f32(s[i]);
}

static void dequant_bf16(const void *src, float *dst, int64_t n) {
    const uint16_t *s = src;
    for (int64_t i = 0; i < n; i++) dst[i] = ps_bf16_to_f32(s[i]);
}

static void dequant_q8_0(const void *src, float *dst, int64_t n) {
    const ps_block_q8_0 *b = src;
    for (int64_t i = 0; i < n / PS_QK; i++, dst += PS_QK) {
        const float d = ps_fp16_to_f32(b[i].d);
        for (int j = 0; j < PS_QK; j++) dst[j] = d * (float)b[i].qs[j];
    }
}

static void dequant_q4_0(const void *src, float *dst, int64_t n) {
    const ps_block_q4_0 *b = src;
    for (int64_t i = 0; i < n / PS_QK; i++, dst += PS_QK) {
        const float d = ps_fp16_to_f32(b[i].d);
        for (int j = 0; j < PS_QK / 2; j++) {
            dst[j] = d * (float)((b[i].qs[j] & 0x0f) - 8);
            dst[j + PS_QK / 2] = d * (float)((b[i].qs[j] >> 4) - 8);
        }
    }
}

static void dequant_q4_1(const void *src, float *dst, int64_t n) {
    const ps_block_q4_1 *b = src;
    for (int64_t i = 0; i < n / PS_QK; i++, dst += PS_QK) {
        const float d = ps_fp16_to_f32(b[i].d), m = ps_fp16_to_f32(b[i].m);
        for (int j = 0; j < PS_QK / 2; j++) {
            float lo = d * (float)(b[i].qs[j] & 0x0f);
            float hi = d * (float)(b[i].qs[j] >> 4);
            dst[j] = lo + m;
            dst[j + PS_QK / 2] = hi + m;
        }
    }
}

/* ---- axpy over one dequantized row segment ------------------------------- */
#define AXPY_VIA_DEQUANT(name, dq, type)                                    \
    static void name(const void *src, float a, float *y, int64_t n) {       \
        float buf[256];                                                     \
        for (int64_t c = 0; c < n; c += 256) {                              \
            int64_t m_ = n - c < 256 ? n - c : 256;                         \
            dq(src, buf, m_);                                               \
            for (int64_t j = 0; j < m_; j++) y[c + j] += a * buf[j];        \
            src = (const uint8_t *)src + ps_row_bytes(type, m_);            \
        }                                                                   \
    }
AXPY_VIA_DEQUANT(axpy_f32, dequant_f32, PS_TYPE_F32)
AXPY_VIA_DEQUANT(axpy_f16, dequant_f16, PS_TYPE_F16)
AXPY_VIA_DEQUANT(axpy_bf16, dequant_bf16, PS_TYPE_BF16)
AXPY_VIA_DEQUANT(axpy_q8_0, dequant_q8_0, PS_TYPE_Q8_0)
AXPY_VIA_DEQUANT(axpy_q4_0, dequant_q4_0, PS_TYPE_Q4_0)
AXPY_VIA_DEQUANT(axpy_q4_1, dequant_q4_1, PS_TYPE_Q4_1)
#define KQ_DEQUANT_ALIAS(t) static void dequant_##t(const void *s, float *d, int64_t n) { kq_dequant_##t(s, d, n); }
KQ_DEQUANT_ALIAS(q5_0)
KQ_DEQUANT_ALIAS(q5_1)
KQ_DEQUANT_ALIAS(q2_k)
KQ_DEQUANT_ALIAS(q3_k)
KQ_DEQUANT_ALIAS(q4_k)
KQ_DEQUANT_ALIAS(q5_k)
KQ_DEQUANT_ALIAS(q6_k)
AXPY_VIA_DEQUANT(axpy_q5_0, dequant_q5_0, PS_TYPE_Q5_0)
AXPY_VIA_DEQUANT(axpy_q5_1, dequant_q5_1, PS_TYPE_Q5_1)
AXPY_VIA_DEQUANT(axpy_q2_k, dequant_q2_k, PS_TYPE_Q2_K)
AXPY_VIA_DEQUANT(axpy_q3_k, dequant_q3_k, PS_TYPE_Q3_K)
AXPY_VIA_DEQUANT(axpy_q4_k, dequant_q4_k, PS_TYPE_Q4_K)
AXPY_VIA_DEQUANT(axpy_q5_k, dequant_q5_k, PS_TYPE_Q5_K)
AXPY_VIA_DEQUANT(axpy_q6_k, dequant_q6_k, PS_TYPE_Q6_K)

#define AXPY4_VIA_AXPY(name, one)                                                    \
    static void name(const void *const src[4], const float a[4], float *y, int64_t n) { \
        for (int r = 0; r < 4; r++) one(src[r], a[r], y, n);                             \
    }
AXPY4_VIA_AXPY(axpy_f32_4, axpy_f32)
AXPY4_VIA_AXPY(axpy_f16_4, axpy_f16)
AXPY4_VIA_AXPY(axpy_bf16_4, axpy_bf16)
AXPY4_VIA_AXPY(axpy_q8_0_4, axpy_q8_0)
AXPY4_VIA_AXPY(axpy_q4_0_4, axpy_q4_0)
AXPY4_VIA_AXPY(axpy_q4_1_4, axpy_q4_1)
AXPY4_VIA_AXPY(axpy_q5_0_4, axpy_q5_0)
AXPY4_VIA_AXPY(axpy_q5_1_4, axpy_q5_1)
AXPY4_VIA_AXPY(axpy_q2_k_4, axpy_q2_k)
AXPY4_VIA_AXPY(axpy_q3_k_4, axpy_q3_k)
AXPY4_VIA_AXPY(axpy_q4_k_4, axpy_q4_k)
AXPY4_VIA_AXPY(axpy_q5_k_4, axpy_q5_k)
AXPY4_VIA_AXPY(axpy_q6_k_4, axpy_q6_k)

/* ---- float-weight products ----------------------------------------------- */
/* One row at a time through a dequantized chunk; activations stay float. */
#define GEMM_FLOAT(name, dq, esize)                                                  \
    static void name(const uint8_t *W, size_t row_bytes, int64_t n_cols,             \
                     const int32_t *idx, int64_t r0, int64_t r1, const void *Xv,     \
                     int32_t n_tok, float *Y, int64_t ldy) {                         \
        const float *X = Xv;                                                         \
        float buf[256];                                                              \
        for (int64_t pos = r0; pos < r1; pos++) {                                    \
            const int64_t r = idx ? idx[pos] : pos;                                  \
            const uint8_t *row = W + (size_t)r * row_bytes;                          \
            for (int32_t t = 0; t < n_tok; t++) {                                    \
                const float *x = X + (size_t)t * n_cols;                             \
                float acc = 0.0f;                                                    \
                for (int64_t c = 0; c < n_cols; c += 256) {                          \
                    int64_t m = n_cols - c < 256 ? n_cols - c : 256;                 \
                    dq(row + (size_t)c * esize, buf, m);                             \
                    for (int64_t j = 0; j < m; j++) acc += buf[j] * x[c + j];        \
                }                                                                    \
                Y[(size_t)t * ldy + r] = acc;                                        \
            }                                                                        \
        }                                                                            \
    }
GEMM_FLOAT(gemm_f32, dequant_f32, 4)
GEMM_FLOAT(gemm_f16, dequant_f16, 2)
GEMM_FLOAT(gemm_bf16, dequant_bf16, 2)

/* ---- integer products against q8a activations ---------------------------- */
static void gemm_q8_0(const uint8_t *W, size_t row_bytes, int64_t n_cols, const int32_t *idx,
                      int64_t r0, int64_t r1, const void *Xv, int32_t n_tok, float *Y, int64_t ldy) {
    const int64_t nb = n_cols / PS_QK;
    for (int64_t pos = r0; pos < r1; pos++) {
        const int64_t r = idx ? idx[pos] : pos;
        const ps_block_q8_0 *w = (const void *)(W + (size_t)r * row_bytes);
        for (int32_t t = 0; t < n_tok; t++) {
            const ps_block_q8a *x = (const ps_block_q8a *)Xv + (size_t)t * nb;
            float acc = 0.0f;
            for (int64_t b = 0; b < nb; b++) {
                int isum = 0;
                for (int j = 0; j < PS_QK; j++) isum += w[b].qs[j] * x[b].qs[j];
                acc += ps_fp16_to_f32(w[b].d) * x[b].d * (float)isum;
            }
            Y[(size_t)t * ldy + r] = acc;
        }
    }
}

/* Q4_0, Q4_1, Q5_0 and Q5_1 share one loop: dw*dx*sum(u*x) + c*s with u
 * the unsigned 4- or 5-bit quant and c = -8*dw or -16*dw, or m. */
static inline void gemm_q45(const uint8_t *W, size_t row_bytes, int64_t n_cols, const int32_t *idx,
                            int64_t r0, int64_t r1, const void *Xv, int32_t n_tok, float *Y,
                            int64_t ldy, int has_min, int q5) {
    const int64_t nb = n_cols / PS_QK;
    const size_t bbytes = q5 ? (has_min ? sizeof(ps_block_q5_1) : sizeof(ps_block_q5_0))
                             : (has_min ? sizeof(ps_block_q4_1) : sizeof(ps_block_q4_0));
    const float offset = q5 ? -16.0f : -8.0f;
    for (int64_t pos = r0; pos < r1; pos++) {
        const int64_t r = idx ? idx[pos] : pos;
        const uint8_t *row = W + (size_t)r * row_bytes;
        for (int32_t t = 0; t < n_tok; t++) {
            const ps_block_q8a *x = (const ps_block_q8a *)Xv + (size_t)t * nb;
            float acc = 0.0f, corr = 0.0f;
            for (int64_t b = 0; b < nb; b++) {
                const uint8_t *blk = row + (size_t)b * bbytes;
                uint16_t dh, mh = 0;
                memcpy(&dh, blk, 2);
                if (has_min) memcpy(&mh, blk + 2, 2);
                const uint8_t *q = blk + (has_min ? 4 : 2); /* Q5: qh, then the nibbles */
                int isum = 0;
                for (int e = 0; e < PS_QK; e++)
                    isum += (q5 ? kq_u_q5(q, q + 4, e) : (q[e % 16] >> (4 * (e / 16))) & 0x0f) * x[b].qs[e];
                const float dw = ps_fp16_to_f32(dh);
                const float c = has_min ? ps_fp16_to_f32(mh) : offset * dw;
                acc += dw * x[b].d * (float)isum;
                corr += c * x[b].s;
            }
            Y[(size_t)t * ldy + r] = acc + corr;
        }
    }
}

#define GEMM_Q45(t, has_min, q5)                                                                       \
    static void gemm_##t(const uint8_t *W, size_t rb, int64_t n_cols, const int32_t *idx, int64_t r0, \
                         int64_t r1, const void *X, int32_t n_tok, float *Y, int64_t ldy) {           \
        gemm_q45(W, rb, n_cols, idx, r0, r1, X, n_tok, Y, ldy, has_min, q5);                           \
    }
GEMM_Q45(q4_0, 0, 0)
GEMM_Q45(q4_1, 1, 0)
GEMM_Q45(q5_0, 0, 1)
GEMM_Q45(q5_1, 1, 1)

/* K-quants against q8k activations (kquant_blocks.h's integer form): per
 * block acc += (D*dx) * isum, corr += (M*dx) * msum; result acc - corr.
 * Each block is decoded once per tile of KQ_TOK tokens. */
#define KQ_TOK 64
static inline void gemm_kq(const uint8_t *W, size_t row_bytes, int64_t n_cols, const int32_t *idx,
                           int64_t r0, int64_t r1, const void *Xv, int32_t n_tok, float *Y,
                           int64_t ldy, int32_t type) {
    const int64_t nb = n_cols / PS_QK_K;
    const size_t bb = (size_t)ps_type_get(type)->block_bytes;
    const ps_block_q8k *X = Xv;
    kq_decoded k;
    float acc[KQ_TOK], corr[KQ_TOK];
    for (int64_t pos = r0; pos < r1; pos++) {
        const int64_t r = idx ? idx[pos] : pos;
        const uint8_t *row = W + (size_t)r * row_bytes;
        for (int32_t t0 = 0; t0 < n_tok; t0 += KQ_TOK) {
            const int32_t nt = n_tok - t0 < KQ_TOK ? n_tok - t0 : KQ_TOK;
            for (int32_t t = 0; t < nt; t++) acc[t] = corr[t] = 0.0f;
            for (int64_t b = 0; b < nb; b++) {
                kq_decode(type, row + (size_t)b * bb, &k);
                for (int32_t t = 0; t < nt; t++) {
                    const ps_block_q8k *x = X + (size_t)(t0 + t) * nb + b;
                    int32_t isum = 0, msum = 0;
                    for (int j = 0; j < 16; j++) {
                        int32_t dot = 0;
                        for (int e = 16 * j; e < 16 * j + 16; e++) dot += k.u[e] * x->qs[e];
                        isum += k.s[j] * dot;
                        msum += k.m[j] * x->bsums[j];
                    }
                    if (!k.has_min) isum -= msum;
                    acc[t] += k.D * x->d * (float)isum;
                    if (k.has_min) corr[t] += k.M * x->d * (float)msum;
                }
            }
            for (int32_t t = 0; t < nt; t++) Y[(size_t)(t0 + t) * ldy + r] = acc[t] - corr[t];
        }
    }
}

#define GEMM_KQ(t, T)                                                                                   \
    static void gemm_##t(const uint8_t *W, size_t rb, int64_t n_cols, const int32_t *idx, int64_t r0,  \
                         int64_t r1, const void *X, int32_t n_tok, float *Y, int64_t ldy) {            \
        gemm_kq(W, rb, n_cols, idx, r0, r1, X, n_tok, Y, ldy, PS_TYPE_##T);                             \
    }
GEMM_KQ(q2_k, Q2_K)
GEMM_KQ(q3_k, Q3_K)
GEMM_KQ(q4_k, Q4_K)
GEMM_KQ(q5_k, Q5_K)
GEMM_KQ(q6_k, Q6_K)

/* ---- the scalar table (quant.h) ---------------------------------------------- */
const ps_type_kernels ps_type_kernels_scalar[PS_TYPE_COUNT] = {
    PS_KERNEL_ROW(F32, f32, 0), PS_KERNEL_ROW(F16, f16, 0), PS_KERNEL_ROW(BF16, bf16, 0),
    PS_KERNEL_ROW(Q8_0, q8_0, 1), PS_KERNEL_ROW(Q4_0, q4_0, 1), PS_KERNEL_ROW(Q4_1, q4_1, 1),
    PS_KERNEL_ROW(Q5_0, q5_0, PS_ACT_Q8A), PS_KERNEL_ROW(Q5_1, q5_1, PS_ACT_Q8A),
    PS_KERNEL_ROW(Q2_K, q2_k, PS_ACT_Q8K), PS_KERNEL_ROW(Q3_K, q3_k, PS_ACT_Q8K),
    PS_KERNEL_ROW(Q4_K, q4_k, PS_ACT_Q8K), PS_KERNEL_ROW(Q5_K, q5_k, PS_ACT_Q8K),
    PS_KERNEL_ROW(Q6_K, q6_k, PS_ACT_Q8K),
};
