"""`prosparse-train predictors MODEL --data TEXT --rank R -o DIR`: per-layer activation predictors.

For each layer L a two-layer network guesses, from the layer's FFN input u, which neurons
will have x1 != 0:   logits = fc2(act(fc1(u))),  fc1: [rank, n_embd],  fc2: [n_ff, rank].
  1. record (u, x1 != 0) pairs from the model on text. u = the residual stream before the
     FFN norm ("residual", PowerInfer's choice, the default) or the normalised FFN input
     ("ffn_norm"); the choice is written into the output.
  2. train with PAPER.md's weighted BCE: w = mean(label) + 0.005, positives weighted 1 - w,
     negatives w; AdamW; after every epoch measure recall on held-out pairs and keep the
     checkpoint with the best recall (compared to 0.1%; ties: the higher predicted sparsity).
Output in DIR (both read by prosparse-convert --predictor, see convert/predictor.py):
  predictors.safetensors  layers.{L}.fc1.weight, layers.{L}.fc2.weight (float32);
                          metadata threshold, input, hidden_act, rank
  model_{L}.pt            PowerInfer's layout: {"fc1.weight", "fc2.weight"}
  predictors.json         per layer: recall, predicted sparsity, true sparsity, best epoch
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .config import ConfigError
from .profile import load_for_analysis, text_sequences
from .sparsify import sparse_mlps


class Predictor(nn.Module):
    def __init__(self, n_embd: int, n_ff: int, rank: int, hidden_act: str):
        super().__init__()
        self.fc1 = nn.Linear(n_embd, rank, bias=False)
        self.fc2 = nn.Linear(rank, n_ff, bias=False)
        self.hidden_act = hidden_act

    def forward(self, u):
        h = self.fc1(u)
        return self.fc2(F.relu(h) if self.hidden_act == "relu" else h)


@torch.no_grad()
def record_pairs(model, seqs, tokens: int, input_kind: str, layers: list[int], batch: int = 4):
    """-> {L: (u bfloat16 [N, n_embd] (float16 overflows on massive residual activations), active bool [N, n_ff])} for N = min(tokens, available) tokens."""
    mlps = {m.layer: m for m in sparse_mlps(model)}
    us, ys, handles = {L: [] for L in layers}, {L: [] for L in layers}, []
    for L in layers:
        norm = model.model.layers[L].post_attention_layernorm
        if input_kind == "residual":
            handles.append(norm.register_forward_pre_hook(lambda mod, args, L=L: us[L].append(
                args[0].reshape(-1, args[0].shape[-1]).bfloat16())))
        else:
            handles.append(norm.register_forward_hook(lambda mod, args, out, L=L: us[L].append(
                out.reshape(-1, out.shape[-1]).bfloat16())))
        mlps[L].capture = lambda layer, x1: ys[layer].append((x1 != 0).reshape(-1, x1.shape[-1])) \
            if layer in ys else None
    seen = 0
    for i in range(0, seqs.shape[0], batch):
        if seen >= tokens:
            break
        x = seqs[i:i + batch]
        model(input_ids=x)
        seen += x.numel()
    for h in handles:
        h.remove()
    for m in mlps.values():
        m.capture = None
    return {L: (torch.cat(us[L])[:tokens], torch.cat(ys[L])[:tokens]) for L in layers}


def metrics(logits, labels, threshold: float) -> tuple[float, float]:
    pred = logits > threshold
    active = labels.sum().item()
    recall = (pred & labels).sum().item() / active if active else 1.0
    return recall, 1.0 - pred.float().mean().item()


def train_layer(u, y, rank: int, hidden_act: str, threshold: float, epochs: int, lr: float,
                batch: int = 256, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    n = u.shape[0]
    perm = torch.randperm(n, generator=g)
    n_val = max(1, n // 10)
    val, tr = perm[:n_val], perm[n_val:]
    u_tr, y_tr, u_val, y_val = u[tr].float(), y[tr], u[val].float(), y[val]
    torch.manual_seed(seed)
    net = Predictor(u.shape[1], y.shape[1], rank, hidden_act)
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=0.01)
    w = y_tr.float().mean().item() + 0.005          # PAPER.md: positives 1 - w, negatives w
    best = None
    for epoch in range(1, epochs + 1):
        order = torch.randperm(u_tr.shape[0], generator=g)
        for i in range(0, len(order), batch):
            idx = order[i:i + batch]
            target = y_tr[idx].float()
            weight = target * (1 - w) + (1 - target) * w
            loss = F.binary_cross_entropy_with_logits(net(u_tr[idx]), target, weight=weight)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            # residual inputs carry rare huge values (massive activations, ~1e4 in SmolLM2's late
            # layers): clipping keeps one such token from throwing the predictor off
            torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
            opt.step()
        with torch.no_grad():
            recall, pred_sp = metrics(net(u_val), y_val, threshold)
        # Best recall, compared to 0.1%: among epochs that tie at that resolution the sparser wins.
        if best is None or (round(recall, 3), pred_sp) > (round(best["recall"], 3), best["predicted_sparsity"]):
            best = {"recall": recall, "predicted_sparsity": pred_sp, "epoch": epoch,
                    "state": {k: v.detach().clone() for k, v in net.state_dict().items()}}
    best["true_sparsity"] = 1.0 - y_val.float().mean().item()
    best["pairs"] = n
    return best


def write_predictors(out: Path, states: dict, threshold: float, input_kind: str, hidden_act: str, rank: int):
    from safetensors.torch import save_file

    out.mkdir(parents=True, exist_ok=True)
    tensors = {f"layers.{L}.{k}": v.float().contiguous() for L, sd in states.items() for k, v in sd.items()}
    tmp = out / f".predictors.tmp{os.getpid()}"
    save_file(tensors, str(tmp), metadata={"threshold": str(threshold), "input": input_kind,
                                           "hidden_act": hidden_act, "rank": str(rank)})
    os.replace(tmp, out / "predictors.safetensors")
    for L, sd in states.items():
        torch.save({k: v.float().contiguous() for k, v in sd.items()}, out / f"model_{L}.pt")


def run_predictors(model_path, data, out, rank=64, tokens=8192, seq_len=256, epochs=10, lr=1e-3, threshold=0.0,
                   input_kind="residual", hidden_act="relu", layers=None, progress=True, batch=256) -> dict:
    if rank < 1:
        raise ConfigError("--rank must be >= 1")
    model, tok, kind, t = load_for_analysis(model_path)
    if kind == "silu":
        raise ConfigError(f"{model_path} has a SiLU FFN: its x1 is never exactly zero, so there is nothing to "
                          "predict; train it with ReLU first (prosparse-train train)")
    n_layers = model.config.num_hidden_layers
    layers = layers if layers is not None else list(range(n_layers))
    if any(not 0 <= L < n_layers for L in layers):
        raise ConfigError(f"--layers must be in 0..{n_layers - 1}")
    seqs = text_sequences(data, tok, seq_len, max_tokens=tokens + seq_len)
    with torch.no_grad():
        pairs = record_pairs(model, seqs, tokens, input_kind, layers)
    del model
    results, states = [], {}
    it = layers
    if progress:
        from tqdm import tqdm

        it = tqdm(layers, desc="predictors", dynamic_ncols=True)
    for L in it:
        u, y = pairs.pop(L)
        r = train_layer(u, y, rank, hidden_act, threshold, epochs, lr, batch=batch, seed=L)
        states[L] = r.pop("state")
        results.append({"layer": L, **r})
    write_predictors(Path(out), states, threshold, input_kind, hidden_act, rank)
    summary = {"model": str(model_path), "activation": kind, "rank": rank, "threshold": threshold,
               "input": input_kind, "hidden_act": hidden_act, "tokens_per_layer": results[0]["pairs"],
               "mean_recall": float(np.mean([r["recall"] for r in results])),
               "mean_predicted_sparsity": float(np.mean([r["predicted_sparsity"] for r in results])),
               "mean_true_sparsity": float(np.mean([r["true_sparsity"] for r in results])),
               "layers": results}
    (Path(out) / "predictors.json").write_text(json.dumps(summary, indent=2))
    return summary
