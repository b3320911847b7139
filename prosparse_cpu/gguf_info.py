"""`prosparse inspect`: what a GGUF file holds, read with gguf-py's GGUFReader.

The report is built as a list of (section, lines) so the CLI can print it and
tests can read it. Reading is independent of the engine; the CLI additionally
asks the engine to load the file, so a file it cannot run is reported as such.
"""

from __future__ import annotations

import os
import re
from collections import Counter, OrderedDict

import numpy as np

from ._lib import ProSparseError

ARRAY_SHOW = 8  # array keys longer than this are summarised


def open_reader(path: str):
    """GGUFReader over path (PowerInfer's PWRI files too); any failure becomes one ProSparseError line."""
    from .pwri import open_gguf

    if not os.path.exists(path):
        raise ProSparseError(f"{path}: no such file")
    if os.path.isdir(path):
        raise ProSparseError(f"{path}: is a directory, not a GGUF file")
    try:
        return open_gguf(path, "r")
    except Exception as e:  # gguf-py raises ValueError, IndexError, struct/numpy errors on bad files
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ProSparseError(f"{path}: not a readable GGUF file ({msg})") from None


def field_value(field):
    """The Python value of a ReaderField (str, number, bool or list)."""
    try:
        return field.contents()
    except Exception as e:
        raise ProSparseError(f"key {field.name}: unreadable value ({e})") from None


def _fmt_value(value) -> str:
    if isinstance(value, list):
        n = len(value)
        if n <= ARRAY_SHOW:
            return repr(value)
        kinds = sorted({type(v).__name__ for v in value})
        head = ", ".join(repr(v) for v in value[:3])
        return f"[{n} x {'/'.join(kinds)}: {head}, ...]"
    if isinstance(value, str):
        if len(value) > 80 or "\n" in value:
            one = value.replace("\n", "\\n")
            return f"<{len(value)} chars> {one[:60]!r}..."
        return repr(value)
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _shape(t) -> str:
    # ggml order, fastest dimension first: the same order llama.cpp prints.
    return "[" + ", ".join(str(int(d)) for d in t.shape) + "]"


def _tensor_lines(tensors) -> list[str]:
    """Non-block tensors, then block 0's layout once (with the count of blocks that share it)."""
    blocks: dict[int, list] = {}
    other = []
    for t in tensors:
        m = re.match(r"blk\.(\d+)\.(.+)$", t.name)
        if m:
            blocks.setdefault(int(m.group(1)), []).append((m.group(2), t))
        else:
            other.append(t)
    lines = [f"  {t.name:<40} {t.tensor_type.name:<6} {_shape(t)}" for t in other]
    if blocks:
        first = min(blocks)
        layout0 = [(n, t.tensor_type.name, _shape(t)) for n, t in blocks[first]]
        same = sum(1 for b in blocks.values() if [(n, t.tensor_type.name, _shape(t)) for n, t in b] == layout0)
        lines.append(f"  blk.N ({len(blocks)} blocks; {same} share block {first}'s layout):")
        for n, ty, sh in layout0:
            lines.append(f"    {n:<38} {ty:<6} {sh}")
        for i, b in sorted(blocks.items()):
            layout = [(n, t.tensor_type.name, _shape(t)) for n, t in b]
            if layout != layout0:
                diff = sorted(set(layout) ^ set(layout0))
                lines.append(f"    blk.{i} differs: " + "; ".join(f"{n} {ty} {sh}" for n, ty, sh in diff[:4]))
    return lines


def _freq_summary(reader) -> list[str]:
    lines = []
    for t in reader.tensors:
        m = re.match(r"blk\.(\d+)\.ffn_freq(\.weight)?$", t.name)
        if not m:
            continue
        f = np.asarray(t.data, dtype=np.float32).ravel()
        if f.size == 0:
            continue
        lines.append(f"  layer {int(m.group(1)):>3}: mean activation frequency {f.mean():.3f}, "
                     f"neurons active <1% of tokens {np.mean(f < 0.01):.1%}, hottest {f.max():.3f}")
    return lines


def describe(path: str) -> "OrderedDict[str, list[str]]":
    """The inspect report of a GGUF file, section by section."""
    reader = open_reader(path)
    fields = OrderedDict((name, f) for name, f in reader.fields.items() if not name.startswith("GGUF."))
    values = {name: field_value(f) for name, f in fields.items()}
    arch = values.get("general.architecture", "?")
    out: "OrderedDict[str, list[str]]" = OrderedDict()

    version = field_value(reader.fields["GGUF.version"]) if "GGUF.version" in reader.fields else "?"
    size = os.path.getsize(path)
    out["file"] = [
        f"  path: {path}",
        f"  size: {size / 2**20:.1f} MiB, GGUF version {version}"
        + (" (PowerInfer magic PWRI)" if getattr(reader, "powerinfer", False) else "")
        + f", {len(reader.tensors)} tensors, {len(fields)} keys",
        f"  architecture: {arch}" + (f", name: {values['general.name']!r}" if "general.name" in values else ""),
    ]

    prefix = f"{arch}."
    out["hyper-parameters"] = [f"  {k[len(prefix):]}: {_fmt_value(v)}" for k, v in values.items()
                               if k.startswith(prefix)] or ["  (none under the architecture prefix)"]

    by_type = Counter(t.tensor_type.name for t in reader.tensors)
    n_params = sum(int(t.n_elements) for t in reader.tensors)
    out["tensors"] = [f"  {len(reader.tensors)} tensors, {n_params / 1e6:.1f} M parameters; by type: "
                      + ", ".join(f"{k} {v}" for k, v in by_type.most_common())] + _tensor_lines(reader.tensors)

    tok = []
    if "tokenizer.ggml.model" in values:
        tok.append(f"  model: {values['tokenizer.ggml.model']}, pre: {values.get('tokenizer.ggml.pre', '-')}")
    tokens = values.get("tokenizer.ggml.tokens")
    if isinstance(tokens, list):
        tok.append(f"  vocabulary: {len(tokens)} tokens, merges: {len(values.get('tokenizer.ggml.merges', []) or [])}")
        for key in ("bos", "eos", "eot", "eom", "unknown", "padding", "separator"):
            tid = values.get(f"tokenizer.ggml.{key}_token_id")
            if isinstance(tid, int):
                text = tokens[tid] if 0 <= tid < len(tokens) else "<out of range>"
                tok.append(f"  {key}: {tid} {text!r}")
    for key in ("add_bos_token", "add_eos_token"):
        if f"tokenizer.ggml.{key}" in values:
            tok.append(f"  {key}: {values[f'tokenizer.ggml.{key}']}")
    template = values.get("tokenizer.chat_template")
    if isinstance(template, str):
        kind = "ChatML" if "<|im_start|>" in template else "custom"
        tok.append(f"  chat template: present ({len(template)} chars, {kind})")
    else:
        tok.append("  chat template: none (chat falls back to ChatML)")
    out["tokenizer"] = tok or ["  (no tokenizer keys)"]

    ps = [f"  {k}: {_fmt_value(v)}" for k, v in values.items()
          if k.startswith(("prosparse.", "powerinfer.")) and k not in {f"prosparse.{s}" for s in _LLAMA_SUFFIXES}]
    n_pred = sum(1 for t in reader.tensors if re.search(r"\.(ffn_pred_(in|out)|fc[12])\.weight$", t.name))
    n_down_t = sum(1 for t in reader.tensors if t.name.endswith("ffn_down_t.weight"))
    if n_down_t or n_pred or ps:
        ps.append(f"  ffn_down_t tensors: {n_down_t}; predictor tensors: {n_pred}")
        pred_in = next((t for t in reader.tensors if t.name in ("blk.0.ffn_pred_in.weight", "blk.0.fc1.weight")), None)
        if pred_in is not None:  # ggml order [n_embd, rank]
            ps.append(f"  predictor rank: {int(pred_in.shape[-1])} ({pred_in.tensor_type.name})")
        ps.extend(_freq_summary(reader))
        out["powerinfer" if getattr(reader, "powerinfer", False) else "prosparse"] = ps

    out["keys"] = [f"  {k} = {_fmt_value(v)}" for k, v in values.items()]
    return out


# llama's hyper-parameter suffixes, already shown under hyper-parameters for arch "prosparse".
_LLAMA_SUFFIXES = (
    "block_count", "embedding_length", "feed_forward_length", "attention.head_count",
    "attention.head_count_kv", "rope.freq_base", "rope.dimension_count",
    "attention.layer_norm_rms_epsilon", "context_length", "vocab_size",
)
