"""--predictor DIR and --stats DIR: per-layer activation predictors and neuron counts.

Predictor formats (P_in: [rank, n_embd], P_out: [n_ff, rank]):
- PowerInfer: model_{L}.pt per layer with fc1.weight (P_in) and fc2.weight
  (P_out); optional config.json whose sparse_threshold becomes the logit cut.
  PowerInfer's runtime applies ReLU between the two layers: hidden_act "relu".
- prosparse-train: predictors.safetensors with layers.{L}.fc1.weight and
  layers.{L}.fc2.weight; its string metadata may hold "threshold",
  "input" (residual|ffn_norm) and "hidden_act" (none|relu).
Stats formats (per-neuron activation counts, 1-D [n_ff]):
- PowerInfer: activation_{L}.pt.
- prosparse-train: activation_stats.safetensors with layers.{L}.counts; its
  metadata may hold "n_tokens" (the count all frequencies are relative to).
.pt files are read with torch.load(weights_only=True): tensors only, never
arbitrary pickled objects.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import ConvertError
from .spec import ModelSpec

PRED_FILE = "predictors.safetensors"
STATS_FILE = "activation_stats.safetensors"


def _torch_load(path: Path) -> dict:
    try:
        import torch
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except ImportError:
        raise ConvertError("reading .pt files needs torch (pip install 'prosparse-cpu[train]')") from None
    except Exception as e:
        raise ConvertError(f"{path}: unreadable ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from None
    return obj


def _np(t, path: Path, what: str) -> np.ndarray:
    try:
        import torch
        if isinstance(t, torch.Tensor):
            return t.detach().to(torch.float32).numpy()
    except ImportError:
        pass
    if isinstance(t, np.ndarray):
        return t.astype(np.float32)
    raise ConvertError(f"{path}: {what} is not a tensor")


def _safetensors(path: Path):
    try:
        from safetensors import safe_open
        return safe_open(str(path), framework="pt")
    except Exception as e:
        raise ConvertError(f"{path}: unreadable ({type(e).__name__}: {e})") from None


@dataclass
class Predictors:
    folder: Path
    kind: str            # "powerinfer" | "prosparse" | "gguf" (a PWRI file's own fc1/fc2)
    rank: int
    threshold: float
    input: str           # "residual" | "ffn_norm"
    hidden_act: str      # "none" | "relu"
    source: object = None  # kind "gguf": the GGUFSource holding blk.N.fc1/fc2
    ranks: list | None = None  # per-layer ranks where they differ (kind "gguf"); else `rank` throughout

    def rank_of(self, layer: int) -> int:
        return self.ranks[layer] if self.ranks else self.rank

    def load(self, layer: int) -> tuple[np.ndarray, np.ndarray]:
        """(P_in [rank, n_embd], P_out [n_ff, rank]) as float32."""
        if self.kind == "gguf":
            return tuple(self.source.load(f"blk.{layer}.{n}.weight") for n in ("fc1", "fc2"))
        if self.kind == "powerinfer":
            p = self.folder / f"model_{layer}.pt"
            sd = _torch_load(p)
            if not isinstance(sd, dict) or "fc1.weight" not in sd or "fc2.weight" not in sd:
                raise ConvertError(f"{p}: expected fc1.weight and fc2.weight")
            extra = sorted(k for k in sd if k not in ("fc1.weight", "fc2.weight"))
            if extra:
                raise ConvertError(f"{p}: unsupported predictor entry {extra[0]} (biases are not supported)")
            return _np(sd["fc1.weight"], p, "fc1.weight"), _np(sd["fc2.weight"], p, "fc2.weight")
        h = _safetensors(self.folder / PRED_FILE)
        import torch
        return tuple(h.get_tensor(f"layers.{layer}.{n}.weight").to(torch.float32).numpy() for n in ("fc1", "fc2"))


def _check_shapes(where: str, fc1_shape, fc2_shape, spec: ModelSpec, rank: int | None) -> int:
    if len(fc1_shape) != 2 or len(fc2_shape) != 2:
        raise ConvertError(f"{where}: predictor weights must be 2-D")
    r = int(fc1_shape[0])
    if tuple(fc1_shape) != (r, spec.n_embd) or tuple(fc2_shape) != (spec.n_ff, r):
        raise ConvertError(f"{where}: predictor shapes fc1 {list(fc1_shape)}, fc2 {list(fc2_shape)} do not fit "
                           f"the model (expected [rank, {spec.n_embd}] and [{spec.n_ff}, rank])")
    if rank is not None and r != rank:
        raise ConvertError(f"{where}: predictor rank {r} differs from layer 0's {rank}")
    return r


def open_predictors(folder: Path, spec: ModelSpec, threshold: float | None,
                    pred_input: str | None, hidden_act: str | None) -> Predictors:
    """Find the format, check every layer's shapes (one layer in memory at a time)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ConvertError(f"--predictor {folder}: not a directory")
    meta: dict = {}
    rank = None
    if (folder / PRED_FILE).is_file():
        kind = "prosparse"
        h = _safetensors(folder / PRED_FILE)
        meta = h.metadata() or {}
        names = set(h.keys())
        for L in range(spec.n_layer):
            n1, n2 = f"layers.{L}.fc1.weight", f"layers.{L}.fc2.weight"
            if n1 not in names or n2 not in names:
                raise ConvertError(f"{folder / PRED_FILE}: no predictor for layer {L}")
            rank = _check_shapes(f"{folder / PRED_FILE} layer {L}", h.get_slice(n1).get_shape(),
                                 h.get_slice(n2).get_shape(), spec, rank)
        extra = names - {f"layers.{L}.fc{i}.weight" for L in range(spec.n_layer) for i in (1, 2)}
        if extra:
            raise ConvertError(f"{folder / PRED_FILE}: unexpected entry {sorted(extra)[0]}")
    elif (folder / "model_0.pt").is_file():
        kind = "powerinfer"
        cfg = folder / "config.json"
        if cfg.is_file():
            try:
                meta = json.loads(cfg.read_text(encoding="utf-8"))
            except (OSError, ValueError) as e:
                raise ConvertError(f"{cfg}: unreadable ({e})") from None
            if "sparse_threshold" in meta:
                meta["threshold"] = meta["sparse_threshold"]
        meta.setdefault("hidden_act", "relu")
        pred = Predictors(folder, kind, 0, 0.0, "residual", "relu")
        for L in range(spec.n_layer):
            if not (folder / f"model_{L}.pt").is_file():
                raise ConvertError(f"--predictor {folder}: model_{L}.pt is missing")
            a, b = pred.load(L)
            rank = _check_shapes(str(folder / f"model_{L}.pt"), a.shape, b.shape, spec, rank)
        if (folder / f"model_{spec.n_layer}.pt").exists():
            raise ConvertError(f"--predictor {folder}: model_{spec.n_layer}.pt is one layer more than the model has")
    else:
        raise ConvertError(f"--predictor {folder}: neither {PRED_FILE} nor model_0.pt found")

    try:
        thr = float(threshold if threshold is not None else meta.get("threshold", 0.0))
    except (TypeError, ValueError):
        raise ConvertError(f"--predictor {folder}: bad threshold {meta.get('threshold')!r}") from None
    if not math.isfinite(thr):
        raise ConvertError(f"--predictor {folder}: threshold must be finite")
    inp = pred_input or meta.get("input", "residual")
    act = hidden_act or meta.get("hidden_act", "none")
    if inp not in ("residual", "ffn_norm"):
        raise ConvertError(f"--predictor {folder}: input must be residual or ffn_norm, not {inp!r}")
    if act not in ("none", "relu"):
        raise ConvertError(f"--predictor {folder}: hidden_act must be none or relu, not {act!r}")
    return Predictors(folder, kind, int(rank), thr, inp, act)


@dataclass
class Stats:
    counts: list[np.ndarray]   # per layer, float64 [n_ff]
    n_tokens: int              # 0 when unknown: frequencies then relative to the hottest neuron

    def freq(self, layer: int) -> np.ndarray:
        c = self.counts[layer]
        denom = self.n_tokens if self.n_tokens > 0 else max(float(c.max()), 1.0)
        return (c / denom).astype(np.float32)


def load_stats(folder: Path, spec: ModelSpec, n_tokens: int | None) -> Stats:
    folder = Path(folder)
    if not folder.is_dir():
        raise ConvertError(f"--stats {folder}: not a directory")
    counts: list[np.ndarray] = []
    tokens = 0
    if (folder / STATS_FILE).is_file():
        h = _safetensors(folder / STATS_FILE)
        try:
            tokens = int((h.metadata() or {}).get("n_tokens", 0))
        except ValueError:
            raise ConvertError(f"{folder / STATS_FILE}: bad n_tokens metadata") from None
        for L in range(spec.n_layer):
            n = f"layers.{L}.counts"
            if n not in h.keys():
                raise ConvertError(f"{folder / STATS_FILE}: no counts for layer {L}")
            import torch
            counts.append(h.get_tensor(n).to(torch.float64).numpy())
        where = str(folder / STATS_FILE)
    elif (folder / "activation_0.pt").is_file():
        for L in range(spec.n_layer):
            p = folder / f"activation_{L}.pt"
            if not p.is_file():
                raise ConvertError(f"--stats {folder}: activation_{L}.pt is missing")
            counts.append(_np(_torch_load(p), p, "the counts").astype(np.float64))
        where = str(folder)
    else:
        raise ConvertError(f"--stats {folder}: neither {STATS_FILE} nor activation_0.pt found")
    for L, c in enumerate(counts):
        if c.shape != (spec.n_ff,):
            raise ConvertError(f"{where}: layer {L} counts have shape {list(c.shape)}, expected [{spec.n_ff}]")
        if not np.all(np.isfinite(c)) or np.any(c < 0):
            raise ConvertError(f"{where}: layer {L} counts must be finite and non-negative")
    if n_tokens is not None:
        tokens = n_tokens
    return Stats(counts, tokens)


def hot_first(counts: np.ndarray) -> np.ndarray:
    """Permutation putting the most frequently active neurons first (stable on ties)."""
    return np.argsort(-counts, kind="stable")
