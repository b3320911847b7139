"""Load LLaMA-family models (HF folder, .gguf, or a ProSparse output) and save ProSparse checkpoints.

Output format (the published ProSparse one): a Hugging Face folder with
config.json holding

    "hidden_act": "relu" | "fatrelu" | "relu2" | "drelu",  "hidden_act_param": t

plus model.safetensors and the tokenizer files. What stock transformers
(5.x, no custom code) does with it:

  * "relu" and "relu2" are in transformers' ACT2FN table, so
    AutoModelForCausalLM.from_pretrained(folder) builds the exact model.
  * "fatrelu" and "drelu" are not: stock transformers raises KeyError while
    building the MLP. Load those with `load_model(folder)` below, which reads
    the config, builds the model with hidden_act "relu" and then swaps each
    layer's MLP for a SparseMLP with the right activation -- no
    trust_remote_code involved. (The paper's released checkpoints instead
    ship their own modeling code.)
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch

from .config import ConfigError
from .sparsify import check_architecture, hf_activation_fields, sparsify

NON_STOCK = {"fatrelu", "drelu"}


def _dtype(name: str):
    return {"float32": torch.float32, "bfloat16": torch.bfloat16}[name]


def read_hf_config(path: str):
    from transformers import AutoConfig

    p = Path(path)
    if not p.exists():
        raise ConfigError(f"model not found: {p}")
    try:
        if p.suffix == ".gguf":
            return AutoConfig.from_pretrained(str(p.parent), gguf_file=p.name)
        return AutoConfig.from_pretrained(str(p))
    except (OSError, ValueError, KeyError) as e:
        raise ConfigError(f"cannot read a model config from {p}: {str(e).splitlines()[0]}") from None


def load_model(path: str, dtype: str = "float32"):
    """-> (model, activation kind, threshold). ReLU-family models come back with SparseMLPs."""
    from transformers import AutoModelForCausalLM

    cfg = read_hf_config(path)
    check_architecture(cfg)
    kind = getattr(cfg, "hidden_act", "silu")
    t = float(getattr(cfg, "hidden_act_param", 0.0) or 0.0)
    if kind not in ("silu", "relu", "relu2", "fatrelu", "drelu"):
        raise ConfigError(f"unknown activation '{kind}' in {path}")
    if kind in NON_STOCK:
        cfg.hidden_act = "relu"  # a placeholder transformers can build; replaced just below
    p = Path(path)
    kw = dict(config=cfg, dtype=_dtype(dtype))
    if p.suffix == ".gguf":
        model = AutoModelForCausalLM.from_pretrained(str(p.parent), gguf_file=p.name, **kw)
        # The GGUF loader dequantizes into plain tensors but leaves the model marked as
        # "quantized with gguf", which save_pretrained refuses; the weights are ordinary now.
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
    else:
        model = AutoModelForCausalLM.from_pretrained(str(p), **kw)
    if kind != "silu":
        sparsify(model, kind, t)
    model.config.hidden_act = kind
    return model, kind, t


def save_prosparse(model, tokenizer, out_dir: str, kind: str, t: float, extra: dict | None = None) -> Path:
    """Write an HF checkpoint in the ProSparse config format; atomic (temporary folder, rename)."""
    out = Path(out_dir)
    tmp = out.with_name(out.name + f".tmp{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    fields = hf_activation_fields(kind, t)
    old = model.config.hidden_act
    model.config.hidden_act = fields["hidden_act"]
    model.config.hidden_act_param = fields["hidden_act_param"]
    try:
        model.save_pretrained(str(tmp), safe_serialization=True)
    finally:
        model.config.hidden_act = old
    if tokenizer is not None:
        tokenizer.save_pretrained(str(tmp))
    if extra:
        (tmp / "prosparse_training.json").write_text(json.dumps(extra, indent=2))
    if out.exists():
        shutil.rmtree(out)
    os.replace(tmp, out)
    return out
