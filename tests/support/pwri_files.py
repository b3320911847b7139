"""PWRI files for the tests, rewritten from one of PowerInfer's fixtures: gguf-py
writes a GGUF, then its magic becomes PowerInfer's "PWRI" (as PowerInfer's own
tools do). Keys keep their value types; tensors keep their bytes unless a
test replaces them."""
from __future__ import annotations

from pathlib import Path

import gguf
import numpy as np

from prosparse_cpu.pwri import open_gguf


def set_magic(path, magic: bytes = b"PWRI") -> None:
    with open(path, "r+b") as f:
        f.write(magic)


def rewrite_pwri(src, dst, *, arch: str | None = None, drop=(), replace: dict | None = None,
                 rename: dict | None = None, add: dict | None = None, retype=None) -> Path:
    """dst = src with: general.architecture `arch` (the hyper-parameter keys moved under its
    prefix), tensors in `drop` left out, `replace`d by float32 arrays (numpy order), `rename`d,
    and tensors `add`ed; `retype` (a GGMLQuantizationType): every matrix of an F32 source quantized
    to it with gguf-py, as PowerInfer's quantize --pure would store them."""
    r = open_gguf(src)
    old = r.get_field("general.architecture").contents()
    a = arch or old
    w = gguf.GGUFWriter(str(dst), a)
    for key, f in r.fields.items():
        if key.startswith("GGUF.") or key == "general.architecture":
            continue
        if key.startswith(old + "."):
            key = a + key[len(old):]
        vt = f.types[0]
        if vt == gguf.GGUFValueType.ARRAY:
            sub = f.types[-1]
            val = [bytes(f.parts[i]) for i in f.data] if sub == gguf.GGUFValueType.STRING else f.contents()
            w.add_key_value(key, val, vt, sub_type=sub)
        elif vt == gguf.GGUFValueType.STRING:
            w.add_key_value(key, bytes(f.parts[-1]), vt)
        else:
            w.add_key_value(key, f.contents(), vt)
    replace, rename = replace or {}, rename or {}
    for t in r.tensors:
        if t.name in drop:
            continue
        name = rename.get(t.name, t.name)
        if t.name in replace:
            w.add_tensor(name, np.ascontiguousarray(replace[t.name], dtype=np.float32))
        elif retype is not None and len(t.shape) == 2 and t.tensor_type == gguf.GGMLQuantizationType.F32:
            rows = np.asarray(t.data, dtype=np.float32).reshape([int(x) for x in reversed(t.shape.tolist())])
            w.add_tensor(name, gguf.quants.quantize(rows, retype), raw_dtype=retype)
        else:
            shape = [int(x) for x in reversed(t.shape.tolist())]
            w.add_tensor(name, np.asarray(t.data), raw_shape=shape if t.tensor_type in
                         (gguf.GGMLQuantizationType.F32, gguf.GGMLQuantizationType.F16) else None,
                         raw_dtype=t.tensor_type)
    for name, arr in (add or {}).items():
        w.add_tensor(name, np.ascontiguousarray(arr))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    set_magic(dst)
    return Path(dst)


def set_tensor_type(path, name: str, type_id: int) -> None:
    """Rewrite one tensor's ggml type id in the tensor-info table (e.g. PowerInfer's I32, 18)."""
    import struct
    data = bytearray(Path(path).read_bytes())
    key = struct.pack("<Q", len(name)) + name.encode()
    at = data.find(key) + len(key)
    assert at >= len(key), name
    n_dims = struct.unpack_from("<I", data, at)[0]
    struct.pack_into("<I", data, at + 4 + 8 * n_dims, type_id)
    Path(path).write_bytes(bytes(data))


def write_gpuidx(path, n_layer: int, n_ff: int, hot: int) -> Path:
    """A GPU neuron split as PowerInfer's export_split writes it: arch generic.gpu_index, per layer
    blk.N.gpu_idx (I32 0/1 per neuron) and blk.N.gpu_bucket (I32 neuron ids), PowerInfer's I32 id 18."""
    w = gguf.GGUFWriter(str(path), "generic.gpu_index")
    for L in range(n_layer):
        idx = np.zeros(n_ff, np.int32)
        idx[:hot] = 1
        w.add_tensor(f"blk.{L}.gpu_idx", idx)
        w.add_tensor(f"blk.{L}.gpu_bucket", np.arange(hot, dtype=np.int32))
    w.add_block_count(n_layer)
    w.add_uint64("split.vram_capacity", 0)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    set_magic(path)
    for L in range(n_layer):
        for n in ("gpu_idx", "gpu_bucket"):
            set_tensor_type(path, f"blk.{L}.{n}", 18)
    return Path(path)
