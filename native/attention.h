/* attention.h: attention over the KV cache in fixed chunks of positions
 * (flash-decoding; not public).
 *
 * The cache of each (layer, kv head) is n_ctx rows of one head_dim vector,
 * stored as F32, F16 or Q8_0 (ps_cache_row_bytes per row). A query's
 * attention over positions 0..n-1 is computed chunk by chunk, chunk c being
 * positions [c*PS_ATTN_CHUNK, (c+1)*PS_ATTN_CHUNK) cut at n: each chunk gives
 * a partial (m = max score, l = sum exp(s - m), o = sum exp(s - m) v), and the
 * partials are merged in order of c (ps_attn_merge). Chunk boundaries are
 * fixed in positions, so a query's result never depends on how chunks are
 * spread over threads, nor on the other queries computed with it, nor on
 * the batch it came in: decode and prompt processing give the same bits.
 *
 * Every level's chunk kernel gives the scalar reference's bits: the same
 * float operations in the same order (FMA where the reference calls fmaf,
 * the reference's exp is the AVX2 polynomial written out in scalar code).
 *   score  s_j = scale * T(lane sums): lane k of 8 sums q[d]*k_j[d] for
 *          d = k mod 8 by FMA in order of d, T = ((l0+l1)+(l2+l3))+((l4+l5)+(l6+l7));
 *          Q8_0: sum over blocks b in order of fma(dk_b*dq_b, isum_b, acc);
 *   m      max_j s_j;  p_j = exp(s_j - m);
 *   l      lane k of 8 sums p_j for j = k mod 8 over whole groups of 8, then T,
 *          then the last n mod 8 terms in order;
 *   o[d]   fma(p_j, v_j[d], o[d]) in order of j from 0 (Q8_0: fma(p_j*dv, q, o)).
 */
#ifndef PS_ATTENTION_H
#define PS_ATTENTION_H

#include <stddef.h>
#include <stdint.h>

#include "quant.h"

enum { PS_ATTN_CHUNK = 128, PS_ATTN_MAX_HEAD_DIM = 256 };

/* One chunk for nq queries: query i is q + i*hd (and, for a Q8_0 cache, its
 * hd/32 q8a blocks qq + i*hd/32); cached rows j < n start at k + j*row_bytes
 * and v + j*row_bytes. Writes m[i], l[i], o[i*hd + d]; s is nq*n scratch. */
typedef struct ps_attn_chunk {
    const float *q;
    const ps_block_q8a *qq;
    const uint8_t *k, *v;
    size_t row_bytes;
    int32_t n, hd, nq;
    float scale;
    float *s;
    float *m, *l, *o;
} ps_attn_chunk;

typedef void (*ps_attn_chunk_fn)(const ps_attn_chunk *a);

/* A level's chunk kernels, indexed by cache type (prosparse.h's PS_CACHE_*);
 * they need head_dim a multiple of head_multiple and at most
 * PS_ATTN_MAX_HEAD_DIM, else the scalar ones run. */
typedef struct ps_attn_kernels {
    ps_attn_chunk_fn chunk[3];
    int32_t head_multiple;
} ps_attn_kernels;

extern const ps_attn_kernels ps_attn_kernels_scalar, ps_attn_kernels_avx2, ps_attn_kernels_avx512;
/* AVX2's Q8_0 chunk kernel, which the AVX-512 level runs too */
void ps_attn_chunk_q8_0_avx2(const ps_attn_chunk *a);

/* Bytes of one cached head vector; 0 when the type cannot hold head_dim hd. */
size_t ps_cache_row_bytes(int32_t cache_type, int32_t hd);
/* Store hd floats as one cached row (F16: round to nearest even; Q8_0:
 * blocks of d = amax/127, q = round(x/d)). */
void ps_cache_store_row(int32_t cache_type, const float *x, int32_t hd, uint8_t *dst);

/* Fold a chunk's partial (m, l, o) into a query's running one (M, L, O):
 * M' = max(M, m), L' = L e^(M-M') + l e^(m-M'), O' likewise. */
void ps_attn_merge(float *M, float *L, float *O, float m, float l, const float *o, int32_t hd);

/* The reference's exp (the AVX2 level's polynomial, lane by lane). */
float ps_attn_exp_ref(float x);

#endif
