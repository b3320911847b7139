"""--calibrate TEXT --target-sparsity S: per-layer cut-offs for the engine's
`threshold` mode on SiLU models (CATS-style, training-free).

The model runs densely over the calibration text (float32 numpy, layer after
layer so that one layer's weights are in memory at a time); for each layer the
cut-off is the S-quantile of |silu(gate)| over all tokens and neurons, so that
a share S of neurons falls below it on text like the calibration text. In
threshold mode a neuron whose |silu(gate)| is below its layer's cut-off is
skipped (its up and down rows are not read).

Keys written: prosparse.ffn.cutoffs (f32 array [n_layer]) and
prosparse.ffn.cutoff_sparsity (f32, the target S).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .errors import ConvertError
from .plan import permute_qk
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


def _rms(x: np.ndarray, w: np.ndarray, eps: float) -> np.ndarray:
    return x / np.sqrt((x * x).mean(-1, keepdims=True) + eps) * w


def _rope(x: np.ndarray, cos: np.ndarray, sin: np.ndarray) -> np.ndarray:
    """Adjacent pairs (rows permuted as llama.cpp's converter leaves them). x: [T, heads, hd]."""
    y = np.empty_like(x)
    x0, x1 = x[..., 0::2], x[..., 1::2]
    y[..., 0::2] = x0 * cos - x1 * sin
    y[..., 1::2] = x0 * sin + x1 * cos
    return y


def calibrate_cutoffs(source, spec: ModelSpec, ids: list[int], target: float, chunk: int = 256) -> np.ndarray:
    if spec.activation != "silu":
        raise ConvertError(f"--calibrate is for SiLU models; this {spec.activation} model is exactly sparse "
                           "(use the engine's sparse mode)")
    if not 0.0 < target < 1.0:
        raise ConvertError("--target-sparsity must be between 0 and 1")
    if len(ids) < 16:
        raise ConvertError(f"the calibration text is too short ({len(ids)} tokens; at least 16)")
    cutoffs = np.zeros(spec.n_layer, dtype=np.float32)
    for L, acts in enumerate(silu_gate_activations(source, spec, ids, chunk)):
        cutoffs[L] = np.quantile(acts, target)
    return cutoffs


def silu_gate_activations(source, spec: ModelSpec, ids: list[int], chunk: int = 256):
    """Per layer, |silu(gate)| of every token of ids: float32 [n_tokens, n_ff].
    A dense float32 forward pass in chunks of `chunk` tokens, one layer's
    weights in memory at a time."""
    E, H, KV, hd = spec.n_embd, spec.n_head, spec.n_head_kv, spec.head_dim
    seqs = [np.array(ids[i:i + chunk]) for i in range(0, len(ids), chunk)]
    emb = source.load("token_embd.weight")
    hs = [emb[s].astype(np.float32) * np.float32(spec.embedding_scale) for s in seqs]
    del emb
    inv = 1.0 / spec.rope_theta ** (np.arange(0, hd, 2) / hd)
    rs = np.float32(spec.residual_scale)
    for L in range(spec.n_layer):
        b = f"blk.{L}."
        w = {n: source.load(b + n + ".weight") for n in
             ("attn_norm", "attn_q", "attn_k", "attn_v", "attn_output", "ffn_norm", "ffn_gate", "ffn_up", "ffn_down")}
        if not source.qk_permuted:
            w["attn_q"] = permute_qk(w["attn_q"], H)
            w["attn_k"] = permute_qk(w["attn_k"], KV)
        acts = []
        for j, h in enumerate(hs):
            T = len(h)
            ang = np.outer(np.arange(T), inv).astype(np.float32)
            cos, sin = np.cos(ang)[:, None], np.sin(ang)[:, None]
            x = _rms(h, w["attn_norm"], spec.rms_eps)
            q = _rope((x @ w["attn_q"].T).reshape(T, H, hd), cos, sin)
            k = np.repeat(_rope((x @ w["attn_k"].T).reshape(T, KV, hd), cos, sin), H // KV, axis=1)
            v = np.repeat((x @ w["attn_v"].T).reshape(T, KV, hd), H // KV, axis=1)
            att = np.einsum("thd,shd->hts", q, k) / np.float32(np.sqrt(hd))
            att = att + np.triu(np.full((T, T), -np.inf, dtype=np.float32), 1)
            att = np.exp(att - att.max(-1, keepdims=True))
            att /= att.sum(-1, keepdims=True)
            h = h + rs * (np.einsum("hts,shd->thd", att, v).reshape(T, E) @ w["attn_output"].T)
            x = _rms(h, w["ffn_norm"], spec.rms_eps)
            g = x @ w["ffn_gate"].T
            s = g * np.float32(0.5) * (1 + np.tanh(g * np.float32(0.5)))   # silu, without exp overflow
            acts.append(np.abs(s))
            hs[j] = h + rs * ((s * (x @ w["ffn_up"].T)) @ w["ffn_down"].T)
        yield np.concatenate(acts)


def read_text(path: Path) -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ConvertError(f"--calibrate {path}: unreadable ({e})") from None
