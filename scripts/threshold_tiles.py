"""Would skipping whole tiles make threshold mode pay? (README, Known limits)

Threshold mode skips single up rows. The packed kernels work on tiles of 16
rows, so they could only skip a tile whose 16 neurons are all cut for a token.
This script runs the calibration pass (the converter's float32 forward) over
a text and reports, per layer and target sparsity S, the share of a token's
16-neuron tiles that are empty: in the file's order, and with the neurons
ordered by how often calibration kept them (the best a reordering could do).

    python scripts/threshold_tiles.py MODEL.gguf TEXT [--tokens 512] [--targets 0.5,0.7] [--every 5]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from prosparse_cpu.convert.calibrate import read_text, silu_gate_activations, text_tokens
from prosparse_cpu.convert.cli import open_source
from prosparse_cpu.convert.errors import ConvertError

TILE = 16


def empty_tiles(keep: np.ndarray) -> float:
    """Share of (token, tile) pairs with no kept neuron; keep: bool [tokens, n_ff]."""
    n = keep.shape[1] // TILE * TILE
    return float((keep[:, :n].reshape(len(keep), -1, TILE).sum(-1) == 0).mean())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", type=Path)
    ap.add_argument("text", type=Path)
    ap.add_argument("--tokens", type=int, default=512)
    ap.add_argument("--targets", default="0.5,0.7")
    ap.add_argument("--every", type=int, default=5, help="report every N-th layer")
    a = ap.parse_args()
    try:
        targets = [float(t) for t in a.targets.split(",")]
        source = open_source(a.model)
        ids = text_tokens(source, read_text(a.text))[:a.tokens]
        if source.spec.activation != "silu":
            raise ConvertError(f"{a.model}: a {source.spec.activation} model (threshold mode is for SiLU models)")
    except (ConvertError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"{a.model.name}: {len(ids)} tokens of {a.text.name}; share of a token's {TILE}-neuron tiles with "
          "no kept neuron (file order / neurons ordered by how often they are kept)")
    for L, acts in enumerate(silu_gate_activations(source, source.spec, ids)):
        if L % a.every:
            continue
        cells = []
        for s in targets:
            keep = acts >= np.quantile(acts, s)
            hot_first = np.argsort(-keep.mean(0), kind="stable")
            cells.append(f"S={s:.0%}: {empty_tiles(keep):.1%} / {empty_tiles(keep[:, hot_first]):.1%}")
        print(f"layer {L:3d}  " + "   ".join(cells))
    return 0


if __name__ == "__main__":
    sys.exit(main())
