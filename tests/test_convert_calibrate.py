"""--calibrate TEXT --target-sparsity S: per-layer cut-offs on |silu(gate)| for the
engine's threshold mode, checked against the PyTorch reference's own gate values.
"""
from __future__ import annotations

import numpy as np
import pytest

from prosparse_cpu.convert.cli import convert
from prosparse_cpu.convert.errors import ConvertError
from prosparse_cpu.convert.reference import GGUFModel, gguf_logits
from support import SMOLLM2
from support.compare import engine_logits, random_sequences
from support.hf_models import hf_folder
from support.torch_reference import torch_logits
from support.vocab import SAMPLE_TEXTS, corpus_text


@pytest.fixture
def silu_model(tmp_path, tokenizers_dir):
    hf_folder(tmp_path / "hf", tokenizers_dir, "llama", "silu")
    text = tmp_path / "calib.txt"
    text.write_text(corpus_text()[:20000])
    return tmp_path / "hf", text


@pytest.mark.parametrize("target", [0.3, 0.7])
def test_cutoffs_give_the_target_sparsity(tmp_path, silu_model, target):
    hf, text = silu_model
    out = tmp_path / "m.gguf"
    r = convert(hf, out, "f16", calibrate=text, target_sparsity=target, calibrate_tokens=512, progress=False)
    assert r["arch"] == "prosparse"
    m = GGUFModel(out)
    cut = np.array(m.kv("prosparse.ffn.cutoffs"))
    assert m.hp("ffn.activation") == "silu" and m.hp("ffn.cutoff_sparsity") == pytest.approx(target)
    assert "blk.0.ffn_down_t.weight" in m.t   # F16: transposing is exact, and the rows pay there
    assert cut.shape == (2,) and (cut > 0).all()
    # The reference's |silu(gate)| on the same tokens (same 256-token chunks) falls below the
    # cut-off for the target share of neurons.
    from transformers import AutoTokenizer
    ids = AutoTokenizer.from_pretrained(str(hf)).encode(text.read_text())[:512]
    acts = [[], []]
    for i in range(0, len(ids), 256):
        per_layer = []
        torch_logits(hf, ids[i:i + 256], gate_acts=per_layer)
        for L in range(2):
            acts[L].append(np.abs(per_layer[L]).ravel())
    for L in range(2):
        a = np.concatenate(acts[L])
        assert abs(float((a < cut[L]).mean()) - target) < 0.005, L
    # Held-out text: near the target (a different distribution, so loosely).
    held = []
    torch_logits(hf, AutoTokenizer.from_pretrained(str(hf)).encode(" ".join(SAMPLE_TEXTS)), gate_acts=held)
    for L in range(2):
        assert abs(float((np.abs(held[L]) < cut[L]).mean()) - target) < 0.15


def test_threshold_file_keeps_ffn_down(tmp_path, silu_model):
    """A threshold-only file of a block-quantized model keeps the source's
    ffn_down bytes (no transposed, re-rounded ffn_down_t): its dense mode is
    the source's function exactly, and threshold mode still skips neurons."""
    hf, text = silu_model
    src, out = tmp_path / "q4_0.gguf", tmp_path / "thr.gguf"
    convert(hf, src, "q4_0", progress=False)
    convert(src, out, "auto", calibrate=text, target_sparsity=0.5, calibrate_tokens=256, progress=False)
    a, b = GGUFModel(src), GGUFModel(out)
    assert b.arch == "prosparse" and "blk.0.ffn_down_t.weight" not in b.t
    for name in a.t:
        assert a.type(name) == b.type(name) and np.array_equal(a.t[name].data, b.t[name].data), name
    ids = random_sequences(int(a.t["token_embd.weight"].shape[1]), 1, 24)[0]   # ggml ne = [n_embd, n_vocab]
    assert np.array_equal(engine_logits(out, ids), engine_logits(src, ids))
    from prosparse_cpu import Model
    with Model(str(out), threads=2, n_ctx=64, mode="threshold") as m:
        m.eval(ids)
        assert 0.2 < m.stats()["sparsity"] < 0.8


def test_calibrate_errors(tmp_path, silu_model, tokenizers_dir):
    hf, text = silu_model
    with pytest.raises(ConvertError, match="go together"):
        convert(hf, tmp_path / "m.gguf", calibrate=text, progress=False)
    with pytest.raises(ConvertError, match="do not apply"):
        convert(hf, tmp_path / "m.gguf", calibrate=text, target_sparsity=0.5, llama_compat=True, progress=False)
    hf_folder(tmp_path / "relu", tokenizers_dir, "llama", "relu")
    with pytest.raises(ConvertError, match="for SiLU and GELU models"):
        convert(tmp_path / "relu", tmp_path / "m.gguf", calibrate=text, target_sparsity=0.5, progress=False)
    with pytest.raises(ConvertError, match="unreadable"):
        convert(hf, tmp_path / "m.gguf", calibrate=tmp_path / "missing.txt", target_sparsity=0.5, progress=False)
    assert not (tmp_path / "m.gguf").exists()


@pytest.mark.real
@pytest.mark.slow
def test_smollm2_calibration(tmp_path):
    """SmolLM2 (GGUF input, tokenized by the engine): cut-offs at 50% reproduce 50% on the
    calibration tokens under an independent float64 forward of the same file."""
    if not SMOLLM2.is_file():
        pytest.skip(f"{SMOLLM2} not present (make model)")
    text = tmp_path / "calib.txt"
    text.write_text(corpus_text()[:4000])
    out = tmp_path / "smol.gguf"
    convert(SMOLLM2, out, "auto", calibrate=text, target_sparsity=0.5, calibrate_tokens=200, progress=False)
    cut = np.array(GGUFModel(out).kv("prosparse.ffn.cutoffs"))
    assert cut.shape == (30,) and (cut > 0).all()
    from prosparse_cpu import Model
    with Model(str(SMOLLM2), threads=2, n_ctx=512) as m:
        ids = m.tokenize(text.read_text(), add_bos=True)[:200]
    acts = []
    gguf_logits(SMOLLM2, ids, gate_acts=acts)
    share = [float((np.abs(a) < c).mean()) for a, c in zip(acts, cut)]
    print("SmolLM2 cut-offs at 50%:", np.round(cut, 4).tolist(), "measured", np.round(share, 4).tolist())
    assert all(abs(s - 0.5) < 0.01 for s in share)


@pytest.mark.real
@pytest.mark.slow
def test_smollm2_threshold_mode_in_engine(tmp_path):
    """The engine's threshold mode, with the converter's cut-offs, skips about the target share."""
    if not SMOLLM2.is_file():
        pytest.skip(f"{SMOLLM2} not present (make model)")
    from prosparse_cpu import Model
    text = tmp_path / "calib.txt"
    text.write_text(corpus_text()[:6000])
    out = tmp_path / "smol.gguf"
    convert(SMOLLM2, out, "auto", calibrate=text, target_sparsity=0.5, calibrate_tokens=512, progress=False)
    with Model(str(out), threads=2, n_ctx=1024, mode="threshold") as m:
        m.eval(m.tokenize(text.read_text())[:512])
        st = m.stats()
    print(f"SmolLM2 threshold mode, cut-offs for 50%: measured sparsity {st['sparsity']:.4f}")
    assert abs(st["sparsity"] - 0.5) < 0.03
