"""PowerInfer's own PWRI files (../shared/fixtures/powerinfer, made by PowerInfer's
convert.py and quantize from a tiny sparse ReLU LLaMA) run as they are.

References: a float64 PyTorch forward of the Hugging Face folder the files were
made from (support.torch_reference), transformers' LlamaForCausalLM on it, the
float64 numpy forward of each file's own dequantized weights
(prosparse_cpu.convert.reference), and PowerInfer's recorded greedy runs.
Measured (this engine, AVX2): F32 dense/sparse 1.7e-7 of the HF reference
(max |diff| / max |ref|); F16 1.7e-7 of its own weights, 6.7e-4 of HF; Q4_0
1.5e-2 of its own weights (the engine rounds activations to 8 bits for 4-bit
products); predictor recall 0.9997 (F32, F16), 0.898 (Q4_0: the gate's own
4-bit rounding, the fixture's torch figure too).
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from prosparse_cpu import Model

FIXTURES = Path(os.environ.get("PROSPARSE_PWRI_FIXTURES",
                               Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "powerinfer"))
KINDS = ("f32", "f16", "q4_0", "q4_0-pure")
# max |ours - own float64 reference| / max |reference|, by file, with a margin over the quantization error
OWN_TOL = {"f32": 1e-5, "f16": 1e-5, "q4_0": 3e-2, "q4_0-pure": 3e-2}

pytestmark = pytest.mark.skipif(not (FIXTURES / "README.md").is_file(),
                                reason=f"PowerInfer fixtures not found at {FIXTURES}")


def path(kind: str) -> Path:
    return FIXTURES / f"relu-tiny.powerinfer.{kind}.gguf"


def rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).max() / np.abs(b).max())


@pytest.fixture(scope="module")
def ids() -> list[int]:
    return json.loads((FIXTURES / "sparsity.json").read_text())["tokens"]["ids"]


@pytest.fixture(scope="module")
def greedy() -> dict:
    runs = json.loads((FIXTURES / "powerinfer_greedy.json").read_text())["runs"]
    return {r["file"].split(".powerinfer.")[1][:-len(".gguf")]: r for r in runs}


@pytest.fixture(scope="module")
def hf_ref(ids):
    from support.torch_reference import torch_logits
    return torch_logits(FIXTURES / "hf", ids)


def one_by_one(m: Model, ids) -> np.ndarray:
    """Logits at every position, one decode step per token (predict mode decides decode steps)."""
    out = []
    for t in ids:
        m.eval([t])
        out.append(m.logits().copy())
    return np.array(out)


def test_info():
    m = Model(path("q4_0"), threads=1, n_ctx=64, cache_type="f32")
    assert m.info.powerinfer and m.info.arch == "llama" and m.info.activation == "relu"
    assert m.info.has_predictor and m.info.predictor_rank == 96 and m.info.predictor_threshold == 0.0
    m.close()


def test_hf_reference_is_transformers(ids, hf_ref):
    """The float64 HF reference agrees with transformers' own LlamaForCausalLM (hidden_act relu)."""
    import torch
    from transformers import LlamaForCausalLM
    model = LlamaForCausalLM.from_pretrained(FIXTURES / "hf", torch_dtype=torch.float64)
    with torch.no_grad():
        got = model(torch.tensor([ids])).logits[0].numpy()
    assert rel(got, hf_ref) < 1e-6   # transformers computes RoPE frequencies in float32


@pytest.mark.parametrize("mode", ["dense", "sparse"])
def test_f32_equals_hf(mode, ids, hf_ref):
    m = Model(path("f32"), threads=2, n_ctx=256, mode=mode, cache_type="f32")
    assert rel(m.eval_all(ids), hf_ref) <= 1e-4
    m.reset()
    assert rel(one_by_one(m, ids), hf_ref) <= 1e-4
    m.close()


@pytest.mark.parametrize("kind", KINDS)
def test_own_weights(kind, ids):
    """Each file against the float64 forward of its own dequantized weights, dense and sparse."""
    from prosparse_cpu.convert.reference import gguf_logits
    ref = gguf_logits(path(kind), ids)
    for mode in ("dense", "sparse"):
        m = Model(path(kind), threads=2, n_ctx=256, mode=mode, cache_type="f32")
        got = m.eval_all(ids)
        m.close()
        assert rel(got, ref) <= OWN_TOL[kind], mode


def test_f16_within_its_rounding_of_hf(ids, hf_ref):
    m = Model(path("f16"), threads=2, n_ctx=256, mode="sparse", cache_type="f32")
    assert rel(m.eval_all(ids), hf_ref) <= 2e-3   # F16 weights
    m.close()


@pytest.mark.parametrize("kind,floor", [("f32", 0.95), ("f16", 0.95), ("q4_0", 0.85)])
def test_predict_recall(kind, floor, ids):
    """The files' own predictor, PowerInfer's rule (ReLU between fc1 and fc2, residual input, logit >= 0)."""
    m = Model(path(kind), threads=2, n_ctx=256, mode="predict", measure=True, cache_type="f32")
    one_by_one(m, ids[:120])
    st = m.stats()
    m.close()
    assert st["recall"] >= floor
    assert 0.08 < st["predicted_share"] < 0.15   # the predictor keeps ~11%, as the true active share


def test_predict_f32_close_to_hf(ids, hf_ref):
    m = Model(path("f32"), threads=2, n_ctx=256, mode="predict", cache_type="f32")
    got = one_by_one(m, ids)
    m.close()
    assert rel(got, hf_ref) <= 1e-3   # the few neurons the predictor misses
    assert (got.argmax(1) == hf_ref.argmax(1)).all()


def greedy_ids(m: Model, prompt: list[int], n: int) -> list[int]:
    m.reset()
    m.eval(prompt)
    out = []
    for _ in range(n):
        t = int(np.argmax(m.logits()))
        out.append(t)
        m.eval([t])
    return out


@pytest.mark.parametrize("kind", ["f16", "q4_0-pure"])
def test_powerinfer_greedy_reproduced(kind, greedy):
    """predict mode gives PowerInfer's own greedy tokens."""
    run = greedy[kind]
    m = Model(path(kind), threads=1, n_ctx=64, mode="predict", cache_type="f32")
    assert greedy_ids(m, run["prompt_token_ids"], 16) == run["generated_token_ids"]
    m.close()


def test_f32_greedy_is_the_reference(greedy):
    """PowerInfer's own runtime outputs token 0 on its F32 file (its down kernel reads F32 as F16);
    ours gives the float64 reference's tokens, which are the F16 file's PowerInfer output."""
    run = greedy["f32"]
    assert run["generated_token_ids"] == [0] * 16
    m = Model(path("f32"), threads=1, n_ctx=64, mode="predict", cache_type="f32")
    got = greedy_ids(m, run["prompt_token_ids"], 16)
    m.close()
    assert got == run["torch_float64_reference"]["sparse_ids"] == greedy["f16"]["generated_token_ids"]


@pytest.mark.parametrize("kind", KINDS)
def test_powerinfer_tokens_or_near_ties(kind, greedy):
    """Teacher-forced on PowerInfer's sequence (the float64 reference's for F32): wherever predict mode's
    top token is not PowerInfer's, the two are a near-tie in the float64 forward of the file's weights,
    closer than the engine's measured logit error on that file."""
    from prosparse_cpu.convert.reference import gguf_logits
    run = greedy[kind]
    target = run["torch_float64_reference"]["sparse_ids"] if kind == "f32" else run["generated_token_ids"]
    seq = run["prompt_token_ids"] + target
    n_p = len(run["prompt_token_ids"])
    ref = gguf_logits(path(kind), seq)[n_p - 1:-1]
    m = Model(path(kind), threads=1, n_ctx=64, mode="predict", cache_type="f32")
    m.eval(run["prompt_token_ids"][:-1])
    got = one_by_one(m, seq[n_p - 1:-1])
    m.close()
    err = float(np.abs(got - ref).max())
    ties = 0
    for step, (g, r, want) in enumerate(zip(got, ref, target)):
        ours = int(np.argmax(g))
        if ours != want:
            ties += 1
            gap = abs(r[want] - r[ours])
            assert gap <= min(err, 0.1), f"step {step}: ours {ours}, PowerInfer {want}, float64 gap {gap:.4f}, error {err:.4f}"
    assert ties <= 2   # near-ties only: a step whose float64 gap is below our logit error


@pytest.mark.parametrize("mode", ["dense", "sparse", "predict"])
def test_activation_threshold_is_fatrelu(mode, ids):
    """activation_threshold t runs the ReLU file as FATReLU t in every mode: the float64 forward with
    fatrelu_t, and more sparsity than plain ReLU."""
    import dataclasses

    from prosparse_cpu.convert.reference import GGUFModel, Reference
    t = 0.05
    g = GGUFModel(path("f32"))
    ref_m = Reference(dataclasses.replace(g.spec(), activation="fatrelu", threshold=t), g.w, g.t)
    ref = ref_m.logits(ref_m.hidden([ids])[0])
    m = Model(path("f32"), threads=2, n_ctx=256, mode=mode, activation_threshold=t, cache_type="f32")
    got = one_by_one(m, ids)
    sparsity = m.stats()["sparsity"]
    m.close()
    relu = Model(path("f32"), threads=2, n_ctx=256, mode=mode, cache_type="f32")
    one_by_one(relu, ids)
    assert sparsity > relu.stats()["sparsity"] + 0.005
    relu.close()
    assert rel(got, ref) <= (1e-4 if mode != "predict" else 1e-3)


def test_bamboo_is_drelu(tmp_path, ids):
    """A PowerInfer `bamboo` file (Bamboo, Mistral-shaped) runs relu(gate) * relu(up): the fixture's weights
    under arch bamboo against the float64 drelu forward."""
    from prosparse_cpu.convert.reference import gguf_logits
    from support.pwri_files import rewrite_pwri
    p = rewrite_pwri(path("f32"), tmp_path / "bamboo.powerinfer.gguf", arch="bamboo")
    ref = gguf_logits(p, ids)
    for mode in ("dense", "sparse"):
        m = Model(p, threads=2, n_ctx=256, mode=mode, cache_type="f32")
        assert m.info.activation == "drelu" and m.info.arch == "bamboo"
        assert rel(m.eval_all(ids), ref) <= 1e-4
        m.close()
    m = Model(p, threads=2, n_ctx=256, mode="predict", measure=True, cache_type="f32")
    got = one_by_one(m, ids)
    assert m.stats()["recall"] >= 0.95 and rel(got, ref) <= 1e-3
    m.close()
    relu = Model(path("f32"), threads=1, n_ctx=256, cache_type="f32")
    assert rel(relu.eval_all(ids), ref) > 1e-2   # drelu is not relu: the test can tell them apart
    relu.close()


def test_server_slots_share_the_activation_threshold():
    from prosparse_cpu.server.pool import Pool
    pool = Pool.open(str(path("f32")), parallel=2, threads=2, n_ctx=64, mode="sparse", activation_threshold=0.05)
    try:
        ids = [1, 343, 315, 318, 310]
        got = []
        for slot in pool.slots:
            slot.eval(ids)
            got.append(slot.logits().copy())
        plain = Model(path("f32"), threads=1, n_ctx=64, mode="sparse", cache_type="f32")
        plain.eval(ids)
        assert np.array_equal(got[0], got[1]) and not np.allclose(got[0], plain.logits())
        plain.close()
    finally:
        pool.close()


def test_predictor_rank_per_layer(tmp_path):
    """PowerInfer sizes each layer's predictor: layer 1 at rank 65 (the fixture's rows 65-95 are zero, so
    the function is the same), in the engine and through the converter."""
    from prosparse_cpu.convert.cli import convert
    from prosparse_cpu.convert.reference import GGUFModel
    from support.pwri_files import rewrite_pwri
    g = GGUFModel(path("f32"))
    fc1, fc2 = g.w("blk.1.fc1.weight"), g.w("blk.1.fc2.weight")
    assert not fc1[65:].any() and not fc2[:, 65:].any()
    p = rewrite_pwri(path("f32"), tmp_path / "ranks.powerinfer.gguf",
                     replace={"blk.1.fc1.weight": fc1[:65], "blk.1.fc2.weight": fc2[:, :65]})
    conv = tmp_path / "ranks.gguf"
    convert(p, conv, progress=False)
    ids = [1, 343, 315, 318, 310, 305, 323, 264, 260, 259] * 2
    base = Model(path("f32"), threads=1, n_ctx=64, mode="predict", cache_type="f32")
    want = one_by_one(base, ids)
    base.close()
    for f in (p, conv):
        m = Model(f, threads=1, n_ctx=64, mode="predict", cache_type="f32")
        assert m.info.predictor_rank == 96
        assert rel(one_by_one(m, ids), want) <= 1e-6
        m.close()
    assert GGUFModel(conv).t["blk.1.ffn_pred_in.weight"].shape.tolist() == [128, 65]


@pytest.mark.parametrize("qtype,tol", [("Q8_0", 2e-2), ("Q4_1", 3e-2)])
def test_other_types(qtype, tol, tmp_path, ids):
    """PWRI files in the other types PowerInfer's quantize writes (its own runtime decodes garbage on
    Q8_0 and Q4_1, reading their ffn_down_t as F16): equal to the float64 forward of their weights."""
    import gguf

    from prosparse_cpu.convert.reference import gguf_logits
    from support.pwri_files import rewrite_pwri
    p = rewrite_pwri(path("f32"), tmp_path / f"{qtype}.powerinfer.gguf", retype=gguf.GGMLQuantizationType[qtype])
    ref = gguf_logits(p, ids)
    for mode in ("dense", "sparse"):
        m = Model(p, threads=2, n_ctx=256, mode=mode, cache_type="f32")
        assert m.info.weight_type_name == qtype
        assert rel(m.eval_all(ids), ref) <= tol, mode
        m.close()
    m = Model(p, threads=2, n_ctx=256, mode="predict", measure=True, cache_type="f32")
    one_by_one(m, ids[:100])
    assert m.stats()["recall"] >= 0.85
    m.close()


def test_tokenizer_is_sentencepiece(greedy):
    """The file's vocabulary tokenizes as sentencepiece does (PowerInfer's main drops the leading '▁'),
    and PowerInfer's generated ids decode to the bytes it printed."""
    run = greedy["f16"]
    m = Model(path("f16"), threads=1, n_ctx=64, cache_type="f32")
    assert m.tokenize(run["prompt"], add_bos=True) == run["sentencepiece_encode_ids"]
    got = b"".join(m.token_bytes(t) for t in run["generated_token_ids"])
    m.close()
    assert got.hex() == run["generated_bytes_hex"]
