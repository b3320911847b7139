"""ctypes binding of native/prosparse.h (the engine's public C API).

Every function of the header is bound here, its C prototype as a comment above
the binding, structs mirrored field by field. The library is
prosparse_cpu/libprosparse.so (built by `make lib`); the environment variable
PROSPARSE_LIB points elsewhere (e.g. the AddressSanitizer build).

Nothing here is clever: the Model class (model.py) gives the Python API.
"""

from __future__ import annotations

import ctypes
import os
from ctypes import (
    POINTER,
    Structure,
    c_char,
    c_char_p,
    c_float,
    c_int,
    c_int32,
    c_int64,
    c_size_t,
    c_uint64,
    c_void_p,
)
from pathlib import Path

# ---- status codes and enums (mirrors of prosparse.h) ----------------------
PS_OK = 0
PS_ERR_IO = -1
PS_ERR_FORMAT = -2
PS_ERR_UNSUPPORTED = -3
PS_ERR_ARG = -4
PS_ERR_MEMORY = -5
PS_ERR_CONTEXT = -6

ERROR_NAMES = {
    PS_ERR_IO: "I/O error",
    PS_ERR_FORMAT: "malformed file",
    PS_ERR_UNSUPPORTED: "unsupported",
    PS_ERR_ARG: "bad argument",
    PS_ERR_MEMORY: "out of memory",
    PS_ERR_CONTEXT: "context full",
}

PS_MODE_DENSE = 0
PS_MODE_SPARSE = 1
PS_MODE_PREDICT = 2
PS_MODE_THRESHOLD = 3

MODES = {
    "dense": PS_MODE_DENSE,
    "sparse": PS_MODE_SPARSE,
    "predict": PS_MODE_PREDICT,
    "threshold": PS_MODE_THRESHOLD,
}
MODE_NAMES = {v: k for k, v in MODES.items()}

# KV cache element types (prosparse.h's enum ps_cache_type); f16 is the default
CACHE_TYPES = {"f16": 0, "f32": 1, "q8_0": 2}

PS_SIMD_SCALAR = 0
PS_SIMD_AVX2 = 1
PS_SIMD_AVX512 = 2
PS_SIMD_NEON = 3
PS_SIMD_NEON_DOT = 4
PS_LOAD_MAP_ONLY = 1


# ---- structs ----------------------------------------------------------------
class ps_model_info(Structure):
    _fields_ = [
        ("arch", c_char * 32),
        ("activation", c_char * 16),
        ("activation_threshold", c_float),
        ("n_vocab", c_int32),
        ("n_ctx_train", c_int32),
        ("n_embd", c_int32),
        ("n_ff", c_int32),
        ("n_layer", c_int32),
        ("n_head", c_int32),
        ("n_head_kv", c_int32),
        ("head_dim", c_int32),
        ("rope_freq_base", c_float),
        ("rms_eps", c_float),
        ("tied_output", c_int32),
        ("has_predictor", c_int32),
        ("predictor_rank", c_int32),
        ("weight_type", c_int32),
        ("n_params", c_int64),
        ("file_size", c_int64),
        ("powerinfer", c_int32),
        ("predictor_threshold", c_float),
    ]


class ps_session_params(Structure):
    _fields_ = [
        ("n_threads", c_int32),
        ("n_ctx", c_int32),
        ("n_batch", c_int32),
        ("mode", c_int32),
        ("cache_type", c_int32),
        ("activation_threshold", c_float),
    ]


class ps_layer_stats(Structure):
    _fields_ = [
        ("tokens", c_int64),
        ("neurons_total", c_int64),
        ("neurons_active", c_int64),
        ("neurons_predicted", c_int64),
        ("recall_hits", c_int64),
        ("recall_total", c_int64),
    ]


class ps_sampler_params(Structure):
    _fields_ = [
        ("temperature", c_float),
        ("top_k", c_int32),
        ("top_p", c_float),
        ("seed", c_uint64),
    ]


# Opaque handles travel as void pointers.
ps_model_p = c_void_p
ps_session_p = c_void_p
ps_sampler_p = c_void_p


# ---- loading ------------------------------------------------------------------
def library_path() -> Path:
    env = os.environ.get("PROSPARSE_LIB")
    if env:
        return Path(env)
    return Path(__file__).resolve().parent / "libprosparse.so"


def _load() -> ctypes.CDLL:
    path = library_path()
    if not path.exists():
        raise ProSparseError(f"native library not found at {path} (build it with `make lib`, or set PROSPARSE_LIB)")
    try:
        return ctypes.CDLL(str(path))
    except OSError as e:
        raise ProSparseError(f"cannot load native library {path}: {e}") from None


_lib: ctypes.CDLL | None = None


def lib() -> ctypes.CDLL:
    """The loaded library with every prototype declared (loaded on first use)."""
    global _lib
    if _lib is None:
        _lib = _declare(_load())
    return _lib


def _fn(dll: ctypes.CDLL, name: str, argtypes: list, restype) -> None:
    try:
        f = getattr(dll, name)
    except AttributeError:
        # A stale or partial build: fail when the function is used, not at import.
        def missing(*args, _name=name):
            raise ProSparseError(f"native library {library_path()} lacks {_name} (stale build? run `make lib`)")
        setattr(dll, name, missing)
        return
    f.argtypes = argtypes
    f.restype = restype


def _declare(dll: ctypes.CDLL) -> ctypes.CDLL:
    # const char *ps_last_error(void);
    _fn(dll, "ps_last_error", [], c_char_p)
    # int ps_last_error_code(void);
    _fn(dll, "ps_last_error_code", [], c_int)

    # int ps_simd_supported(void);
    _fn(dll, "ps_simd_supported", [], c_int)
    # int ps_simd_set(int level);
    _fn(dll, "ps_simd_set", [c_int], c_int)
    # int ps_simd_get(void);
    _fn(dll, "ps_simd_get", [], c_int)

    # ps_model *ps_model_load(const char *path);
    _fn(dll, "ps_model_load", [c_char_p], ps_model_p)
    # ps_model *ps_model_load_ex(const char *path, uint32_t flags);
    _fn(dll, "ps_model_load_ex", [c_char_p, ctypes.c_uint32], ps_model_p)
    # void ps_model_free(ps_model *model);
    _fn(dll, "ps_model_free", [ps_model_p], None)
    # int ps_model_get_info(const ps_model *model, ps_model_info *out);
    _fn(dll, "ps_model_get_info", [ps_model_p, POINTER(ps_model_info)], c_int)
    # int ps_model_meta_str(const ps_model *model, const char *key, char *buf, size_t buflen);
    _fn(dll, "ps_model_meta_str", [ps_model_p, c_char_p, c_char_p, c_size_t], c_int)
    # int ps_model_check_mode(const ps_model *model, int32_t mode);
    _fn(dll, "ps_model_check_mode", [ps_model_p, c_int32], c_int)

    # int32_t ps_token_bos(const ps_model *model);
    _fn(dll, "ps_token_bos", [ps_model_p], c_int32)
    # int32_t ps_token_eos(const ps_model *model);
    _fn(dll, "ps_token_eos", [ps_model_p], c_int32)
    # int32_t ps_token_eot(const ps_model *model);
    _fn(dll, "ps_token_eot", [ps_model_p], c_int32)
    # int ps_token_is_eog(const ps_model *model, int32_t token);
    _fn(dll, "ps_token_is_eog", [ps_model_p, c_int32], c_int)
    # int ps_model_add_bos(const ps_model *model);
    _fn(dll, "ps_model_add_bos", [ps_model_p], c_int)

    # int ps_tokenize(const ps_model *model, const char *text, int32_t len,
    #                 int32_t *out, int32_t max_tokens, int add_bos, int parse_special);
    _fn(dll, "ps_tokenize", [ps_model_p, c_char_p, c_int32, POINTER(c_int32), c_int32, c_int, c_int], c_int)
    # int ps_token_to_piece(const ps_model *model, int32_t token, char *buf, int32_t buflen, int special);
    _fn(dll, "ps_token_to_piece", [ps_model_p, c_int32, c_char_p, c_int32, c_int], c_int)

    # ps_session_params ps_session_default_params(void);
    _fn(dll, "ps_session_default_params", [], ps_session_params)
    # ps_session *ps_session_new(const ps_model *model, const ps_session_params *params);
    _fn(dll, "ps_session_new", [ps_model_p, POINTER(ps_session_params)], ps_session_p)
    # void ps_session_free(ps_session *session);
    _fn(dll, "ps_session_free", [ps_session_p], None)
    # int ps_session_eval(ps_session *session, const int32_t *tokens, int32_t n, float *all_logits);
    _fn(dll, "ps_session_eval", [ps_session_p, POINTER(c_int32), c_int32, POINTER(c_float)], c_int)
    # const float *ps_session_logits(const ps_session *session);
    _fn(dll, "ps_session_logits", [ps_session_p], POINTER(c_float))
    # int32_t ps_session_n_past(const ps_session *session);
    _fn(dll, "ps_session_n_past", [ps_session_p], c_int32)
    # int32_t ps_session_n_ctx(const ps_session *session);
    _fn(dll, "ps_session_n_ctx", [ps_session_p], c_int32)
    # int64_t ps_session_kv_bytes(const ps_session *session);
    _fn(dll, "ps_session_kv_bytes", [ps_session_p], c_int64)
    # void ps_session_reset(ps_session *session);
    _fn(dll, "ps_session_reset", [ps_session_p], None)
    # int ps_session_truncate(ps_session *session, int32_t n_keep);
    _fn(dll, "ps_session_truncate", [ps_session_p, c_int32], c_int)
    # int ps_session_set_mode(ps_session *session, int32_t mode);
    _fn(dll, "ps_session_set_mode", [ps_session_p, c_int32], c_int)
    # int32_t ps_session_get_mode(const ps_session *session);
    _fn(dll, "ps_session_get_mode", [ps_session_p], c_int32)

    # int ps_session_layer_stats(const ps_session *session, ps_layer_stats *out, int32_t max_layers);
    _fn(dll, "ps_session_layer_stats", [ps_session_p, POINTER(ps_layer_stats), c_int32], c_int)
    # int ps_session_set_measure(ps_session *session, int on);
    _fn(dll, "ps_session_set_measure", [ps_session_p, c_int], c_int)
    # double ps_debug_read_bandwidth(int n_threads, int64_t bytes, int reps);
    _fn(dll, "ps_debug_read_bandwidth", [c_int, c_int64, c_int], ctypes.c_double)

    # Kernel entry points for the tests (tests/test_kernels.py); W is raw block bytes.
    # int ps_debug_dequantize(int32_t type, const void *src, int64_t n, float *dst);
    _fn(dll, "ps_debug_dequantize", [c_int32, c_void_p, c_int64, POINTER(c_float)], c_int)
    # int ps_debug_matmul(int32_t type, const void *W, int64_t n_rows, int64_t n_cols,
    #                     const float *X, int32_t n_tok, float *Y, int32_t n_threads);
    _fn(dll, "ps_debug_matmul", [c_int32, c_void_p, c_int64, c_int64, POINTER(c_float), c_int32,
                                 POINTER(c_float), c_int32], c_int)
    # int ps_debug_matmul_packed(int32_t type, const void *W, int64_t n_rows, int64_t n_cols,
    #                            const float *X, int32_t n_tok, float *Y, int32_t n_threads);
    _fn(dll, "ps_debug_matmul_packed", [c_int32, c_void_p, c_int64, c_int64, POINTER(c_float), c_int32,
                                        POINTER(c_float), c_int32], c_int)
    # int ps_debug_accum_rows(int32_t type, const void *W, int64_t n_rows, int64_t n_cols,
    #                         const float *X, int32_t n_tok, const int32_t *idx, int64_t n_idx,
    #                         float *Y, int32_t n_threads);
    _fn(dll, "ps_debug_accum_rows", [c_int32, c_void_p, c_int64, c_int64, POINTER(c_float), c_int32,
                                     POINTER(c_int32), c_int64, POINTER(c_float), c_int32], c_int)
    # void ps_debug_fail_alloc(int64_t n);
    _fn(dll, "ps_debug_fail_alloc", [c_int64], None)
    # double ps_model_read_bandwidth(const ps_model *model, int32_t n_threads, int32_t reps);
    _fn(dll, "ps_model_read_bandwidth", [ps_model_p, c_int32, c_int32], ctypes.c_double)

    # int ps_quantize_rows(int32_t type, const float *src, int64_t n_rows, int64_t n_cols, void *dst,
    #                      size_t dst_bytes);
    _fn(dll, "ps_quantize_rows", [c_int32, POINTER(c_float), c_int64, c_int64, c_void_p, c_size_t], c_int)

    # ps_sampler_params ps_sampler_default_params(void);
    _fn(dll, "ps_sampler_default_params", [], ps_sampler_params)
    # ps_sampler *ps_sampler_new(const ps_sampler_params *params);
    _fn(dll, "ps_sampler_new", [POINTER(ps_sampler_params)], ps_sampler_p)
    # void ps_sampler_free(ps_sampler *sampler);
    _fn(dll, "ps_sampler_free", [ps_sampler_p], None)
    # int32_t ps_sampler_sample(ps_sampler *sampler, const float *logits, int32_t n_vocab);
    _fn(dll, "ps_sampler_sample", [ps_sampler_p, POINTER(c_float), c_int32], c_int32)
    return dll


def last_error() -> str:
    msg = lib().ps_last_error()
    return msg.decode("utf-8", "replace") if msg else ""


# ---- errors -----------------------------------------------------------------
class ProSparseError(RuntimeError):
    """An error reported by the engine (its ps_last_error() text) or by the binding.

    `code` is the engine's PS_ERR_* status when there is one, else None.
    """

    def __init__(self, message: str, code: int | None = None):
        super().__init__(message)
        self.code = code


def fail(code: int | None = None, what: str = "") -> ProSparseError:
    """Build a ProSparseError from the engine's last error (call right after the failure)."""
    msg = last_error() or ERROR_NAMES.get(code, "unknown error")
    if what and not msg.startswith(what):  # the engine often names the file itself
        msg = f"{what}: {msg}"
    return ProSparseError(msg, code)


def check(rc: int, what: str = "") -> int:
    """Raise ProSparseError for a negative status; pass other values through."""
    if rc < 0:
        raise fail(rc, what)
    return rc


def read_bandwidth(threads: int, gib: float = 1.0, reps: int = 5) -> float:
    """Main-memory read bandwidth in GB/s through the engine's thread pool with
    `threads` threads: the median of `reps` passes over a `gib` GiB buffer."""
    gbs = lib().ps_debug_read_bandwidth(int(threads), int(gib * 2**30), int(reps))
    if gbs < 0:
        raise fail(int(gbs), "read bandwidth")
    return gbs
