/* kernels_neon.h: the aarch64 weight-kernel tables' bodies, compiled into
 * both NEON levels: quant_neon.c (plain NEON) and quant_neondot.c (built
 * with the dot-product extension, which only changes dot32's instructions).
 *
 * Each vector lane holds one (row, token) result and goes through the
 * scalar reference's float operations (quant_scalar.c) in its order:
 * integer products  acc += (dw * dx) * isum, corr += c * s, y = acc + corr;
 * float products    acc += w[j] * x[j] for j in order (one lane per row);
 * dequantization    d * q (Q4_1: then + m); axpy  y += a * dequant(w).
 * So a result never depends on the tile, thread or batch it is computed in,
 * and equals the scalar one bit for bit. No packed (row-interleaved) forms.
 */
#ifndef PS_KERNELS_NEON_H
#define PS_KERNELS_NEON_H

#include "simd_neon.h"

/* type: 0 = Q4_0, 1 = Q4_1, 2 = Q8_0 */
INLINE size_t block_bytes_q(const int type) {
    return type == 0 ? sizeof(ps_block_q4_0) : type == 1 ? sizeof(ps_block_q4_1) : sizeof(ps_block_q8_0);
}

/* The 32 quants of a block as int8 (elements 0..15, 16..31); Q4 nibbles
 * unsigned 0..15, as the scalar integer sum takes them. */
INLINE void block_quants(const uint8_t *blk, const int type, int8x16_t w[2]) {
    if (type == 2) {
        w[0] = vld1q_s8((const int8_t *)blk + 2);
        w[1] = vld1q_s8((const int8_t *)blk + 18);
        return;
    }
    const uint8x16_t v = vld1q_u8(blk + (type == 1 ? 4 : 2));
    w[0] = vreinterpretq_s8_u8(vandq_u8(v, vdupq_n_u8(0x0f)));
    w[1] = vreinterpretq_s8_u8(vshrq_n_u8(v, 4));
}

/* ---- integer products: 8 rows (two vectors of 4) x up to TOK_TILE tokens ---- */
INLINE void gemm_q(const uint8_t *W, size_t rb, int64_t n_cols, const int32_t *idx, int64_t r0, int64_t r1,
                   const void *Xv, int32_t n_tok, float *Y, int64_t ldy, const int type) {
    const int64_t nb = n_cols / PS_QK;
    const size_t bb = block_bytes_q(type);
    const ps_block_q8a *X = Xv;
    float32x4_t acc[TOK_TILE][2], cor[TOK_TILE][2];
    for (int64_t r = r0; r < r1; r += 8) {
        const uint8_t *row[8];
        rows_n(W, rb, idx, r, r1, row, 8);
        for (int32_t t0 = 0; t0 < n_tok; t0 += TOK_TILE) {
            const int32_t nt = n_tok - t0 < TOK_TILE ? n_tok - t0 : TOK_TILE;
            for (int32_t t = 0; t < nt; t++)
                for (int h = 0; h < 2; h++) acc[t][h] = cor[t][h] = vdupq_n_f32(0.0f);
            for (int64_t b = 0; b < nb; b++) {
                const size_t off = (size_t)b * bb;
                float32x4_t d[2], c[2];
                int8x16_t w[8][2];
                for (int h = 0; h < 2; h++) {
                    d[h] = halves4(row + 4 * h, off);
                    c[h] = type == 1 ? halves4(row + 4 * h, off + 2) : vmulq_f32(vdupq_n_f32(-8.0f), d[h]);
                }
                for (int i = 0; i < 8; i++) {
                    __builtin_prefetch(row[i] + off + 4 * bb);
                    block_quants(row[i] + off, type, w[i]);
                }
                const ps_block_q8a *xb = X + (size_t)t0 * nb + b;
                for (int32_t t = 0; t < nt; t++, xb += nb) {
                    const int8x16_t x0 = vld1q_s8(xb->qs), x1 = vld1q_s8(xb->qs + 16);
                    const float32x4_t dx = vdupq_n_f32(xb->d), sx = vdupq_n_f32(xb->s);
                    for (int h = 0; h < 2; h++) {
                        int32x4_t p[4];
                        for (int i = 0; i < 4; i++) p[i] = dot32(w[4 * h + i][0], w[4 * h + i][1], x0, x1);
                        const float32x4_t isum = vcvtq_f32_s32(rowsum4(p));
                        acc[t][h] = vaddq_f32(acc[t][h], vmulq_f32(vmulq_f32(d[h], dx), isum));
                        if (type != 2) cor[t][h] = vaddq_f32(cor[t][h], vmulq_f32(c[h], sx));
                    }
                }
            }
            for (int32_t t = 0; t < nt; t++)
                for (int h = 0; h < 2; h++) {
                    const float32x4_t y = type == 2 ? acc[t][h] : vaddq_f32(acc[t][h], cor[t][h]);
                    if (r + 4 * h < r1) store4(Y + (size_t)(t0 + t) * ldy, idx, r + 4 * h, y, r1 - r - 4 * h);
                }
        }
    }
}

/* ---- float products: RM = 8 rows (two vectors) x RN tokens ---------------
 * Lane i of acc[h][t] is row 4h+i's running sum for token t, adding the
 * products of columns 0, 1, 2, ... in order, as the scalar loop does. */
INLINE void tile_float(const uint8_t *const row[8], int64_t n, const float *X, float32x4_t acc[2][4],
                       const int RN, const int ft) {
    for (int h = 0; h < 2; h++)
        for (int t = 0; t < RN; t++) acc[h][t] = vdupq_n_f32(0.0f);
    int64_t k = 0;
    for (; k + 4 <= n; k += 4) {
        float32x4_t wt[2][4];
        for (int h = 0; h < 2; h++) {
            float32x4_t w[4];
            for (int i = 0; i < 4; i++) w[i] = load4(row[4 * h + i], k, ft);
            transpose4(w, wt[h]); /* wt[h][j]: column k+j of rows 4h..4h+3 */
        }
        for (int t = 0; t < RN; t++) {
            const float32x4_t x = vld1q_f32(X + (size_t)t * n + k);
            for (int h = 0; h < 2; h++) {
                acc[h][t] = vaddq_f32(acc[h][t], vmulq_laneq_f32(wt[h][0], x, 0));
                acc[h][t] = vaddq_f32(acc[h][t], vmulq_laneq_f32(wt[h][1], x, 1));
                acc[h][t] = vaddq_f32(acc[h][t], vmulq_laneq_f32(wt[h][2], x, 2));
                acc[h][t] = vaddq_f32(acc[h][t], vmulq_laneq_f32(wt[h][3], x, 3));
            }
        }
    }
    for (; k < n; k++)
        for (int h = 0; h < 2; h++) {
            float w[4];
            for (int i = 0; i < 4; i++) w[i] = load1(row[4 * h + i], k, ft);
            const float32x4_t wv = vld1q_f32(w);
            for (int t = 0; t < RN; t++) acc[h][t] = vaddq_f32(acc[h][t], vmulq_n_f32(wv, X[(size_t)t * n + k]));
        }
}

INLINE void gemm_float(const uint8_t *W, size_t rb, int64_t n_cols, const int32_t *idx, int64_t r0, int64_t r1,
                       const void *Xv, int32_t n_tok, float *Y, int64_t ldy, const int ft) {
    const float *X = Xv;
    for (int64_t r = r0; r < r1; r += 8) {
        const uint8_t *row[8];
        rows_n(W, rb, idx, r, r1, row, 8);
        for (int32_t t0 = 0; t0 < n_tok; t0 += 4) {
            const int32_t nt = n_tok - t0 < 4 ? n_tok - t0 : 4;
            const float *x = X + (size_t)t0 * n_cols;
            float32x4_t acc[2][4];
            switch (nt) { /* constant tile widths: the accumulators stay in registers */
            case 4: tile_float(row, n_cols, x, acc, 4, ft); break;
            case 3: tile_float(row, n_cols, x, acc, 3, ft); break;
            case 2: tile_float(row, n_cols, x, acc, 2, ft); break;
            default: tile_float(row, n_cols, x, acc, 1, ft); break;
            }
            for (int32_t t = 0; t < nt; t++)
                for (int h = 0; h < 2; h++)
                    if (r + 4 * h < r1) store4(Y + (size_t)(t0 + t) * ldy, idx, r + 4 * h, acc[h][t], r1 - r - 4 * h);
        }
    }
}

/* ---- dequantization (the scalar path's operations: bit-exact) -------------- */
/* Block i of a quantized row as 8 vectors of 4 floats, elements in order. */
INLINE void dequant_block(const uint8_t *src, int64_t i, const int type, float32x4_t out[8]) {
    const uint8_t *blk = src + (size_t)i * block_bytes_q(type);
    const float32x4_t d = vdupq_n_f32(vgetq_lane_f32(vcvt_f32_f16(vreinterpret_f16_u16(vdup_n_u16(ld16(blk)))), 0));
    int8x16_t q[2];
    block_quants(blk, type, q);
    if (type == 0) q[0] = vsubq_s8(q[0], vdupq_n_s8(8)), q[1] = vsubq_s8(q[1], vdupq_n_s8(8));
    for (int h = 0; h < 2; h++) {
        const int16x8_t lo = vmovl_s8(vget_low_s8(q[h])), hi = vmovl_high_s8(q[h]);
        out[4 * h + 0] = vmulq_f32(d, vcvtq_f32_s32(vmovl_s16(vget_low_s16(lo))));
        out[4 * h + 1] = vmulq_f32(d, vcvtq_f32_s32(vmovl_high_s16(lo)));
        out[4 * h + 2] = vmulq_f32(d, vcvtq_f32_s32(vmovl_s16(vget_low_s16(hi))));
        out[4 * h + 3] = vmulq_f32(d, vcvtq_f32_s32(vmovl_high_s16(hi)));
    }
    if (type == 1) { /* mul then add, as gguf-py */
        const float32x4_t m =
            vdupq_n_f32(vgetq_lane_f32(vcvt_f32_f16(vreinterpret_f16_u16(vdup_n_u16(ld16(blk + 2)))), 0));
        for (int k = 0; k < 8; k++) out[k] = vaddq_f32(out[k], m);
    }
}

INLINE void dequant_q(const void *src, float *dst, int64_t n, const int type) {
    for (int64_t i = 0; i < n / PS_QK; i++, dst += PS_QK) {
        float32x4_t v[8];
        dequant_block(src, i, type, v);
        for (int k = 0; k < 8; k++) vst1q_f32(dst + 4 * k, v[k]);
    }
}

INLINE void dequant_float(const void *src, float *dst, int64_t n, const int ft) {
    int64_t k = 0;
    for (; k + 4 <= n; k += 4) vst1q_f32(dst + k, load4(src, k, ft));
    for (; k < n; k++) dst[k] = load1(src, k, ft);
}

/* ---- axpy: y += a * row segment, NR rows in order with y in registers ------ */
INLINE void axpy_rows_q(const void *const *src, const float *a, const int NR, float *y, int64_t n,
                        const int type) {
    for (int64_t i = 0; i < n / PS_QK; i++, y += PS_QK) {
        float32x4_t acc[8];
        for (int k = 0; k < 8; k++) acc[k] = vld1q_f32(y + 4 * k);
        for (int r = 0; r < NR; r++) {
            float32x4_t w[8];
            dequant_block(src[r], i, type, w);
            for (int k = 0; k < 8; k++) acc[k] = vaddq_f32(acc[k], vmulq_n_f32(w[k], a[r]));
        }
        for (int k = 0; k < 8; k++) vst1q_f32(y + 4 * k, acc[k]);
    }
}

INLINE void axpy_rows_float(const void *const *src, const float *a, const int NR, float *y, int64_t n,
                            const int ft) {
    int64_t k = 0;
    for (; k + 4 <= n; k += 4) {
        float32x4_t acc = vld1q_f32(y + k);
        for (int r = 0; r < NR; r++) acc = vaddq_f32(acc, vmulq_n_f32(load4(src[r], k, ft), a[r]));
        vst1q_f32(y + k, acc);
    }
    for (; k < n; k++)
        for (int r = 0; r < NR; r++) y[k] += a[r] * load1(src[r], k, ft);
}

/* ---- table entries ----------------------------------------------------------
 * A type's row entries as PS_KERNEL_ROW names them (gemm_<t>, dequant_<t>,
 * axpy_<t>, axpy_<t>_4: one row, four rows) from one family of bodies whose
 * last argument picks the type (float: FT_*; q: 0 Q4_0, 1 Q4_1, 2 Q8_0). */
#define KERNELS_OF(t, family, arg)                                                                  \
    static void gemm_##t(const uint8_t *W, size_t rb, int64_t n_cols, const int32_t *idx, int64_t r0, \
                         int64_t r1, const void *X, int32_t n_tok, float *Y, int64_t ldy) {          \
        gemm_##family(W, rb, n_cols, idx, r0, r1, X, n_tok, Y, ldy, arg);                           \
    }                                                                                               \
    static void dequant_##t(const void *src, float *dst, int64_t n) { dequant_##family(src, dst, n, arg); } \
    static void axpy_##t(const void *src, float a, float *y, int64_t n) {                           \
        const void *s1[1] = {src};                                                                  \
        axpy_rows_##family(s1, &a, 1, y, n, arg);                                                   \
    }                                                                                               \
    static void axpy_##t##_4(const void *const src[4], const float a[4], float *y, int64_t n) {     \
        axpy_rows_##family(src, a, 4, y, n, arg);                                                   \
    }

KERNELS_OF(f32, float, FT_F32)
KERNELS_OF(f16, float, FT_F16)
KERNELS_OF(bf16, float, FT_BF16)
KERNELS_OF(q4_0, q, 0)
KERNELS_OF(q4_1, q, 1)
KERNELS_OF(q8_0, q, 2)

#define NEON_TABLE                                                                                  \
    {PS_KERNEL_ROW(F32, f32, 0), PS_KERNEL_ROW(F16, f16, 0), PS_KERNEL_ROW(BF16, bf16, 0),           \
     PS_KERNEL_ROW(Q8_0, q8_0, 1), PS_KERNEL_ROW(Q4_0, q4_0, 1), PS_KERNEL_ROW(Q4_1, q4_1, 1)}

#endif
