"""Stream a Plan into a GGUF file: one tensor in memory at a time, written to a
temporary name beside the output and renamed at the end. Any error, and
Ctrl-C, removes the temporary file: never a partial output.
"""
from __future__ import annotations

import os
import threading
from pathlib import Path

import gguf
import numpy as np
from tqdm import tqdm

from prosparse_cpu._lib import ProSparseError
from prosparse_cpu.quantize import TYPES as C_TYPES
from prosparse_cpu.quantize import quantize as c_quantize

from .errors import ConvertError
from .plan import Plan, check_finite

# Set by the CLI's SIGTERM handler. Checked between tensors as well, because an
# exception raised by a signal handler inside library code (safetensors' tensor
# construction) can be swallowed or turned into another error there.
STOP = threading.Event()


def _encode(t, x: np.ndarray) -> np.ndarray:
    if tuple(x.shape) != t.shape:
        raise ConvertError(f"tensor {t.name}: produced shape {list(x.shape)}, expected {list(t.shape)}")
    check_finite(t.name, x)
    x = np.ascontiguousarray(x, dtype=np.float32)
    if int(t.qtype) in C_TYPES:   # gguf-py has no quantizer for these: the engine's C one
        try:
            q = c_quantize(x, t.qtype)
        except ProSparseError as e:
            raise ConvertError(f"tensor {t.name}: {e}") from None
    else:
        q = gguf.quants.quantize(x, t.qtype)
    return np.ascontiguousarray(q).view(np.uint8).reshape(t.byte_shape)


def _checked_raw(t) -> np.ndarray:
    data = t.raw()
    check_finite(t.name, gguf.quants.dequantize(data, t.qtype))
    return data.reshape(t.byte_shape)


def write_plan(plan: Plan, gw: gguf.GGUFWriter, out: Path, progress: bool = True) -> None:
    """gw: a GGUFWriter created on a temporary path, metadata already added."""
    out = Path(out)
    tmp = Path(gw.path)
    for t in plan.tensors:
        gw.add_tensor_info(t.name, t.byte_shape, np.dtype(np.uint8), t.nbytes, raw_dtype=t.qtype)
    try:
        try:
            gw.write_header_to_file()
        except OSError as e:
            raise ConvertError(f"cannot write {out}: {e.strerror or e}") from None
        gw.write_kv_data_to_file()
        gw.write_ti_data_to_file()
        # disable=None: a bar on a terminal only, so logs and pipes get one clean error line
        with tqdm(plan.tensors, desc="converting", unit="tensor", disable=None if progress else True,
                  leave=False) as bar:
            for t in bar:
                if STOP.is_set():
                    raise KeyboardInterrupt
                bar.set_postfix_str(f"{t.name} {t.qtype.name}", refresh=False)
                data = _encode(t, t.produce()) if t.raw is None else _checked_raw(t)
                try:
                    gw.write_tensor_data(data)
                except OSError as e:
                    raise ConvertError(f"cannot write {out}: {e.strerror or e}") from None
                del data
        gw.close()
        os.replace(tmp, out)
    except BaseException:   # errors and KeyboardInterrupt alike: no partial file
        try:
            gw.close()
        finally:
            tmp.unlink(missing_ok=True)
        raise


def temp_path_for(out: Path) -> Path:
    """A hidden name in the output's folder, so the final rename is atomic."""
    out = Path(out)
    return out.with_name(f".{out.name}.{os.getpid()}.part")
