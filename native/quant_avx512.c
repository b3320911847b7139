/* quant_avx512.c: the AVX-512 (F/BW/VL/VNNI) weight-kernel table.
 *
 * The kernels_x86_*.h bodies are compiled here a second time with AVX-512
 * enabled (one source for the shared kernels, so the two levels cannot drift
 * apart; their integer sums then use VNNI's dpbusd), and this file adds the
 * kernels written for 16-lane vectors:
 *   - packed products over row-interleaved copies (quant.h; Q4, Q5, Q8_0): one row per
 *     32-bit lane of a 16-lane vector, 8 dpbusd per block and token (the
 *     AVX2 table has Q4 ones working on half tiles);
 *   - Q4 row lists built into the same layout from 16 row pointers;
 *   - the down projection's axpy in 16 lanes.
 * Integer sums are exact and the float steps per element are the AVX2
 * kernels', so this table gives the AVX2 table's results bit for bit
 * (test_quant.c, test_kernels.py). */
#include "kernels_x86_dot.h"
#include "kernels_x86_float.h"
#include "kernels_x86_kquant.h"
#include "kernels_avx512_kquant.h"

/* Sum of the 32 quants of an activation block (exact). */
INLINE int32_t q8a_sum(const int8_t *qs) {
    const __m256i u = _mm256_xor_si256(_mm256_loadu_si256((const __m256i *)qs), _mm256_set1_epi8((char)0x80));
    const __m256i s = _mm256_sad_epu8(u, _mm256_setzero_si256()); /* 4 sums of (x + 128) */
    const __m128i h = _mm_add_epi64(_mm256_castsi256_si128(s), _mm256_extracti128_si256(s, 1));
    return (int32_t)(_mm_cvtsi128_si64(h) + _mm_extract_epi64(h, 1)) - 32 * 128;
}

/* One token's share of a 16-row block, type 2 = Q8_0, anything else the
 * unsigned 4- or 5-bit quants with an offset term c * s:
 * q[j] (a row per 32-bit lane) meets activation bytes 4j..4j+3; for Q4 / Q5
 * q[0..3] hold elements 4k..4k+3 (low nibbles) and q[4..7] 16+4k.. (high
 * nibbles); Q8_0 holds w + 128, so its dot loses 128 * sum(x). The integer
 * sum is exact and the float steps per lane are gemm_q4's / gemm_q8_0's. */
INLINE __m512 block_dot16(const __m512i q[8], const ps_block_q8a *xb, __m512 d, __m512 c, __m512 acc,
                          const int type) {
    const uint8_t *xq = (const uint8_t *)xb->qs;
    __m512i sa = _mm512_setzero_si512(), sb = _mm512_setzero_si512();
    for (int j = 0; j < 8; j += 2) {
        sa = _mm512_dpbusd_epi32(sa, q[j], _mm512_set1_epi32(ld32(xq + 4 * j)));
        sb = _mm512_dpbusd_epi32(sb, q[j + 1], _mm512_set1_epi32(ld32(xq + 4 * j + 4)));
    }
    __m512i isum = _mm512_add_epi32(sa, sb);
    if (type == 2) isum = _mm512_sub_epi32(isum, _mm512_set1_epi32(128 * q8a_sum(xb->qs)));
    acc = _mm512_fmadd_ps(_mm512_mul_ps(d, _mm512_set1_ps(xb->d)), _mm512_cvtepi32_ps(isum), acc);
    return type == 2 ? acc : _mm512_fmadd_ps(c, _mm512_set1_ps(xb->s), acc);
}

INLINE __m512 join8(__m256 lo, __m256 hi) { /* (AVX-512 F has no 256-bit float insert) */
    return _mm512_castpd_ps(_mm512_insertf64x4(_mm512_castps_pd(_mm512_castps256_ps512(lo)), _mm256_castps_pd(hi), 1));
}

/* For 4 bits per lane (the lane's low 4 bits: vpermd reads no more), the
 * dword whose byte j is 0x10 where bit j is set: a 5-bit quant's high bit
 * for 4 consecutive elements. */
INLINE __m512i q5_bits4(__m512i h) {
    const __m512i spread = _mm512_setr_epi32(0x00000000, 0x00000010, 0x00001000, 0x00001010, 0x00100000,
                                             0x00100010, 0x00101000, 0x00101010, 0x10000000, 0x10000010,
                                             0x10001000, 0x10001010, 0x10100000, 0x10100010, 0x10101000,
                                             0x10101010);
    return _mm512_permutexvar_epi32(h, spread);
}

/* One tile of 16 rows against nt tokens (acc[t] += their sums); nxt: the
 * next tile's rows, whose cache lines are fetched once each meanwhile. */
INLINE void rows16_tile(const uint8_t *const row[PS_PACK_ROWS], const uint8_t *const *nxt, int n_next, int64_t nb,
                        const ps_block_q8a *X, int32_t nt, __m512 *acc, const int kind) {
    const int has_min = kind & 1, q5 = kind >> 1; /* as gemm_q4's kind */
    const size_t bb = q5 ? (has_min ? sizeof(ps_block_q5_1) : sizeof(ps_block_q5_0))
                         : (has_min ? sizeof(ps_block_q4_1) : sizeof(ps_block_q4_0));
    const size_t hoff = has_min ? 4 : 2, qoff = hoff + (q5 ? 4 : 0);
    const __m512i m4 = _mm512_set1_epi8(0x0f);
    for (int64_t b = 0; b < nb; b++) {
        const size_t off = (size_t)b * bb;
        if (b == 0 || (off + bb - 1) / 64 != (off - 1) / 64) /* block b opens a new line */
            for (int j = 0; j < n_next; j++) _mm_prefetch((const char *)(nxt[j] + off + bb - 1), _MM_HINT_T0);
        __m512 d, c;
        if (has_min) {
            __m256 d0, m0, d1, m1;
            scales_dm(row, off, &d0, &m0);
            scales_dm(row + 8, off, &d1, &m1);
            d = join8(d0, d1);
            c = join8(m0, m1);
        } else {
            d = join8(scales_d(row, off), scales_d(row + 8, off));
            c = _mm512_mul_ps(d, _mm512_set1_ps(q5 ? -16.0f : -8.0f));
        }
        __m512i z[4];
#define QS16(i) _mm_loadu_si128((const __m128i *)(row[i] + off + qoff))
        for (int j = 0; j < 4; j++) { /* (the lane number must be a constant) */
            z[j] = _mm512_inserti32x4(_mm512_castsi128_si512(QS16(j)), QS16(4 + j), 1);
            z[j] = _mm512_inserti32x4(_mm512_inserti32x4(z[j], QS16(8 + j), 2), QS16(12 + j), 3);
        }
#undef QS16
        const __m512i t0l = _mm512_unpacklo_epi32(z[0], z[1]), t0h = _mm512_unpackhi_epi32(z[0], z[1]);
        const __m512i t1l = _mm512_unpacklo_epi32(z[2], z[3]), t1h = _mm512_unpackhi_epi32(z[2], z[3]);
        const __m512i v[4] = {_mm512_unpacklo_epi64(t0l, t1l), _mm512_unpackhi_epi64(t0l, t1l),
                              _mm512_unpacklo_epi64(t0h, t1h), _mm512_unpackhi_epi64(t0h, t1h)};
        __m512i q[8];
        for (int k = 0; k < 4; k++) {
            q[k] = _mm512_and_si512(v[k], m4);
            q[4 + k] = _mm512_and_si512(_mm512_srli_epi16(v[k], 4), m4);
        }
        if (q5) { /* the 16 rows' qh dwords, spread as in pk_tile */
#define QH(i) ld32(row[i] + off + hoff)
            const __m512i h = _mm512_setr_epi32(QH(0), QH(1), QH(2), QH(3), QH(4), QH(5), QH(6), QH(7), QH(8), QH(9),
                                                QH(10), QH(11), QH(12), QH(13), QH(14), QH(15));
#undef QH
            for (int k = 0; k < 4; k++) {
                q[k] = _mm512_or_si512(q[k], q5_bits4(_mm512_srli_epi32(h, 4 * k)));
                q[4 + k] = _mm512_or_si512(q[4 + k], q5_bits4(_mm512_srli_epi32(h, 16 + 4 * k)));
            }
        }
        const ps_block_q8a *xb = X + b;
        for (int32_t t = 0; t < nt; t++, xb += nb) acc[t] = block_dot16(q, xb, d, c, acc[t], 0);
    }
}

/* Q4_0 / Q4_1 / Q5_0 / Q5_1 row lists straight from the row-major matrix (idx != NULL):
 * gemm_packed's 16-lane layout, built per block from 16 row pointers by a
 * 4x4 transpose of 32-bit pieces within each 128-bit lane: z[j] holds the
 * nibble bytes of rows j, 4+j, 8+j, 12+j, so after the transpose lane 4L+m
 * is row 4L+m (natural order). (Gathers are slower than these loads on the
 * CPUs this level targets.) */
INLINE void gemm_q4_rows16(const uint8_t *W, size_t rb, int64_t n_cols, const int32_t *idx, int64_t r0,
                           int64_t r1, const void *Xv, int32_t n_tok, float *Y, int64_t ldy, const int kind) {
    const int64_t nb = n_cols / PS_QK;
    const ps_block_q8a *X = Xv;
    __m512 acc[TOK_TILE];
    for (int64_t r = r0; r < r1; r += PS_PACK_ROWS) {
        const int n_valid = r1 - r < PS_PACK_ROWS ? (int)(r1 - r) : PS_PACK_ROWS;
        const uint8_t *row[PS_PACK_ROWS], *nxt[PS_PACK_ROWS];
        int32_t out_row[PS_PACK_ROWS];
        for (int i = 0; i < PS_PACK_ROWS; i++) {
            out_row[i] = (int32_t)row_at(idx, r + (i < n_valid ? i : n_valid - 1));
            row[i] = W + (size_t)out_row[i] * rb;
        }
        int n_next = 0; /* the next tile's rows are anywhere */
        for (int64_t j = r + PS_PACK_ROWS; j < r + 2 * PS_PACK_ROWS && j < r1; j++) nxt[n_next++] = W + (size_t)idx[j] * rb;
        for (int32_t t0 = 0; t0 < n_tok; t0 += TOK_TILE) {
            const int32_t nt = n_tok - t0 < TOK_TILE ? n_tok - t0 : TOK_TILE;
            for (int32_t t = 0; t < nt; t++) acc[t] = _mm512_setzero_ps();
            /* (one token, the common decode case, gets its own copy with acc in a register) */
            if (nt == 1) rows16_tile(row, nxt, n_next, nb, X + (size_t)t0 * nb, 1, acc, kind);
            else rows16_tile(row, nxt, n_next, nb, X + (size_t)t0 * nb, nt, acc, kind);
            const __mmask16 keep = (__mmask16)((1u << n_valid) - 1);
            const __m512i vrow = _mm512_loadu_si512(out_row);
            for (int32_t t = 0; t < nt; t++)
                _mm512_mask_i32scatter_ps(Y + (size_t)(t0 + t) * ldy, keep, vrow, acc[t], 4);
        }
    }
}

/* Row lists: gemm_q4_rows16; whole unpacked matrices: gemm_q4's 8-row
 * tiles, whose streaming prefetch suits a contiguous matrix better. */
INLINE void gemm_q4_any(const uint8_t *W, size_t rb, int64_t n_cols, const int32_t *idx, int64_t r0, int64_t r1,
                        const void *X, int32_t n_tok, float *Y, int64_t ldy, const int kind) {
    if (idx) gemm_q4_rows16(W, rb, n_cols, idx, r0, r1, X, n_tok, Y, ldy, kind);
    else gemm_q4(W, rb, n_cols, idx, r0, r1, X, n_tok, Y, ldy, kind);
}
GEMM_OF(gemm_q4_0, gemm_q4_any, 0)
GEMM_OF(gemm_q4_1, gemm_q4_any, 1)
GEMM_OF(gemm_q5_0, gemm_q4_any, 2)
GEMM_OF(gemm_q5_1, gemm_q4_any, 3)

/* Packed matrices (quant.h): one row per 32-bit lane of a 16-lane vector,
 * so a block of 16 rows is a few loads and block_dot16 per token, with no
 * regrouping. Q5_0 / Q5_1 blocks pack their 32 high bits as the first quant
 * dword (the block's bytes after the scales, in order), then the nibbles.
 * `type` is the ggml id (a constant after inlining). */
INLINE size_t pk_block_bytes(const int type) {
    return type == PS_TYPE_Q8_0 ? sizeof(ps_block_q8_0) : type == PS_TYPE_Q4_1 ? sizeof(ps_block_q4_1)
           : type == PS_TYPE_Q5_0 ? sizeof(ps_block_q5_0) : type == PS_TYPE_Q5_1 ? sizeof(ps_block_q5_1)
           : type == PS_TYPE_Q4_K ? sizeof(ps_block_q4_k) : type == PS_TYPE_Q6_K ? sizeof(ps_block_q6_k)
                                  : sizeof(ps_block_q4_0);
}

#define PF_BLOCKS 8 /* blocks ahead that the packed kernel prefetches */
/* One 16-row tile of a 32-element type against nt tokens (acc[t] += their sums). */
INLINE void pk_tile(const uint8_t *tile, int64_t nb, const ps_block_q8a *X, int32_t nt, __m512 *acc, const int type) {
    const size_t tb = (size_t)PS_PACK_ROWS * pk_block_bytes(type);
    const int has_m = type == PS_TYPE_Q4_1 || type == PS_TYPE_Q5_1, q5 = type == PS_TYPE_Q5_0 || type == PS_TYPE_Q5_1;
    const size_t qoff = has_m ? 64 : 32;
    const __m512i m4 = _mm512_set1_epi8(0x0f);
    for (int64_t b = 0; b < nb; b++) {
        const uint8_t *p = tile + (size_t)b * tb;
        for (size_t o = 0; o < tb; o += 64) _mm_prefetch((const char *)(p + PF_BLOCKS * tb + o), _MM_HINT_T0);
        const __m512 d = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)p));
        /* the per-block constant c of quant.h (unused for Q8_0) */
        const __m512 c = has_m ? _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(p + 32)))
                               : _mm512_mul_ps(d, _mm512_set1_ps(q5 ? -16.0f : -8.0f));
        __m512i q[8];
        if (type == PS_TYPE_Q8_0) {
            for (int k = 0; k < 8; k++) q[k] = _mm512_loadu_si512((const void *)(p + qoff + 64 * k));
        } else {
            const uint8_t *qn = p + qoff + (q5 ? 64 : 0);
            for (int k = 0; k < 4; k++) {
                const __m512i v = _mm512_loadu_si512((const void *)(qn + 64 * k));
                q[k] = _mm512_and_si512(v, m4);
                q[4 + k] = _mm512_and_si512(_mm512_srli_epi16(v, 4), m4);
            }
            if (q5) { /* element e's high bit is bit e of the lane's first dword */
                const __m512i h = _mm512_loadu_si512((const void *)(p + qoff));
                for (int k = 0; k < 4; k++) {
                    q[k] = _mm512_or_si512(q[k], q5_bits4(_mm512_srli_epi32(h, 4 * k)));
                    q[4 + k] = _mm512_or_si512(q[4 + k], q5_bits4(_mm512_srli_epi32(h, 16 + 4 * k)));
                }
            }
        }
        const ps_block_q8a *xb = X + b;
        for (int32_t t = 0; t < nt; t++, xb += nb) acc[t] = block_dot16(q, xb, d, c, acc[t], type == PS_TYPE_Q8_0 ? 2 : 0);
    }
}

/* Rows [r0, r1) of a packed matrix of any of these types, tile by tile. */
INLINE void gemm_packed(const uint8_t *P, int64_t n_cols, int64_t r0, int64_t r1, const void *X, int32_t n_tok,
                        float *Y, int64_t ldy, const int type) {
    const int kq = type == PS_TYPE_Q4_K || type == PS_TYPE_Q6_K;
    const int64_t nb = n_cols / (kq ? PS_QK_K : PS_QK);
    const size_t tb = (size_t)PS_PACK_ROWS * pk_block_bytes(type);
    const size_t xbytes = (size_t)nb * (kq ? sizeof(ps_block_q8k) : sizeof(ps_block_q8a)); /* one token's */
    __m512 acc[TOK_TILE];
    for (int64_t row0 = r0 - r0 % PS_PACK_ROWS; row0 < r1; row0 += PS_PACK_ROWS) {
        const uint8_t *tile = P + (size_t)(row0 / PS_PACK_ROWS) * nb * tb;
        const int lo = r0 > row0 ? (int)(r0 - row0) : 0;
        const int hi = r1 < row0 + PS_PACK_ROWS ? (int)(r1 - row0) : PS_PACK_ROWS;
        const __mmask16 keep = (__mmask16)(((1u << hi) - 1) & ~((1u << lo) - 1));
        for (int32_t t0 = 0; t0 < n_tok; t0 += TOK_TILE) {
            const int32_t nt = n_tok - t0 < TOK_TILE ? n_tok - t0 : TOK_TILE;
            const void *xt = (const uint8_t *)X + (size_t)t0 * xbytes;
            for (int32_t t = 0; t < nt; t++) acc[t] = _mm512_setzero_ps();
            /* (one token, the common decode case, gets its own copy with the K-quant sums in registers) */
            if (!kq) pk_tile(tile, nb, xt, nt, acc, type);
            else if (nt == 1) pk_kq_tile(tile, nb, xt, 1, acc, type);
            else pk_kq_tile(tile, nb, xt, nt, acc, type);
            for (int32_t t = 0; t < nt; t++) _mm512_mask_storeu_ps(Y + (size_t)(t0 + t) * ldy + row0, keep, acc[t]);
        }
    }
}

GEMM_PACKED_OF(gemm_q8_0_packed, gemm_packed, PS_TYPE_Q8_0)
GEMM_PACKED_Q45K_OF(gemm_packed)

/* ---- axpy in 16 lanes ---------------------------------------------------- */
/* The same per-element steps as axpy_rows_q in 16 lanes: one block is two
 * vectors (elements 0..15 are the low nibbles of its 16 bytes, 16..31 the
 * high ones, as in q4_groups). */
INLINE void axpy_rows_q16(const void *const *src, const float *a, const int NR, float *y, int64_t n,
                           const int type) {
    /* nibble k as a float: k - 8 for Q4_0, k for Q4_1 */
    const __m512 nib = _mm512_sub_ps(_mm512_setr_ps(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                                     _mm512_set1_ps(type == 0 ? 8.0f : 0.0f));
    for (int64_t i = 0; i < n / PS_QK; i++, y += PS_QK) {
        __m512 acc0 = _mm512_loadu_ps(y), acc1 = _mm512_loadu_ps(y + 16);
        for (int r = 0; r < NR; r++) {
            float da, ma;
            const uint8_t *blk = scaled_block(src[r], i, type, a[r], &da, &ma);
            const __m512 d = _mm512_set1_ps(da);
            if (type == 2) {
                const __m128i *q = (const __m128i *)(blk + 2);
                acc0 = _mm512_fmadd_ps(d, _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(q))), acc0);
                acc1 = _mm512_fmadd_ps(d, _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(q + 1))), acc1);
                continue;
            }
            /* a nibble's float value by table lookup (vpermps reads the
             * index's low 4 bits, so the low nibble needs no mask) */
            const __m512i q = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(blk + (type == 1 ? 4 : 2))));
            const __m512i hi = _mm512_srli_epi32(q, 4);
            if (type == 1) {
                const __m512 m = _mm512_set1_ps(ma);
                acc0 = _mm512_add_ps(_mm512_fmadd_ps(d, _mm512_permutexvar_ps(q, nib), m), acc0);
                acc1 = _mm512_add_ps(_mm512_fmadd_ps(d, _mm512_permutexvar_ps(hi, nib), m), acc1);
            } else {
                acc0 = _mm512_fmadd_ps(d, _mm512_permutexvar_ps(q, nib), acc0);
                acc1 = _mm512_fmadd_ps(d, _mm512_permutexvar_ps(hi, nib), acc1);
            }
        }
        _mm512_storeu_ps(y, acc0);
        _mm512_storeu_ps(y + 16, acc1);
    }
}

AXPY_QUANT_PAIRS(axpy_rows_q16)

const ps_type_kernels ps_type_kernels_avx512[PS_TYPE_COUNT] = {
    PS_KERNEL_ROW(F32, f32, 0), PS_KERNEL_ROW(F16, f16, 0), PS_KERNEL_ROW(BF16, bf16, 0),
    PS_KERNEL_ROW_PACKED(Q8_0, q8_0, 1), PS_KERNEL_ROW_PACKED(Q4_0, q4_0, 1), PS_KERNEL_ROW_PACKED(Q4_1, q4_1, 1),
    PS_KERNEL_ROW_PACKED(Q5_0, q5_0, PS_ACT_Q8A), PS_KERNEL_ROW_PACKED(Q5_1, q5_1, PS_ACT_Q8A),
    PS_KERNEL_ROW_PACKED(Q4_K, q4_k, PS_ACT_Q8K), PS_KERNEL_ROW_PACKED(Q6_K, q6_k, PS_ACT_Q8K), KQ_X86_TABLE_ROWS,
};
