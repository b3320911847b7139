"""Per-tensor types of the 5-bit and K-quant outtypes: llama.cpp's mixes.

A name such as q4_k_m is a bulk type (Q4_K) plus rules that give some
tensors more bits, the same choices llama.cpp's quantizer makes without an
importance matrix (convert/README.md states them in words), so a file we
write has the layout of the file people download. Then, as there, a type
whose block does not divide the row length falls back to one that does.
"""
from __future__ import annotations

import re

import gguf

Q = gguf.GGMLQuantizationType

# outtype -> (bulk type, general.file_type: llama_ftype)
MIXES = {
    "q5_0": (Q.Q5_0, 8), "q5_1": (Q.Q5_1, 9), "q2_k": (Q.Q2_K, 10), "q3_k_m": (Q.Q3_K, 12),
    "q4_k_s": (Q.Q4_K, 14), "q4_k_m": (Q.Q4_K, 15), "q5_k_s": (Q.Q5_K, 16), "q5_k_m": (Q.Q5_K, 17),
    "q6_k": (Q.Q6_K, 18),
}
# a 256-block type on rows it does not divide -> a 32-block type of about the same size
_FALLBACK = {Q.Q2_K: Q.Q4_0, Q.Q3_K: Q.Q4_0, Q.Q4_K: Q.Q5_0, Q.Q5_K: Q.Q5_1, Q.Q6_K: Q.Q8_0}
_LAYER = re.compile(r"blk\.(\d+)\.")


def block_size(t) -> int:
    return gguf.GGML_QUANT_SIZES[t][0]


def more_bits(i: int, n: int) -> bool:
    """The layers that get more bits: the first and last eighth, and every third between."""
    return i < n // 8 or i >= 7 * n // 8 or (i - n // 8) % 3 == 2


def _rule(outtype: str, bulk, name: str, n_cols: int, n_layer: int, n_gqa: int, big_gqa_model: bool,
          tied: bool):
    """The type before the row-length fallback."""
    if name == "output.weight" or (tied and name == "token_embd.weight"):
        return Q.Q8_0 if n_cols % block_size(bulk) else Q.Q6_K
    m = _LAYER.match(name)
    if m is None:
        return bulk   # token_embd of an untied model keeps the bulk type
    i = int(m.group(1))
    if "attn_v.weight" in name:
        t = bulk
        if outtype == "q2_k":
            t = Q.Q4_K if n_gqa >= 4 else Q.Q3_K
        elif outtype == "q3_k_m":
            t = Q.Q5_K if i < 2 else Q.Q4_K
        elif outtype in ("q4_k_m", "q5_k_m") and more_bits(i, n_layer):
            t = Q.Q6_K
        elif outtype == "q4_k_s" and i < 4:
            t = Q.Q5_K
        if big_gqa_model and t in (Q.Q3_K, Q.Q4_K):
            t = Q.Q5_K   # 70B-class: attn_v is 8x smaller than attn_q, extra bits are nearly free
        return t
    if "ffn_down" in name:   # ffn_down and prosparse's ffn_down_t alike
        if outtype == "q2_k":
            return Q.Q3_K
        if outtype == "q3_k_m":
            return Q.Q5_K if i < n_layer // 16 else Q.Q4_K
        if outtype in ("q4_k_m", "q5_k_m") and more_bits(i, n_layer):
            return Q.Q6_K
        if outtype == "q4_k_s" and i < n_layer // 8:
            return Q.Q5_K
        return bulk
    if "attn_output.weight" in name:
        return {"q2_k": Q.Q3_K, "q3_k_m": Q.Q4_K}.get(outtype, bulk)
    return bulk


def mix_type(outtype: str, name: str, n_cols: int, *, n_layer: int, n_head: int, n_head_kv: int,
             tied: bool):
    """(type, the rule's type when it fell back, else None) of matrix `name` with rows of
    n_cols in an `outtype` file; F16 when even the fallback's block does not divide the rows."""
    bulk = MIXES[outtype][0]
    n_gqa = n_head // max(n_head_kv, 1)
    big = n_layer == 80 and n_head != n_head_kv   # llama.cpp's 70B model class
    t = _rule(outtype, bulk, name, n_cols, n_layer, n_gqa, big, tied)
    if n_cols % block_size(t) == 0:
        return t, None
    t2 = _FALLBACK.get(t, t)
    return (t2 if n_cols % block_size(t2) == 0 else Q.F16), t


def fallback(t, n_cols: int):
    """A type whose block divides n_cols: t itself, its 32-block fallback, else F16."""
    if t in (Q.F32, Q.F16, Q.BF16) or n_cols % block_size(t) == 0:
        return t
    t2 = _FALLBACK.get(t, t)
    return t2 if n_cols % block_size(t2) == 0 else Q.F16
