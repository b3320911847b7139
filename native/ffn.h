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
 * cost, since many tokens' candidates cover most rows; so are a layer's next
 * PS_FFN_PRED_REST tokens after its predictor kept nearly all neurons.
 * An exact batch stops deciding token by token as soon as its union is
 * dense, and finishes as the dense path does (the same values); after such
 * a single token the layer's next PS_FFN_PRED_REST exact tokens run dense.
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
 * the sparse scratch of the session. */
void ps_ffn_forward(struct ps_session *s, int il, int32_t n_tok);

/* Share of n_ff above which a batch's union of kept neurons is computed as
 * all rows (one dense product) instead of a row list. Measured (Q4_0,
 * 5632 x 2048, 2 threads, 8 and 64 tokens): a row list costs about
 * share x 1.05 of the dense product, so they cross near 0.95; 0.90 keeps
 * the list path below the dense cost with the machine's noise. */
#define PS_FFN_DENSE_SHARE 0.90

/* Decode tokens a layer runs exactly (no predictor) after its predictor
 * kept PS_FFN_DENSE_SHARE or more of the neurons for a token. */
#define PS_FFN_PRED_REST 16

#endif
