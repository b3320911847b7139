/* test_quantize.c: ps_quantize_rows on awkward inputs and bad arguments.
 *
 * The values a block decodes to are checked against gguf-py's dequantize in
 * tests/test_quantize_kquants.py; here (also under `make asan`) every type
 * meets zeros, constants, subnormals, fp16's extremes and lone spikes
 * without undefined behaviour, with finite fp16 scales, deterministically,
 * and refuses bad arguments without touching the destination.
 */
#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "compute.h"
#include "prosparse.h"
#include "quant.h"
#include "util.h"

static const struct { int32_t type; int block, bytes; } TYPES[] = {
    {PS_TYPE_Q5_0, 32, 22},   {PS_TYPE_Q5_1, 32, 24},   {PS_TYPE_Q2_K, 256, 84},  {PS_TYPE_Q3_K, 256, 110},
    {PS_TYPE_Q4_K, 256, 144}, {PS_TYPE_Q5_K, 256, 176}, {PS_TYPE_Q6_K, 256, 210},
};
#define N_TYPES (int)(sizeof TYPES / sizeof TYPES[0])
#define N_COLS 512
#define N_ROWS 9

static uint64_t rng_state = 0x243f6a8885a308d3ull;
static float frand(void) {
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (float)((rng_state >> 11) % 2000001) / 1000000.0f - 1.0f;
}

/* Rows that stress the searches: one kind per row. */
static void awkward_rows(float *x) {
    for (int r = 0; r < N_ROWS; r++)
        for (int c = 0; c < N_COLS; c++) {
            float v = 0.0f;
            switch (r) {
            case 0: v = 0.0f; break;                                   /* all zero */
            case 1: v = 0.75f; break;                                  /* constant, positive */
            case 2: v = -3.0f; break;                                  /* constant, negative */
            case 3: v = frand() * 1e-41f; break;                       /* subnormal floats */
            case 4: v = (c & 1) ? 65504.0f : -65504.0f; break;         /* fp16's extremes */
            case 5: v = c == 77 ? 1000.0f : 0.0f; break;               /* one spike */
            case 6: v = frand() * 1e-6f; break;                        /* scales below fp16's normals */
            case 7: v = (c % 32 == 0) ? 60000.0f : frand() * 1e-3f; break; /* outliers over noise */
            default: v = frand(); break;
            }
            x[r * N_COLS + c] = v;
        }
}

/* The fp16 fields of every block (d, and dmin / m where the type has one). */
static int scales_finite(int32_t type, const uint8_t *q, size_t n_blocks, int bytes) {
    for (size_t b = 0; b < n_blocks; b++) {
        const uint8_t *blk = q + b * (size_t)bytes;
        uint16_t h[2];
        int n = 1;
        switch (type) {
        case PS_TYPE_Q5_0: memcpy(h, blk, 2); break;
        case PS_TYPE_Q5_1: memcpy(h, blk, 4); n = 2; break;
        case PS_TYPE_Q2_K: memcpy(h, blk + 80, 4); n = 2; break;
        case PS_TYPE_Q3_K: memcpy(h, blk + 108, 2); break;
        case PS_TYPE_Q4_K: case PS_TYPE_Q5_K: memcpy(h, blk, 4); n = 2; break;
        case PS_TYPE_Q6_K: memcpy(h, blk + 208, 2); break;
        }
        for (int i = 0; i < n; i++)
            if (!isfinite(ps_fp16_to_f32(h[i]))) return 0;
    }
    return 1;
}

TEST(awkward_inputs_every_type) {
    float *x = malloc(sizeof(float) * N_ROWS * N_COLS);
    awkward_rows(x);
    for (int k = 0; k < N_TYPES; k++) {
        const size_t row = (size_t)N_COLS / TYPES[k].block * TYPES[k].bytes, n = row * N_ROWS;
        uint8_t *a = malloc(n), *b = malloc(n);
        CHECK(ps_quantize_rows(TYPES[k].type, x, N_ROWS, N_COLS, a, n) == PS_OK);
        CHECK(scales_finite(TYPES[k].type, a, n / TYPES[k].bytes, TYPES[k].bytes));
        /* deterministic, and a row's bytes do not depend on its neighbours */
        CHECK(ps_quantize_rows(TYPES[k].type, x, N_ROWS, N_COLS, b, n) == PS_OK);
        CHECK(memcmp(a, b, n) == 0);
        CHECK(ps_quantize_rows(TYPES[k].type, x + 8 * N_COLS, 1, N_COLS, b, row) == PS_OK);
        CHECK(memcmp(a + 8 * row, b, row) == 0);
        free(a);
        free(b);
    }
    free(x);
}

TEST(bad_arguments) {
    float x[256] = {0};
    uint8_t dst[256];
    memset(dst, 0xAB, sizeof dst);
    CHECK(ps_quantize_rows(PS_TYPE_Q4_0, x, 1, 256, dst, sizeof dst) == PS_ERR_UNSUPPORTED);
    CHECK(strstr(ps_last_error(), "no quantizer for type id 2") != NULL);
    CHECK(ps_quantize_rows(99, x, 1, 256, dst, sizeof dst) == PS_ERR_UNSUPPORTED);
    CHECK(ps_quantize_rows(-1, x, 1, 256, dst, sizeof dst) == PS_ERR_UNSUPPORTED);
    CHECK(ps_quantize_rows(PS_TYPE_Q4_K, x, 1, 128, dst, sizeof dst) == PS_ERR_ARG);
    CHECK(strstr(ps_last_error(), "multiple of 256") != NULL);
    CHECK(ps_quantize_rows(PS_TYPE_Q5_0, x, 1, 0, dst, sizeof dst) == PS_ERR_ARG);
    CHECK(ps_quantize_rows(PS_TYPE_Q5_0, x, -1, 32, dst, sizeof dst) == PS_ERR_ARG);
    CHECK(ps_quantize_rows(PS_TYPE_Q6_K, x, 2, 256, dst, sizeof dst) == PS_ERR_ARG); /* needs 420 */
    CHECK(ps_quantize_rows(PS_TYPE_Q6_K, NULL, 1, 256, dst, sizeof dst) == PS_ERR_ARG);
    CHECK(ps_quantize_rows(PS_TYPE_Q6_K, x, 1, 256, NULL, sizeof dst) == PS_ERR_ARG);
    CHECK(ps_quantize_rows(PS_TYPE_Q6_K, x, INT64_MAX / 256, 256, dst, sizeof dst) == PS_ERR_ARG);
    x[100] = NAN;
    CHECK(ps_quantize_rows(PS_TYPE_Q5_1, x, 1, 256, dst, sizeof dst) == PS_ERR_ARG);
    x[100] = INFINITY;
    CHECK(ps_quantize_rows(PS_TYPE_Q2_K, x, 1, 256, dst, sizeof dst) == PS_ERR_ARG);
    x[100] = 65520.0f; /* rounds to fp16 infinity */
    CHECK(ps_quantize_rows(PS_TYPE_Q3_K, x, 1, 256, dst, sizeof dst) == PS_ERR_ARG);
    for (size_t i = 0; i < sizeof dst; i++) CHECK(dst[i] == 0xAB);
    /* zero rows: nothing to do, nothing read */
    CHECK(ps_quantize_rows(PS_TYPE_Q4_K, NULL, 0, 256, NULL, 0) == PS_OK);
}

int main(void) {
    RUN(awkward_inputs_every_type);
    RUN(bad_arguments);
    return CHECK_DONE();
}
