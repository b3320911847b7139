"""`prosparse-train profile MODEL --data TEXT -o DIR`: how sparse is this model, neuron by neuron.

Writes into DIR
  activation_stats.safetensors  layers.{L}.counts  int64 [n_ff]: tokens on which neuron i had x1 != 0;
                                metadata n_tokens, activation, threshold (the format prosparse-convert
                                --stats reads, see convert/predictor.py)
  activation_{L}.pt             the same counts, PowerInfer's layout (1-D tensor per layer)
  profile.json                  perplexity, sparsity (mean and per layer), PPL-p% sparsity
PPL-p% sparsity (Sparsing Law, arXiv 2411.02335) works for any activation, SiLU included:
neuron i's contribution to a token is c_i = |x1_i| * ||W_down[:, i]||. Per layer, a threshold
eps_L is chosen so that the cut-off share of the FFN output norm,
    CETT_L(eps) = mean_tokens ||sum_{i: c_i <= eps} x1_i W_down[:, i]|| / ||y||,
equals a common value tau; tau is searched (bisection) so that held-out perplexity rises by p%.
The sparsity at that tau (fraction of cut neurons, exact zeros included) is PPL-p% sparsity.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .config import ConfigError
from .data import load_tokenizer, tokenize_files
from .modeling import load_model
from .sparsify import Recorder, attach, sparse_mlps, sparsify

# Sparsity levels at which each layer's CETT curve is sampled (interpolated in between).
CETT_LEVELS = (0.0, 0.2, 0.4, 0.5, 0.6, 0.7, 0.75, 0.8, 0.85, 0.9, 0.93, 0.95, 0.97, 0.98, 0.99, 0.995)


def load_for_analysis(model_path: str):
    """(model in eval mode with SparseMLPs for any activation, tokenizer, activation, threshold)."""
    tok = load_tokenizer(model_path)
    model, kind, t = load_model(model_path)
    if kind == "silu":
        sparsify(model, "silu")
    return model.eval(), tok, kind, t


def text_sequences(data, tok, seq_len: int, max_tokens: int) -> torch.Tensor:
    stream = tokenize_files(data, tok, add_eos=True, max_tokens=max_tokens)
    n = stream.numel() // seq_len
    if n < 1:
        raise ConfigError(f"data too short: {stream.numel()} tokens, need at least one sequence of {seq_len}")
    return stream[: n * seq_len].view(n, seq_len).long()


@torch.no_grad()
def perplexity(model, seqs, batch: int, recorder: Recorder | None = None) -> float:
    attach(model, recorder)
    nll, count = 0.0, 0
    for i in range(0, seqs.shape[0], batch):
        x = seqs[i:i + batch]
        logits = model(input_ids=x).logits
        nll += F.cross_entropy(logits[:, :-1].float().reshape(-1, logits.shape[-1]), x[:, 1:].reshape(-1),
                               reduction="sum").item()
        count += x[:, 1:].numel()
    attach(model, None)
    return math.exp(nll / count)


@torch.no_grad()
def cett_curves(model, seqs, n_tokens: int) -> list[dict]:
    """Per layer: thresholds eps and CETT(eps) at the CETT_LEVELS sparsity levels."""
    mlps = sparse_mlps(model)
    grabbed = {}

    def grab(layer, x1):
        grabbed[layer] = x1.reshape(-1, x1.shape[-1])[:n_tokens].float().clone()

    for m in mlps:
        m.capture = grab
    model(input_ids=seqs[: max(1, math.ceil(n_tokens / seqs.shape[1]))])
    for m in mlps:
        m.capture = None
    curves = []
    for m in mlps:
        x1 = grabbed[m.layer]                                  # [T, n_ff]
        wd = m.down_proj.weight.float()                        # [n_embd, n_ff]
        col = wd.norm(dim=0)                                   # [n_ff]
        c = x1.abs() * col
        y_norm = (x1 @ wd.T).norm(dim=-1).clamp_min(1e-12)    # [T]
        flat = c.flatten()
        eps = [0.0] + [float(torch.quantile(flat[:1 << 24], q)) for q in CETT_LEVELS[1:]]
        cett = []
        for e in eps:
            cut = torch.where(c <= e, x1, torch.zeros_like(x1))
            cett.append(float(((cut @ wd.T).norm(dim=-1) / y_norm).mean()))
        curves.append({"eps": np.maximum.accumulate(np.array(eps)), "cett": np.maximum.accumulate(np.array(cett)),
                       "col": col})
    return curves


def thresholds_for(curves, tau: float) -> list[float]:
    return [float(np.interp(tau, cv["cett"], cv["eps"])) for cv in curves]


def set_truncation(model, curves, eps):
    for m, cv, e in zip(sparse_mlps(model), curves, eps):
        col = cv["col"].to(m.down_proj.weight.dtype)
        m.transform = (lambda L, x1, col=col, e=e: torch.where(x1.abs() * col > e, x1, torch.zeros_like(x1))) \
            if e > 0 else None


def ppl_p_sparsity(model, seqs, batch: int, p: float, cett_tokens: int, base_ppl: float, steps: int = 10) -> dict:
    curves = cett_curves(model, seqs, cett_tokens)
    target = base_ppl * (1 + p / 100)
    lo, hi = 0.0, float(min(cv["cett"][-1] for cv in curves))
    best = {"cett": 0.0, "ppl": base_ppl, "eps": [0.0] * len(curves), "layer_sparsity": None}
    for _ in range(steps):
        tau = (lo + hi) / 2
        eps = thresholds_for(curves, tau)
        set_truncation(model, curves, eps)
        rec = Recorder(len(curves), want_reg=False)
        ppl = perplexity(model, seqs, batch, rec)
        if ppl <= target:
            lo = tau
            best = {"cett": tau, "ppl": ppl, "eps": eps, "layer_sparsity": rec.sparsity()}
        else:
            hi = tau
    set_truncation(model, curves, [0.0] * len(curves))
    if best["layer_sparsity"] is None:  # nothing below target: report the untruncated model
        rec = Recorder(len(curves), want_reg=False)
        perplexity(model, seqs, batch, rec)
        best["layer_sparsity"] = rec.sparsity()
    best.update(p=p, target_ppl=target, sparsity=float(np.mean(best["layer_sparsity"])))
    return best


def write_stats(out: Path, counts, n_tokens: int, kind: str, t: float):
    from safetensors.torch import save_file

    out.mkdir(parents=True, exist_ok=True)
    tmp = out / f".activation_stats.tmp{os.getpid()}"
    save_file({f"layers.{L}.counts": c.to(torch.int64).contiguous() for L, c in enumerate(counts)}, str(tmp),
              metadata={"n_tokens": str(n_tokens), "activation": kind, "threshold": str(t)})
    os.replace(tmp, out / "activation_stats.safetensors")
    for L, c in enumerate(counts):
        torch.save(c.to(torch.int64).clone(), out / f"activation_{L}.pt")


def run_profile(model_path, data, out, seq_len=256, max_tokens=32768, batch=4, ppl_p=1.0, cett_tokens=256,
                search_tokens=2048) -> dict:
    with torch.no_grad():
        return _profile(model_path, data, out, seq_len, max_tokens, batch, ppl_p, cett_tokens, search_tokens)


def _profile(model_path, data, out, seq_len, max_tokens, batch, ppl_p, cett_tokens, search_tokens) -> dict:
    model, tok, kind, t = load_for_analysis(model_path)
    seqs = text_sequences(data, tok, seq_len, max_tokens)
    n_layers = len(sparse_mlps(model))
    rec = Recorder(n_layers, want_reg=False, want_counts=True)
    ppl = perplexity(model, seqs, batch, rec)
    n_tokens = rec.tokens
    res = {"model": str(model_path), "activation": kind, "threshold": t, "n_tokens": n_tokens, "ppl": ppl,
           "sparsity": float(np.mean(rec.sparsity())), "layer_sparsity": rec.sparsity()}
    write_stats(Path(out), rec.counts, n_tokens, kind, t)
    if ppl_p is not None:
        # The search evaluates perplexity ~10 times: on the first search_tokens tokens only.
        sub = seqs[: max(1, search_tokens // seq_len)]
        base = perplexity(model, sub, batch)
        r = ppl_p_sparsity(model, sub, batch, ppl_p, cett_tokens, base)
        res["ppl_p"] = {k: r[k] for k in ("p", "target_ppl", "ppl", "cett", "sparsity")} | {
            "base_ppl": base, "tokens": sub.numel()}
        res["cett"] = {"eps": r["eps"], "layer_sparsity": r["layer_sparsity"]}
    (Path(out) / "profile.json").write_text(json.dumps(res, indent=2))
    return res
