"""The reference forward pass: a numpy llama / prosparse model, written from the
file format and independent of the C engine.

It is the oracle the engine and the converter are checked against (float64),
and the converter's calibration runs it for its per-layer gate activations
(float32: the same arithmetic at half the memory). It reads weights through a
`load(name)` function under llama's GGUF names, in GGUF orientation ([out, in]
for matrices) with q/k rows in llama.cpp's permuted order, so RoPE rotates
adjacent pairs. All sequences advance together one layer at a time: only one
layer's weights are in memory at once, as a SmolLM2-size calibration needs.

    ref = Reference.from_gguf("model.gguf")
    logits = ref.logits(ref.hidden([ids])[0])          # float64 [len(ids), n_vocab]

Function: token_embd * embedding_scale; per layer h += residual_scale *
attention(rmsnorm(h)), h += residual_scale * ffn(rmsnorm(h)) with
ffn(x) = down(act(gate x) * up x) (drelu: relu(gate x) * relu(up x)); logits =
logit_scale * rmsnorm(h) @ output^T (token_embd when there is no output).
The other layouts add, as llama.cpp defines them: q/k/v biases (qwen2);
per-head q/k RMSNorm before RoPE (qwen3, gemma3); rotate-half RoPE pairs on
unpermuted rows (all three); Llama 3's per-dimension frequency divisors
(rope_freqs.weight); Gemma 3's embeddings * sqrt(n_embd), norms of each
block's output before its residual add, GELU-tanh gate, query scale, and
local layers that see the last sliding_window positions with their own RoPE
base.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Container

import gguf
import numpy as np

from ..pwri import open_gguf
from .spec import ModelSpec, layout_tensors


def activation(act: str, g: np.ndarray, threshold: float = 0.0) -> np.ndarray:
    """act(gate) for the five gate activations (drelu: relu of the gate; its up side is applied in the FFN)."""
    if act == "silu":
        half = g.dtype.type(0.5)
        return g * half * (1 + np.tanh(g * half))   # = g * sigmoid(g), with no exp overflow
    if act == "gelu_tanh":
        return g * g.dtype.type(0.5) * (1 + np.tanh(g.dtype.type(np.sqrt(2 / np.pi)) * (g + g.dtype.type(0.044715) * g ** 3)))
    if act in ("relu", "drelu"):
        return np.maximum(g, 0)
    if act == "fatrelu":
        return np.where(g >= threshold, g, 0).astype(g.dtype)
    if act == "relu2":
        return np.maximum(g, 0) ** 2
    raise ValueError(f"unknown activation {act!r}")


def rmsnorm(x: np.ndarray, w: np.ndarray, eps: float) -> np.ndarray:
    return x / np.sqrt((x * x).mean(-1, keepdims=True) + eps) * w


def rope(x: np.ndarray, cos: np.ndarray, sin: np.ndarray, neox: bool = False) -> np.ndarray:
    """Rotate adjacent pairs (2i, 2i+1) of each head, or (neox) the pairs (i, i + head_dim/2).
    x: [T, heads, head_dim]; cos, sin: [T, 1, head_dim/2]."""
    y = np.empty_like(x)
    half = x.shape[-1] // 2
    a, b = (slice(0, half), slice(half, None)) if neox else (slice(0, None, 2), slice(1, None, 2))
    x0, x1 = x[..., a], x[..., b]
    y[..., a] = x0 * cos - x1 * sin
    y[..., b] = x0 * sin + x1 * cos
    return y


def attention(q: np.ndarray, k: np.ndarray, v: np.ndarray, scale: float | None = None,
              window: int = 0) -> np.ndarray:
    """Causal softmax attention. q: [T, n_head, hd]; k, v: [T, n_head_kv, hd]
    (grouped-query: n_head / n_head_kv consecutive heads share one); scale: default 1/sqrt(hd);
    window > 0: the query at t sees keys t - window + 1 .. t only. Returns [T, n_head * hd]."""
    T, n_head, hd = q.shape
    k = np.repeat(k, n_head // k.shape[1], axis=1)
    v = np.repeat(v, n_head // v.shape[1], axis=1)
    # (batched matrix products: BLAS, where einsum's own loops take minutes at 2,048 positions)
    att = (q.transpose(1, 0, 2) @ k.transpose(1, 2, 0)) * q.dtype.type(1.0 / np.sqrt(hd) if scale is None else scale)
    att = att + np.triu(np.full((T, T), -np.inf, dtype=q.dtype), 1)
    if window > 0:
        att = att + np.tril(np.full((T, T), -np.inf, dtype=q.dtype), -window)
    att = np.exp(att - att.max(-1, keepdims=True))
    att /= att.sum(-1, keepdims=True)
    return (att @ v.transpose(1, 0, 2)).transpose(1, 0, 2).reshape(T, n_head * hd)


class Reference:
    """spec: the hyper-parameters; load(name): a tensor as an array; names: the tensor names present
    (ffn_down_t is used where a layer has it, else ffn_down; no output.weight means tied)."""

    def __init__(self, spec: ModelSpec, load: Callable[[str], np.ndarray], names: Container[str],
                 dtype=np.float64):
        self.spec, self.load, self.names, self.dtype = spec, load, names, np.dtype(dtype)
        self._out = None

    @classmethod
    def from_gguf(cls, path, dtype=np.float64) -> "Reference":
        m = GGUFModel(path)
        return cls(m.spec(), m.w, m.t, dtype)

    def _w(self, name: str) -> np.ndarray:
        return np.asarray(self.load(name), dtype=self.dtype)

    def hidden(self, seqs: list[list[int]], on_gate: Callable[[int, list[np.ndarray]], None] | None = None,
               progress: Callable[[int, int], None] | None = None) -> list[np.ndarray]:
        """The final-normed hidden states [len(seq), n_embd] of each sequence, each an
        independent context starting at position 0. on_gate(layer, [act(gate) per sequence])
        is called once per layer; progress(done, n_layer) after each layer."""
        sp, f = self.spec, self.dtype.type
        E, H, KV, hd = sp.n_embd, sp.n_head, sp.n_head_kv, sp.head_dim
        lay, neox = sp.layout, sp.layout != "llama"
        emb = self._w("token_embd.weight")
        e_scale = sp.embedding_scale * (np.sqrt(E) if lay == "gemma3" else 1.0)
        hs = [emb[np.asarray(s)] * f(e_scale) for s in seqs]
        del emb
        inv = 1.0 / sp.rope_theta ** (np.arange(0, hd, 2) / hd) / sp.rope_linear
        if sp.rope_factors is not None:
            inv = inv / np.asarray(sp.rope_factors, dtype=np.float64)
        inv_swa = 1.0 / sp.rope_theta_swa ** (np.arange(0, hd, 2) / hd)
        rs = f(sp.residual_scale)
        extras = layout_tensors(lay, sp.q_dim, KV * hd, hd, E)
        for L in range(sp.n_layer):
            b = f"blk.{L}."
            W = {n: self._w(b + n + ".weight") for n in
                 ("attn_norm", "attn_q", "attn_k", "attn_v", "attn_output", "ffn_norm", "ffn_gate", "ffn_up")}
            W.update({n: self._w(b + n) for n in extras})
            down_t = (self._w(b + "ffn_down_t.weight") if b + "ffn_down_t.weight" in self.names
                      else self._w(b + "ffn_down.weight").T)           # [n_ff, n_embd]
            local = bool(sp.sliding_layers[L]) if sp.sliding_window and sp.sliding_layers else False
            gates = []
            for j, h in enumerate(hs):
                T = len(h)
                ang = np.outer(np.arange(T), inv_swa if local else inv).astype(self.dtype)
                cos, sin = np.cos(ang)[:, None], np.sin(ang)[:, None]
                x = rmsnorm(h, W["attn_norm"], sp.rms_eps)
                q, k, v = x @ W["attn_q"].T, x @ W["attn_k"].T, x @ W["attn_v"].T
                if "attn_q.bias" in W:
                    q, k, v = q + W["attn_q.bias"], k + W["attn_k.bias"], v + W["attn_v.bias"]
                q, k, v = q.reshape(T, H, hd), k.reshape(T, KV, hd), v.reshape(T, KV, hd)
                if "attn_q_norm.weight" in W:
                    q = rmsnorm(q, W["attn_q_norm.weight"], sp.rms_eps)
                    k = rmsnorm(k, W["attn_k_norm.weight"], sp.rms_eps)
                q, k = rope(q, cos, sin, neox), rope(k, cos, sin, neox)
                y = attention(q, k, v, sp.attn_scale, sp.sliding_window if local else 0) @ W["attn_output"].T
                if "post_attention_norm.weight" in W:
                    y = rmsnorm(y, W["post_attention_norm.weight"], sp.rms_eps)
                h = h + rs * y
                x = rmsnorm(h, W["ffn_norm"], sp.rms_eps)
                a = activation(sp.activation, x @ W["ffn_gate"].T, sp.threshold)
                gates.append(a)
                u = x @ W["ffn_up"].T
                y = (a * (np.maximum(u, 0) if sp.activation == "drelu" else u)) @ down_t
                if "post_ffw_norm.weight" in W:
                    y = rmsnorm(y, W["post_ffw_norm.weight"], sp.rms_eps)
                hs[j] = h + rs * y
            if on_gate is not None:
                on_gate(L, gates)
            del W, down_t, gates
            if progress is not None:
                progress(L + 1, sp.n_layer)
        norm = self._w("output_norm.weight")
        return [rmsnorm(h, norm, sp.rms_eps) for h in hs]

    def output(self) -> np.ndarray:
        """The output matrix [n_vocab, n_embd] (loaded once)."""
        if self._out is None:
            self._out = self._w("output.weight" if "output.weight" in self.names else "token_embd.weight")
        return self._out

    def logits(self, hidden: np.ndarray) -> np.ndarray:
        """logit_scale * hidden @ output^T: [len(hidden), n_vocab]."""
        return (hidden @ self.output().T) * self.dtype.type(self.spec.logit_scale)


class GGUFModel:
    """A GGUF file read with gguf-py: keys (kv, and hp under the architecture's
    prefix), tensors by name (t) and dequantized to float64 (w). PowerInfer's
    PWRI files too: their llama is relu(gate) * up, their bamboo drelu."""

    def __init__(self, path):
        self.r = open_gguf(path)
        self.powerinfer = self.r.powerinfer
        self.arch = self.kv("general.architecture")
        self.t = {t.name: t for t in self.r.tensors}

    def kv(self, key, default=None):
        f = self.r.get_field(key)
        return default if f is None else f.contents()

    def hp(self, suffix, default=None):
        return self.kv(f"{self.arch}.{suffix}", default)

    def w(self, name) -> np.ndarray:
        t = self.t[name]
        x = gguf.quants.dequantize(t.data, t.tensor_type)
        return np.asarray(x, dtype=np.float64).reshape(list(reversed(t.shape.tolist())))

    def type(self, name):
        return self.t[name].tensor_type

    def spec(self) -> ModelSpec:
        """The hyper-parameters the forward pass needs (prosparse.* keys: activation and scalings)."""
        sparse = self.arch == "prosparse"
        layout = str(self.hp("base_architecture", "llama")) if sparse else (
            self.arch if self.arch in ("qwen2", "qwen3", "gemma3") else "llama")
        act = self.hp("ffn.activation") if sparse else ("gelu_tanh" if layout == "gemma3" else "silu")
        if self.powerinfer:
            act = "drelu" if self.arch == "bamboo" else "relu"
        n_embd, n_head = int(self.hp("embedding_length")), int(self.hp("attention.head_count"))
        emb = self.t["token_embd.weight"]
        n_layer = int(self.hp("block_count"))
        hd = int(self.hp("attention.key_length", 0))
        swa = int(self.hp("attention.sliding_window", 0)) if layout == "gemma3" else 0
        pattern = self.hp("attention.sliding_window_pattern")
        linear = float(self.hp("rope.scaling.factor", 1.0)) if self.hp("rope.scaling.type") == "linear" else 1.0
        scale = self.hp("attention.scale")
        return ModelSpec(
            family=layout, n_vocab=int(emb.shape[1]), n_embd=n_embd, key_length=hd,
            rope_factors=tuple(self.w("rope_freqs.weight")) if "rope_freqs.weight" in self.t else None,
            rope_linear=linear, attn_scale=None if scale is None else float(scale),
            sliding_window=swa,
            sliding_layers=_sliding_layers(pattern, n_layer),
            rope_theta_swa=float(self.hp("rope.freq_base_swa", 10000.0)),
            n_ff=int(self.hp("feed_forward_length")), n_layer=n_layer,
            n_head=n_head, n_head_kv=int(self.hp("attention.head_count_kv", n_head)),
            n_ctx=int(self.hp("context_length", 2048)),
            rope_theta=float(self.hp("rope.freq_base", 10000.0)),
            rms_eps=float(self.hp("attention.layer_norm_rms_epsilon", 1e-5)),
            tied="output.weight" not in self.t,
            activation=act,
            threshold=float(self.hp("ffn.activation_threshold", 0.0)) if sparse else 0.0,
            embedding_scale=float(self.hp("embedding_scale", 1.0)) if sparse else 1.0,
            residual_scale=float(self.hp("residual_scale", 1.0)) if sparse else 1.0,
            logit_scale=float(self.hp("logit_scale", 1.0)) if sparse else 1.0,
            name=str(self.kv("general.name", "")))


def _sliding_layers(pattern, n_layer: int) -> tuple[bool, ...]:
    """attention.sliding_window_pattern as llama.cpp reads it: per-layer flags, or every
    n-th layer global (0: none), by default n = 6 (Gemma 3)."""
    if isinstance(pattern, (list, tuple)):
        return tuple(bool(x) for x in pattern)
    n = 6 if pattern is None else int(pattern)
    return tuple(n == 0 or i % n < n - 1 for i in range(n_layer))


def gguf_logits(path: Path, ids: list[int], gate_acts: list | None = None) -> np.ndarray:
    """float64 logits [len(ids), n_vocab] of a GGUF file; gate_acts: if a list, receives each layer's act(gate)."""
    ref = Reference.from_gguf(path)
    hid = ref.hidden([list(ids)], on_gate=None if gate_acts is None else lambda L, g: gate_acts.append(g[0]))
    return ref.logits(hid[0])
