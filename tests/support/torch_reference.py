"""PyTorch forward passes of tiny Hugging Face models: the references the
converter and the engine are compared with.

- `torch_logits(folder, ids)`: float64, written out (rotate-half RoPE, GQA,
  the five activations, MiniCPM scalings) over the weights of a saved folder,
  so it runs activations transformers cannot; test_references.py checks it
  against transformers where transformers can.
- `reference_logits(model, ids, ...)`: the transformers model itself with its
  MLP activation replaced (Act) and MiniCPM-style scalings added by forward hooks.
"""
from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import numpy as np
import torch


def load_hf_state(folder: Path) -> dict[str, torch.Tensor]:
    out = {}
    for f in sorted(folder.glob("*.safetensors")):
        from safetensors.torch import load_file
        out.update(load_file(str(f)))
    for f in sorted(folder.glob("pytorch_model*.bin")):
        out.update(torch.load(str(f), weights_only=True))
    return {k: v.to(torch.float64) for k, v in out.items()}


def _act(act: str, g: torch.Tensor, u: torch.Tensor, t: float) -> torch.Tensor:
    if act == "silu":
        return torch.nn.functional.silu(g) * u
    if act == "relu":
        return torch.relu(g) * u
    if act == "fatrelu":
        return torch.where(g >= t, g, torch.zeros_like(g)) * u
    if act == "relu2":
        return torch.relu(g) ** 2 * u
    if act == "drelu":
        return torch.relu(g) * torch.relu(u)
    raise ValueError(act)


def torch_logits(folder: Path, ids: list[int], gate_acts: list | None = None) -> np.ndarray:
    """float64 PyTorch reference of a tiny HF folder: [len(ids), n_vocab].
    gate_acts: if a list, receives each layer's act(gate) [len(ids), n_ff]."""
    c = json.loads((folder / "config.json").read_text())
    W = load_hf_state(folder)
    E, H, L = c["hidden_size"], c["num_attention_heads"], c["num_hidden_layers"]
    KV = c["num_key_value_heads"]
    hd = E // H
    eps = c["rms_norm_eps"]
    theta = (c.get("rope_parameters") or {}).get("rope_theta", c.get("rope_theta", 10000.0))
    minicpm = "MiniCPMForCausalLM" in c["architectures"]
    act, t = c["hidden_act"], c.get("hidden_act_param", 0.0)

    def norm(x, w):
        return x * torch.rsqrt((x * x).mean(-1, keepdim=True) + eps) * w

    T = len(ids)
    pos = torch.arange(T, dtype=torch.float64)
    inv = 1.0 / theta ** (torch.arange(0, hd, 2, dtype=torch.float64) / hd)
    ang = torch.outer(pos, inv)
    cos, sin = torch.cat([ang.cos()] * 2, -1), torch.cat([ang.sin()] * 2, -1)

    def rope(x):   # x [T, heads, hd], rotate-half (HF convention)
        x1, x2 = x[..., : hd // 2], x[..., hd // 2:]
        rot = torch.cat([-x2, x1], -1)
        return x * cos[:, None] + rot * sin[:, None]

    h = W["model.embed_tokens.weight"][torch.tensor(ids)]
    rs = 1.0
    if minicpm:
        h = h * c["scale_emb"]
        rs = c["scale_depth"] / math.sqrt(L)
    mask = torch.full((T, T), float("-inf"), dtype=torch.float64).triu(1)
    for i in range(L):
        p = f"model.layers.{i}."
        x = norm(h, W[p + "input_layernorm.weight"])
        q = rope((x @ W[p + "self_attn.q_proj.weight"].T).view(T, H, hd))
        k = rope((x @ W[p + "self_attn.k_proj.weight"].T).view(T, KV, hd))
        v = (x @ W[p + "self_attn.v_proj.weight"].T).view(T, KV, hd)
        k = k.repeat_interleave(H // KV, dim=1)
        v = v.repeat_interleave(H // KV, dim=1)
        att = torch.einsum("thd,shd->hts", q, k) / math.sqrt(hd) + mask
        o = torch.einsum("hts,shd->thd", att.softmax(-1), v).reshape(T, E)
        h = h + rs * (o @ W[p + "self_attn.o_proj.weight"].T)
        x = norm(h, W[p + "post_attention_layernorm.weight"])
        g = x @ W[p + "mlp.gate_proj.weight"].T
        if gate_acts is not None:
            gate_acts.append(_act(act, g, torch.ones_like(g), t).numpy())
        a = _act(act, g, x @ W[p + "mlp.up_proj.weight"].T, t)
        h = h + rs * (a @ W[p + "mlp.down_proj.weight"].T)
    h = norm(h, W["model.norm.weight"])
    out = W.get("lm_head.weight", W["model.embed_tokens.weight"])
    if c.get("tie_word_embeddings") or minicpm:
        out = W["model.embed_tokens.weight"]
    logits = h @ out.T
    if minicpm:
        logits = logits / (E / c["dim_model_base"])
    return logits.numpy()


class Act(torch.nn.Module):
    """The gate activation of a prosparse file, as a module HF's MLP can hold."""

    def __init__(self, activation: str, threshold: float):
        super().__init__()
        self.activation, self.threshold = activation, threshold

    def forward(self, x):
        if self.activation == "silu":
            return torch.nn.functional.silu(x)
        if self.activation == "relu":
            return torch.relu(x)
        if self.activation == "fatrelu":
            return torch.where(x >= self.threshold, x, torch.zeros_like(x))
        if self.activation == "relu2":
            return torch.relu(x) ** 2
        raise ValueError(self.activation)


def reference_logits(model, tokens, activation: str = "silu", threshold: float = 0.0,
                     embedding_scale: float | None = None, residual_scale: float | None = None,
                     logit_scale: float | None = None) -> np.ndarray:
    """Logits (n, n_vocab) of the HF model on tokens, with its MLP activation
    replaced and MiniCPM-style scalings added by forward hooks."""
    model = copy.deepcopy(model)
    hooks = []
    for layer in model.model.layers:
        mlp = layer.mlp
        if activation == "drelu":
            mlp.forward = (lambda m: lambda x: m.down_proj(torch.relu(m.gate_proj(x)) * torch.relu(m.up_proj(x))))(mlp)
        else:
            mlp.act_fn = Act(activation, threshold)
        if residual_scale is not None:
            rs = float(residual_scale)
            hooks.append(layer.self_attn.register_forward_hook(lambda mod, inp, out: (out[0] * rs,) + tuple(out[1:])))
            hooks.append(mlp.register_forward_hook(lambda mod, inp, out: out * rs))
    if embedding_scale is not None:
        es = float(embedding_scale)
        hooks.append(model.model.embed_tokens.register_forward_hook(lambda mod, inp, out: out * es))
    if logit_scale is not None:
        ls = float(logit_scale)
        hooks.append(model.model.norm.register_forward_hook(lambda mod, inp, out: out * ls))
    with torch.no_grad():
        out = model(torch.tensor([list(tokens)], dtype=torch.long)).logits[0]
    for h in hooks:
        h.remove()
    return out.double().numpy()
