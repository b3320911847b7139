/* quant_avx512.c: the kernel table of quant_avx2.c built a second time with
 * AVX-512 F/BW/VL/VNNI (see the Makefile's AVX512_FLAGS): one source, so
 * the two levels cannot drift apart; results are identical to the AVX2
 * table's (integer sums are exact, float steps per element the same). */
#define PS_QUANT_AVX512 1
#include "quant_avx2.c"
