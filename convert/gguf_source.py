"""A `llama`, `qwen2`, `qwen3` or `gemma3` GGUF file as a conversion source
(re-typing, or rewriting as `prosparse`).

Tensors are memory-mapped by gguf.GGUFReader and dequantized one at a time to
float32 with gguf.quants.dequantize (every type gguf-py knows, K-quants
included). q/k rows are as llama.cpp stores them (permuted for llama only),
Gemma's norms already 1 + w; Llama 3's rope_freqs.weight becomes the spec's
rope_factors (the plan writes it again). The tokenizer
and general.* metadata are copied key by key with their original types.

PowerInfer's PWRI files (architecture llama: relu(gate) * up; bamboo:
relu(gate) * relu(up)) are sources too: their ffn_down_t is the down
projection (`down_t_native`: the plan copies it as it is, or transposes it
back for a llama file), and their fc1/fc2 predictor, with PowerInfer's
settings (ReLU between, residual input, logit >= powerinfer.sparse_threshold),
is `predictors`.
"""
from __future__ import annotations

from pathlib import Path

import gguf
import numpy as np

from ..pwri import open_gguf
from .errors import ConvertError
from .predictor import Predictors
from .spec import ModelSpec

# Metadata we carry over verbatim; the architecture keys are rewritten from the spec.
_COPY_PREFIXES = ("tokenizer.", "general.")
_NOT_COPIED = {"general.architecture", "general.file_type", "general.quantization_version", "general.alignment"}
_LAYOUTS = ("llama", "qwen2", "qwen3", "gemma3")


class GGUFSource:
    qk_permuted = True

    def __init__(self, path: Path):
        self.path = Path(path)
        try:
            self.reader = open_gguf(self.path)
        except Exception as e:  # gguf-py raises ValueError / struct errors / OSError
            raise ConvertError(f"{path}: not a readable GGUF file ({type(e).__name__}: {e})") from None
        self.powerinfer = self.reader.powerinfer
        arch = self._get("general.architecture", "")
        self.arch = arch
        if self.powerinfer and arch in ("falcon", "opt"):
            raise ConvertError(f"{path}: PowerInfer's {arch} files are not supported (its llama and bamboo are)")
        if arch not in (("llama", "bamboo") if self.powerinfer else _LAYOUTS):
            raise ConvertError(f"{path}: unsupported architecture {arch!r} in "
                               + ("a PowerInfer file (supported: llama, bamboo)" if self.powerinfer
                                  else f"GGUF input (supported: {', '.join(_LAYOUTS)})"))
        self.tensors = {t.name: t for t in self.reader.tensors}
        # ggml shapes are fastest-first; numpy order is the reverse ([out, in]).
        self.shapes = {n: tuple(int(s) for s in reversed(t.shape.tolist())) for n, t in self.tensors.items()}
        self._stored = dict(self.shapes)   # every tensor as stored (shapes: the llama table the plan checks)
        self.down_t_native = False
        self.predictors = None
        self.spec = self._spec()
        self.qk_permuted = self.spec.layout == "llama"
        self.shapes.pop("rope_freqs.weight", None)   # carried by spec.rope_factors
        if self.powerinfer:
            self._powerinfer_tensors()

    def _get(self, key: str, default=None):
        f = self.reader.get_field(key)
        return default if f is None else f.contents()

    def _powerinfer_tensors(self) -> None:
        """The llama tensor table the plan expects: ffn_down_t stands for ffn_down (one row per neuron),
        fc1/fc2 become `predictors`; GPU split tensors are dropped."""
        s, n_layer = self.spec, self.spec.n_layer
        for name in [n for n in self.shapes if n.endswith((".gpu_idx", ".gpu_bucket"))]:
            del self.shapes[name]
        for L in range(n_layer):
            b = f"blk.{L}."
            if b + "ffn_down_t.weight" not in self.shapes:
                raise ConvertError(f"{self.path}: missing tensor {b}ffn_down_t.weight (PowerInfer files keep "
                                   "the down projection there)")
            if b + "ffn_down.weight" in self.shapes:
                raise ConvertError(f"{self.path}: layer {L} has both ffn_down and ffn_down_t")
            shp = self.shapes.pop(b + "ffn_down_t.weight")
            if shp != (s.n_ff, s.n_embd):
                raise ConvertError(f"{self.path}: tensor {b}ffn_down_t.weight has shape {list(shp)}, "
                                   f"expected {[s.n_ff, s.n_embd]}")
            self.shapes[b + "ffn_down.weight"] = (s.n_embd, s.n_ff)
        self.down_t_native = True
        have = [L for L in range(n_layer) if f"blk.{L}.fc1.weight" in self.shapes or f"blk.{L}.fc2.weight" in self.shapes]
        if not have:
            return
        ranks = []   # PowerInfer sizes each layer's predictor
        for L in range(n_layer):
            n1, n2 = f"blk.{L}.fc1.weight", f"blk.{L}.fc2.weight"
            if n1 not in self.shapes or n2 not in self.shapes:
                raise ConvertError(f"{self.path}: layer {L} lacks {n1 if n1 not in self.shapes else n2}")
            r1, r2 = self.shapes.pop(n1), self.shapes.pop(n2)
            r = r1[0]
            if r1 != (r, s.n_embd) or r2 != (s.n_ff, r) or not 1 <= r <= s.n_ff:
                raise ConvertError(f"{self.path}: layer {L} predictor shapes fc1 {list(r1)}, fc2 {list(r2)} do not "
                                   f"fit (expected [rank, {s.n_embd}] and [{s.n_ff}, rank])")
            ranks.append(int(r))
        thr = float(self._get("powerinfer.sparse_threshold", 0.0))
        # PowerInfer keeps a neuron where logit >= t; prosparse files keep logit > threshold:
        # the next float32 below t gives the same decisions.
        cut = float(np.nextafter(np.float32(thr), np.float32(-np.inf)))
        self.predictors = Predictors(self.path, "gguf", max(ranks), cut, "residual", "relu", source=self,
                                     ranks=ranks)

    def _spec(self) -> ModelSpec:
        a = self.arch + "."
        try:
            n_embd = int(self._get(a + "embedding_length"))
            n_head = int(self._get(a + "attention.head_count"))
            ff = self._get(a + "feed_forward_length")
            if isinstance(ff, list):
                raise ConvertError(f"{self.path}: per-layer feed_forward_length is not supported")
            emb = self.shapes.get("token_embd.weight")
            tokens = self.reader.get_field("tokenizer.ggml.tokens")
            n_vocab = int(self._get(a + "vocab_size", 0) or (emb[0] if emb else len(tokens.data) if tokens else 0))
            layout = self.arch if self.arch in _LAYOUTS else "llama"
            spec = ModelSpec(
                family=layout,
                key_length=int(self._get(a + "attention.key_length", 0)),
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
                activation=("drelu" if self.arch == "bamboo" else "relu") if self.powerinfer else (
                    "gelu_tanh" if layout == "gemma3" else "silu"),
                name=str(self._get("general.name", "")),
            )
        except (TypeError, ValueError) as e:
            raise ConvertError(f"{self.path}: missing or bad llama.* hyper-parameter ({e})") from None
        rot = self._get(a + "rope.dimension_count")
        if rot is not None and int(rot) != spec.head_dim:
            raise ConvertError(f"{self.path}: partial RoPE (dimension_count {rot} != head_dim) is not supported")
        scaling = self._get(a + "rope.scaling.type", "none")
        if scaling == "linear":
            spec.rope_linear = float(self._get(a + "rope.scaling.factor", 1.0))
        elif scaling not in ("none", None, "llama3"):
            raise ConvertError(f"{self.path}: RoPE scaling {scaling!r} is not supported (linear, llama3)")
        if "rope_freqs.weight" in self.tensors:
            spec.rope_factors = tuple(float(x) for x in self.tensors["rope_freqs.weight"].data)
        for key in ("attn_logit_softcapping", "final_logit_softcapping"):
            if self._get(a + key):
                raise ConvertError(f"{self.path}: unsupported: {a + key} (logit soft-capping, Gemma 2)")
        scale = self._get(a + "attention.scale")
        spec.attn_scale = None if scale is None else float(scale)
        if layout == "gemma3":
            from .reference import _sliding_layers
            spec.sliding_window = int(self._get(a + "attention.sliding_window", 0))
            spec.sliding_layers = _sliding_layers(self._get(a + "attention.sliding_window_pattern"), spec.n_layer)
            spec.rope_theta_swa = float(self._get(a + "rope.freq_base_swa", 10000.0))
        return spec

    def load(self, name: str) -> np.ndarray:
        if self.down_t_native and name.endswith(".ffn_down.weight"):
            return np.ascontiguousarray(self.load(name[:-len("ffn_down.weight")] + "ffn_down_t.weight").T)
        t = self.tensors[name]
        try:
            x = gguf.quants.dequantize(t.data, t.tensor_type)
        except NotImplementedError:
            raise ConvertError(f"{self.path}: tensor {name} has type {t.tensor_type.name}, "
                               "which gguf-py cannot dequantize") from None
        x = np.asarray(x, dtype=np.float32).reshape(self._stored[name])
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
