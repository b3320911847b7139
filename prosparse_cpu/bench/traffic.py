"""How many weight bytes one decode step reads, by mode: the numerator of the
memory-bandwidth bound (tokens/s <= read bandwidth / bytes per token)."""

from __future__ import annotations

import re


def weight_bytes(path: str) -> dict[str, int]:
    """Bytes of weights by role, from the file's tensor table (what a decode step may read)."""
    from ..gguf_info import open_reader

    reader = open_reader(path)
    roles = dict(attn=0, gate=0, up=0, down=0, down_t=0, pred=0, output=0, embd_row=0, norms=0)
    names = {t.name for t in reader.tensors}
    for t in reader.tensors:
        n, name = int(t.n_bytes), t.name
        if name == "token_embd.weight":
            roles["embd_row"] = n // max(int(t.shape[-1]), 1)  # one row per token (ggml shape [n_embd, n_vocab])
            if "output.weight" not in names:
                roles["output"] += n  # tied: the whole matrix is the output projection
        elif name == "output.weight":
            roles["output"] += n
        elif re.search(r"\.attn_(q|k|v|output)\.weight$", name):
            roles["attn"] += n
        elif name.endswith(".ffn_gate.weight"):
            roles["gate"] += n
        elif name.endswith(".ffn_up.weight"):
            roles["up"] += n
        elif name.endswith((".ffn_down.weight", ".ffn_down_t.weight")):
            roles["down"] += n
            if name.endswith(".ffn_down_t.weight"):
                roles["down_t"] += n  # row-major by neuron: the engine reads only rows with a non-zero input
        elif ".ffn_pred_" in name or re.search(r"\.fc[12]\.weight$", name):
            roles["pred"] += n
        elif name.endswith("norm.weight"):
            roles["norms"] += n
    return roles


def bytes_per_token(roles: dict[str, int], mode: str, counters: dict | None) -> float | None:
    """Weight bytes one decode step reads in a mode, given the measured shares of
    active (non-zero) and kept (predicted / above threshold) FFN neurons.
    KV-cache reads are not counted. None when a sparse mode lacks its counters.

    ffn_down_t (prosparse files) is read only at rows whose input is non-zero,
    in every mode, dense included (the accumulate-rows kernel skips zeros); a
    plain ffn_down is read whole whatever the mode."""
    fixed = roles["attn"] + roles["output"] + roles["embd_row"] + roles["norms"]
    ffn = roles["gate"] + roles["up"] + roles["down"]
    c = counters or {}
    active = None if c.get("sparsity") is None else 1.0 - c["sparsity"]
    kept = c.get("predicted_share")
    by_row = roles.get("down_t", 0) == roles["down"] > 0

    def down(share):
        return (share if by_row else 1.0) * roles["down"]

    if mode == "dense":
        if by_row and active is not None:
            return fixed + roles["gate"] + roles["up"] + down(active)
        return float(fixed + ffn)
    if mode == "sparse" and active is not None:
        return fixed + roles["gate"] + active * roles["up"] + down(active)
    if mode == "predict" and active is not None and kept is not None:
        return fixed + roles["pred"] + kept * (roles["gate"] + roles["up"]) + down(active)
    if mode == "threshold" and kept is not None:
        return fixed + roles["gate"] + kept * roles["up"] + down(kept)
    return None
