"""What the synthetic model writers (synth_sparse_model.py, synth_powerinfer.py) share:
random symmetric Q4_0 bytes, Q4_0 round trips of float matrices, and the streaming
write of one tensor plan into a model file and its twin at once."""
from __future__ import annotations

import os
from pathlib import Path

import gguf
import numpy as np
from gguf import GGMLQuantizationType as Q

QK = 32

# symmetric Q4_0 nibbles: value q-8 in -8..7, with -8 (q=0) mapped to 0 (q=8), so the mean is 0
_FIX = np.array([((b & 15) or 8) | (((b >> 4) or 8) << 4) for b in range(256)], np.uint8)


def random_q4(rng: np.random.Generator, rows: int, cols: int, gain: float = 1.0) -> np.ndarray:
    """(rows, cols/32*18) uint8: Q4_0 blocks whose products with a unit-rms
    input have spread `gain` (values d*(q-8), Var(q-8) = 17.5 after the fix)."""
    nb = cols // QK
    out = np.empty((rows, nb, 18), np.uint8)
    d = np.float16(gain / np.sqrt(17.5 * cols))
    out[:, :, 0:2] = np.frombuffer(d.tobytes(), np.uint8)
    out[:, :, 2:] = _FIX[rng.integers(0, 256, size=(rows, nb, 16), dtype=np.uint8)]
    return out.reshape(rows, nb * 18)


def quant(a: np.ndarray, qt: Q = Q.Q4_0) -> np.ndarray:
    return gguf.quants.quantize(np.ascontiguousarray(a, dtype=np.float32), qt)


def deq(b: np.ndarray, qt: Q = Q.Q4_0) -> np.ndarray:
    return gguf.quants.dequantize(b, qt).astype(np.float32)


def write_files(writers: dict, paths: dict, plan: list, progress: bool = False, magic: dict | None = None) -> None:
    """Write `plan` into the files: writers[k] (a GGUFWriter on paths[k] + ".tmp", its
    keys added) for each file k. plan: (name, rows, cols, type, files, producer) in
    file order, `files` the keys of the files that hold the tensor, producer() its
    bytes (called once, shared by the files). magic[k]: the first 4 bytes of file k
    instead of GGUF's. Each file is renamed into place once all are written, and
    none is left behind (not even a .tmp) when anything fails."""
    plan = [p for p in plan if any(k in writers for k in p[4])]
    for name, rows, cols, qt, files, _ in plan:
        for k in files:
            if k in writers:
                if qt == Q.F32:
                    writers[k].add_tensor_info(name, (cols,), np.dtype(np.float32), 4 * cols)
                else:
                    nbytes = rows * cols // gguf.GGML_QUANT_SIZES[qt][0] * gguf.GGML_QUANT_SIZES[qt][1]
                    writers[k].add_tensor_info(name, (rows, nbytes // rows), np.dtype(np.uint8), nbytes,
                                               raw_dtype=qt)
    for w in writers.values():
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_ti_data_to_file()
    try:
        if progress:
            from tqdm import tqdm
            plan = tqdm(plan, desc="writing", unit="tensor")
        for name, rows, cols, qt, files, produce in plan:
            data = produce()
            for k in files:
                if k in writers:
                    writers[k].write_tensor_data(data)
        for w in writers.values():
            w.close()
        for k, m in (magic or {}).items():
            with open(str(paths[k]) + ".tmp", "r+b") as f:
                f.write(m)
        for path in paths.values():
            os.replace(str(path) + ".tmp", path)
            print(f"{path}: {path.stat().st_size / 1e9:.2f} GB")
    except BaseException:
        for path in paths.values():
            Path(str(path) + ".tmp").unlink(missing_ok=True)
        raise
