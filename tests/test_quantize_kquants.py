"""The C quantizer (ps_quantize_rows via prosparse_cpu.quantize) for Q5_0, Q5_1
and the K-quants, checked with gguf-py's dequantize as the layout oracle:
values a block can hold exactly come back exactly, random weights come back
within the type's error, and that error is at most 1.02x llama.cpp's own
quantizer's on the same tensors. Bad arguments give one clear error."""
from __future__ import annotations

import ctypes

import gguf
import numpy as np
import pytest

from prosparse_cpu import _lib
from prosparse_cpu.quantize import BLOCKS, quantize
from support.gguf_files import write_tiny_llama
from support.llama_quant import llama_quantize

QT = gguf.GGMLQuantizationType
TYPES = [QT.Q5_0, QT.Q5_1, QT.Q2_K, QT.Q3_K, QT.Q4_K, QT.Q5_K, QT.Q6_K]
# relative RMSE (to the weights' RMS) each type reaches on gaussian weights, with some room
REL_RMSE = {QT.Q5_0: 0.045, QT.Q5_1: 0.037, QT.Q2_K: 0.28, QT.Q3_K: 0.155, QT.Q4_K: 0.075, QT.Q5_K: 0.038,
            QT.Q6_K: 0.019}


def dequant(q: np.ndarray, t) -> np.ndarray:
    return gguf.quants.dequantize(q, t)


def test_block_sizes_match_gguf():
    for t in TYPES:
        assert BLOCKS[int(t)] == gguf.GGML_QUANT_SIZES[t]


@pytest.mark.parametrize("t", TYPES, ids=lambda t: t.name)
def test_random_round_trip(t):
    rng = np.random.default_rng(int(t))
    x = (rng.standard_normal((48, 512)) * 0.02).astype(np.float32)
    q = quantize(x, t)
    assert q.dtype == np.uint8 and q.shape == gguf.quants.quant_shape_to_byte_shape(x.shape, t)
    y = dequant(q, t)
    rel = np.sqrt(np.mean((y - x) ** 2)) / np.sqrt(np.mean(x ** 2))
    assert rel < REL_RMSE[t]
    # deterministic, and rows are independent of how many are quantized together
    assert np.array_equal(quantize(x, t), q)
    assert np.array_equal(quantize(x[5:6], t)[0], q[5])


def _representable(t, rng, n_blocks: int = 3) -> np.ndarray:
    """Weights a block of type t holds exactly (power-of-two super-scales, integer
    sub-scales and levels spanning each group's range), so the quantizer must find
    them: any misplaced bit in the layout shows up as a wrong value."""
    out = []
    for _ in range(n_blocks):
        if t in (QT.Q5_0, QT.Q5_1):
            for _ in range(8):
                d = 2.0 ** -rng.integers(4, 9)
                if t == QT.Q5_0:   # levels -16..15 with -16 present: the extreme maps to -16
                    lv = rng.integers(-16, 16, 32)
                    lv[rng.integers(32)] = -16
                    out.append(d * lv * rng.choice([-1, 1]))
                else:              # levels 0..31, both ends present
                    lv = rng.integers(0, 32, 32)
                    lv[:2] = [0, 31]
                    out.append(d * rng.permutation(lv) - 0.25)
            continue
        sym = t in (QT.Q3_K, QT.Q6_K)
        group = 16 if t in (QT.Q2_K, QT.Q3_K, QT.Q6_K) else 32
        n = 256 // group
        if sym:   # x = d * sc * l, sc and l signed, the largest |sc| at its lowest value
            lo, hi = (-4, 3) if t == QT.Q3_K else (-32, 31)
            slo = -32 if t == QT.Q3_K else -128
            d = 2.0 ** -rng.integers(8, 11)
            sc = rng.integers(slo // 2, -slo // 2, n)
            sc[sc == 0] = 1
            sc[rng.integers(n)] = slo
            for s in sc:
                lv = rng.integers(lo, hi + 1, group)
                lv[rng.integers(group)] = lo
                out.append(d * s * lv)
        else:     # x = d * sc * l - dmin * m, l from 0 to the top in every group
            top, stop = (3, 15) if t == QT.Q2_K else ((15, 63) if t == QT.Q4_K else (31, 63))
            d, dmin = 2.0 ** -rng.integers(8, 11), 2.0 ** -rng.integers(8, 11)
            sc, m = rng.integers(1, stop + 1, n), rng.integers(0, stop + 1, n)
            sc[0], m[1] = stop, stop
            for s, mm in zip(sc, m):
                lv = rng.integers(0, top + 1, group)
                lv[:2] = [0, top]
                out.append(d * s * rng.permutation(lv) - dmin * mm)
    return np.concatenate(out).astype(np.float32)


@pytest.mark.parametrize("t", TYPES, ids=lambda t: t.name)
def test_representable_values_exact(t):
    rng = np.random.default_rng(100 + int(t))
    x = np.stack([_representable(t, rng) for _ in range(4)])
    y = dequant(quantize(x, t), t)
    np.testing.assert_array_equal(y, x)


@pytest.mark.parametrize("t", TYPES, ids=lambda t: t.name)
def test_zero_and_constant_rows(t):
    n = 256
    x = np.zeros((3, n), np.float32)
    x[1] = 0.5
    x[2, 7] = -1.0   # one spike in a zero row
    y = dequant(quantize(x, t), t)
    np.testing.assert_array_equal(y[0], 0)
    assert np.all(np.isfinite(y))
    assert np.abs(y[1] - 0.5).max() < 0.5 * REL_RMSE[t] * 4
    assert abs(y[2, 7] + 1.0) < 0.05


# ---- against llama.cpp's quantizer -------------------------------------------------

# llama_ftype of each type quantized alone (pure=True: every matrix in that type)
PURE = {QT.Q5_0: "q5_0", QT.Q5_1: "q5_1", QT.Q2_K: "q2_k", QT.Q3_K: "q3_k_m", QT.Q4_K: "q4_k_m",
        QT.Q5_K: "q5_k_m", QT.Q6_K: "q6_k"}


@pytest.fixture(scope="module")
def float_model(tmp_path_factory):
    """A tiny F32 model with K-quant-sized matrices and heavy-tailed weights."""
    path = tmp_path_factory.mktemp("kq") / "f32.gguf"
    write_tiny_llama(path, n_embd=256, n_ff=768, n_layer=2, n_head=4, n_head_kv=2, scale=0.03,
                     heavy_tails=True)
    return path


@pytest.mark.llamacpp
@pytest.mark.parametrize("t", TYPES, ids=lambda t: t.name)
def test_rmse_vs_llama_cpp(t, float_model, llama_cpp, tmp_path):
    ref = gguf.GGUFReader(llama_quantize(llama_cpp, float_model, tmp_path / "ref.gguf", PURE[t], pure=True))
    src = {x.name: np.array(x.data, dtype=np.float32) for x in gguf.GGUFReader(float_model).tensors}
    ratios = {}
    for tensor in ref.tensors:
        if tensor.tensor_type != t:
            continue
        x = src[tensor.name]
        theirs = np.sqrt(np.mean((dequant(tensor.data, t) - x) ** 2))
        ours = np.sqrt(np.mean((dequant(quantize(x, t), t) - x) ** 2))
        ratios[tensor.name] = ours / theirs
    assert len(ratios) >= 9   # every matrix of the model was quantized to t by llama.cpp
    worst = max(ratios, key=ratios.get)
    assert ratios[worst] <= 1.02, f"{worst}: our RMSE is {ratios[worst]:.4f}x llama.cpp's"


# ---- errors ------------------------------------------------------------------------

@pytest.mark.asan
def test_bad_arguments():
    x = np.ones((2, 256), np.float32)
    with pytest.raises(_lib.ProSparseError, match="no quantizer for type id 2") as e:
        quantize(x, 2)
    assert e.value.code == _lib.PS_ERR_UNSUPPORTED
    with pytest.raises(_lib.ProSparseError, match="q4_k needs rows of a positive multiple of 256") as e:
        quantize(np.ones((2, 96), np.float32), QT.Q4_K)
    assert e.value.code == _lib.PS_ERR_ARG
    with pytest.raises(_lib.ProSparseError, match="q5_0 needs rows of a positive multiple of 32"):
        quantize(np.ones((1, 33), np.float32), QT.Q5_0)
    bad = x.copy()
    bad[1, 3] = np.nan
    with pytest.raises(_lib.ProSparseError, match=r"element \[1, 3\] = nan is not finite"):
        quantize(bad, QT.Q6_K)
    bad[1, 3] = 1e6
    with pytest.raises(_lib.ProSparseError, match="beyond fp16"):
        quantize(bad, QT.Q5_1)
    # a destination one byte short is refused before anything is written
    dll = _lib.lib()
    dst = np.full(2 * 210, 0xAB, np.uint8)
    rc = dll.ps_quantize_rows(int(QT.Q6_K), x.ctypes.data_as(ctypes.POINTER(ctypes.c_float)), 2, 256,
                              dst.ctypes.data_as(ctypes.c_void_p), dst.nbytes - 1)
    assert rc == _lib.PS_ERR_ARG
    assert "needs 420 bytes, the buffer has 419" in _lib.last_error()
    assert np.all(dst == 0xAB)
    # NULL buffers with rows to write
    assert dll.ps_quantize_rows(int(QT.Q6_K), None, 2, 256, None, 1000) == _lib.PS_ERR_ARG
