"""--outtype q5_0 / q5_1 / q2_k / q3_k_m / q4_k_s / q4_k_m / q5_k_s / q5_k_m / q6_k and
K-quant GGUF sources. The files are checked with gguf-py (types, shapes, values),
not run: the tensor-type mix must be llama.cpp's own choice on the same F32
file (every tensor), our rounding error per tensor at most 1.02x that of
llama.cpp's file, and a K-quant source keeps its bytes where the converter
does not transform the tensor."""
from __future__ import annotations

import gguf
import numpy as np
import pytest

from prosparse_cpu.convert.cli import convert
from prosparse_cpu.convert.mix import MIXES
from support.gguf_files import write_tiny_llama
from support.llama_quant import llama_quantize

QT = gguf.GGMLQuantizationType
# shapes that reach every rule: 8 layers (which layers get more bits), GQA 4 (q2_k's
# attn_v), ffn rows of 544 (K-quant fallbacks), 96-wide tied embeddings (rows that
# take no 256-block at all), 17 layers with one KV head
SHAPES = {
    "gqa4": dict(n_embd=256, n_ff=544, n_layer=8, n_head=8, n_head_kv=2),
    "narrow-tied": dict(n_embd=96, n_ff=512, n_layer=5, n_head=4, n_head_kv=4, tied=True),
    "deep": dict(n_embd=512, n_ff=768, n_layer=17, n_head=8, n_head_kv=1),
}


def _types(path) -> dict[str, str]:
    return {t.name: t.tensor_type.name for t in gguf.GGUFReader(path).tensors}


def _file_type(path) -> int:
    return int(gguf.GGUFReader(path).fields["general.file_type"].contents())


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    d = tmp_path_factory.mktemp("mix")
    return {k: write_tiny_llama(d / f"{k}.gguf", heavy_tails=True, scale=0.03, **kw) for k, kw in SHAPES.items()}


@pytest.mark.llamacpp
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("outtype", list(MIXES))
def test_mix_matches_llama_cpp(outtype, shape, sources, llama_cpp, tmp_path):
    src = sources[shape]
    ref = llama_quantize(llama_cpp, src, tmp_path / "ref.gguf", outtype)
    ours = tmp_path / "ours.gguf"
    r = convert(src, ours, outtype, progress=False)
    assert r["type"] == MIXES[outtype][0].name
    a, b = _types(ref), _types(ours)
    assert sorted(a) == sorted(b)
    diff = {k: (a[k], b[k]) for k in a if a[k] != b[k]}
    assert not diff, f"tensor types differ from llama.cpp's (llama.cpp, ours): {diff}"
    assert _file_type(ours) == _file_type(ref) == MIXES[outtype][1]
    if shape == "gqa4":   # the file's values: each tensor within 1.02x of llama.cpp's error
        ra, rb = gguf.GGUFReader(ref), gguf.GGUFReader(ours)
        x = {t.name: np.array(t.data, np.float32) for t in gguf.GGUFReader(src).tensors}
        tb = {t.name: t for t in rb.tensors}
        for t in ra.tensors:
            if t.tensor_type == QT.F32:
                continue
            u = tb[t.name]
            assert tuple(u.shape) == tuple(t.shape)
            theirs = np.sqrt(np.mean((gguf.quants.dequantize(t.data, t.tensor_type) - x[t.name]) ** 2))
            mine = np.sqrt(np.mean((gguf.quants.dequantize(u.data, u.tensor_type) - x[t.name]) ** 2))
            assert mine <= 1.02 * theirs, (t.name, t.tensor_type.name, mine / theirs)


def test_mix_notes_fallbacks(sources, tmp_path):
    notes = []
    convert(sources["gqa4"], tmp_path / "o.gguf", "q4_k_m", progress=False, warn=notes.append)
    # ffn_down rows of 544: Q6_K -> Q8_0 in the 4 layers that get more bits (0, 3, 6, 7), Q4_K -> Q5_0 in the others
    assert "4 matrices have rows that are not a multiple of 256: Q4_K falls back to Q5_0 as llama.cpp does" in notes
    assert "4 matrices have rows that are not a multiple of 256: Q6_K falls back to Q8_0 as llama.cpp does" in notes


def test_mix_from_hf_source_reference(tmp_path, tokenizers_dir):
    """An HF folder takes the same mix; rows of 64 fit no 256-block and fall back."""
    from support.hf_models import hf_folder
    hf_folder(tmp_path / "hf", tokenizers_dir, "llama", "silu")
    out = tmp_path / "o.gguf"
    convert(tmp_path / "hf", out, "q4_k_m", progress=False)
    types = set(_types(out).values())
    assert types <= {"F32", "Q5_0", "Q8_0", "Q4_K", "Q6_K", "F16"} and "Q5_0" in types


# ---- K-quant GGUF sources ----------------------------------------------------------

@pytest.fixture(scope="module", params=["gqa4", "deep"])
def kquant_source(request, sources, tmp_path_factory):
    """llama.cpp's Q4_K_M of a model: (its shape name, the file); gqa4's ffn_down rows of
    544 take the fallbacks Q5_0 and Q8_0, deep's are Q4_K and Q6_K."""
    llama_cpp = pytest.importorskip("llama_cpp")
    shape = request.param
    return shape, llama_quantize(llama_cpp, sources[shape], tmp_path_factory.mktemp("kq") / "q4km.gguf", "q4_k_m")


@pytest.mark.llamacpp
def test_kquant_source_auto_keeps_bytes(kquant_source, tmp_path):
    _, kquant_source = kquant_source
    out = tmp_path / "same.gguf"
    convert(kquant_source, out, "auto", progress=False)
    a = {t.name: t for t in gguf.GGUFReader(kquant_source).tensors}
    b = {t.name: t for t in gguf.GGUFReader(out).tensors}
    assert sorted(a) == sorted(b)
    for name, t in a.items():
        assert b[name].tensor_type == t.tensor_type and np.array_equal(b[name].data, t.data), name


@pytest.mark.llamacpp
def test_kquant_source_to_prosparse(kquant_source, sources, tmp_path):
    """Every tensor but ffn_down keeps its bytes; ffn_down_t (transposed: its rows are the
    old columns) is re-quantized to Q8_0. Against the float weights the file came from,
    that second rounding adds little to a 4- or 5-bit type's error, about 5% to Q6_K's (Q8_0
    stays Q8_0: up to twice its error energy)."""
    shape, kquant_source = kquant_source
    out = tmp_path / "ps.gguf"
    convert(kquant_source, out, "auto", prosparse=True, progress=False)
    a = {t.name: t for t in gguf.GGUFReader(kquant_source).tensors}
    b = {t.name: t for t in gguf.GGUFReader(out).tensors}
    for name, t in a.items():
        if "ffn_down" in name:
            continue
        assert b[name].tensor_type == t.tensor_type and np.array_equal(b[name].data, t.data), name
    floats = {t.name: np.array(t.data, np.float32) for t in gguf.GGUFReader(sources[shape]).tensors}
    seen = set()
    for L in range(SHAPES[shape]["n_layer"]):
        src, dt = a[f"blk.{L}.ffn_down.weight"], b[f"blk.{L}.ffn_down_t.weight"]
        assert dt.tensor_type == QT.Q8_0
        x = floats[f"blk.{L}.ffn_down.weight"].T
        first = np.sqrt(np.mean((gguf.quants.dequantize(src.data, src.tensor_type).T - x) ** 2))
        both = np.sqrt(np.mean((gguf.quants.dequantize(dt.data, dt.tensor_type) - x) ** 2))
        print(f"blk.{L}: {src.tensor_type.name} ffn_down -> Q8_0 ffn_down_t: RMSE to the floats "
              f"{first:.3e} -> {both:.3e} ({both / first:.3f}x)")
        bound = {QT.Q8_0: 1.45, QT.Q6_K: 1.08}.get(src.tensor_type, 1.03)
        assert both <= bound * first, (L, src.tensor_type.name, both / first)
        seen.add(src.tensor_type)
    assert seen == ({QT.Q5_0, QT.Q8_0} if shape == "gqa4" else {QT.Q4_K, QT.Q6_K})


def test_bad_row_length_is_one_error(tmp_path):
    """A matrix whose rows take no quantized block at all becomes F16 with a note."""
    src = write_tiny_llama(tmp_path / "odd.gguf", n_embd=40, n_ff=64, n_layer=1, n_head=2, n_head_kv=2)
    notes = []
    convert(src, tmp_path / "o.gguf", "q6_k", progress=False, warn=notes.append)
    types = _types(tmp_path / "o.gguf")
    assert types["blk.0.attn_q.weight"] == "F16" and types["blk.0.ffn_down.weight"] == "Q8_0"
    assert any("(rows not a multiple of 32)" in n for n in notes)


@pytest.mark.llamacpp
def test_threshold_only_plan_keeps_kquant_down(kquant_source):
    """A threshold-only file (--calibrate, no predictor) keeps a block-quantized ffn_down,
    K-quants included, as the source has it: no second rounding."""
    from prosparse_cpu.convert.gguf_source import GGUFSource
    from prosparse_cpu.convert.plan import build_plan
    _, path = kquant_source
    source = GGUFSource(path)
    try:
        plan = build_plan(source, "prosparse", "auto", False, None, None, threshold_only=True)
        names = {t.name: t for t in plan.tensors}
        assert "blk.0.ffn_down_t.weight" not in names
        for name, t in names.items():
            if "ffn_down" in name:
                assert t.raw is not None and t.qtype == source.tensor_type(name), name
    finally:
        source.close()
