"""llama.cpp's own quantizer through llama-cpp-python (llama_model_quantize), the
reference for our quantizer's error and the converter's tensor-mix rules."""
from __future__ import annotations

import ctypes
from pathlib import Path

# llama_ftype ids (llama.h) of the types and mixes the converter writes
FTYPES = {"q5_0": 8, "q5_1": 9, "q2_k": 10, "q3_k_s": 11, "q3_k_m": 12, "q3_k_l": 13, "q4_k_s": 14,
          "q4_k_m": 15, "q5_k_s": 16, "q5_k_m": 17, "q6_k": 18, "q8_0": 7, "q4_0": 2, "q4_1": 3}


def llama_quantize(llama_cpp, src, out, ftype: str, pure: bool = False, threads: int = 2) -> Path:
    """Quantize the GGUF `src` to `out` as llama-quantize would (no importance matrix).
    pure: every matrix in the bulk type (no mix rules)."""
    p = llama_cpp.llama_model_quantize_default_params()
    p.ftype = FTYPES[ftype]
    p.pure = pure
    p.nthread = threads
    rc = llama_cpp.llama_model_quantize(str(src).encode(), str(out).encode(), ctypes.byref(p))
    if rc != 0:
        raise RuntimeError(f"llama_model_quantize({src}, {ftype}) returned {rc}")
    return Path(out)
