"""--calibrate TEXT --target-sparsity S: per-layer cut-offs for the engine's
`threshold` mode on SiLU and GELU-gated models (CATS-style, training-free).

The model runs densely over the calibration text (reference.py's forward in
float32, in independent chunks of 256 tokens, one layer's weights in memory at
a time); for each layer the cut-off is the S-quantile of |act(gate)| over all
tokens and neurons, so that a share S of neurons falls below it on text like
the calibration text. In
threshold mode a neuron whose |act(gate)| is below its layer's cut-off is
skipped (its up and down rows are not read).

Keys written: prosparse.ffn.cutoffs (f32 array [n_layer]) and
prosparse.ffn.cutoff_sparsity (f32, the target S).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .errors import ConvertError
from .plan import permute_qk
from .reference import Reference
from .spec import ModelSpec


def text_tokens(source, text: str) -> list[int]:
    """The calibration text in the model's own tokens (BOS first when the model uses one)."""
    from .gguf_source import GGUFSource
    if isinstance(source, GGUFSource):
        from prosparse_cpu import Model, ProSparseError
        try:
            with Model(str(source.path), threads=2, n_ctx=64) as m:
                return m.tokenize(text, add_bos=True)
        except ProSparseError as e:
            raise ConvertError(f"cannot tokenize the calibration text with {source.path}: {e}") from None
    try:
        from transformers import AutoTokenizer
        tok = AutoTokenizer.from_pretrained(str(source.folder), local_files_only=True)
    except Exception as e:
        raise ConvertError(f"cannot load the tokenizer of {source.folder} for calibration ({type(e).__name__}: {e})") from None
    return list(tok.encode(text))


def calibrate_cutoffs(source, spec: ModelSpec, ids: list[int], target: float, chunk: int = 256) -> np.ndarray:
    if spec.activation not in ("silu", "gelu_tanh"):
        raise ConvertError(f"--calibrate is for SiLU and GELU models; this {spec.activation} model is exactly sparse "
                           "(use the engine's sparse mode)")
    if not 0.0 < target < 1.0:
        raise ConvertError("--target-sparsity must be between 0 and 1")
    if len(ids) < 16:
        raise ConvertError(f"the calibration text is too short ({len(ids)} tokens; at least 16)")
    cutoffs = np.zeros(spec.n_layer, dtype=np.float32)

    def cut(layer: int, gates: list[np.ndarray]) -> None:
        cutoffs[layer] = np.quantile(np.abs(np.concatenate(gates)), target)

    float32_reference(source, spec).hidden([ids[i:i + chunk] for i in range(0, len(ids), chunk)], on_gate=cut)
    return cutoffs


def float32_reference(source, spec: ModelSpec) -> Reference:
    """The reference forward over a conversion source, in float32 (calibration needs
    quantiles, not float64 logits, and SmolLM2-size activations fit in half the memory).
    q/k rows of a Hugging Face source are permuted to llama.cpp's order as they load."""
    def load(name: str) -> np.ndarray:
        w = source.load(name)
        if not source.qk_permuted and spec.layout == "llama" and name.endswith((".attn_q.weight", ".attn_k.weight")):
            w = permute_qk(w, spec.n_head if name.endswith(".attn_q.weight") else spec.n_head_kv)
        return w
    return Reference(spec, load, source.shapes, dtype=np.float32)


def read_text(path: Path) -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ConvertError(f"--calibrate {path}: unreadable ({e})") from None
