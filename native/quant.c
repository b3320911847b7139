/* quant.c: type traits, SIMD selection and the scalar reference kernels.
 *
 * The scalar kernels are the definition the AVX2 ones are tested against:
 * same activation quantization (bit-identical), same per-block formulas
 * (see quant.h), plain loops. They also run on CPUs without AVX2.
 */
#include "quant.h"

#include <math.h>
#include <stdatomic.h>
#include <string.h>

#include "prosparse.h"
#include "util.h"

/* ---- type traits ---------------------------------------------------------- */
static const ps_type_traits traits_f32 = {"f32", 1, 4, 1};
static const ps_type_traits traits_f16 = {"f16", 1, 2, 1};
static const ps_type_traits traits_bf16 = {"bf16", 1, 2, 1};
static const ps_type_traits traits_q8_0 = {"q8_0", PS_QK, sizeof(ps_block_q8_0), 1};
static const ps_type_traits traits_q4_0 = {"q4_0", PS_QK, sizeof(ps_block_q4_0), 1};
static const ps_type_traits traits_q4_1 = {"q4_1", PS_QK, sizeof(ps_block_q4_1), 1};
/* Known ggml ids we do not run (so error messages can name them). */
static const ps_type_traits traits_q5_0 = {"q5_0", 32, 22, 0};
static const ps_type_traits traits_q5_1 = {"q5_1", 32, 24, 0};
static const ps_type_traits traits_q8_1 = {"q8_1", 32, 36, 0};
static const ps_type_traits traits_q2_k = {"q2_k", 256, 84, 0};
static const ps_type_traits traits_q3_k = {"q3_k", 256, 110, 0};
static const ps_type_traits traits_q4_k = {"q4_k", 256, 144, 0};
static const ps_type_traits traits_q5_k = {"q5_k", 256, 176, 0};
static const ps_type_traits traits_q6_k = {"q6_k", 256, 210, 0};
static const ps_type_traits traits_q8_k = {"q8_k", 256, 292, 0};

const ps_type_traits *ps_type_get(int32_t type) {
    switch (type) {
    case PS_TYPE_F32: return &traits_f32;
    case PS_TYPE_F16: return &traits_f16;
    case PS_TYPE_BF16: return &traits_bf16;
    case PS_TYPE_Q8_0: return &traits_q8_0;
    case PS_TYPE_Q4_0: return &traits_q4_0;
    case PS_TYPE_Q4_1: return &traits_q4_1;
    case 6: return &traits_q5_0;
    case 7: return &traits_q5_1;
    case 9: return &traits_q8_1;
    case 10: return &traits_q2_k;
    case 11: return &traits_q3_k;
    case 12: return &traits_q4_k;
    case 13: return &traits_q5_k;
    case 14: return &traits_q6_k;
    case 15: return &traits_q8_k;
    default: return NULL;
    }
}

size_t ps_row_bytes(int32_t type, int64_t n) {
    const ps_type_traits *t = ps_type_get(type);
    if (!t || n < 0 || n % t->block_size) return 0;
    return (size_t)(n / t->block_size) * (size_t)t->block_bytes;
}

/* ---- SIMD selection --------------------------------------------------------- */
static atomic_int simd_level = -1; /* -1: not chosen yet */

int ps_simd_supported(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_cpu_init();
    if (!__builtin_cpu_supports("avx2") || !__builtin_cpu_supports("fma") ||
        !__builtin_cpu_supports("f16c"))
        return PS_SIMD_SCALAR;
    /* (the cpuid check includes the OS saving the AVX-512 registers) */
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512vnni"))
        return PS_SIMD_AVX512;
    return PS_SIMD_AVX2;
#endif
    return PS_SIMD_SCALAR;
}

int ps_simd_set(int level) {
    int best = ps_simd_supported();
    if (level < PS_SIMD_SCALAR) level = PS_SIMD_SCALAR;
    if (level > best) level = best;
    atomic_store(&simd_level, level);
    return level;
}

int ps_simd_get(void) { return ps_simd_level(); }

int ps_simd_level(void) {
    int l = atomic_load_explicit(&simd_level, memory_order_relaxed);
    if (l < 0) l = ps_simd_set(ps_simd_supported());
    return l;
}

const ps_kernels *ps_kernels_get(int32_t type, int level) {
    const ps_kernels *k = NULL;
    if (level >= PS_SIMD_AVX512) k = ps_kernels_avx512(type);
    else if (level >= PS_SIMD_AVX2) k = ps_kernels_avx2(type);
    return k ? k : ps_kernels_scalar(type);
}

ps_quantize_fn ps_quantize_q8a_get(int level) {
    return level >= PS_SIMD_AVX2 ? ps_quantize_q8a_avx2 : ps_quantize_q8a_scalar;
}

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

/* ---- packed (row-interleaved) matrices (quant.h) ---------------------------- */
size_t ps_packed_bytes(int32_t type, int64_t n_rows, int64_t n_cols) {
    if ((type != PS_TYPE_Q4_0 && type != PS_TYPE_Q4_1 && type != PS_TYPE_Q8_0) || n_rows <= 0 || n_cols <= 0 ||
        n_cols % PS_QK)
        return 0;
    const int64_t tiles = (n_rows + PS_PACK_ROWS - 1) / PS_PACK_ROWS;
    return (size_t)tiles * PS_PACK_ROWS * ps_row_bytes(type, n_cols);
}

void ps_pack_matrix(int32_t type, const uint8_t *W, int64_t n_rows, int64_t n_cols, uint8_t *dst) {
    const int has_min = type == PS_TYPE_Q4_1, q8 = type == PS_TYPE_Q8_0;
    const size_t bb = q8 ? sizeof(ps_block_q8_0) : has_min ? sizeof(ps_block_q4_1) : sizeof(ps_block_q4_0);
    const size_t scale_bytes = has_min ? 4 : 2, rb = ps_row_bytes(type, n_cols);
    const int n_dwords = q8 ? 8 : 4;
    const int64_t nb = n_cols / PS_QK, tiles = (n_rows + PS_PACK_ROWS - 1) / PS_PACK_ROWS;
    for (int64_t t = 0; t < tiles; t++)
        for (int64_t b = 0; b < nb; b++) {
            uint8_t *d = dst + ((size_t)t * nb + b) * PS_PACK_ROWS * bb;
            uint8_t *q = d + PS_PACK_ROWS * scale_bytes;
            for (int r = 0; r < PS_PACK_ROWS; r++) {
                const int64_t row = t * PS_PACK_ROWS + r;
                uint8_t blk[sizeof(ps_block_q8_0)] = {0}; /* padding rows: all zero */
                if (row < n_rows) memcpy(blk, W + (size_t)row * rb + (size_t)b * bb, bb);
                if (q8)
                    for (int j = 0; j < PS_QK; j++) blk[2 + j] ^= 0x80;
                memcpy(d + 2 * r, blk, 2);                                      /* d */
                if (has_min) memcpy(d + 2 * PS_PACK_ROWS + 2 * r, blk + 2, 2); /* m */
                for (int k = 0; k < n_dwords; k++) memcpy(q + 64 * k + 4 * r, blk + scale_bytes + 4 * k, 4);
            }
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
#define AXPY_VIA_DEQUANT(name, dq, chunk)                                   \
    static void name(const void *src, float a, float *y, int64_t n) {       \
        float buf[chunk];                                                   \
        for (int64_t c = 0; c < n; c += chunk) {                            \
            int64_t m_ = n - c < chunk ? n - c : chunk;                     \
            dq(src, buf, m_);                                               \
            for (int64_t j = 0; j < m_; j++) y[c + j] += a * buf[j];        \
            src = (const uint8_t *)src + row_bytes_of_##dq(m_);             \
        }                                                                   \
    }
static size_t row_bytes_of_dequant_f32(int64_t n) { return (size_t)n * 4; }
static size_t row_bytes_of_dequant_f16(int64_t n) { return (size_t)n * 2; }
static size_t row_bytes_of_dequant_bf16(int64_t n) { return (size_t)n * 2; }
static size_t row_bytes_of_dequant_q8_0(int64_t n) { return (size_t)(n / PS_QK) * sizeof(ps_block_q8_0); }
static size_t row_bytes_of_dequant_q4_0(int64_t n) { return (size_t)(n / PS_QK) * sizeof(ps_block_q4_0); }
static size_t row_bytes_of_dequant_q4_1(int64_t n) { return (size_t)(n / PS_QK) * sizeof(ps_block_q4_1); }
AXPY_VIA_DEQUANT(axpy_f32, dequant_f32, 256)
AXPY_VIA_DEQUANT(axpy_f16, dequant_f16, 256)
AXPY_VIA_DEQUANT(axpy_bf16, dequant_bf16, 256)
AXPY_VIA_DEQUANT(axpy_q8_0, dequant_q8_0, 256)
AXPY_VIA_DEQUANT(axpy_q4_0, dequant_q4_0, 256)
AXPY_VIA_DEQUANT(axpy_q4_1, dequant_q4_1, 256)

#define AXPY4_VIA_AXPY(name, one)                                                    \
    static void name(const void *const src[4], const float a[4], float *y, int64_t n) { \
        for (int r = 0; r < 4; r++) one(src[r], a[r], y, n);                             \
    }
AXPY4_VIA_AXPY(axpy4_f32, axpy_f32)
AXPY4_VIA_AXPY(axpy4_f16, axpy_f16)
AXPY4_VIA_AXPY(axpy4_bf16, axpy_bf16)
AXPY4_VIA_AXPY(axpy4_q8_0, axpy_q8_0)
AXPY4_VIA_AXPY(axpy4_q4_0, axpy_q4_0)
AXPY4_VIA_AXPY(axpy4_q4_1, axpy_q4_1)

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

/* Q4_0 and Q4_1 share one loop: dw*dx*sum(q*x) + c*s, c = -8*dw or m. */
static inline void gemm_q4(const uint8_t *W, size_t row_bytes, int64_t n_cols, const int32_t *idx,
                           int64_t r0, int64_t r1, const void *Xv, int32_t n_tok, float *Y,
                           int64_t ldy, int has_min) {
    const int64_t nb = n_cols / PS_QK;
    const size_t bbytes = has_min ? sizeof(ps_block_q4_1) : sizeof(ps_block_q4_0);
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
                const uint8_t *qs = blk + (has_min ? 4 : 2);
                int isum = 0;
                for (int j = 0; j < PS_QK / 2; j++)
                    isum += (qs[j] & 0x0f) * x[b].qs[j] + (qs[j] >> 4) * x[b].qs[j + PS_QK / 2];
                const float dw = ps_fp16_to_f32(dh);
                const float c = has_min ? ps_fp16_to_f32(mh) : -8.0f * dw;
                acc += dw * x[b].d * (float)isum;
                corr += c * x[b].s;
            }
            Y[(size_t)t * ldy + r] = acc + corr;
        }
    }
}

static void gemm_q4_0(const uint8_t *W, size_t row_bytes, int64_t n_cols, const int32_t *idx,
                      int64_t r0, int64_t r1, const void *X, int32_t n_tok, float *Y, int64_t ldy) {
    gemm_q4(W, row_bytes, n_cols, idx, r0, r1, X, n_tok, Y, ldy, 0);
}

static void gemm_q4_1(const uint8_t *W, size_t row_bytes, int64_t n_cols, const int32_t *idx,
                      int64_t r0, int64_t r1, const void *X, int32_t n_tok, float *Y, int64_t ldy) {
    gemm_q4(W, row_bytes, n_cols, idx, r0, r1, X, n_tok, Y, ldy, 1);
}

static const ps_kernels k_f32 = {gemm_f32, dequant_f32, axpy_f32, axpy4_f32, 0, NULL};
static const ps_kernels k_f16 = {gemm_f16, dequant_f16, axpy_f16, axpy4_f16, 0, NULL};
static const ps_kernels k_bf16 = {gemm_bf16, dequant_bf16, axpy_bf16, axpy4_bf16, 0, NULL};
static const ps_kernels k_q8_0 = {gemm_q8_0, dequant_q8_0, axpy_q8_0, axpy4_q8_0, 1, NULL};
static const ps_kernels k_q4_0 = {gemm_q4_0, dequant_q4_0, axpy_q4_0, axpy4_q4_0, 1, NULL};
static const ps_kernels k_q4_1 = {gemm_q4_1, dequant_q4_1, axpy_q4_1, axpy4_q4_1, 1, NULL};

const ps_kernels *ps_kernels_scalar(int32_t type) {
    switch (type) {
    case PS_TYPE_F32: return &k_f32;
    case PS_TYPE_F16: return &k_f16;
    case PS_TYPE_BF16: return &k_bf16;
    case PS_TYPE_Q8_0: return &k_q8_0;
    case PS_TYPE_Q4_0: return &k_q4_0;
    case PS_TYPE_Q4_1: return &k_q4_1;
    default: return NULL;
    }
}
