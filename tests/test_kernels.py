"""The engine's weight kernels against gguf-py and numpy.

gguf-py's quantize makes the weight bytes; our dequantization must equal
gguf-py's dequantize bit for bit; our products must match a float64 numpy
product of the dequantized weights within the error the activation
quantization allows (integer types) or float rounding (float types); the
scalar reference path (forced with ps_simd_set(0)) and the AVX2 path agree to
float rounding, the AVX-512 path equals the AVX2 path bit for bit; thread counts do not change any result.

The kernels are reached through the package's ctypes binding of the
ps_debug_* entry points (prosparse_cpu/_lib.py; env PROSPARSE_LIB picks the
library).
"""

from __future__ import annotations

import ctypes
import platform

import numpy as np
import pytest
from gguf import GGMLQuantizationType as T
from gguf.quants import dequantize, quantize

from prosparse_cpu import _lib
from support.gguf_files import K_QUANT_SCALES, random_kquant

K_TYPES = [T.Q2_K, T.Q3_K, T.Q4_K, T.Q5_K, T.Q6_K]
TYPES = [T.F32, T.F16, T.BF16, T.Q8_0, T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1, *K_TYPES]
INTEGER_TYPES = {T.Q8_0, T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1, *K_TYPES}

f32p = ctypes.POINTER(ctypes.c_float)
i32p = ctypes.POINTER(ctypes.c_int32)


@pytest.fixture(scope="module")
def lib():
    """The package's binding (every ps_debug_* prototype declared in _lib._declare);
    the SIMD level is restored afterwards."""
    dll = _lib.lib()
    best = dll.ps_simd_supported()
    yield dll
    dll.ps_simd_set(best)


def fptr(a: np.ndarray):
    return a.ctypes.data_as(f32p)


def cols_for(qtype: T, n_cols: int) -> int:
    """n_cols, or for the K-quants (256-element blocks) the next multiple of 256 above it."""
    return (n_cols // 256 + 1) * 256 if qtype in K_TYPES else n_cols


def weights(qtype: T, n_rows: int, n_cols: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(raw bytes n_rows x row_bytes, gguf-py's dequantization as float32)."""
    rng = np.random.default_rng(seed)
    if qtype in K_TYPES:
        raw = random_kquant(qtype, n_rows, n_cols, rng, scale=rng.uniform(0.5, 20.0))
        off = K_QUANT_SCALES[qtype][0][0]
        raw[0, off : off + 2] = 0  # a block with d = 0
        return raw, dequantize(raw, qtype).reshape(n_rows, n_cols).astype(np.float32)
    w = (rng.standard_normal((n_rows, n_cols)) * rng.uniform(0.01, 2.0, (n_rows, 1))).astype(np.float32)
    w[0, : min(32, n_cols)] = 0.0  # an all-zero block
    if n_rows > 1:
        w[1, ::7] *= 50.0  # outliers
    raw = np.ascontiguousarray(quantize(w, qtype)).view(np.uint8).reshape(n_rows, -1)
    return raw, dequantize(raw, qtype).reshape(n_rows, n_cols).astype(np.float32)


def act_block(qtype: T) -> int:
    """Elements per activation block: 256 (q8k) for the K-quants, else 32 (q8a)."""
    return 256 if qtype in K_TYPES else 32


def dequantize_activations(x: np.ndarray, block: int = 32) -> np.ndarray:
    """The engine's activation quantization (amax/127 scales, round half to even) in float64."""
    b = x.reshape(x.shape[0], -1, block).astype(np.float32)
    amax = np.abs(b).max(axis=2, keepdims=True)
    with np.errstate(divide="ignore"):
        inv = np.where(amax > 0, np.float32(127.0) / amax, np.float32(0.0)).astype(np.float32)
    q = np.rint(b * inv)
    d = (amax / np.float32(127.0)).astype(np.float32)
    return (q.astype(np.float64) * d).reshape(x.shape)


def run_matmul(lib, qtype, raw, n_rows, n_cols, x, n_threads=2):
    y = np.empty((x.shape[0], n_rows), dtype=np.float32)
    rc = lib.ps_debug_matmul(int(qtype), raw.ctypes.data, n_rows, n_cols, fptr(x), x.shape[0], fptr(y), n_threads)
    assert rc == 0, lib.ps_last_error()
    return y


@pytest.mark.parametrize("qtype", TYPES, ids=lambda t: t.name)
@pytest.mark.parametrize("level", [0, 1, 2], ids=["scalar", "avx2", "avx512"])
def test_dequantize_bit_exact(lib, qtype, level):
    if lib.ps_simd_set(level) != level:
        pytest.skip("CPU lacks AVX2")
    n_cols = 256 * 5 if qtype in K_TYPES else 32 * 23 if qtype in INTEGER_TYPES else 333
    raw, ref = weights(qtype, 9, n_cols, seed=int(qtype))
    if qtype == T.F16:  # special values survive
        raw = raw.copy()
        raw.view(np.uint16)[0, :6] = [0x7C00, 0xFC00, 0x0001, 0x83FF, 0x7BFF, 0x8000]  # inf, -inf, subnormals, max, -0
        ref = dequantize(raw, qtype).reshape(9, n_cols)
    for r in range(raw.shape[0]):
        out = np.empty(n_cols, dtype=np.float32)
        assert lib.ps_debug_dequantize(int(qtype), raw[r].ctypes.data, n_cols, fptr(out)) == 0
        np.testing.assert_array_equal(out.view(np.uint32), ref[r].view(np.uint32))


@pytest.mark.parametrize("qtype", TYPES, ids=lambda t: t.name)
@pytest.mark.parametrize("shape", [(1, 32, 1), (13, 96, 1), (576, 576, 1), (37, 576, 5), (200, 1536, 70)])
def test_matmul_against_numpy(lib, qtype, shape):
    n_rows, n_cols, n_tok = shape
    n_cols = cols_for(qtype, n_cols)
    raw, wd = weights(qtype, n_rows, n_cols, seed=n_rows * 7 + n_cols)
    x = np.random.default_rng(n_tok).standard_normal((n_tok, n_cols)).astype(np.float32)
    exact = x.astype(np.float64) @ wd.astype(np.float64).T
    mag = np.abs(x).astype(np.float64) @ np.abs(wd).astype(np.float64).T
    if qtype in INTEGER_TYPES:
        # |sum w (x - xq)| <= sum |w| * d/2 per block, d = amax/127
        qb = act_block(qtype)
        amax = np.abs(x.reshape(n_tok, -1, qb)).max(axis=2)  # n_tok x blocks
        wsum = np.abs(wd.reshape(n_rows, -1, qb)).sum(axis=2)  # n_rows x blocks
        bound = (amax / 127.0 / 2.0) @ wsum.T
        xq = dequantize_activations(x, qb)
        on_xq = xq @ wd.astype(np.float64).T  # the product the kernel computes
    else:
        bound = np.zeros_like(exact)
        on_xq = exact
    results = {}
    for level in (0, 1, 2):
        if lib.ps_simd_set(level) != level:
            continue
        y = run_matmul(lib, qtype, raw, n_rows, n_cols, x)
        assert np.all(np.abs(y - exact) <= bound * 1.001 + 1e-5 * mag + 1e-6)
        assert np.all(np.abs(y - on_xq) <= 3e-6 * mag + 1e-6)
        results[level] = y
    if 1 in results:  # scalar and AVX2 agree to float rounding
        assert np.all(np.abs(results[0] - results[1]) <= 3e-6 * mag + 1e-6)
    if 2 in results:  # AVX-512 repeats AVX2's float steps: bit for bit
        np.testing.assert_array_equal(results[2].view(np.uint32), results[1].view(np.uint32))


@pytest.mark.parametrize("qtype", TYPES, ids=lambda t: t.name)
def test_matmul_threads_identical(lib, qtype):
    lib.ps_simd_set(lib.ps_simd_supported())
    nc = cols_for(qtype, 576)
    raw, _ = weights(qtype, 300, nc, seed=5)
    x = np.random.default_rng(1).standard_normal((9, nc)).astype(np.float32)
    y1 = run_matmul(lib, qtype, raw, 300, nc, x, n_threads=1)
    y2 = run_matmul(lib, qtype, raw, 300, nc, x, n_threads=2)
    np.testing.assert_array_equal(y1.view(np.uint32), y2.view(np.uint32))


@pytest.mark.parametrize("qtype", [T.Q4_0, T.Q4_1, T.Q8_0], ids=lambda t: t.name)
@pytest.mark.parametrize("shape", [(1, 32, 1), (37, 96, 1), (200, 576, 3), (45, 576, 70)])
def test_packed_matmul_is_bit_identical(lib, qtype, shape):
    """The row-interleaved copies the model makes at load (quant.h) give the
    row-major product's bits, at every SIMD level."""
    n_rows, n_cols, n_tok = shape
    raw, _ = weights(qtype, n_rows, n_cols, seed=n_rows + n_tok)
    x = np.random.default_rng(3).standard_normal((n_tok, n_cols)).astype(np.float32)
    for level in (0, 1, 2):
        if lib.ps_simd_set(level) != level:
            continue
        y = run_matmul(lib, qtype, raw, n_rows, n_cols, x)
        p = np.empty_like(y)
        assert lib.ps_debug_matmul_packed(int(qtype), raw.ctypes.data, n_rows, n_cols, fptr(x), n_tok, fptr(p), 2) == 0
        np.testing.assert_array_equal(p.view(np.uint32), y.view(np.uint32))
    lib.ps_simd_set(lib.ps_simd_supported())


@pytest.mark.parametrize("qtype", TYPES, ids=lambda t: t.name)
@pytest.mark.parametrize("n_tok", [1, 6])
@pytest.mark.parametrize("sparse", [False, True])
def test_accum_rows_against_numpy(lib, qtype, n_tok, sparse):
    n_ff, n_embd = 384, cols_for(qtype, 96)
    raw, wd = weights(qtype, n_ff, n_embd, seed=11)
    rng = np.random.default_rng(n_tok)
    x = rng.standard_normal((n_tok, n_ff)).astype(np.float32)
    x[x < 0.5] = 0.0  # ReLU-like: most neurons inactive
    idx = np.sort(rng.choice(n_ff, 50, replace=False)).astype(np.int32) if sparse else None
    rows = idx if sparse else np.arange(n_ff)
    exact = x[:, rows].astype(np.float64) @ wd[rows].astype(np.float64)
    mag = np.abs(x[:, rows]).astype(np.float64) @ np.abs(wd[rows]).astype(np.float64)
    outs = {}
    for level in (0, 1, 2):
        if lib.ps_simd_set(level) != level:
            continue
        for threads in (1, 2):
            y = np.full((n_tok, n_embd), np.nan, dtype=np.float32)
            rc = lib.ps_debug_accum_rows(int(qtype), raw.ctypes.data, n_ff, n_embd, fptr(x), n_tok,
                                         idx.ctypes.data_as(i32p) if sparse else None,
                                         len(rows), fptr(y), threads)
            assert rc == 0, lib.ps_last_error()
            assert np.all(np.abs(y - exact) <= 2e-6 * mag + 1e-7)
            outs[(level, threads)] = y
        np.testing.assert_array_equal(outs[(level, 1)], outs[(level, 2)])
    if (2, 1) in outs:  # AVX-512 repeats AVX2's float steps: bit for bit
        np.testing.assert_array_equal(outs[(2, 1)], outs[(1, 1)])


def test_bad_arguments(lib):
    out = np.empty(64, dtype=np.float32)
    buf = np.zeros(256, dtype=np.uint8)
    assert lib.ps_debug_dequantize(int(T.Q4_0), buf.ctypes.data, 33, fptr(out)) < 0
    assert b"q4_0" in lib.ps_last_error()
    assert lib.ps_debug_dequantize(int(T.Q8_K), buf.ctypes.data, 256, fptr(out)) < 0
    for k in K_TYPES:  # a K-quant row must be whole 256-element blocks
        assert lib.ps_debug_dequantize(int(k), buf.ctypes.data, 224, fptr(out)) < 0
        assert k.name.lower().encode() in lib.ps_last_error()
    assert lib.ps_debug_dequantize(12345, buf.ctypes.data, 32, fptr(out)) < 0
    x32 = np.ones(32, dtype=np.float32)
    assert lib.ps_debug_matmul_packed(int(T.F16), buf.ctypes.data, 2, 32, fptr(x32), 1, fptr(out), 1) < 0
    assert b"no packed form" in lib.ps_last_error()
    idx = np.array([0, 5], dtype=np.int32)
    x = np.ones(4, dtype=np.float32)
    assert lib.ps_debug_accum_rows(int(T.F32), buf.ctypes.data, 4, 8, fptr(x), 1, idx.ctypes.data_as(i32p), 2,
                                   fptr(out), 1) < 0


def test_other_architectures_levels_run_scalar(lib):
    """A level of the other architecture (NEON on x86, AVX on aarch64) gives the
    scalar reference, never this CPU's best; levels of this one are capped at the best."""
    best = lib.ps_simd_supported()
    x86 = platform.machine().lower() in ("x86_64", "amd64", "i686")
    foreign = (3, 4) if x86 else (1, 2)
    for level in foreign:
        assert lib.ps_simd_set(level) == 0
        assert lib.ps_simd_get() == 0
    own_top = 2 if x86 else 4
    assert lib.ps_simd_set(own_top) == best
    lib.ps_simd_set(best)
