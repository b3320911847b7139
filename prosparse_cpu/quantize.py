"""Quantize float matrices with the engine's C quantizer (ps_quantize_rows).

For the types gguf-py cannot write (Q5_0, Q5_1 and the K-quants Q2_K..Q6_K):
the converter calls `quantize`, tests compare the bytes through gguf-py's
dequantize. Rows are split over threads (the C call releases the GIL).
"""
from __future__ import annotations

import ctypes
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from . import _lib

# ggml type id -> (elements, bytes) per block
BLOCKS = {6: (32, 22), 7: (32, 24), 10: (256, 84), 11: (256, 110), 12: (256, 144), 13: (256, 176), 14: (256, 210)}
TYPES = frozenset(BLOCKS)
_ROWS_PER_TASK = 64


def row_bytes(qtype: int, n_cols: int) -> int:
    block, nbytes = BLOCKS[int(qtype)]
    return n_cols // block * nbytes


def quantize(x: np.ndarray, qtype: int, threads: int | None = None) -> np.ndarray:
    """x: float32-convertible, 2-D (rows x n_cols) or 1-D; returns uint8 of shape
    (..., row_bytes) in ggml's block layout. Raises ProSparseError on a type without a
    quantizer, n_cols not a multiple of the block, or a non-finite / beyond-fp16 value."""
    qtype = int(qtype)
    x = np.ascontiguousarray(x, dtype=np.float32)
    if x.ndim == 0:
        raise _lib.ProSparseError("quantize: a scalar is not a matrix", _lib.PS_ERR_ARG)
    n_cols = int(x.shape[-1])
    flat = x.reshape(-1, n_cols) if n_cols else x.reshape(0, 0)
    n_rows = int(flat.shape[0])
    rb = row_bytes(qtype, n_cols) if qtype in BLOCKS else 0
    out = np.empty((n_rows, rb), dtype=np.uint8)
    dll = _lib.lib()
    fptr = ctypes.POINTER(ctypes.c_float)

    def run(r0: int, r1: int) -> tuple[int, str]:
        src = flat[r0:r1]
        dst = out[r0:r1]
        rc = dll.ps_quantize_rows(qtype, src.ctypes.data_as(fptr), r1 - r0, n_cols,
                                  dst.ctypes.data_as(ctypes.c_void_p), dst.nbytes)
        return rc, (_lib.last_error() if rc < 0 else "")   # the error text is per thread

    if n_rows <= _ROWS_PER_TASK or qtype not in BLOCKS:
        results = [run(0, n_rows)]
    else:
        n = threads or os.cpu_count() or 1
        spans = [(r, min(r + _ROWS_PER_TASK, n_rows)) for r in range(0, n_rows, _ROWS_PER_TASK)]
        with ThreadPoolExecutor(max_workers=n) as pool:
            results = list(pool.map(lambda s: run(*s), spans))
    for rc, msg in results:
        if rc < 0:
            raise _lib.ProSparseError(msg or _lib.ERROR_NAMES.get(rc, "quantize failed"), rc)
    return out.reshape(*x.shape[:-1], rb)
