"""Llama 3, Qwen2, Qwen3 and Gemma 3 through prosparse-convert: tiny random models
built by transformers itself (support/hf_models.family_model), converted F32.

The engine's logits must equal transformers' own float32 forward to 1e-4 of the
largest |logit| (the bar of test_logits.py), as one batch, in batches of 7 and
token by token; Gemma 3's run is long enough that its local layers' window
(5 positions, then 130) is passed many times over and crosses attention
chunk boundaries (128 positions). ReLU-fied (`prosparse`) files of a base
layout keep its extra tensors and run `sparse` exactly; `threshold` cut-offs
work for SiLU and GELU gates; the variants we do not run are refused.
"""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from prosparse_cpu import Model, ProSparseError
from prosparse_cpu.convert.cli import convert
from prosparse_cpu.convert.errors import ConvertError
from prosparse_cpu.convert.reference import GGUFModel, gguf_logits
from support.hf_models import make_family_folder
from support.vocab import SAMPLE_TEXTS, corpus_text
from test_model_errors import VT, load_error, rewrite

REL_TOL = 1e-4
FAMILIES = ["llama3", "qwen2", "qwen3", "gemma3"]


def rel_err(a, b) -> float:
    return float(np.abs(np.asarray(a, np.float64) - b).max() / np.abs(b).max())


def hf_logits(model, ids) -> np.ndarray:
    with torch.no_grad():
        return model(torch.tensor([list(ids)])).logits[0].double().numpy()


def tokens(n_vocab, n, seed=0) -> list[int]:
    return [int(t) for t in np.random.default_rng(seed).integers(0, n_vocab, n)]


def engine_runs(path, ids, n_ctx=512):
    """(one batch, batches of 7, token by token) logits."""
    with Model(str(path), threads=2, n_ctx=n_ctx, cache_type="f32") as m:
        whole = m.eval_all(ids)
    with Model(str(path), threads=2, n_ctx=n_ctx, cache_type="f32", n_batch=7) as m:
        batched = m.eval_all(ids)
    with Model(str(path), threads=2, n_ctx=n_ctx, cache_type="f32") as m:
        single = []
        for t in ids:
            m.eval([t])
            single.append(m.logits())
    return whole, batched, np.stack(single)


@pytest.mark.parametrize("family", FAMILIES)
def test_f32_matches_transformers(tmp_path, tokenizers_dir, family):
    model, n = make_family_folder(tmp_path / "hf", tokenizers_dir, family)
    out = tmp_path / "m.gguf"
    r = convert(tmp_path / "hf", out, "f32", progress=False)
    assert r["arch"] == {"llama3": "llama"}.get(family, family)
    g = GGUFModel(out)
    if family == "llama3":   # the scaling is stored as llama.cpp does: per-dim divisors, not 1 everywhere
        f = g.w("rope_freqs.weight")
        assert f.shape == (8,) and f.min() == 1.0 and f.max() == 8.0 and ((f > 1) & (f < 8)).any()
    if family == "qwen2":
        assert "blk.0.attn_q.bias" in g.t
    if family == "gemma3":
        assert g.hp("attention.sliding_window") == 5
    ids = tokens(n, 300 if family == "gemma3" else 60)
    ref = hf_logits(model, ids)
    runs = engine_runs(out, ids)
    errs = [rel_err(x, ref) for x in runs]
    print(f"{family}: rel err one batch {errs[0]:.2e}, n_batch 7 {errs[1]:.2e}, token by token {errs[2]:.2e}")
    assert max(errs) <= REL_TOL
    # the numpy reference reads the same file the same way
    assert rel_err(gguf_logits(out, ids[:40]), ref[:40]) <= REL_TOL


def test_gemma3_window_longer_than_a_chunk(tmp_path, tokenizers_dir):
    """A window of 130 positions: the first chunk a query sees is cut, the chunk before it skipped."""
    model, n = make_family_folder(tmp_path / "hf", tokenizers_dir, "gemma3", sliding_window=130)
    out = tmp_path / "m.gguf"
    convert(tmp_path / "hf", out, "f32", progress=False)
    ids = tokens(n, 300, seed=1)
    ref = hf_logits(model, ids)
    wide = copy.deepcopy(model)   # the same weights with a window past the sequence: not the same function
    wide.config.sliding_window = 1000
    assert rel_err(hf_logits(wide, ids), ref) > 100 * REL_TOL
    errs = [rel_err(x, ref) for x in engine_runs(out, ids)]
    print(f"gemma3 window 130: rel errs {errs}")
    assert max(errs) <= REL_TOL


def test_gemma3_pattern_of_layer_types(tmp_path, tokenizers_dir):
    """Local and global layers in an order other than Gemma 3's 5:1: the file says which."""
    types = ["sliding_attention", "full_attention", "sliding_attention", "sliding_attention"]
    model, n = make_family_folder(tmp_path / "hf", tokenizers_dir, "gemma3", num_hidden_layers=4, layer_types=types)
    out = tmp_path / "m.gguf"
    convert(tmp_path / "hf", out, "f32", progress=False)
    assert list(GGUFModel(out).hp("attention.sliding_window_pattern")) == [True, False, True, True]
    ids = tokens(n, 40, seed=2)
    assert max(rel_err(x, hf_logits(model, ids)) for x in engine_runs(out, ids)) <= REL_TOL


@pytest.mark.parametrize("family", ["qwen2", "llama3"])
def test_relu_fied_prosparse_file_runs_sparse_exactly(tmp_path, tokenizers_dir, family):
    """A ReLU model of the layout (the activation replaced in the config, as the trainer's
    output has it): a prosparse file with the layout's biases / rope_freqs, sparse == dense == HF."""
    model, n = make_family_folder(tmp_path / "hf", tokenizers_dir, family, act="relu")
    out = tmp_path / "m.gguf"
    assert convert(tmp_path / "hf", out, "f32", progress=False)["arch"] == "prosparse"
    g = GGUFModel(out)
    assert g.kv("prosparse.base_architecture") == {"llama3": "llama"}.get(family, family)
    assert ("blk.0.attn_k.bias" if family == "qwen2" else "rope_freqs.weight") in g.t
    ids = tokens(n, 50, seed=3)
    ref = hf_logits(model, ids)
    for mode in ("dense", "sparse"):
        with Model(str(out), threads=2, n_ctx=128, cache_type="f32", mode=mode, n_batch=16) as m:
            got = m.eval_all(ids)
            st = m.stats()
        print(f"{family} relu {mode}: rel err {rel_err(got, ref):.2e}, sparsity {st['sparsity']:.2f}")
        assert rel_err(got, ref) <= REL_TOL
        assert 0.2 < st["sparsity"] < 0.8


class CutAct(torch.nn.Module):
    """act(gate), zeroed where |act(gate)| < cut: what threshold mode computes."""

    def __init__(self, act, cut: float):
        super().__init__()
        self.act, self.cut = act, cut

    def forward(self, x):
        a = self.act(x)
        return torch.where(a.abs() >= self.cut, a, torch.zeros_like(a))


def _cut_model(model, cutoffs):
    m = copy.deepcopy(model)
    for layer, cut in zip(m.model.layers, cutoffs):
        layer.mlp.act_fn = CutAct(layer.mlp.act_fn, float(cut))
    return m


@pytest.mark.parametrize("family", ["qwen3", "gemma3"])
def test_threshold_mode_silu_and_gelu(tmp_path, tokenizers_dir, family):
    model, n = make_family_folder(tmp_path / "hf", tokenizers_dir, family)
    text = tmp_path / "calib.txt"
    text.write_text(corpus_text()[:8000])
    out = tmp_path / "m.gguf"
    convert(tmp_path / "hf", out, "f32", calibrate=text, target_sparsity=0.5, calibrate_tokens=256, progress=False)
    g = GGUFModel(out)
    cut = np.array(g.kv("prosparse.ffn.cutoffs"))
    assert g.kv("prosparse.base_architecture") == family
    assert g.hp("ffn.activation") == ("gelu_tanh" if family == "gemma3" else "silu")
    from transformers import AutoTokenizer
    ids = AutoTokenizer.from_pretrained(str(tmp_path / "hf")).encode(" ".join(SAMPLE_TEXTS))[:120]
    ref = hf_logits(_cut_model(model, cut), ids)
    with Model(str(out), threads=2, n_ctx=256, cache_type="f32", mode="threshold") as m:
        got = m.eval_all(ids)
        st = m.stats()
    with Model(str(out), threads=2, n_ctx=256, cache_type="f32") as m:
        dense = m.eval_all(ids)
    print(f"{family} threshold 0.5: sparsity {st['sparsity']:.3f}, rel err vs cut HF {rel_err(got, ref):.2e}, "
          f"dense vs HF {rel_err(dense, hf_logits(model, ids)):.2e}")
    assert abs(st["sparsity"] - 0.5) < 0.15
    # a neuron whose |act| lies within rounding of its cut-off may be decided either way
    assert rel_err(got, ref) <= 1e-3
    assert rel_err(dense, hf_logits(model, ids)) <= REL_TOL


# ---- refused variants --------------------------------------------------------------

def _folder(tmp_path, tokenizers_dir, family, **over):
    make_family_folder(tmp_path / "hf", tokenizers_dir, family, **over)
    return tmp_path / "hf"


@pytest.mark.parametrize("key", ["final_logit_softcapping", "attn_logit_softcapping"])
def test_softcapping_config_refused(tmp_path, tokenizers_dir, key):
    hf = _folder(tmp_path, tokenizers_dir, "gemma3", **{key: 30.0})
    with pytest.raises(ConvertError, match=f"{key}.*soft-capping"):
        convert(hf, tmp_path / "m.gguf", "f32", progress=False)
    assert not (tmp_path / "m.gguf").exists()


def test_unknown_rope_scaling_config_refused(tmp_path, tokenizers_dir):
    hf = _folder(tmp_path, tokenizers_dir, "qwen2")
    import json
    c = json.loads((hf / "config.json").read_text())
    c["rope_parameters"] = {"rope_type": "yarn", "factor": 4.0, "rope_theta": 10000.0,
                            "original_max_position_embeddings": 64}
    (hf / "config.json").write_text(json.dumps(c))
    with pytest.raises(ConvertError, match="unsupported RoPE scaling 'yarn'"):
        convert(hf, tmp_path / "m.gguf", "f32", progress=False)


@pytest.fixture(scope="module")
def good_files(tmp_path_factory, tokenizers_dir):
    d = tmp_path_factory.mktemp("fam")
    files = {}
    for fam in ("qwen2", "gemma3", "llama3"):
        make_family_folder(d / fam, tokenizers_dir, fam)
        files[fam] = convert(d / fam, d / f"{fam}.gguf", "f32", progress=False) and d / f"{fam}.gguf"
    return files


@pytest.mark.asan
def test_engine_refusals(tmp_path, good_files):
    q, gm, l3 = good_files["qwen2"], good_files["gemma3"], good_files["llama3"]
    cases = [
        (rewrite(l3, tmp_path / "nofreqs.gguf", drop_tensors=("rope_freqs.weight",),
                 set_kv={"llama.rope.scaling.type": ("llama3", VT.STRING)}),
         "llama.rope.scaling.type is llama3 but the file has no rope_freqs.weight"),
        (rewrite(q, tmp_path / "nobias.gguf", drop_tensors=("blk.1.attn_v.bias",)), "missing tensor 'blk.1.attn_v.bias'"),
        (rewrite(q, tmp_path / "yarn.gguf", set_kv={"qwen2.rope.scaling.type": ("yarn", VT.STRING)}),
         "rope scaling 'yarn' is not supported"),
        (rewrite(gm, tmp_path / "cap.gguf", set_kv={"gemma3.final_logit_softcapping": (30.0, VT.FLOAT32)}),
         "final_logit_softcapping = 30: logit soft-capping"),
        (rewrite(gm, tmp_path / "cap2.gguf", set_kv={"gemma3.attn_logit_softcapping": (50.0, VT.FLOAT32)}),
         "attn_logit_softcapping = 50"),
        (rewrite(q, tmp_path / "g2.gguf", arch="gemma2"), "architecture 'gemma2' is not supported"),
        (rewrite(gm, tmp_path / "pat.gguf", set_kv={"gemma3.attention.sliding_window_pattern": ([True] * 2, VT.ARRAY, VT.BOOL)}),
         "sliding_window_pattern has 2 values for 6 layers"),
        (rewrite(q, tmp_path / "qn.gguf", tensors={"blk.0.attn_q_norm.weight": np.ones(16, np.float32)}),
         "'blk.0.attn_q_norm.weight' is not part of the qwen2 architecture"),
    ]
    for path, why in cases:
        assert why in load_error(path), (path.name, load_error(path))


@pytest.mark.parametrize("family", ["qwen2", "qwen3"])
def test_trainer_output_converts_and_runs_sparse(tmp_path, tokenizers_dir, family):
    """prosparse-train's ReLU-fied checkpoint of the family (same state-dict names,
    hidden_act relu) converts to a prosparse file whose sparse mode computes the
    saved model (transformers' own reload). (The session's BPE tokenizer: the
    trainer tests' byte tokenizer has no merges, which the engine's BPE needs.)"""
    import shutil

    from prosparse_cpu.trainer.cli import main
    from support.trainer_runs import write_config, write_corpus
    from test_trainer_families import STAGES, tiny_family
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok_dir, n = tokenizers_dir["bpe"]
    src = tmp_path / "model"
    shutil.copytree(tok_dir, src)
    eos = AutoTokenizer.from_pretrained(str(src)).eos_token_id
    tiny_family(family, n, eos).save_pretrained(str(src))
    cfg = write_config(tmp_path / "c.toml", src, write_corpus(tmp_path / "data"), tmp_path / "out",
                       sparsity={"stages": STAGES})
    assert main(["train", str(cfg)]) == 0
    final = tmp_path / "out" / "final"
    out = tmp_path / "m.gguf"
    assert convert(final, out, "f32", progress=False)["arch"] == "prosparse"
    assert GGUFModel(out).kv("prosparse.base_architecture") == family
    stock = AutoModelForCausalLM.from_pretrained(str(final)).float().eval()
    ids = tokens(stock.config.vocab_size, 40, seed=7)
    ref = hf_logits(stock, ids)
    with Model(str(out), threads=2, n_ctx=128, cache_type="f32", mode="sparse") as m:
        got = m.eval_all(ids)
        sparsity = m.stats()["sparsity"]
    print(f"{family} trained: sparse rel err {rel_err(got, ref):.2e}, sparsity {sparsity:.2f}")
    assert rel_err(got, ref) <= REL_TOL and sparsity > 0.3
