/* quant.c: type traits, packed copies and the choice of SIMD level.
 *
 * The level's operations (quant.h's ps_level_ops) are chosen once, in
 * ps_simd_set; every kernel call after that goes through the chosen table.
 */
#include "quant.h"

#include "attention.h"

#include <stdatomic.h>
#include <string.h>

#include "prosparse.h"

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#define PS_X86 1
#elif defined(__aarch64__)
#define PS_ARM64 1
#if defined(__linux__)
#include <sys/auxv.h>
#elif defined(__APPLE__)
#include <sys/sysctl.h>
#endif
#endif

/* ---- type traits ------------------------------------------------------------
 * Every ggml id this engine knows, including the ones it does not run (so
 * that error messages can name them); ps_type_supported says which run. */
static const ps_type_traits TYPE_TRAITS[PS_TYPE_COUNT] = {
    [PS_TYPE_F32] = {"f32", 1, 4, 0, 0},
    [PS_TYPE_F16] = {"f16", 1, 2, 0, 0},
    [PS_TYPE_BF16] = {"bf16", 1, 2, 0, 0},
    [PS_TYPE_Q8_0] = {"q8_0", PS_QK, sizeof(ps_block_q8_0), 8, 1},
    [PS_TYPE_Q4_0] = {"q4_0", PS_QK, sizeof(ps_block_q4_0), 4, 0},
    [PS_TYPE_Q4_1] = {"q4_1", PS_QK, sizeof(ps_block_q4_1), 4, 0},
    [PS_TYPE_Q5_0] = {"q5_0", 32, sizeof(ps_block_q5_0), 5, 0}, /* packed: qh, then 4 nibble dwords */
    [PS_TYPE_Q5_1] = {"q5_1", 32, sizeof(ps_block_q5_1), 5, 0},
    [PS_TYPE_Q8_1] = {"q8_1", 32, 36, 0, 0},
    [PS_TYPE_Q2_K] = {"q2_k", 256, 84, 0, 0},
    [PS_TYPE_Q3_K] = {"q3_k", 256, 110, 0, 0},
    [PS_TYPE_Q4_K] = {"q4_k", 256, sizeof(ps_block_q4_k), 35, 0}, /* packed: 3 scale dwords, 32 of quants */
    [PS_TYPE_Q5_K] = {"q5_k", 256, 176, 0, 0},
    [PS_TYPE_Q6_K] = {"q6_k", 256, sizeof(ps_block_q6_k), 52, 0}, /* packed: 32 ql, 16 qh, 4 scale dwords */
    [PS_TYPE_Q8_K] = {"q8_k", 256, 292, 0, 0},
};

const ps_type_traits *ps_type_get(int32_t type) {
    if (type < 0 || type >= PS_TYPE_COUNT || !TYPE_TRAITS[type].name) return NULL;
    return &TYPE_TRAITS[type];
}

int ps_type_supported(int32_t type) { return ps_kernels_get(type, &ps_ops_scalar) != NULL; }

size_t ps_row_bytes(int32_t type, int64_t n) {
    const ps_type_traits *t = ps_type_get(type);
    if (!t || n < 0 || n % t->block_size) return 0;
    return (size_t)(n / t->block_size) * (size_t)t->block_bytes;
}

const ps_type_kernels *ps_kernels_get(int32_t type, const ps_level_ops *ops) {
    if (type < 0 || type >= PS_TYPE_COUNT) return NULL;
    if (ops->types[type].gemm) return &ops->types[type];
    if (ops->scalar_fallback && ps_type_kernels_scalar[type].gemm) return &ps_type_kernels_scalar[type];
    return NULL;
}

/* ---- SIMD levels --------------------------------------------------------------- */
const ps_level_ops ps_ops_scalar = {
    .level = PS_SIMD_SCALAR,
    .types = ps_type_kernels_scalar,
    .quantize_q8a = ps_quantize_q8a_scalar,
    .quantize_q8k = ps_quantize_q8k,
    .gemm_acc = ps_gemm_acc_scalar,
    .silu_mul = ps_silu_mul_scalar,
    .attn = &ps_attn_kernels_scalar,
};

#ifdef PS_X86
/* The x86 levels' operations besides the weight and attention kernels:
 * AVX-512 has its own of those and shares the rest with AVX2. */
#define X86_VECTOR_OPS                                                                         \
    .quantize_q8a = ps_quantize_q8a_avx2, .quantize_q8k = ps_quantize_q8k_avx2,                    \
    .gemm_acc = ps_gemm_acc_avx2, .silu_mul = ps_silu_mul_avx2

const ps_level_ops ps_ops_avx2 = {.level = PS_SIMD_AVX2, .types = ps_type_kernels_avx2, X86_VECTOR_OPS,
                                  .attn = &ps_attn_kernels_avx2};
const ps_level_ops ps_ops_avx512 = {.level = PS_SIMD_AVX512, .types = ps_type_kernels_avx512, X86_VECTOR_OPS,
                                    .attn = &ps_attn_kernels_avx512};

/* cpuid and xgetbv directly (not __builtin_cpu_supports, whose feature
 * names differ between compilers): the CPU's features and the OS saving
 * the registers they use. */
static uint64_t xcr0(void) {
    uint32_t lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    return ((uint64_t)hi << 32) | lo;
}

static int x86_level(void) {
    unsigned a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d)) return PS_SIMD_SCALAR;
    const int fma = c >> 12 & 1, osxsave = c >> 27 & 1, avx = c >> 28 & 1, f16c = c >> 29 & 1;
    if (!(fma && osxsave && avx && f16c) || (xcr0() & 0x6) != 0x6) return PS_SIMD_SCALAR;
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d) || !(b >> 5 & 1)) return PS_SIMD_SCALAR; /* AVX2 */
    const int f = b >> 16 & 1, bw = b >> 30 & 1, vl = b >> 31 & 1, vnni = c >> 11 & 1;
    if (f && bw && vl && vnni && (xcr0() & 0xe6) == 0xe6) return PS_SIMD_AVX512;
    return PS_SIMD_AVX2;
}
#endif

#ifdef PS_ARM64
/* The aarch64 levels differ only in their integer products. */
#define NEON_VECTOR_OPS                                                                        \
    .quantize_q8a = ps_quantize_q8a_neon, .quantize_q8k = ps_quantize_q8k,                        \
    .gemm_acc = ps_gemm_acc_neon, .silu_mul = ps_silu_mul_neon, .attn = &ps_attn_kernels_scalar

const ps_level_ops ps_ops_neon = {.level = PS_SIMD_NEON, .types = ps_type_kernels_neon,
                                  .scalar_fallback = 1, NEON_VECTOR_OPS};
const ps_level_ops ps_ops_neon_dot = {.level = PS_SIMD_NEON_DOT, .types = ps_type_kernels_neon_dot,
                                      .scalar_fallback = 1, NEON_VECTOR_OPS};

/* NEON is part of every aarch64 CPU; the dot-product extension (SDOT) is
 * optional and the OS says whether it is there. */
static int arm64_level(void) {
#if defined(__linux__) && defined(HWCAP_ASIMDDP)
    if (getauxval(AT_HWCAP) & HWCAP_ASIMDDP) return PS_SIMD_NEON_DOT;
#elif defined(__APPLE__)
    int dot = 0;
    size_t len = sizeof dot;
    if (sysctlbyname("hw.optional.arm.FEAT_DotProd", &dot, &len, NULL, 0) == 0 && dot) return PS_SIMD_NEON_DOT;
#endif
    return PS_SIMD_NEON;
}
#endif

static _Atomic(const ps_level_ops *) current_ops; /* NULL: not chosen yet */

int ps_simd_supported(void) {
#if defined(PS_X86)
    return x86_level();
#elif defined(PS_ARM64)
    return arm64_level();
#else
    return PS_SIMD_SCALAR;
#endif
}

const ps_level_ops *ps_level_ops_at(int level) {
    switch (level) {
    case PS_SIMD_SCALAR: return &ps_ops_scalar;
#ifdef PS_X86
    case PS_SIMD_AVX2: return &ps_ops_avx2;
    case PS_SIMD_AVX512: return &ps_ops_avx512;
#endif
#ifdef PS_ARM64
    case PS_SIMD_NEON: return &ps_ops_neon;
    case PS_SIMD_NEON_DOT: return &ps_ops_neon_dot;
#endif
    default: return NULL;
    }
}

int ps_simd_set(int level) {
    const int best = ps_simd_supported();
    /* another architecture's level (no table in this build): scalar, as
     * prosparse.h promises, not this CPU's best */
    if (level > PS_SIMD_SCALAR && level < PS_SIMD_COUNT && !ps_level_ops_at(level)) level = PS_SIMD_SCALAR;
    if (level > best) level = best;
    while (level > PS_SIMD_SCALAR && !ps_level_ops_at(level)) level--;
    if (level < PS_SIMD_SCALAR) level = PS_SIMD_SCALAR;
    atomic_store(&current_ops, ps_level_ops_at(level));
    return level;
}

const ps_level_ops *ps_ops(void) {
    const ps_level_ops *ops = atomic_load_explicit(&current_ops, memory_order_relaxed);
    if (!ops) {
        ps_simd_set(ps_simd_supported());
        ops = atomic_load(&current_ops);
    }
    return ops;
}

int ps_simd_get(void) { return ps_ops()->level; }

/* ---- packed (row-interleaved) matrices (quant.h) ---------------------------- */
size_t ps_packed_bytes(int32_t type, int64_t n_rows, int64_t n_cols) {
    const ps_type_traits *t = ps_type_get(type);
    if (!t || !t->pack_dwords || n_rows <= 0 || n_cols <= 0 || n_cols % t->block_size) return 0;
    const int64_t tiles = (n_rows + PS_PACK_ROWS - 1) / PS_PACK_ROWS;
    return (size_t)tiles * PS_PACK_ROWS * ps_row_bytes(type, n_cols);
}

/* Each block is its fp16 scales (d, then m or dmin for types with a
 * minimum; at the block's start, or its end for Q6_K) and pack_dwords 32-bit
 * groups of its other bytes, in order. */
void ps_pack_matrix(int32_t type, const uint8_t *W, int64_t n_rows, int64_t n_cols, uint8_t *dst) {
    const ps_type_traits *t = ps_type_get(type);
    const size_t bb = (size_t)t->block_bytes, rb = ps_row_bytes(type, n_cols);
    const int n_dwords = t->pack_dwords;
    const size_t scale_bytes = bb - 4 * (size_t)n_dwords;
    const size_t s_at = type == PS_TYPE_Q6_K ? bb - scale_bytes : 0, q_at = s_at ? 0 : scale_bytes;
    const int64_t nb = n_cols / t->block_size, tiles = (n_rows + PS_PACK_ROWS - 1) / PS_PACK_ROWS;
    for (int64_t tile = 0; tile < tiles; tile++)
        for (int64_t b = 0; b < nb; b++) {
            uint8_t *d = dst + ((size_t)tile * nb + b) * PS_PACK_ROWS * bb;
            uint8_t *q = d + PS_PACK_ROWS * scale_bytes;
            for (int r = 0; r < PS_PACK_ROWS; r++) {
                const int64_t row = tile * PS_PACK_ROWS + r;
                uint8_t blk[256] = {0}; /* padding rows: all zero */
                if (row < n_rows) memcpy(blk, W + (size_t)row * rb + (size_t)b * bb, bb);
                if (t->pack_signed)
                    for (size_t j = scale_bytes; j < bb; j++) blk[j] ^= 0x80;
                for (size_t k = 0; k < scale_bytes / 2; k++) /* d[16], then m[16] */
                    memcpy(d + 2 * PS_PACK_ROWS * k + 2 * r, blk + s_at + 2 * k, 2);
                for (int k = 0; k < n_dwords; k++) memcpy(q + 64 * k + 4 * r, blk + q_at + 4 * k, 4);
            }
        }
}
