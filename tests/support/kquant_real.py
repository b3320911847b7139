"""A real K-quant file: SmolLM2-135M-Instruct as Q4_K_M, made by llama.cpp's
own quantizer (llama-cpp-python's llama_model_quantize) from an F16 copy of
the PyPI Q4_1 file (our converter, --outtype f16 --llama-compat). Both are
made once and kept next to the Q4_1 file in the model cache.

SmolLM2's n_embd of 576 is not a multiple of 256, so llama.cpp's Q4_K_M mix
gives it Q5_0 fallbacks for most matrices, with Q4_K / Q6_K where rows have
1536 elements (ffn_down) and Q8_0 for the embeddings: a true mixed file.
"""
from __future__ import annotations

import ctypes
import os
from pathlib import Path

from . import SMOLLM2


def smollm2_f16(src: Path = SMOLLM2) -> Path:
    """The F16 copy of the Q4_1 file (made once)."""
    out = src.parent / "SmolLM2-135M-Instruct.F16.gguf"
    if not out.is_file():
        from prosparse_cpu.convert.cli import convert

        convert(src, out, "f16", llama_compat=True, progress=False)
    return out


def smollm2_q4_k_m(src: Path = SMOLLM2) -> Path:
    """SmolLM2 Q4_K_M by llama.cpp's quantizer (made once; ImportError
    without llama_cpp)."""
    import llama_cpp

    out = src.parent / "SmolLM2-135M-Instruct.Q4_K_M.gguf"
    if out.is_file():
        return out
    f16 = smollm2_f16(src)
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_K_M
    params.nthread = 2
    tmp = out.with_name(out.name + f".tmp{os.getpid()}")
    try:
        rc = llama_cpp.llama_model_quantize(str(f16).encode(), str(tmp).encode(), ctypes.byref(params))
        if rc != 0:
            raise RuntimeError(f"llama_model_quantize({f16} -> Q4_K_M) returned {rc}")
        os.replace(tmp, out)  # whole or absent, should two sessions race
    finally:
        tmp.unlink(missing_ok=True)
    return out
