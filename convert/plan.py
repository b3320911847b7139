"""The output file, planned before a byte is written: metadata keys and, per
tensor, its name, shape, type and a function that produces its data.

Layout decisions (DESIGN.md contract):
- The architecture is the family's llama.cpp layout (llama, qwen2, qwen3,
  gemma3) or `prosparse` with that layout in prosparse.base_architecture,
  carrying the layout's extra tensors (biases, q/k norms, post norms,
  rope_freqs) and keys (key_length, sliding window, local RoPE base).
- q/k rows of the llama layout are permuted as llama.cpp's converter does,
  so RoPE rotates adjacent pairs (HF sources only; GGUF sources already
  are); the other layouts keep HF's order and rotate halves.
- `prosparse` files store blk.N.ffn_down_t.weight = W_down transposed
  ([n_ff, n_embd] in numpy order, ggml ne = [n_embd, n_ff]) instead of ffn_down,
  except in threshold-only files (--calibrate, no predictor) whose down is
  block-quantized: transposing it would round it again (4-bit to Q8_0, twice
  the bytes), the engine's packed product over ffn_down (zeros for the
  skipped neurons, so exact) is at least as fast there as accumulating
  ffn_down_t rows, and the file's dense mode then computes exactly what the
  source does. F16 keeps ffn_down_t, which is faster than ffn_down at those
  sparsities.
- With --stats, each layer's neurons are permuted hot-first, the same way in
  gate rows, up rows, down columns (down_t rows), ffn_freq and predictor rows.
- --llama-compat of a MiniCPM model folds the scalings into the weights
  (untied output), so a plain llama reader computes the same function.
- A PowerInfer source (down_t_native) already holds ffn_down_t and its own
  predictor: both are copied as they are where the type stays (a llama file
  gets ffn_down transposed back); with --outtype auto the predictor keeps its
  type.
Types: 1-D tensors (norms, ffn_freq) are F32; matrices take --outtype; the
5-bit and K-quant names are llama.cpp's mixes (mix.py: some tensors get more
bits); a matrix whose rows the type's block does not divide falls back to a
32-block type (K-quants, as llama.cpp does) or to F16; predictor matrices take
Q8_0 when --outtype is below 8 bits, since their logits are thresholded and
low-bit noise would flip decisions for little gain. With --outtype auto a
GGUF source's types stay (bytes copied), except matrices the converter
transforms (ffn_down_t, folded scalings): re-rounding one of below 8 bits to
its own type would add a second error of the first one's size, so they
become Q8_0.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import gguf
import numpy as np

from .errors import ConvertError
from .mix import MIXES, fallback, mix_type
from .predictor import Predictors, Stats, hot_first
from .spec import ModelSpec, layout_tensors

Q = gguf.GGMLQuantizationType
OUTTYPES = {"f32": Q.F32, "f16": Q.F16, "bf16": Q.BF16, "q8_0": Q.Q8_0, "q4_0": Q.Q4_0, "q4_1": Q.Q4_1,
            **{name: bulk for name, (bulk, _) in MIXES.items()}}
# llama_ftype of a file whose bulk is this type (K-quants: the _M mix)
FILE_TYPES = {Q.F32: 0, Q.F16: 1, Q.Q4_0: 2, Q.Q4_1: 3, Q.Q8_0: 7, Q.BF16: 32, Q.Q5_0: 8, Q.Q5_1: 9,
              Q.Q2_K: 10, Q.Q3_K: 12, Q.Q4_K: 15, Q.Q5_K: 17, Q.Q6_K: 18}
_LOW_BIT = (Q.Q4_0, Q.Q4_1, Q.Q5_0, Q.Q5_1, Q.Q2_K, Q.Q3_K, Q.Q4_K, Q.Q5_K, Q.Q6_K)
_BLOCK_TYPES = (Q.Q8_0, *_LOW_BIT)
_COMPUTED = object()   # add()'s copy_rows default: the data are computed, not copied


@dataclass
class OutTensor:
    name: str
    shape: tuple[int, ...]                  # numpy order (elements)
    qtype: gguf.GGMLQuantizationType
    produce: Callable[[], np.ndarray]       # float32 data in `shape`
    raw: Callable[[], np.ndarray] | None = None   # encoded bytes copied from a GGUF source as they are

    @property
    def byte_shape(self) -> tuple[int, ...]:
        return gguf.quants.quant_shape_to_byte_shape(self.shape, self.qtype)

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.byte_shape))


@dataclass
class Plan:
    arch: str                                # "llama" | "qwen2" | "qwen3" | "gemma3" | "prosparse"
    spec: ModelSpec
    outtype: gguf.GGMLQuantizationType       # the bulk type (general.file_type)
    tensors: list[OutTensor]
    kv: list[Callable[[gguf.GGUFWriter], None]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    cutoffs: np.ndarray | None = None        # threshold-mode cut-offs per layer (--calibrate)
    cutoff_sparsity: float = 0.0
    file_type: int | None = None             # general.file_type when not FILE_TYPES[outtype] (mixes)


def permute_qk(w: np.ndarray, n_head: int) -> np.ndarray:
    """HF rotate-half row order -> llama.cpp's interleaved pairs, per head."""
    rows = w.shape[0]
    return (w.reshape(n_head, 2, rows // n_head // 2, *w.shape[1:])
             .swapaxes(1, 2).reshape(w.shape))


def _matrix_type(name: str, shape: tuple[int, ...], want, notes: list[str], predictor: bool = False):
    if len(shape) == 1:
        return Q.F32
    if predictor and want in _LOW_BIT:
        want = Q.Q8_0
    t = fallback(want, shape[-1])
    if t == Q.F16 and want != Q.F16:
        notes.append(f"{name}: rows of {shape[-1]} are not a multiple of 32, stored as F16")
    elif t != want:
        notes.append(f"{name}: rows of {shape[-1]} are not a multiple of 256, {want.name} falls back to {t.name}")
    return t


def build_plan(source, arch: str, outtype: str, llama_compat: bool,
               predictors: Predictors | None, stats: Stats | None, threshold_only: bool = False) -> Plan:
    spec: ModelSpec = source.spec
    notes = list(spec.notes)
    sparse_file = arch == "prosparse"
    fold = llama_compat and spec.has_scalings

    tied_out = spec.tied and not fold     # the output file has no output.weight
    fallbacks: dict[tuple[str, str], int] = {}

    def target(name: str, shape, transformed: bool, predictor: bool = False, quiet: bool = False, src=None):
        """name: the output tensor; src: the source tensor it is made from (default: name)."""
        src = src or name
        out_notes = [] if quiet else notes
        if outtype in MIXES and len(shape) > 1 and not predictor:
            t, rule = mix_type(outtype, name, shape[-1], n_layer=spec.n_layer, n_head=spec.n_head,
                               n_head_kv=spec.n_head_kv, tied=tied_out)
            if rule is not None and not quiet:
                key = (rule.name, t.name)
                fallbacks[key] = fallbacks.get(key, 0) + 1
            return t
        if outtype != "auto":
            return _matrix_type(name, shape, OUTTYPES[outtype], out_notes, predictor)
        if not hasattr(source, "tensor_type"):   # HF folder: f16
            return _matrix_type(name, shape, Q.F16, out_notes, predictor)
        known = src in source.shapes or src in getattr(source, "tensors", {})
        st = source.tensor_type(src if known else "token_embd.weight")
        if st not in FILE_TYPES or (transformed and st in _LOW_BIT):
            st = Q.Q8_0   # re-quantizing a transformed low-bit matrix to its type would round it twice
        return _matrix_type(name, shape, st, out_notes, predictor)

    perms = [hot_first(stats.counts[i]) if stats is not None else None for i in range(spec.n_layer)]
    native_t = getattr(source, "down_t_native", False)
    tensors: list[OutTensor] = []

    def add(name, shape, produce, src_name=None, transformed=False, predictor=False, copy_rows=_COMPUTED):
        """copy_rows: the data are the source tensor's own rows, as stored (None) or in this order,
        so a GGUF source's bytes can be copied when the type stays (no second rounding)."""
        qt = target(name, shape, transformed, predictor, src=src_name or name)
        raw = None
        if copy_rows is not _COMPUTED and hasattr(source, "raw") and source.tensor_type(src_name or name) == qt:
            raw = (lambda n=src_name or name, p=copy_rows: source.raw(n, p))
        tensors.append(OutTensor(name, tuple(shape), qt, produce, raw))

    load = source.load
    e, f, V = spec.n_embd, spec.n_ff, spec.n_vocab
    if fold:
        add("token_embd.weight", (V, e), lambda: load("token_embd.weight") * np.float32(spec.embedding_scale),
            transformed=True)
    else:
        add("token_embd.weight", (V, e), lambda: load("token_embd.weight"), copy_rows=None)
    add("output_norm.weight", (e,), lambda: load("output_norm.weight"), copy_rows=None)
    if fold:   # untie: output = E * logit_scale
        add("output.weight", (V, e), lambda: load("token_embd.weight") * np.float32(spec.logit_scale),
            src_name="token_embd.weight", transformed=True)
    elif not spec.tied:
        add("output.weight", (V, e), lambda: load("output.weight"), copy_rows=None)

    if spec.rope_factors is not None:   # Llama 3's RoPE scaling, as llama.cpp stores it
        add("rope_freqs.weight", (len(spec.rope_factors),),
            lambda: np.asarray(spec.rope_factors, dtype=np.float32), copy_rows=None)
    qd = spec.q_dim
    for i in range(spec.n_layer):
        b = f"blk.{i}."
        perm = perms[i]
        kv_rows = spec.n_head_kv * spec.head_dim
        add(b + "attn_norm.weight", (e,), lambda n=b + "attn_norm.weight": load(n), copy_rows=None)
        if source.qk_permuted or spec.layout != "llama":
            add(b + "attn_q.weight", (qd, e), lambda n=b + "attn_q.weight": load(n), copy_rows=None)
            add(b + "attn_k.weight", (kv_rows, e), lambda n=b + "attn_k.weight": load(n), copy_rows=None)
        else:
            add(b + "attn_q.weight", (qd, e), lambda n=b + "attn_q.weight": permute_qk(load(n), spec.n_head))
            add(b + "attn_k.weight", (kv_rows, e), lambda n=b + "attn_k.weight": permute_qk(load(n), spec.n_head_kv))
        add(b + "attn_v.weight", (kv_rows, e), lambda n=b + "attn_v.weight": load(n), copy_rows=None)
        for n, shp in layout_tensors(spec.layout, qd, kv_rows, spec.head_dim, e).items():
            add(b + n, shp, lambda n=b + n: load(n), copy_rows=None)
        rs = np.float32(spec.residual_scale)
        if fold:
            add(b + "attn_output.weight", (e, qd), lambda n=b + "attn_output.weight", s=rs: load(n) * s,
                transformed=True)
        else:
            add(b + "attn_output.weight", (e, qd), lambda n=b + "attn_output.weight": load(n), copy_rows=None)
        add(b + "ffn_norm.weight", (e,), lambda n=b + "ffn_norm.weight": load(n), copy_rows=None)

        def rows(n, p=perm):
            w = load(n)
            return w if p is None else w[p]
        # (functions defined in this loop are bound through default arguments, never by closure)
        add(b + "ffn_gate.weight", (f, e), lambda n=b + "ffn_gate.weight", r=rows: r(n), copy_rows=perm)
        add(b + "ffn_up.weight", (f, e), lambda n=b + "ffn_up.weight", r=rows: r(n), copy_rows=perm)
        keep_down = threshold_only and target(b + "ffn_down.weight", (e, f), False, quiet=True) in _BLOCK_TYPES
        if sparse_file and native_t:
            add(b + "ffn_down_t.weight", (f, e), lambda n=b + "ffn_down_t.weight", r=rows: r(n), copy_rows=perm)
        elif native_t:
            add(b + "ffn_down.weight", (e, f),
                lambda n=b + "ffn_down.weight", p=perm: load(n) if p is None else load(n)[:, p],
                src_name=b + "ffn_down_t.weight", transformed=True)
        elif sparse_file and not keep_down:
            def down_t(n=b + "ffn_down.weight", p=perm):
                w = load(n).T                      # [n_ff, n_embd]: one row per neuron
                return np.ascontiguousarray(w if p is None else w[p])
            add(b + "ffn_down_t.weight", (f, e), down_t, src_name=b + "ffn_down.weight", transformed=True)
        else:
            scale = rs if fold else None

            def down(n=b + "ffn_down.weight", p=perm, s=scale):
                w = load(n)
                w = w if p is None else w[:, p]
                return w if s is None else w * s
            if fold or perm is not None:
                add(b + "ffn_down.weight", (e, f), down, transformed=True)
            else:
                add(b + "ffn_down.weight", (e, f), down, copy_rows=None)
        if sparse_file and stats is not None:
            add(b + "ffn_freq", (f,), lambda L=i, p=perm: stats.freq(L)[p])
        if sparse_file and predictors is not None and predictors.kind == "gguf":
            r, requantize = predictors.rank_of(i), outtype != "auto"
            add(b + "ffn_pred_in.weight", (r, e), lambda L=i: predictors.load(L)[0],
                src_name=b + "fc1.weight", predictor=requantize, copy_rows=None)
            add(b + "ffn_pred_out.weight", (f, r),
                lambda L=i, p=perm: predictors.load(L)[1] if p is None else predictors.load(L)[1][p],
                src_name=b + "fc2.weight", predictor=requantize, copy_rows=perm)
        elif sparse_file and predictors is not None:
            r = predictors.rank
            add(b + "ffn_pred_in.weight", (r, e), lambda L=i: predictors.load(L)[0],
                src_name=b + "ffn_gate.weight", transformed=True, predictor=True)
            add(b + "ffn_pred_out.weight", (f, r),
                lambda L=i, p=perm: predictors.load(L)[1] if p is None else predictors.load(L)[1][p],
                src_name=b + "ffn_gate.weight", transformed=True, predictor=True)

    for (rule, t), n in sorted(fallbacks.items()):
        notes.append(f"{n} matrices have rows that are not a multiple of 256: {rule} falls back to {t}"
                     + (" (rows not a multiple of 32)" if t == "F16" else "") + " as llama.cpp does")
    if outtype in MIXES:
        bulk, file_type = MIXES[outtype]
    else:
        bulk, file_type = next(t.qtype for t in tensors if t.name == "blk.0.ffn_gate.weight"), None
    plan = Plan(arch, spec, bulk, tensors, notes=notes, file_type=file_type)
    plan.kv.append(lambda gw: _arch_keys(gw, plan, llama_compat, predictors, stats))
    return plan


def _arch_keys(gw: gguf.GGUFWriter, plan: Plan, llama_compat: bool,
               predictors: Predictors | None, stats: Stats | None) -> None:
    s = plan.spec
    gw.add_context_length(s.n_ctx)
    gw.add_embedding_length(s.n_embd)
    gw.add_block_count(s.n_layer)
    gw.add_feed_forward_length(s.n_ff)
    gw.add_head_count(s.n_head)
    gw.add_head_count_kv(s.n_head_kv)
    gw.add_rope_freq_base(s.rope_theta)
    gw.add_layer_norm_rms_eps(s.rms_eps)
    gw.add_rope_dimension_count(s.head_dim)
    if s.key_length or s.layout in ("qwen3", "gemma3"):
        gw.add_key_length(s.head_dim)
        gw.add_value_length(s.head_dim)
    if s.rope_linear != 1.0:
        gw.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        gw.add_rope_scaling_factor(s.rope_linear)
    pre = f"{plan.arch}."
    if s.attn_scale is not None and abs(s.attn_scale * np.sqrt(s.head_dim) - 1.0) > 1e-7:
        gw.add_float32(pre + "attention.scale", s.attn_scale)
    if s.layout == "gemma3" and s.sliding_window:
        gw.add_uint32(pre + "attention.sliding_window", s.sliding_window)
        gw.add_float32(pre + "rope.freq_base_swa", s.rope_theta_swa)
        if list(s.sliding_layers) != [i % 6 < 5 for i in range(s.n_layer)]:   # not llama.cpp's fixed pattern
            gw.add_array(pre + "attention.sliding_window_pattern", [bool(x) for x in s.sliding_layers])
    gw.add_vocab_size(s.n_vocab)
    gw.add_file_type(plan.file_type if plan.file_type is not None else FILE_TYPES.get(plan.outtype, 1))
    if plan.outtype in _BLOCK_TYPES:
        gw.add_quantization_version(gguf.GGML_QUANT_VERSION)
    if plan.arch != "prosparse":
        return
    a = "prosparse."
    gw.add_string(a + "base_architecture", s.layout)
    gw.add_string(a + "ffn.activation", s.activation)
    gw.add_float32(a + "ffn.activation_threshold", s.threshold)
    gw.add_bool(a + "ffn.reordered", stats is not None)
    if stats is not None:
        gw.add_uint64(a + "ffn.freq_tokens", int(stats.n_tokens))
    gw.add_float32(a + "embedding_scale", s.embedding_scale)
    gw.add_float32(a + "residual_scale", s.residual_scale)
    gw.add_float32(a + "logit_scale", s.logit_scale)
    if plan.cutoffs is not None:
        gw.add_array(a + "ffn.cutoffs", [float(c) for c in plan.cutoffs])
        gw.add_float32(a + "ffn.cutoff_sparsity", plan.cutoff_sparsity)
    if predictors is not None:
        gw.add_float32(a + "predictor.threshold", predictors.threshold)
        gw.add_string(a + "predictor.input", predictors.input)
        gw.add_string(a + "predictor.hidden_act", predictors.hidden_act)


def check_finite(name: str, x: np.ndarray) -> None:
    if not np.isfinite(x).all():
        raise ConvertError(f"tensor {name} contains NaN or Inf values")
