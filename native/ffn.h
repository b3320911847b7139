/* ffn.h: the FFN block of one layer in every engine mode (not public).
 *
 * dense      gate and up for all n_ff neurons, x1 = act(gate) * up, down.
 * sparse     gate for all neurons; up and down only for neurons whose
 *            activation is non-zero (exact, ReLU family only).
 * predict    the low-rank predictor picks candidates; gate and up only for
 *            them, down only for those whose x1 is really non-zero.
 * threshold  gate for all neurons; up and down only where |act(gate)| reaches
 *            the layer's cut-off (prosparse.ffn.cutoffs; CATS-style).
 * A batch of several tokens works on the union of their neurons (each
 * token's own x1 is still zero where it is not kept), or on all rows when
 * the union is large. Batches in predict mode are decided by the gate, as in
 * sparse mode (exact; dense for SiLU): there the predictor could only add
 * cost, since many tokens' candidates cover most rows. An exact batch stops
 * deciding token by token as soon as its union is dense, and finishes as the
 * dense path does (the same values).
 *
 * The pause policy: when a layer's decision for a decode token keeps
 * PS_FFN_DENSE_SHARE or more of its neurons (a model or text with little
 * sparsity there), deciding costs more than it saves, so the layer pauses
 * that decision for its next PS_FFN_PAUSE_TOKENS decode tokens: predict mode
 * decides by the gate instead of the predictor (exact), and the exact sparse
 * path runs dense (the same values). The pauses are per session and layer
 * (ps_session.ffn_pause) and are forgotten on reset and on a mode change.
 */
#ifndef PS_FFN_H
#define PS_FFN_H

#include <stdint.h>

#include "model.h"
#include "session.h"

/* PS_OK if this model can run in `mode`, else an error saying why
 * (sparse on a SiLU model, predict without predictor tensors, threshold
 * without cut-offs, unknown mode). */
int ps_ffn_check_mode(const struct ps_model *m, int32_t mode);

/* The FFN of layer il for the batch's n_tok tokens: reads the normed input
 * s->xb (and the residual s->x for the predictor), writes the block's output
 * to s->xb2 (n_tok x n_embd), adds to s->stats[il]. Uses s->hb, s->hb2 and
 * the sparse scratch of the session. PS_OK or the first product's error. */
int ps_ffn_forward(struct ps_session *s, int il, int32_t n_tok);

/* Share of n_ff above which a batch's union of kept neurons is computed as
 * all rows (one dense product) instead of a row list: a row list costs a
 * little more per row than the dense product (bench_matmul's scatter mode
 * shows how much), so the two cross somewhat below all rows, and this
 * keeps the list path below the dense cost with a margin. */
#define PS_FFN_DENSE_SHARE 0.90

/* Decode tokens a layer's decision stays paused (the pause policy above). */
#define PS_FFN_PAUSE_TOKENS 16

#endif
