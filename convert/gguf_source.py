"""A `llama` GGUF file as a conversion source (re-typing, or rewriting as `prosparse`).

Tensors are memory-mapped by gguf.GGUFReader and dequantized one at a time to
float32 with gguf.quants.dequantize (every type gguf-py knows, K-quants
included). q/k rows are already in llama.cpp's permuted order. The tokenizer
and general.* metadata are copied key by key with their original types.
"""
from __future__ import annotations

from pathlib import Path

import gguf
import numpy as np

from .errors import ConvertError
from .spec import ModelSpec

# Metadata we carry over verbatim; the architecture keys are rewritten from the spec.
_COPY_PREFIXES = ("tokenizer.", "general.")
_NOT_COPIED = {"general.architecture", "general.file_type", "general.quantization_version", "general.alignment"}


class GGUFSource:
    qk_permuted = True

    def __init__(self, path: Path):
        self.path = Path(path)
        try:
            self.reader = gguf.GGUFReader(str(self.path))
        except Exception as e:  # gguf-py raises ValueError / struct errors / OSError
            raise ConvertError(f"{path}: not a readable GGUF file ({type(e).__name__}: {e})") from None
        arch = self._get("general.architecture", "")
        if arch != "llama":
            raise ConvertError(f"{path}: unsupported architecture {arch!r} in GGUF input (supported: llama)")
        self.tensors = {t.name: t for t in self.reader.tensors}
        # ggml shapes are fastest-first; numpy order is the reverse ([out, in]).
        self.shapes = {n: tuple(int(s) for s in reversed(t.shape.tolist())) for n, t in self.tensors.items()}
        self.spec = self._spec()

    def _get(self, key: str, default=None):
        f = self.reader.get_field(key)
        return default if f is None else f.contents()

    def _spec(self) -> ModelSpec:
        a = "llama."
        try:
            n_embd = int(self._get(a + "embedding_length"))
            n_head = int(self._get(a + "attention.head_count"))
            ff = self._get(a + "feed_forward_length")
            if isinstance(ff, list):
                raise ConvertError(f"{self.path}: per-layer feed_forward_length is not supported")
            emb = self.shapes.get("token_embd.weight")
            tokens = self.reader.get_field("tokenizer.ggml.tokens")
            n_vocab = int(self._get(a + "vocab_size", 0) or (emb[0] if emb else len(tokens.data) if tokens else 0))
            spec = ModelSpec(
                family="llama",
                n_vocab=n_vocab,
                n_embd=n_embd,
                n_ff=int(ff),
                n_layer=int(self._get(a + "block_count")),
                n_head=n_head,
                n_head_kv=int(self._get(a + "attention.head_count_kv", n_head)),
                n_ctx=int(self._get(a + "context_length", 2048)),
                rope_theta=float(self._get(a + "rope.freq_base", 10000.0)),
                rms_eps=float(self._get(a + "attention.layer_norm_rms_epsilon", 1e-5)),
                tied="output.weight" not in self.tensors,
                activation="silu",
                name=str(self._get("general.name", "")),
            )
        except (TypeError, ValueError) as e:
            raise ConvertError(f"{self.path}: missing or bad llama.* hyper-parameter ({e})") from None
        rot = self._get(a + "rope.dimension_count")
        if rot is not None and int(rot) != spec.head_dim:
            raise ConvertError(f"{self.path}: partial RoPE (dimension_count {rot} != head_dim) is not supported")
        if self._get(a + "rope.scaling.type", "none") not in ("none", None):
            raise ConvertError(f"{self.path}: RoPE scaling is not supported")
        return spec

    def load(self, name: str) -> np.ndarray:
        t = self.tensors[name]
        try:
            x = gguf.quants.dequantize(t.data, t.tensor_type)
        except NotImplementedError:
            raise ConvertError(f"{self.path}: tensor {name} has type {t.tensor_type.name}, "
                               "which gguf-py cannot dequantize") from None
        x = np.asarray(x, dtype=np.float32).reshape(self.shapes[name])
        if not np.isfinite(x).all():
            raise ConvertError(f"{self.path}: tensor {name} contains NaN or Inf values")
        return x

    def raw(self, name: str, rows: np.ndarray | None = None) -> np.ndarray:
        """The tensor's encoded bytes ([rows, bytes per row]), optionally with rows permuted."""
        data = self.tensors[name].data
        data = data if rows is None else data[rows]
        return np.ascontiguousarray(data).view(np.uint8)

    def tensor_type(self, name: str) -> gguf.GGMLQuantizationType:
        return self.tensors[name].tensor_type

    def copy_metadata(self, gw: gguf.GGUFWriter) -> None:
        """tokenizer.* and general.* keys, with their original GGUF value types."""
        for key, f in self.reader.fields.items():
            if not key.startswith(_COPY_PREFIXES) or key in _NOT_COPIED or not f.types:
                continue
            vt = f.types[0]
            if vt == gguf.GGUFValueType.ARRAY:
                sub = f.types[-1]
                if len(f.data) == 0:
                    continue
                if sub == gguf.GGUFValueType.STRING:   # raw bytes: token texts need not be UTF-8
                    val = [bytes(f.parts[i]) for i in f.data]
                else:
                    val = f.contents()
                gw.add_key_value(key, val, vt, sub_type=sub)
            elif vt == gguf.GGUFValueType.STRING:
                gw.add_key_value(key, bytes(f.parts[-1]), vt)
            else:
                gw.add_key_value(key, f.contents(), vt)

    def close(self) -> None:
        self.tensors.clear()
        self.reader = None
