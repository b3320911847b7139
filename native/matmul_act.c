/* matmul_act.c: the SwiGLU product (scalar reference and dispatch to
 * matmul_act_avx2.c). Contract in compute.h. */
#include <math.h>

#include "prosparse.h"
#include "quant.h"

void ps_silu_mul(float *g, const float *u, int64_t n) {
    if (ps_simd_level() >= PS_SIMD_AVX2) {
        ps_silu_mul_avx2(g, u, n);
        return;
    }
    for (int64_t i = 0; i < n; i++) g[i] = g[i] / (1.0f + expf(-g[i])) * u[i];
}
