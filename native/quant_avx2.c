/* quant_avx2.c: the AVX2/FMA/F16C weight-kernel table (built with those
 * flags only here; used only after a cpuid check, see ps_simd_supported).
 * Its row-major products, dequantization and axpy are the kernels_x86_*.h
 * bodies, shared with the AVX-512 level; this file adds the AVX2 packed
 * products. */
#include "kernels_x86_dot.h"
#include "kernels_x86_float.h"
#include "kernels_x86_kquant.h"
#include "kernels_avx2_kquant.h"

GEMM_OF(gemm_q4_0, gemm_q4, 0)
GEMM_OF(gemm_q4_1, gemm_q4, 1)
GEMM_OF(gemm_q5_0, gemm_q4, 2)
GEMM_OF(gemm_q5_1, gemm_q4, 3)

/* Packed Q4_0 / Q4_1 / Q5_0 / Q5_1 (quant.h: tiles of 16 rows, one row per
 * 32-bit lane; kind = has_min + 2 * q5, as gemm_q4's): each half tile of 8
 * rows is one 256-bit vector per 4 quant bytes, so a block needs neither
 * regrouping nor horizontal sums; q[j] meets activation bytes 4j..4j+3 in
 * every lane (dot4_u8s8, exact). The float steps per lane are gemm_q4's:
 * the same bits. */
INLINE __m256i q4_dot8(const __m256i q[8], const int8_t *xq) {
    __m256i x[8];
    for (int j = 0; j < 8; j++) x[j] = _mm256_set1_epi32(ld32((const uint8_t *)xq + 4 * j));
    return _mm256_add_epi32(dot4_u8s8(q, x), dot4_u8s8(q + 4, x + 4));
}

/* Q5's high bits into q (as q4_dot8 takes it) from the lanes' qh dwords h:
 * q[k] holds elements 4k..4k+3 and q[4+k] 16+4k.., whose bits are in qh
 * byte k/2 (2 + k/2), at bit 4(k%2) + j for byte j of the lane. */
INLINE void q5_add_high(__m256i h, __m256i q[8]) {
    const __m256i high = _mm256_set1_epi8(0x10);
    const __m256i bit[2] = {_mm256_set1_epi32(0x08040201), _mm256_set1_epi32((int)0x80402010)};
    for (int b = 0; b < 4; b++) { /* qh byte b: q[2b], q[2b+1] for b < 2, else q[4 + 2(b-2)], ... */
        const __m256i pick = _mm256_set1_epi8((char)b); /* (plus the lane's dword offset below) */
        const __m256i lane4 = _mm256_setr_epi8(0, 0, 0, 0, 4, 4, 4, 4, 8, 8, 8, 8, 12, 12, 12, 12,
                                               0, 0, 0, 0, 4, 4, 4, 4, 8, 8, 8, 8, 12, 12, 12, 12);
        const __m256i v = _mm256_shuffle_epi8(h, _mm256_add_epi8(pick, lane4));
        for (int s = 0; s < 2; s++) {
            const int k = (b < 2 ? 0 : 4) + 2 * (b % 2) + s;
            const __m256i set = _mm256_cmpeq_epi8(_mm256_and_si256(v, bit[s]), bit[s]);
            q[k] = _mm256_or_si256(q[k], _mm256_and_si256(set, high));
        }
    }
}

#define PF_PACKED_BLOCKS 8 /* blocks ahead that the packed kernel prefetches */

INLINE size_t q45_block_bytes(const int kind) {
    return kind == 3 ? sizeof(ps_block_q5_1) : kind == 2 ? sizeof(ps_block_q5_0)
           : kind == 1 ? sizeof(ps_block_q4_1) : sizeof(ps_block_q4_0);
}

/* One 16-row tile against nt tokens: acc[2 * t + h] for rows 8h..8h+7. */
INLINE void packed_tile(const uint8_t *tile, int64_t nb, const ps_block_q8a *X, int32_t nt, __m256 *acc,
                         const int kind) {
    const int has_min = kind & 1, q5 = kind >> 1;
    const size_t tb = (size_t)PS_PACK_ROWS * q45_block_bytes(kind);
    const size_t hoff = has_min ? 64 : 32, qoff = hoff + (q5 ? 64 : 0);
    const __m256i m4 = _mm256_set1_epi8(0x0f);
    for (int64_t b = 0; b < nb; b++) {
        const uint8_t *p = tile + (size_t)b * tb;
        for (size_t o = 0; o < tb; o += 64) _mm_prefetch((const char *)(p + PF_PACKED_BLOCKS * tb + o), _MM_HINT_T0);
        for (int h = 0; h < 2; h++) {
            const __m256 d = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(p + 16 * h)));
            const __m256 c = has_min ? _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(p + 32 + 16 * h)))
                                     : _mm256_mul_ps(d, _mm256_set1_ps(q5 ? -16.0f : -8.0f));
            __m256i q[8];
            for (int k = 0; k < 4; k++) {
                const __m256i v = _mm256_loadu_si256((const __m256i *)(p + qoff + 64 * k + 32 * h));
                q[k] = _mm256_and_si256(v, m4);
                q[4 + k] = _mm256_and_si256(_mm256_srli_epi16(v, 4), m4);
            }
            if (q5) q5_add_high(_mm256_loadu_si256((const __m256i *)(p + hoff + 32 * h)), q);
            const ps_block_q8a *xb = X + b;
            for (int32_t t = 0; t < nt; t++, xb += nb) {
                __m256 a = acc[2 * t + h];
                a = _mm256_fmadd_ps(_mm256_mul_ps(d, _mm256_set1_ps(xb->d)), _mm256_cvtepi32_ps(q4_dot8(q, xb->qs)), a);
                acc[2 * t + h] = _mm256_fmadd_ps(c, _mm256_set1_ps(xb->s), a);
            }
        }
    }
}

/* Rows [r0, r1) of a packed matrix of type `type` (ggml id), tile by tile. */
INLINE void gemm_packed(const uint8_t *P, int64_t n_cols, int64_t r0, int64_t r1, const void *X, int32_t n_tok,
                         float *Y, int64_t ldy, const int type) {
    const int kq = type == PS_TYPE_Q4_K || type == PS_TYPE_Q6_K;
    const int kind = (type == PS_TYPE_Q4_1 || type == PS_TYPE_Q5_1) + 2 * (type == PS_TYPE_Q5_0 || type == PS_TYPE_Q5_1);
    const int64_t nb = n_cols / (kq ? PS_QK_K : PS_QK);
    const size_t tb = (size_t)PS_PACK_ROWS * (type == PS_TYPE_Q4_K   ? sizeof(ps_block_q4_k)
                                              : type == PS_TYPE_Q6_K ? sizeof(ps_block_q6_k)
                                                                     : q45_block_bytes(kind));
    const size_t xbytes = (size_t)nb * (kq ? sizeof(ps_block_q8k) : sizeof(ps_block_q8a)); /* one token's */
    __m256 acc[2 * TOK_TILE];
    for (int64_t row0 = r0 - r0 % PS_PACK_ROWS; row0 < r1; row0 += PS_PACK_ROWS) {
        const uint8_t *tile = P + (size_t)(row0 / PS_PACK_ROWS) * nb * tb;
        const int64_t lo = r0 > row0 ? r0 - row0 : 0, hi = r1 < row0 + PS_PACK_ROWS ? r1 - row0 : PS_PACK_ROWS;
        int32_t keep[PS_PACK_ROWS];
        for (int i = 0; i < PS_PACK_ROWS; i++) keep[i] = i >= lo && i < hi ? -1 : 0;
        for (int32_t t0 = 0; t0 < n_tok; t0 += TOK_TILE) {
            const int32_t nt = n_tok - t0 < TOK_TILE ? n_tok - t0 : TOK_TILE;
            const void *xt = (const uint8_t *)X + (size_t)t0 * xbytes;
            for (int32_t t = 0; t < 2 * nt; t++) acc[t] = _mm256_setzero_ps();
            /* (one token, the common decode case, gets its own copy with acc in registers) */
            if (kq && nt == 1) pk8_kq_tile(tile, nb, xt, 1, acc, type);
            else if (kq) pk8_kq_tile(tile, nb, xt, nt, acc, type);
            else if (nt == 1) packed_tile(tile, nb, xt, 1, acc, kind);
            else packed_tile(tile, nb, xt, nt, acc, kind);
            for (int32_t t = 0; t < nt; t++)
                for (int h = 0; h < 2; h++)
                    _mm256_maskstore_ps(Y + (size_t)(t0 + t) * ldy + row0 + 8 * h,
                                        _mm256_loadu_si256((const __m256i *)(keep + 8 * h)), acc[2 * t + h]);
        }
    }
}

GEMM_PACKED_Q45K_OF(gemm_packed)

AXPY_QUANT_PAIRS(axpy_rows_q)

const ps_type_kernels ps_type_kernels_avx2[PS_TYPE_COUNT] = {
    PS_KERNEL_ROW(F32, f32, 0), PS_KERNEL_ROW(F16, f16, 0), PS_KERNEL_ROW(BF16, bf16, 0),
    PS_KERNEL_ROW(Q8_0, q8_0, 1), PS_KERNEL_ROW_PACKED(Q4_0, q4_0, 1), PS_KERNEL_ROW_PACKED(Q4_1, q4_1, 1),
    PS_KERNEL_ROW_PACKED(Q5_0, q5_0, PS_ACT_Q8A), PS_KERNEL_ROW_PACKED(Q5_1, q5_1, PS_ACT_Q8A),
    PS_KERNEL_ROW_PACKED(Q4_K, q4_k, PS_ACT_Q8K), PS_KERNEL_ROW_PACKED(Q6_K, q6_k, PS_ACT_Q8K), KQ_X86_TABLE_ROWS,
};
