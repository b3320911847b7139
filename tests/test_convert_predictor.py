"""--predictor and --stats: PowerInfer's layout and prosparse-train's safetensors;
hot-first reordering is consistent across gate, up, down_t, freq and the
predictor's output rows, so the reordered file computes the same function.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from prosparse_cpu.convert.cli import convert
from prosparse_cpu.convert.reference import GGUFModel, gguf_logits
from support.compare import engine_logits, random_sequences, rel_err
from support.hf_models import hf_folder
from support.predictors import N_EMBD, N_FF, N_LAYER, RANK, powerinfer_dirs, trainer_dirs


@pytest.fixture
def relu_model(tmp_path, tokenizers_dir):
    n = hf_folder(tmp_path / "hf", tokenizers_dir, "llama", "relu")
    return tmp_path / "hf", n


def test_powerinfer_predictor_and_stats_reorder(tmp_path, relu_model):
    hf, n = relu_model
    pred, stats = powerinfer_dirs(tmp_path)
    a, b = tmp_path / "a.gguf", tmp_path / "b.gguf"
    convert(hf, a, "f32", predictor=pred, progress=False)
    convert(hf, b, "f32", predictor=pred, stats=stats, progress=False)
    A, B = GGUFModel(a), GGUFModel(b)
    assert A.hp("ffn.reordered") is False and B.hp("ffn.reordered") is True
    for m in (A, B):
        assert m.hp("predictor.threshold") == pytest.approx(0.25)
        assert m.hp("predictor.input") == "residual"
        assert m.hp("predictor.hidden_act") == "relu"
    assert "blk.0.ffn_freq" not in A.t
    assert B.t["blk.1.ffn_pred_in.weight"].shape.tolist() == [N_EMBD, RANK]    # ggml order
    assert B.t["blk.1.ffn_pred_out.weight"].shape.tolist() == [RANK, N_FF]
    for L in range(N_LAYER):
        b_ = f"blk.{L}."
        counts = torch.load(stats / f"activation_{L}.pt", weights_only=True).numpy().astype(np.float64)
        perm = np.argsort(-counts, kind="stable")
        for name in ("ffn_gate.weight", "ffn_up.weight", "ffn_down_t.weight", "ffn_pred_out.weight"):
            assert np.array_equal(B.w(b_ + name), A.w(b_ + name)[perm]), name
        assert np.array_equal(B.w(b_ + "ffn_pred_in.weight"), A.w(b_ + "ffn_pred_in.weight"))
        freq = B.w(b_ + "ffn_freq")
        assert np.allclose(freq, counts[perm] / counts.max())
        assert np.all(np.diff(freq) <= 0)                         # hot first
        sd = torch.load(pred / f"model_{L}.pt", weights_only=True)
        u = np.random.default_rng(L).standard_normal(N_EMBD)
        want = np.maximum(sd["fc1.weight"].double().numpy() @ u, 0) @ sd["fc2.weight"].double().numpy().T
        got = np.maximum(B.w(b_ + "ffn_pred_in.weight") @ u, 0) @ B.w(b_ + "ffn_pred_out.weight").T
        assert np.allclose(got, want[perm])
    ids = random_sequences(n, 1, 20)[0]
    assert rel_err(gguf_logits(b, ids), gguf_logits(a, ids)) < 1e-9
    assert rel_err(engine_logits(b, ids), engine_logits(a, ids)) < 1e-5


def test_trainer_formats(tmp_path, relu_model):
    hf, n = relu_model
    pred, stats = trainer_dirs(tmp_path)
    out = tmp_path / "m.gguf"
    convert(hf, out, "q4_0", predictor=pred, stats=stats, progress=False)
    m = GGUFModel(out)
    assert m.hp("predictor.threshold") == pytest.approx(0.1)
    assert m.hp("predictor.input") == "ffn_norm"
    assert m.hp("predictor.hidden_act") == "none"
    assert m.hp("ffn.freq_tokens") == 5000
    assert m.type("blk.0.ffn_pred_in.weight").name == "Q8_0"     # 4-bit outtype: predictor kept at 8 bits
    assert m.type("blk.0.ffn_gate.weight").name == "Q4_0"
    assert m.type("blk.0.ffn_freq").name == "F32"
    from safetensors import safe_open
    counts = safe_open(str(stats / "activation_stats.safetensors"), "pt").get_tensor("layers.0.counts").numpy()
    assert np.allclose(m.w("blk.0.ffn_freq"), np.sort(counts)[::-1] / 5000)


def test_cli_overrides_and_silu_becomes_prosparse(tmp_path, tokenizers_dir):
    hf_folder(tmp_path / "hf", tokenizers_dir, "llama", "silu")
    pred, stats = powerinfer_dirs(tmp_path)
    out = tmp_path / "m.gguf"
    r = convert(tmp_path / "hf", out, "f16", predictor=pred, stats=stats, predictor_threshold=-1.5,
                predictor_input="ffn_norm", predictor_hidden_act="none", stats_tokens=2000, progress=False)
    assert r["arch"] == "prosparse"
    m = GGUFModel(out)
    assert m.hp("ffn.activation") == "silu"
    assert m.hp("predictor.threshold") == pytest.approx(-1.5)
    assert m.hp("predictor.input") == "ffn_norm" and m.hp("predictor.hidden_act") == "none"
    counts = torch.load(stats / "activation_0.pt", weights_only=True).numpy()
    assert np.allclose(m.w("blk.0.ffn_freq"), np.sort(counts)[::-1] / 2000)
