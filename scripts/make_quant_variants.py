"""Write Q8_0 / Q4_0 / F16 variants of a GGUF file (the benchmark's stopgap).

Every tensor of the source's bulk type (Q4_1 for the PyPI SmolLM2) is
dequantized and requantized with gguf-py; the embedding matrix keeps its own
type unless --all is given (llama.cpp's quantizer also keeps token_embd/output
at a higher precision); 1-D tensors (norms) stay F32. Every metadata key is
copied, general.file_type is updated. The result runs in llama.cpp and in our
engine, so both can be benchmarked on the same bytes.

    python scripts/make_quant_variants.py SmolLM2-135M-Instruct.Q4_1.gguf --types q8_0,q4_0,f16
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np
from gguf import GGMLQuantizationType as T
from gguf import GGUFReader, GGUFValueType, GGUFWriter, LlamaFileType
from gguf.quants import dequantize, quantize
from tqdm import tqdm

TARGETS = {"q8_0": T.Q8_0, "q4_0": T.Q4_0, "q4_1": T.Q4_1, "f16": T.F16, "bf16": T.BF16, "f32": T.F32}
FILE_TYPES = {T.Q8_0: LlamaFileType.MOSTLY_Q8_0, T.Q4_0: LlamaFileType.MOSTLY_Q4_0,
              T.Q4_1: LlamaFileType.MOSTLY_Q4_1, T.F16: LlamaFileType.MOSTLY_F16,
              T.BF16: LlamaFileType.MOSTLY_BF16, T.F32: LlamaFileType.ALL_F32}


def bulk_type(reader: GGUFReader) -> T:
    """The most common type among 2-D tensors."""
    types = [t.tensor_type for t in reader.tensors if len(t.shape) == 2]
    return max(set(types), key=types.count)


def convert(src: Path, dst: Path, target: T, requant_all: bool) -> None:
    reader = GGUFReader(src)
    arch = reader.fields["general.architecture"].contents()
    bulk = bulk_type(reader)
    tmp = dst.with_name(dst.name + ".part")
    writer = GGUFWriter(tmp, arch)
    for field in reader.fields.values():
        if field.name.startswith("GGUF.") or field.name == "general.architecture":
            continue  # the writer adds these itself
        if field.name == "general.file_type":
            writer.add_file_type(int(FILE_TYPES[target]))
            continue
        sub = field.types[-1] if field.types[0] == GGUFValueType.ARRAY else None
        writer.add_key_value(field.name, field.contents(), field.types[0], sub_type=sub)
    for t in tqdm(reader.tensors, desc=f"{dst.name}", unit="tensor"):
        data = np.asarray(t.data)
        if len(t.shape) == 2 and (t.tensor_type == bulk or requant_all) and t.tensor_type != target:
            n_cols = int(t.shape[0])
            w = dequantize(data, t.tensor_type).reshape(-1, n_cols)
            if target == T.F16:
                writer.add_tensor(t.name, w.astype(np.float16))
            elif target == T.F32:
                writer.add_tensor(t.name, w.astype(np.float32))
            else:
                writer.add_tensor(t.name, quantize(w, target), raw_dtype=target)
        else:
            writer.add_tensor(t.name, data, raw_dtype=t.tensor_type)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file(progress=False)
    writer.close()
    os.replace(tmp, dst)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("src", type=Path, help="source GGUF (e.g. SmolLM2-135M-Instruct.Q4_1.gguf)")
    ap.add_argument("--types", default="q8_0,q4_0", help="comma list of " + ",".join(TARGETS))
    ap.add_argument("--out-dir", type=Path, default=None, help="default: next to the source")
    ap.add_argument("--all", action="store_true", help="requantize the embedding matrix too")
    ap.add_argument("--force", action="store_true", help="rewrite files that already exist")
    args = ap.parse_args()
    if not args.src.is_file():
        print(f"error: {args.src}: no such file", file=sys.stderr)
        return 1
    names = [s.strip().lower() for s in args.types.split(",") if s.strip()]
    bad = [n for n in names if n not in TARGETS]
    if bad:
        print(f"error: unknown type(s) {', '.join(bad)}; choose from {', '.join(TARGETS)}", file=sys.stderr)
        return 1
    out_dir = args.out_dir or args.src.parent
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = args.src.name.split(".")[0]
    for name in names:
        dst = out_dir / f"{stem}.{name.upper()}.gguf"
        if dst.exists() and not args.force:
            print(f"{dst} exists (use --force to rewrite)")
            continue
        convert(args.src, dst, TARGETS[name], args.all)
        print(dst)
    return 0


if __name__ == "__main__":
    sys.exit(main())
