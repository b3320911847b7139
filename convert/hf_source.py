"""A Hugging Face model folder, read lazily: one tensor in memory at a time.

Weights: *.safetensors (one file, or sharded with model.safetensors.index.json)
through safetensors.safe_open, or pytorch_model*.bin through
torch.load(weights_only=True, mmap=True) -- never arbitrary unpickling.
Tensors are exposed under llama.cpp's GGUF names for the family, in HF
orientation ([out, in]), with q/k still in HF's rotate-half row order
(qk_permuted = False). Gemma's norms compute x * (1 + w): they are exposed as
1 + w, as llama.cpp's converter stores them, so every reader sees plain
RMSNorm weights.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

from .errors import ConvertError
from .spec import ModelSpec, spec_from_hf_config

_LAYER = re.compile(r"^model\.layers\.(\d+)\.(.+)$")
_LAYER_NAMES = {
    "input_layernorm.weight": "attn_norm.weight",
    "self_attn.q_proj.weight": "attn_q.weight",
    "self_attn.k_proj.weight": "attn_k.weight",
    "self_attn.v_proj.weight": "attn_v.weight",
    "self_attn.o_proj.weight": "attn_output.weight",
    "post_attention_layernorm.weight": "ffn_norm.weight",
    "mlp.gate_proj.weight": "ffn_gate.weight",
    "mlp.up_proj.weight": "ffn_up.weight",
    "mlp.down_proj.weight": "ffn_down.weight",
    "self_attn.q_proj.bias": "attn_q.bias",        # qwen2
    "self_attn.k_proj.bias": "attn_k.bias",
    "self_attn.v_proj.bias": "attn_v.bias",
    "self_attn.q_norm.weight": "attn_q_norm.weight",   # qwen3, gemma3
    "self_attn.k_norm.weight": "attn_k_norm.weight",
}
# Gemma 3 norms around both blocks (its post_attention_layernorm is not llama's ffn_norm)
_GEMMA_NAMES = {
    "post_attention_layernorm.weight": "post_attention_norm.weight",
    "pre_feedforward_layernorm.weight": "ffn_norm.weight",
    "post_feedforward_layernorm.weight": "post_ffw_norm.weight",
}
_GLOBAL_NAMES = {
    "model.embed_tokens.weight": "token_embd.weight",
    "model.norm.weight": "output_norm.weight",
    "lm_head.weight": "output.weight",
}


def gguf_name(hf_name: str, family: str = "llama") -> str | None:
    """HF parameter name -> GGUF name; None for buffers we drop."""
    if hf_name.endswith("rotary_emb.inv_freq"):
        return None  # a RoPE cache some old checkpoints saved; recomputed by the engine
    if hf_name in _GLOBAL_NAMES:
        return _GLOBAL_NAMES[hf_name]
    m = _LAYER.match(hf_name)
    names = {**_LAYER_NAMES, **_GEMMA_NAMES} if family == "gemma3" else _LAYER_NAMES
    if m and m.group(2) in names:
        return f"blk.{m.group(1)}.{names[m.group(2)]}"
    return hf_name  # unknown: kept so that validation reports it as unexpected


def _torch():
    try:
        import torch
    except ImportError:
        raise ConvertError("reading Hugging Face weights needs torch (pip install 'prosparse-cpu[train]')") from None
    return torch


class HFSource:
    qk_permuted = False

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        cfg_path = self.folder / "config.json"
        try:
            self.config = json.loads(cfg_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConvertError(f"{folder}: no config.json (not a Hugging Face model folder)") from None
        except (OSError, ValueError) as e:
            raise ConvertError(f"{cfg_path}: unreadable ({e})") from None
        self.spec: ModelSpec = spec_from_hf_config(self.config)
        self._where: dict[str, tuple[str, str]] = {}   # gguf name -> (file, hf name)
        self.shapes: dict[str, tuple[int, ...]] = {}
        self._open: dict[str, object] = {}
        self._torch = _torch()
        self._index_weights()

    # ---- discovery -------------------------------------------------------
    def _weight_files(self) -> tuple[str, list[str]]:
        for kind, index, single in (("safetensors", "model.safetensors.index.json", "model.safetensors"),
                                    ("bin", "pytorch_model.bin.index.json", "pytorch_model.bin")):
            ip = self.folder / index
            if ip.is_file():
                try:
                    wm = json.loads(ip.read_text(encoding="utf-8"))["weight_map"]
                except (OSError, ValueError, KeyError) as e:
                    raise ConvertError(f"{ip}: unreadable index ({e})") from None
                files = sorted(set(wm.values()))
                for f in files:
                    if not (self.folder / f).is_file():
                        raise ConvertError(f"{ip}: shard {f} is missing")
                return kind, files
            if (self.folder / single).is_file():
                return kind, [single]
        raise ConvertError(f"{self.folder}: no model.safetensors(.index.json) or pytorch_model.bin(.index.json)")

    def _index_weights(self) -> None:
        kind, files = self._weight_files()
        self.kind = kind
        for f in files:
            handle = self._handle(f)
            for hf in handle.keys():
                g = gguf_name(hf, self.spec.family)
                if g is None:
                    continue
                if g == "output.weight" and self.spec.tied:
                    continue  # tied: lm_head is token_embd again
                if g in self._where:
                    raise ConvertError(f"tensor {hf} appears in two weight files")
                self._where[g] = (f, hf)
                if kind == "safetensors":
                    shape = handle.get_slice(hf).get_shape()
                else:
                    shape = handle[hf].shape
                self.shapes[g] = tuple(int(s) for s in shape)

    def _handle(self, f: str):
        """A safetensors file is opened afresh for every tensor, so its memory map (whose
        touched pages count as resident memory) is released after each one; .bin
        state dicts are loaded once (memory-mapped when the format allows)."""
        if f in self._open:
            return self._open[f]
        path = self.folder / f
        try:
            if f.endswith(".safetensors"):
                from safetensors import safe_open
                return safe_open(str(path), framework="pt")
            else:
                try:
                    h = self._torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
                except RuntimeError:  # legacy (non-zip) format cannot be memory-mapped
                    h = self._torch.load(str(path), map_location="cpu", weights_only=True)
                if not isinstance(h, dict):
                    raise ConvertError(f"{path}: not a state dict")
        except ConvertError:
            raise
        except Exception as e:  # safetensors / torch raise many types for bad files
            raise ConvertError(f"{path}: unreadable weights ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from None
        self._open[f] = h
        return h

    # ---- access ----------------------------------------------------------
    def load(self, name: str) -> np.ndarray:
        """One tensor as float32 numpy, HF orientation."""
        f, hf = self._where[name]
        try:
            if f.endswith(".safetensors"):
                with self._handle(f) as h:
                    x = h.get_tensor(hf).to(self._torch.float32).numpy()
            else:
                x = self._handle(f)[hf].to(self._torch.float32).numpy()
        except ConvertError:
            raise
        except Exception as e:  # a truncated or corrupt file shows up only when the tensor is read
            raise ConvertError(f"{self.folder / f}: cannot read tensor {hf} ({type(e).__name__}: {e})") from None
        if not np.isfinite(x).all():
            raise ConvertError(f"{self.folder / f}: tensor {hf} contains NaN or Inf values")
        if self.spec.family == "gemma3" and name.endswith("norm.weight"):
            x = x + np.float32(1.0)
        return x

    def close(self) -> None:
        self._open.clear()
