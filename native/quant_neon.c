/* quant_neon.c: the plain NEON weight-kernel table (aarch64 builds only;
 * every aarch64 CPU runs it). The bodies are kernels_neon.h's. */
#include "kernels_neon.h"

const ps_type_kernels ps_type_kernels_neon[PS_TYPE_COUNT] = NEON_TABLE;
