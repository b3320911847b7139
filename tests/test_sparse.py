"""Sparse engine modes on tiny random models (support/hf_models.py).

- `sparse` (exact) equals `dense` up to the summation order of the down
  projection, for every ReLU-family activation and weight type, one token at
  a time and in batches (both the row-list path and the all-rows path);
- `predict` with a predictor that keeps every neuron, or with an exact
  (full-rank) one, equals `dense`; a low-rank one gives sensible counters;
  prompt batches in predict mode are exact (gate-driven union);
- `threshold` with cut-offs 0 equals `dense`; with cut-offs at the median of
  |silu(gate)| it skips about half the neurons;
- modes a file cannot run are refused with a clear error;
- the output is the same every run, and 1 vs 2 threads differ only by
  summation order.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from support.gguf_files import write_gguf
from support.hf_models import make_hf_llama
from support.vocab import N_VOCAB
from prosparse_cpu import Model, ProSparseError

EXACT_TOL = 1e-5
SPARSE_ACTS = ("relu", "fatrelu", "relu2", "drelu")


def rel_err(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.abs(a - b).max() / np.abs(b).max())


def tokens(n: int, seed: int = 0) -> list[int]:
    return [int(t) for t in np.random.default_rng(seed).integers(0, N_VOCAB, n)]


def run(path, toks, mode="dense", n_batch=512, threads=2, one_by_one=False, measure=False):
    """(logits n x n_vocab, stats dict) of a fresh session."""
    with Model(path, threads=threads, n_ctx=128, n_batch=n_batch, measure=measure) as m:
        m.set_mode(mode)
        if one_by_one:
            rows = []
            for t in toks:
                m.eval([t])
                rows.append(m.logits())
            out = np.stack(rows)
        else:
            out = m.eval_all(toks)
        return out, m.stats()


def relu_model(tmp_path, act, wtype="f32", threshold=0.0, down_t=True, seed=1, **kw):
    model = make_hf_llama(seed=seed, n_layer=2, n_embd=64, n_ff=96)
    path = write_gguf(model, tmp_path / f"{act}-{wtype}.gguf", wtype=wtype, arch="prosparse",
                         activation=act, threshold=threshold, down_t=down_t, **kw)
    return model, path


# ---- sparse == dense ----------------------------------------------------------

@pytest.mark.parametrize("wtype", ["f32", "f16", "q8_0", "q4_0"])
@pytest.mark.parametrize("act", SPARSE_ACTS)
def test_sparse_equals_dense(tmp_path, act, wtype):
    thr = 0.3 if act == "fatrelu" else 0.0
    _, path = relu_model(tmp_path, act, wtype, threshold=thr)
    toks = tokens(24)
    dense, st_d = run(path, toks)
    for label, kw in (("batch", {}), ("n_batch=4", {"n_batch": 4}), ("one by one", {"one_by_one": True})):
        sparse, st_s = run(path, toks, "sparse", **kw)
        err = rel_err(sparse, dense)
        print(f"{act} {wtype} {label}: rel err {err:.2e}, sparsity {st_s['sparsity']:.2f}")
        assert err <= EXACT_TOL, label
        assert st_s["tokens"] == len(toks)
    # the counters measure the same activations
    assert 0.2 < st_d["sparsity"] < 0.99
    assert abs(st_s["sparsity"] - st_d["sparsity"]) < 0.01


def test_sparse_row_list_path_in_batches(tmp_path):
    """FATReLU with a high threshold: a 4-token batch keeps ~20% of neurons, so
    the batch goes through the row list (not the all-rows fallback)."""
    _, path = relu_model(tmp_path, "fatrelu", threshold=1.0)
    toks = tokens(32, seed=5)
    dense, st_d = run(path, toks, n_batch=4)
    sparse, st_s = run(path, toks, "sparse", n_batch=4)
    assert st_d["sparsity"] > 0.85
    assert rel_err(sparse, dense) <= EXACT_TOL


def test_sparse_with_every_neuron_active_equals_dense(tmp_path):
    """FATReLU below every gate value: 0% sparsity. A dense union finishes as
    the dense path, and the layer's next exact tokens run dense: over 40 tokens
    one by one (several such streaks) and in batches, still exactly dense."""
    _, path = relu_model(tmp_path, "fatrelu", "q4_0", threshold=-1e3)
    toks = tokens(40, seed=9)
    dense, st_d = run(path, toks, one_by_one=True)
    assert st_d["sparsity"] == 0.0
    for kw in ({"one_by_one": True}, {"n_batch": 8}):
        sparse, st_s = run(path, toks, "sparse", **kw)
        assert rel_err(sparse, dense) <= EXACT_TOL, kw
        assert st_s["sparsity"] == 0.0 and st_s["tokens"] == len(toks)


def test_sparse_with_ffn_down_falls_back_to_dense_down(tmp_path):
    """A prosparse file carrying ffn_down (not ffn_down_t): still exact."""
    _, path = relu_model(tmp_path, "relu", down_t=False)
    toks = tokens(16)
    dense, _ = run(path, toks)
    sparse, _ = run(path, toks, "sparse", one_by_one=True)
    assert rel_err(sparse, dense[:16]) <= EXACT_TOL


# ---- predict ------------------------------------------------------------------

def test_predict_keep_all_equals_dense(tmp_path):
    """relu(P_in u) >= 0 and P_out > 0: every logit >= 0 > threshold -1."""
    rng = np.random.default_rng(0)
    pred = [(rng.normal(size=(32, 64)), np.ones((96, 32))) for _ in range(2)]
    for wtype in ("f32", "q8_0", "q4_0"):
        _, path = relu_model(tmp_path, "relu", wtype, predictor=pred, predictor_threshold=-1.0,
                             predictor_hidden_act="relu")
        toks = tokens(20)
        dense, _ = run(path, toks)
        for kw in ({}, {"one_by_one": True}, {"n_batch": 3}):
            pr, st = run(path, toks, "predict", **kw)
            assert rel_err(pr, dense) <= EXACT_TOL, (wtype, kw)
        # batches are decided by the gate (exact); so are a layer's next 16
        # decode tokens after its predictor kept (nearly) every neuron
        assert st["predicted_share"] < 1.0
    with Model(path, threads=2, n_ctx=128) as m:
        m.set_mode("predict")
        shares = []
        for t in toks[:18]:
            m.eval([t])
            shares.append(m.stats()["layers"][0]["neurons_predicted"])
        steps = np.diff([0] + shares)
        assert steps[0] == 96 and steps[17] == 96  # the predictor: all 96 neurons
        assert (steps[1:17] < 96).all()             # the exact path: the active ones


def test_keep_all_predictor_recall_is_one(tmp_path):
    """Model(measure=True) / set_measure: a predictor that keeps every neuron
    has recall 1.0 in every layer; measuring does not change the output; off
    again, no recall is counted."""
    rng = np.random.default_rng(0)
    pred = [(rng.normal(size=(32, 64)), np.ones((96, 32))) for _ in range(2)]
    _, path = relu_model(tmp_path, "relu", "q8_0", predictor=pred, predictor_threshold=-1.0,
                         predictor_hidden_act="relu")
    toks = tokens(12)
    plain, _ = run(path, toks, "predict", one_by_one=True)
    with Model(path, threads=2, n_ctx=128, mode="predict", measure=True) as m:
        rows = []
        for t in toks:
            m.eval([t])
            rows.append(m.logits())
        st = m.stats()
        assert st["recall"] == 1.0
        assert all(layer["recall"] == 1.0 for layer in st["layers"])
        np.testing.assert_array_equal(np.stack(rows), plain)
        m.set_measure(False)
        m.reset()
        m.eval(toks[:3])
        assert m.stats()["recall"] is None


def test_predict_batches_are_exact(tmp_path):
    """Prompt batches in predict mode use the gate-driven union (as sparse):
    with a predictor that keeps too little, a batch is still exact while a
    token-by-token run is not."""
    model, _ = relu_model(tmp_path, "relu")
    _, path = relu_model(tmp_path, "relu", predictor=gate_svd(model, 32), predictor_input="ffn_norm",
                         predictor_threshold=0.5)
    toks = tokens(20)
    dense, _ = run(path, toks)
    batch, _ = run(path, toks, "predict", n_batch=6)
    single, _ = run(path, toks, "predict", one_by_one=True)
    assert rel_err(batch, dense) <= EXACT_TOL
    assert rel_err(single, dense) > 1e-3


def gate_svd(model, rank):
    """Per layer (P_in, P_out) = the rank-r SVD of W_gate: the predictor logits
    on the normed FFN input approximate the gate."""
    out = []
    for layer in model.model.layers:
        w = layer.mlp.gate_proj.weight.detach().double().numpy()
        u, s, vt = np.linalg.svd(w, full_matrices=False)
        out.append(((s[:rank, None] * vt[:rank]), u[:, :rank]))
    return out


def test_predict_exact_predictor_equals_dense_with_full_recall(tmp_path):
    model, _ = relu_model(tmp_path, "relu")
    _, path = relu_model(tmp_path, "relu", predictor=gate_svd(model, 64), predictor_input="ffn_norm",
                         predictor_threshold=-1e-3)
    toks = tokens(20)
    dense, _ = run(path, toks)
    pr, st = run(path, toks, "predict", one_by_one=True, measure=True)
    assert rel_err(pr, dense) <= EXACT_TOL
    assert st["recall"] == 1.0
    assert st["predicted_share"] < 0.7  # it really skips neurons


def test_predict_low_rank_counters(tmp_path):
    model, _ = relu_model(tmp_path, "relu")
    _, path = relu_model(tmp_path, "relu", predictor=gate_svd(model, 32), predictor_input="ffn_norm")
    toks = tokens(30)
    dense, st_d = run(path, toks)
    pr, st = run(path, toks, "predict", one_by_one=True, measure=True)
    print({k: st[k] for k in ("sparsity", "predicted_share", "recall")})
    for layer in st["layers"]:
        assert layer["tokens"] == 30
        assert 0 < layer["neurons_active"] <= layer["neurons_predicted"] < layer["neurons_total"]
        assert 0.5 < layer["recall"] < 1.0
    # approximate, but close to dense
    assert 1e-6 < rel_err(pr, dense) < 0.5
    # without the measure option no recall is counted
    _, st2 = run(path, toks, "predict", one_by_one=True)
    assert st2["recall"] is None
    assert st2["predicted_share"] == st["predicted_share"]


# ---- threshold -------------------------------------------------------------------

def silu_gates(model, toks):
    """|silu(gate)| per layer on toks (the HF model, float32)."""
    acts = []
    hooks = [layer.mlp.gate_proj.register_forward_hook(
        lambda mod, inp, out: acts.append(torch.nn.functional.silu(out).abs().flatten().numpy()))
        for layer in model.model.layers]
    with torch.no_grad():
        model(torch.tensor([toks]))
    for h in hooks:
        h.remove()
    return acts


def test_threshold_zero_equals_dense_and_median_skips_half(tmp_path):
    model = make_hf_llama(seed=2, n_layer=2, n_embd=64, n_ff=96)
    toks = tokens(40)
    zero = write_gguf(model, tmp_path / "zero.gguf", arch="prosparse", activation="silu", cutoffs=[0.0, 0.0])
    dense, _ = run(zero, toks)
    th, st = run(zero, toks, "threshold")
    assert rel_err(th, dense) <= EXACT_TOL
    assert st["predicted_share"] == 1.0

    med = [float(np.quantile(a, 0.5)) for a in silu_gates(model, toks)]
    half = write_gguf(model, tmp_path / "half.gguf", arch="prosparse", activation="silu", cutoffs=med)
    for kw in ({}, {"one_by_one": True}):
        th, st = run(half, toks, "threshold", **kw)
        shares = [layer["predicted_share"] for layer in st["layers"]]
        print("kept share per layer", shares, "rel err vs dense", rel_err(th, dense))
        assert abs(shares[0] - 0.5) < 0.02  # layer 0 sees exactly the calibration inputs
        assert abs(shares[1] - 0.5) < 0.1
        assert 1e-6 < rel_err(th, dense) < 0.5


# ---- refusals ------------------------------------------------------------------------

def test_mode_errors(tmp_path):
    model = make_hf_llama(seed=2, n_layer=2, n_embd=64, n_ff=96)
    silu = write_gguf(model, tmp_path / "silu.gguf", arch="prosparse", activation="silu")
    llama = write_gguf(model, tmp_path / "llama.gguf")
    _, relu = relu_model(tmp_path, "relu")
    for path in (silu, llama):
        with Model(path, threads=1, n_ctx=32) as m:
            with pytest.raises(ProSparseError, match="threshold"):
                m.set_mode("sparse")
            with pytest.raises(ProSparseError, match="predictor"):
                m.set_mode("predict")
            with pytest.raises(ProSparseError, match="cut-offs"):
                m.set_mode("threshold")
            assert m.mode == "dense"
        with pytest.raises(ProSparseError, match="silu"):
            Model(path, threads=1, n_ctx=32, mode="sparse")
    with Model(relu, threads=1, n_ctx=32) as m:
        m.set_mode("sparse")
        with pytest.raises(ProSparseError, match="predictor"):
            m.set_mode("predict")
        assert m.mode == "sparse"


# ---- determinism -----------------------------------------------------------------------

def test_deterministic_and_thread_independent(tmp_path):
    model, _ = relu_model(tmp_path, "relu")
    _, path = relu_model(tmp_path, "relu", wtype="q4_0", predictor=gate_svd(model, 32),
                         predictor_input="ffn_norm")
    toks = tokens(24)
    for mode in ("sparse", "predict"):
        a, _ = run(path, toks, mode, n_batch=5)
        b, _ = run(path, toks, mode, n_batch=5)
        assert np.array_equal(a, b), mode
        c, _ = run(path, toks, mode, n_batch=5, threads=1)
        assert rel_err(c, a) <= EXACT_TOL, mode
    a, _ = run(path, toks[:10], "predict", one_by_one=True)
    b, _ = run(path, toks[:10], "predict", one_by_one=True)
    c, _ = run(path, toks[:10], "predict", one_by_one=True, threads=1)
    assert np.array_equal(a, b)
    assert rel_err(c, a) <= EXACT_TOL
