"""PowerInfer's GGUF files (magic "PWRI") for the Python side: gguf-py's reader
refuses them by their magic only, so this reader reads that one field as
GGUF's; everything after it is an ordinary GGUF v3 file.

    reader = open_gguf(path)          # a gguf.GGUFReader, PWRI or GGUF
    is_powerinfer(path)               # magic check, no parsing
"""
from __future__ import annotations

from pathlib import Path

import gguf
import numpy as np

PWRI_MAGIC = int.from_bytes(b"PWRI", "little")


def is_powerinfer(path) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(4) == b"PWRI"
    except OSError:
        return False


# PowerInfer's gguf-py numbers its integer types (the GPU split's gpu_idx / gpu_bucket
# tensors) I8 16, I16 17, I32 18; current gguf-py uses 24-26 (16-18 are IQ types there).
_POWERINFER_INTS = {16: 24, 17: 25, 18: 26}


class PWRIReader(gguf.GGUFReader):
    """GGUFReader over a PWRI file: the magic at offset 0 reads as GGUF's, and
    PowerInfer's integer type ids as current ones."""

    powerinfer = True

    def _get(self, offset, dtype, count=1, override_order=None):
        v = super()._get(offset, dtype, count, override_order)
        if offset == 0 and np.dtype(dtype) == np.uint32 and count == 1 and int(v[0]) == PWRI_MAGIC:
            return np.array([gguf.GGUF_MAGIC], dtype=np.uint32)
        return v

    def _get_tensor_info_field(self, orig_offs):
        field = super()._get_tensor_info_field(orig_offs)
        t = int(field.parts[4][0])
        if t in _POWERINFER_INTS:
            field.parts[4] = np.array([_POWERINFER_INTS[t]], dtype=np.uint32)
        return field


def open_gguf(path, mode: str = "r") -> gguf.GGUFReader:
    """A reader for a GGUF or PWRI file (gguf-py's exceptions pass through)."""
    if is_powerinfer(path):
        return PWRIReader(str(path), mode)
    r = gguf.GGUFReader(str(path), mode)
    r.powerinfer = False
    return r


def gpu_split_files(path) -> list[Path]:
    """PowerInfer's GPU neuron split files (*.gpuidx) next to a model: not needed on a CPU."""
    p = Path(path)
    return sorted(q for q in p.parent.glob(p.name + "*.gpuidx")) if p.parent.is_dir() else []
