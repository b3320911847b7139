"""Swap the FFN gate activation of a LLaMA-family model and watch its intermediate output.

LLaMA-family here means a decoder whose layers hold `mlp.gate_proj/up_proj/down_proj`
with a SiLU gate: LLaMA 1-3.x (any RoPE scaling), Mistral, Qwen2/2.5 (attention
biases) and Qwen3 (q/k norms); attention is left as it is. Gemma's GeGLU FFN
(a tanh-GELU gate, different norms) is refused.

Every decoder layer's `mlp` is replaced by a SparseMLP that keeps the same three
projections (so state-dict names do not change) and computes

    s  = act(x @ W_gate^T)                 # relu | relu2 | fatrelu_t | silu
    u  = x @ W_up^T   (relu(u) for drelu)
    x1 = s * u                             # [batch, seq, n_ff], the "intermediate output"
    y  = x1 @ W_down^T

While a Recorder is attached it keeps, per layer, the L1 term of x1 (with the
graph, for the regulariser) and detached counts of exact zeros (sparsity). The
slots are indexed by layer, so the recomputation that activation checkpointing
does during backward overwrites them instead of adding duplicates.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .config import ConfigError

SUPPORTED_MODEL_TYPES = ("llama", "mistral", "qwen2", "qwen3")
# Gated FFNs with a GELU gate: same projection names, but ReLU-fying them is a
# different recipe from the paper's SiLU -> ReLU swap, so they get a clear refusal.
GEGLU_MODEL_TYPES = ("gemma", "gemma2", "gemma3", "gemma3_text")


def fatrelu(z: torch.Tensor, t: float) -> torch.Tensor:
    """fatrelu_t(z) = z if z >= t else 0 (t = 0 is ReLU)."""
    return torch.where(z >= t, z, torch.zeros((), dtype=z.dtype, device=z.device))


def gate_act(kind: str, t: float = 0.0):
    if kind == "relu":
        return F.relu
    if kind == "relu2":
        return lambda z: torch.square(F.relu(z))
    if kind == "drelu":
        return F.relu
    if kind == "fatrelu":
        return lambda z: fatrelu(z, t)
    if kind == "silu":
        return F.silu
    raise ConfigError(f"unknown activation '{kind}'")


class Recorder:
    """Per-layer slots filled by SparseMLP.forward while `active`.

    reg[l]    : scalar tensor, mean |x1| of layer l in the current micro-batch (with graph)
    zeros[l]  : detached count of x1 == 0 in layer l since the last reset()
    numel[l]  : number of elements of x1 in layer l since the last reset()
    tokens    : tokens seen since the last reset()
    counts[l] : optional [n_ff] int64 per-neuron count of x1 != 0 (profiling)
    """

    def __init__(self, n_layers: int, want_reg: bool = True, want_counts: bool = False):
        self.n_layers = n_layers
        self.want_reg = want_reg
        self.want_counts = want_counts
        self.reset()

    def reset(self):
        self.reg = [None] * self.n_layers
        self.zeros = [0.0] * self.n_layers
        self.numel = [0] * self.n_layers
        self.counts = [None] * self.n_layers
        self.tokens = 0

    def new_micro_batch(self):
        self.reg = [None] * self.n_layers

    def sparsity(self) -> list[float]:
        return [float(z) / n if n else 0.0 for z, n in zip(self.zeros, self.numel)]


class SparseMLP(nn.Module):
    def __init__(self, mlp: nn.Module, layer: int, kind: str, t: float = 0.0):
        super().__init__()
        self.gate_proj, self.up_proj, self.down_proj = mlp.gate_proj, mlp.up_proj, mlp.down_proj
        self.layer = layer
        self.set_activation(kind, t)
        self.recorder: Recorder | None = None
        self.transform = None  # optional fn(layer, x1) -> x1, for truncation experiments (CETT)
        self.capture = None    # optional fn(layer, x1), sees x1 (predictor labels, profiling)

    def set_activation(self, kind: str, t: float = 0.0):
        self.kind, self.t = kind, float(t)
        self.act = gate_act(kind, t)

    def forward(self, x):
        up = self.up_proj(x)
        if self.kind == "drelu":
            up = F.relu(up)
        x1 = self.act(self.gate_proj(x)) * up
        if self.transform is not None:
            x1 = self.transform(self.layer, x1)
        rec = self.recorder
        # Activation checkpointing re-runs this forward inside backward: record nothing then
        # (but build the same graph, or checkpoint's saved-tensor check fails).
        reg = x1.float().abs().mean() if rec is not None and rec.want_reg else None
        if rec is not None and torch._C._current_graph_task_id() == -1:
            if reg is not None:
                rec.reg[self.layer] = reg
            with torch.no_grad():
                nz = x1 != 0
                zeros = nz.numel() - nz.sum()          # tensor: no device sync here
                rec.zeros[self.layer] = rec.zeros[self.layer] + zeros
                rec.numel[self.layer] += nz.numel()
                if self.layer == 0:
                    rec.tokens += nz.numel() // nz.shape[-1]
                if rec.want_counts:
                    c = nz.reshape(-1, nz.shape[-1]).sum(0, dtype=torch.int64)
                    rec.counts[self.layer] = c if rec.counts[self.layer] is None else rec.counts[self.layer] + c
        if self.capture is not None:
            self.capture(self.layer, x1)
        return self.down_proj(x1)


def decoder_layers(model) -> nn.ModuleList:
    return model.model.layers


def check_architecture(config) -> None:
    mt = getattr(config, "model_type", None)
    if mt in GEGLU_MODEL_TYPES:
        raise ConfigError(f"architecture '{mt}' has a GeGLU FFN (tanh-GELU gate): ReLU-fication is implemented "
                          f"for SiLU-gated models only ({', '.join(SUPPORTED_MODEL_TYPES)})")
    if mt not in SUPPORTED_MODEL_TYPES:
        raise ConfigError(f"unknown architecture '{mt}': the trainer handles LLaMA-style gated FFNs "
                          f"({', '.join(SUPPORTED_MODEL_TYPES)})")


def sparsify(model, kind: str, t: float = 0.0) -> list[SparseMLP]:
    """Replace each layer's MLP by a SparseMLP with activation `kind` (idempotent)."""
    check_architecture(model.config)
    mlps = []
    for i, layer in enumerate(decoder_layers(model)):
        if isinstance(layer.mlp, SparseMLP):
            layer.mlp.set_activation(kind, t)
        else:
            layer.mlp = SparseMLP(layer.mlp, i, kind, t)
        mlps.append(layer.mlp)
    return mlps


def sparse_mlps(model) -> list[SparseMLP]:
    return [layer.mlp for layer in decoder_layers(model) if isinstance(layer.mlp, SparseMLP)]


def attach(model, recorder: Recorder | None) -> None:
    for m in sparse_mlps(model):
        m.recorder = recorder


def reg_loss(recorder: Recorder, norm: str, n_ff: int) -> torch.Tensor:
    """Sum (or mean) over layers of the normalised L1 of x1; see config.REG_NORMS."""
    terms = [r for r in recorder.reg if r is not None]
    total = torch.stack(terms).sum()
    if norm == "mean":
        return total
    if norm == "layer_mean":
        return total / len(terms)
    if norm == "token_l1":  # mean|x1| * n_ff = sum over neurons, mean over tokens
        return total * n_ff
    raise ConfigError(f"unknown sparsity.norm '{norm}'")


def hf_activation_fields(kind: str, t: float) -> dict:
    """config.json fields in the published ProSparse format."""
    if kind == "relu" and t > 0:
        kind = "fatrelu"
    return {"hidden_act": kind, "hidden_act_param": float(t) if kind == "fatrelu" else 0.0}
