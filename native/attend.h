/* attend.h: a layer's attention over the session's KV cache (attend.c). */
#ifndef PS_ATTEND_H
#define PS_ATTEND_H

#include <stddef.h>
#include <stdint.h>

#include "session.h"

/* prompt tokens whose queries share one pass over a chunk's rows */
#define PS_ATTEND_TOKEN_TILE 4

/* Floats of one thread's attention scratch (s->att holds n_threads of them). */
size_t ps_attend_scratch_floats(const ps_hparams *hp);

/* att_out (n_tok, q_dim) = attention of s->q's n_tok tokens (positions
 * pos0..) over cache positions 0..pos0+t of layer `layer` (already stored);
 * in a local layer (ps_layer.sliding) over pos0+t - n_swa + 1 .. pos0+t. */
void ps_attend(ps_session *s, int layer, int32_t pos0, int32_t n_tok);

#endif
