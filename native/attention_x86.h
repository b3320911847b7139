/* attention_x86.h: what the AVX2 and AVX-512 chunk kernels share
 * (attention_avx2.c, attention_avx512.c, both built with AVX2/FMA/F16C):
 * the prefetch distances and the softmax steps between scores and values. */
#ifndef PS_ATTENTION_X86_H
#define PS_ATTENTION_X86_H

#include <immintrin.h>
#include <math.h>

#include "attention.h"
#include "math_avx2.h"

/* The cache is read once per token, from memory, and the rows of one
 * (layer, kv head) are contiguous: while scoring, K is prefetched
 * PREFETCH_BYTES ahead and the chunk's V rows are requested; while summing
 * V, V is prefetched PREFETCH_V_BYTES ahead and so is the next chunk's K
 * (prefetches never fault, so they may run past the cache). */
enum { PREFETCH_BYTES = 4096, PREFETCH_V_BYTES = 2048 };

static inline void prefetch_rows(const uint8_t *p, size_t bytes) {
    for (size_t off = 0; off < bytes; off += 64) _mm_prefetch((const char *)p + off, _MM_HINT_T0);
}

/* K rows j..j+count-1, with K prefetched ahead and the same V rows requested. */
static inline const uint8_t *k_rows_ahead(const ps_attn_chunk *a, int32_t j, int32_t count) {
    const uint8_t *r0 = a->k + (size_t)j * a->row_bytes;
    prefetch_rows(r0 + PREFETCH_BYTES, (size_t)count * a->row_bytes);
    prefetch_rows(a->v + (size_t)j * a->row_bytes, (size_t)count * a->row_bytes);
    return r0;
}

/* [T(a0), T(a1), T(a2), T(a3)], T = ((l0+l1)+(l2+l3))+((l4+l5)+(l6+l7)) */
static inline __m128 tree8x4(__m256 a0, __m256 a1, __m256 a2, __m256 a3) {
    const __m256 h = _mm256_hadd_ps(_mm256_hadd_ps(a0, a1), _mm256_hadd_ps(a2, a3));
    return _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
}

/* m, p = exp(s - m) in place, l, for one query's n scores (the reference's
 * steps: 8 lanes of sums over whole groups of 8, their tree, the tail). */
static inline void softmax_part(float *s, int32_t n, float *m_out, float *l_out) {
    __m256 vm = _mm256_set1_ps(-INFINITY);
    int32_t j = 0;
    for (; j + 8 <= n; j += 8) vm = _mm256_max_ps(vm, _mm256_loadu_ps(s + j));
    __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(vm), _mm256_extractf128_ps(vm, 1));
    m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
    m4 = _mm_max_ss(m4, _mm_shuffle_ps(m4, m4, 1));
    float m = _mm_cvtss_f32(m4);
    for (; j < n; j++) m = s[j] > m ? s[j] : m;

    const __m256 vmx = _mm256_set1_ps(m);
    __m256 lane = _mm256_setzero_ps();
    for (j = 0; j + 8 <= n; j += 8) {
        const __m256 e = exp8(_mm256_sub_ps(_mm256_loadu_ps(s + j), vmx));
        _mm256_storeu_ps(s + j, e);
        lane = _mm256_add_ps(lane, e);
    }
    float l = _mm_cvtss_f32(tree8x4(lane, lane, lane, lane));
    if (j < n) {
        _Alignas(32) float t[8] = {0};
        for (int32_t k = 0; j + k < n; k++) t[k] = s[j + k];
        _mm256_store_ps(t, exp8(_mm256_sub_ps(_mm256_load_ps(t), vmx)));
        for (int32_t k = 0; j + k < n; k++) {
            s[j + k] = t[k];
            l += t[k];
        }
    }
    *m_out = m;
    *l_out = l;
}

#endif
