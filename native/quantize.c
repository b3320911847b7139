/* quantize.c: ps_quantize_rows (prosparse.h) and the 32-element 5-bit types.
 *
 * The converter writes Q5_0, Q5_1 and the K-quants through here (gguf-py
 * has no quantizer for them). Arguments are checked before anything is
 * written: a bad type, a row length that is not a multiple of the block,
 * a short destination or a weight that is not finite or beyond fp16's
 * range is an error, never a crash.
 */
#include <math.h>
#include <string.h>

#include "prosparse.h"
#include "quant.h"
#include "quantize.h"
#include "util.h"

/* 5-bit levels L[32] in [0, 31]: low nibbles of weights j and j + 16 share
 * byte j, the fifth bits go to bit j of qh (little-endian 32 bits). */
static void pack_5bit(const int8_t *L, int bias, uint8_t qs[16], uint8_t qh_bytes[4]) {
    uint32_t qh = 0;
    for (int j = 0; j < 16; j++) {
        const int a = L[j] + bias, b = L[j + 16] + bias;
        qs[j] = (uint8_t)((a & 15) | ((b & 15) << 4));
        qh |= (uint32_t)(a >> 4) << j;
        qh |= (uint32_t)(b >> 4) << (j + 16);
    }
    for (int k = 0; k < 4; k++) qh_bytes[k] = (uint8_t)(qh >> (8 * k));
}

void ps_quantize_row_q5_0(const float *x, void *dst, int64_t n) {
    ps_block_q5_0 *y = dst;
    int8_t L[32];
    for (int64_t b = 0; b < n / 32; b++, x += 32) {
        const float s = ps_fit_scale(x, 32, -16, 15, L);
        y[b].d = ps_f32_to_fp16(s);
        /* the levels again under the scale as stored */
        ps_round_group(x, 32, ps_fp16_to_f32(y[b].d), 0.0f, -16, 15, L);
        pack_5bit(L, 16, y[b].qs, y[b].qh);
    }
}

void ps_quantize_row_q5_1(const float *x, void *dst, int64_t n) {
    ps_block_q5_1 *y = dst;
    int8_t L[32];
    for (int64_t b = 0; b < n / 32; b++, x += 32) {
        float o;
        const float s = ps_fit_scale_offset(x, 32, 31, 0, L, &o);
        y[b].d = ps_f32_to_fp16(s);
        y[b].m = ps_f32_to_fp16(o);
        ps_round_group(x, 32, ps_fp16_to_f32(y[b].d), ps_fp16_to_f32(y[b].m), 0, 31, L);
        pack_5bit(L, 0, y[b].qs, y[b].qh);
    }
}

typedef void (*row_fn)(const float *x, void *dst, int64_t n);

static const struct {
    int32_t type;
    const char *name;
    int32_t block, bytes;
    row_fn row;
} QUANTIZERS[] = {
    {PS_TYPE_Q5_0, "q5_0", 32, (int32_t)sizeof(ps_block_q5_0), ps_quantize_row_q5_0},
    {PS_TYPE_Q5_1, "q5_1", 32, (int32_t)sizeof(ps_block_q5_1), ps_quantize_row_q5_1},
    {PS_TYPE_Q2_K, "q2_k", PS_QK_K, (int32_t)sizeof(ps_block_q2_k), ps_quantize_row_q2_k},
    {PS_TYPE_Q3_K, "q3_k", PS_QK_K, (int32_t)sizeof(ps_block_q3_k), ps_quantize_row_q3_k},
    {PS_TYPE_Q4_K, "q4_k", PS_QK_K, (int32_t)sizeof(ps_block_q4_k), ps_quantize_row_q4_k},
    {PS_TYPE_Q5_K, "q5_k", PS_QK_K, (int32_t)sizeof(ps_block_q5_k), ps_quantize_row_q5_k},
    {PS_TYPE_Q6_K, "q6_k", PS_QK_K, (int32_t)sizeof(ps_block_q6_k), ps_quantize_row_q6_k},
};

int ps_quantize_rows(int32_t type, const float *src, int64_t n_rows, int64_t n_cols, void *dst,
                     size_t dst_bytes) {
    ps_clear_error();
    int k = -1;
    for (int i = 0; i < (int)(sizeof QUANTIZERS / sizeof QUANTIZERS[0]); i++)
        if (QUANTIZERS[i].type == type) k = i;
    if (k < 0) return ps_fail(PS_ERR_UNSUPPORTED, "ps_quantize_rows: no quantizer for type id %d", (int)type);
    const int64_t block = QUANTIZERS[k].block;
    if (n_rows < 0 || n_cols <= 0 || n_cols % block)
        return ps_fail(PS_ERR_ARG, "ps_quantize_rows: %s needs rows of a positive multiple of %lld elements, got %lld x %lld",
                       QUANTIZERS[k].name, (long long)block, (long long)n_rows, (long long)n_cols);
    if (n_rows > 0 && (!src || !dst)) return ps_fail(PS_ERR_ARG, "ps_quantize_rows: NULL buffer");
    const int64_t row_bytes = n_cols / block * QUANTIZERS[k].bytes;
    if (n_rows > 0 && (uint64_t)n_rows > (uint64_t)SIZE_MAX / (uint64_t)row_bytes)
        return ps_fail(PS_ERR_ARG, "ps_quantize_rows: %lld rows of %lld bytes overflow", (long long)n_rows,
                       (long long)row_bytes);
    const size_t need = (size_t)n_rows * (size_t)row_bytes;
    if (dst_bytes < need)
        return ps_fail(PS_ERR_ARG, "ps_quantize_rows: %s of %lld x %lld needs %zu bytes, the buffer has %zu",
                       QUANTIZERS[k].name, (long long)n_rows, (long long)n_cols, need, dst_bytes);
    for (int64_t r = 0; r < n_rows; r++) {
        const float *x = src + r * n_cols;
        for (int64_t c = 0; c < n_cols; c++)
            if (!(fabsf(x[c]) <= 65504.0f)) /* also NaN; larger scales would not fit fp16 */
                return ps_fail(PS_ERR_ARG, "ps_quantize_rows: element [%lld, %lld] = %g is not finite or beyond fp16",
                               (long long)r, (long long)c, (double)x[c]);
    }
    for (int64_t r = 0; r < n_rows; r++)
        QUANTIZERS[k].row(src + r * n_cols, (uint8_t *)dst + (size_t)r * (size_t)row_bytes, n_cols);
    return PS_OK;
}
