"""prosparse-convert on PowerInfer's PWRI fixtures: a `prosparse` file that keeps
ffn_down_t and the predictor (the same bytes where the type stays, the same
decisions), or the llama twin (ffn_down transposed back, no predictor)."""
from __future__ import annotations

import numpy as np
import pytest

from prosparse_cpu import Model
from prosparse_cpu.convert.cli import convert
from prosparse_cpu.convert.errors import ConvertError
from prosparse_cpu.convert.reference import GGUFModel
from support.pwri_files import rewrite_pwri
from test_powerinfer import FIXTURES, one_by_one, path, rel

pytestmark = pytest.mark.skipif(not (FIXTURES / "README.md").is_file(), reason="PowerInfer fixtures not found")
IDS = [1, 343, 315, 318, 310, 305, 323, 264, 260, 259, 314, 325, 310] * 3


@pytest.mark.parametrize("kind", ["f32", "q4_0"])
def test_prosparse_file_is_the_same_model(kind, tmp_path):
    out = tmp_path / "out.gguf"
    r = convert(path(kind), out, progress=False)
    assert r["arch"] == "prosparse"
    src, dst = GGUFModel(path(kind)), GGUFModel(out)
    assert dst.hp("ffn.activation") == "relu" and dst.hp("predictor.hidden_act") == "relu"
    assert dst.hp("predictor.input") == "residual"
    for L in range(2):   # bytes copied as they are
        b = f"blk.{L}."
        for s, d in (("ffn_down_t", "ffn_down_t"), ("fc1", "ffn_pred_in"), ("fc2", "ffn_pred_out")):
            assert bytes(src.t[b + s + ".weight"].data) == bytes(dst.t[b + d + ".weight"].data)
    for mode in ("dense", "sparse", "predict"):
        a, b = Model(path(kind), threads=1, mode=mode), Model(out, threads=1, mode=mode)
        assert np.array_equal(one_by_one(a, IDS), one_by_one(b, IDS)), mode
        a.close(), b.close()


def test_retyped(tmp_path):
    out = tmp_path / "q8.gguf"
    convert(path("f32"), out, outtype="q8_0", progress=False)
    a, b = Model(path("f32"), threads=1, mode="predict"), Model(out, threads=1, mode="predict")
    assert rel(one_by_one(b, IDS), one_by_one(a, IDS)) < 5e-2   # 8-bit weights and activations
    assert b.info.weight_type_name == "Q8_0"


def test_llama_twin(tmp_path):
    out = tmp_path / "llama.gguf"
    notes = []
    r = convert(path("f32"), out, llama_compat=True, progress=False, warn=notes.append)
    assert r["arch"] == "llama" and any("SiLU" in n for n in notes)
    src, dst = GGUFModel(path("f32")), GGUFModel(out)
    assert not [n for n in dst.t if "fc" in n or "pred" in n or "down_t" in n]
    assert np.array_equal(src.w("blk.1.ffn_down_t.weight").T, dst.w("blk.1.ffn_down.weight"))


def test_llama_twin_runs_in_llama_cpp(tmp_path, llama_cpp):
    out = tmp_path / "llama.gguf"
    convert(path("q4_0"), out, llama_compat=True, progress=False)
    llm = llama_cpp.Llama(model_path=str(out), n_ctx=64, verbose=False)
    llm.eval(IDS[:13])
    assert np.isfinite(np.asarray(llm.scores[12])).all()


def test_falcon_refused(tmp_path):
    bad = rewrite_pwri(path("f32"), tmp_path / "falcon.gguf", arch="falcon")
    with pytest.raises(ConvertError, match="falcon files are not supported"):
        convert(bad, tmp_path / "out.gguf", progress=False)
    assert not (tmp_path / "out.gguf").exists()
