"""What the synthetic model writers (synth_sparse_model.py, synth_powerinfer.py) share:
random well-formed blocks (symmetric Q4_0, and the Q4_K / Q6_K / Q5_0 / Q8_0 / F16 a
K-quant mix needs), quantization round trips of float matrices, and the streaming
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


# random K-quant and 8-bit blocks: fp16 scales set so that, as random_q4's, a row's product
# with a unit-rms input has spread `gain`; the rest of each block is random bytes (every bit
# pattern of the quants is a valid block). Each block's mean is zero (Q8_0: symmetric quants)
# or of random sign (the others), so no row shares a common offset that would add up across rows.
_SC_Q4K = np.arange(32, 64)            # 6-bit sub-block scales drawn from here
_SC_Q6K = np.arange(32, 128)           # |int8 scale| drawn from here, random sign


def _fp16_bytes(v: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(v, dtype=np.float16).view(np.uint8).reshape(*v.shape, 2)


def random_q4k(rng: np.random.Generator, rows: int, cols: int, gain: float = 1.0) -> np.ndarray:
    """Q4_K (144-byte blocks of 256): w = d*sc*q - dmin*mn, q in 0..15, dmin = 8d and
    mn = round(7.5 sc / 8), so each 32-element sub-block is centred to within 4d."""
    nb = cols // 256
    out = rng.integers(0, 256, (rows, nb, 144), dtype=np.uint8)
    sc = rng.integers(_SC_Q4K[0], _SC_Q4K[-1] + 1, (rows, nb, 8)).astype(np.uint8)
    mn = np.rint(7.5 * sc / 8).astype(np.uint8)
    d = gain / np.sqrt(cols * 21.25 * np.mean(_SC_Q4K.astype(np.float64) ** 2))   # Var(q) = 21.25
    out[:, :, 0:2] = _fp16_bytes(np.full((rows, nb), d))
    out[:, :, 2:4] = _fp16_bytes(np.full((rows, nb), 8 * d))
    lo, hi = slice(0, 4), slice(4, 8)   # ggml's 12-byte packing of 8 six-bit scales and mins
    out[:, :, 4:8] = (sc[..., lo] & 63) | ((sc[..., hi] >> 4) << 6)
    out[:, :, 8:12] = (mn[..., lo] & 63) | ((mn[..., hi] >> 4) << 6)
    out[:, :, 12:16] = (sc[..., hi] & 15) | ((mn[..., hi] & 15) << 4)
    return out.reshape(rows, nb * 144)


def random_q6k(rng: np.random.Generator, rows: int, cols: int, gain: float = 1.0) -> np.ndarray:
    """Q6_K (210-byte blocks of 256): w = d*sc*(q-32), q in 0..63, 16 int8 scales of random sign."""
    nb = cols // 256
    out = rng.integers(0, 256, (rows, nb, 210), dtype=np.uint8)
    sc = rng.integers(_SC_Q6K[0], _SC_Q6K[-1] + 1, (rows, nb, 16)) * rng.choice([-1, 1], (rows, nb, 16))
    out[:, :, 192:208] = sc.astype(np.int8).view(np.uint8)
    d = gain / np.sqrt(cols * 341.5 * np.mean(_SC_Q6K.astype(np.float64) ** 2))    # E(q-32)^2 = 341.5
    out[:, :, 208:210] = _fp16_bytes(np.full((rows, nb), d))
    return out.reshape(rows, nb * 210)


def random_q5_0(rng: np.random.Generator, rows: int, cols: int, gain: float = 1.0) -> np.ndarray:
    """Q5_0 (22-byte blocks of 32): w = d*(q-16), q in 0..31, d of random sign."""
    nb = cols // QK
    out = rng.integers(0, 256, (rows, nb, 22), dtype=np.uint8)
    d = gain / np.sqrt(cols * 85.5) * rng.choice([-1.0, 1.0], (rows, nb))           # E(q-16)^2 = 85.5
    out[:, :, 0:2] = _fp16_bytes(d)
    return out.reshape(rows, nb * 22)


def random_q8_0(rng: np.random.Generator, rows: int, cols: int, gain: float = 1.0) -> np.ndarray:
    """Q8_0 (34-byte blocks of 32): w = d*q, q in -127..127 (as ggml's quantizer writes)."""
    nb = cols // QK
    out = np.empty((rows, nb, 34), np.uint8)
    out[:, :, 0:2] = _fp16_bytes(np.full((rows, nb), gain / np.sqrt(cols * (255**2 - 1) / 12)))
    out[:, :, 2:] = rng.integers(-127, 128, (rows, nb, 32), dtype=np.int8).view(np.uint8)
    return out.reshape(rows, nb * 34)


def random_f16(rng: np.random.Generator, rows: int, cols: int, gain: float = 1.0) -> np.ndarray:
    w = (rng.standard_normal((rows, cols), dtype=np.float32) * (gain / np.sqrt(cols))).astype(np.float16)
    return w.view(np.uint8)


RANDOM_BLOCKS = {Q.Q4_0: random_q4, Q.Q4_K: random_q4k, Q.Q6_K: random_q6k, Q.Q5_0: random_q5_0,
                 Q.Q8_0: random_q8_0, Q.F16: random_f16}


def random_blocks(rng: np.random.Generator, qt: Q, rows: int, cols: int, gain: float = 1.0) -> np.ndarray:
    """(rows, row bytes) uint8 of random type-qt rows whose products with a unit-rms input have spread gain."""
    if qt not in RANDOM_BLOCKS:
        raise ValueError(f"no random block writer for {qt.name}")
    return RANDOM_BLOCKS[qt](rng, rows, cols, gain)


def quant(a: np.ndarray, qt: Q = Q.Q4_0) -> np.ndarray:
    """gguf-py's quantizer, else (the K-quants, which gguf-py cannot write) the engine's C one."""
    a = np.ascontiguousarray(a, dtype=np.float32)
    try:
        return gguf.quants.quantize(a, qt)
    except NotImplementedError:
        from prosparse_cpu.quantize import quantize
        return quantize(a, int(qt))


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
