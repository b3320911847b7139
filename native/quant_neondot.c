/* quant_neondot.c: the NEON table with the dot-product extension (built
 * with it only here; used only where the OS reports it, quant.c). The same
 * bodies as quant_neon.c: SDOT changes how dot32 adds, not what. */
#include "kernels_neon.h"

#ifndef __ARM_FEATURE_DOTPROD
#error "quant_neondot.c needs the dot-product extension (the Makefile's NEONDOT_FLAGS)"
#endif

const ps_type_kernels ps_type_kernels_neon_dot[PS_TYPE_COUNT] = NEON_TABLE;
