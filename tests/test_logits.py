"""Engine logits vs transformers on tiny random models (support/hf_models.py).

F32 files must match the HF model to 1e-4 of the largest |logit| at every
position, whether the tokens arrive as one batch, split across several
n_batch-sized batches, or one at a time. Quantized files are compared with
the HF model carrying the same rounded weights; there the engine also rounds
activations (Q8 blocks, as ggml does), so top-1 agreement is the measure.
"""
from __future__ import annotations

import numpy as np
import pytest

from support.gguf_files import WEIGHT_TYPES, dequantized_copy, write_gguf
from support.hf_models import ACTIVATIONS, make_hf_llama
from support.torch_reference import Act, reference_logits
from support.vocab import N_VOCAB
from prosparse_cpu import Model, ProSparseError

REL_TOL = 1e-4


def rel_err(a, b) -> float:
    return float(np.abs(np.asarray(a, np.float64) - b).max() / np.abs(b).max())


def random_tokens(n: int, seed: int = 0) -> list[int]:
    return [int(t) for t in np.random.default_rng(seed).integers(0, N_VOCAB, n)]


def engine_all(path, tokens, n_batch=512, threads=2) -> np.ndarray:
    with Model(path, cache_type="f32", threads=threads, n_ctx=256, n_batch=n_batch) as m:
        return m.eval_all(tokens)


def engine_one_by_one(path, tokens, threads=2) -> np.ndarray:
    with Model(path, cache_type="f32", threads=threads, n_ctx=256) as m:
        rows = []
        for t in tokens:
            m.eval([t])
            rows.append(m.logits())
        return np.stack(rows)


@pytest.mark.parametrize("tied,n_head,n_head_kv,theta", [
    (False, 4, 2, 10000.0),   # GQA, separate output
    (True, 4, 4, 50000.0),    # MHA, tied embeddings, another rope base
    (False, 8, 2, 10000.0),   # 4 query heads per kv head, head_dim 8
])
def test_f32_llama_matches_transformers(tmp_path, tied, n_head, n_head_kv, theta):
    model = make_hf_llama(seed=3, tied=tied, n_head=n_head, n_head_kv=n_head_kv, rope_theta=theta)
    path = write_gguf(model, tmp_path / "m.gguf")
    tokens = random_tokens(60)
    ref = reference_logits(model, tokens)
    one_batch = engine_all(path, tokens)
    batched = engine_all(path, tokens, n_batch=7)  # 9 batches, the last one partial
    single = engine_one_by_one(path, tokens[:24])
    print(f"rel err: one batch {rel_err(one_batch, ref):.2e}, n_batch=7 {rel_err(batched, ref):.2e}, "
          f"token by token {rel_err(single, ref[:24]):.2e}")
    assert rel_err(one_batch, ref) <= REL_TOL
    assert rel_err(batched, ref) <= REL_TOL
    assert rel_err(single, ref[:24]) <= REL_TOL


def test_f32_single_thread_and_last_logits(tmp_path):
    model = make_hf_llama(seed=4)
    path = write_gguf(model, tmp_path / "m.gguf")
    tokens = random_tokens(33, seed=1)
    ref = reference_logits(model, tokens)
    assert rel_err(engine_all(path, tokens, threads=1), ref) <= REL_TOL
    # eval() without all-logits computes only the last position
    with Model(path, cache_type="f32", threads=2, n_ctx=64, n_batch=8) as m:
        m.eval(tokens[:20])
        assert rel_err(m.logits(), ref[19]) <= REL_TOL
        m.eval(tokens[20:])
        assert rel_err(m.logits(), ref[-1]) <= REL_TOL


def test_rope_linear_scaling(tmp_path):
    model = make_hf_llama(seed=5, rope_linear_factor=4.0)
    path = write_gguf(model, tmp_path / "m.gguf")
    tokens = random_tokens(40, seed=2)
    assert rel_err(engine_all(path, tokens, n_batch=16), reference_logits(model, tokens)) <= REL_TOL


def test_truncate_then_continue_matches_fresh(tmp_path):
    model = make_hf_llama(seed=6)
    path = write_gguf(model, tmp_path / "m.gguf")
    a, b = random_tokens(30, seed=3), random_tokens(12, seed=4)
    ref = reference_logits(model, a[:18] + b)
    with Model(path, cache_type="f32", threads=2, n_ctx=64, n_batch=16) as m:
        m.eval(a)
        m.truncate(18)
        out = m.eval_all(b)
        assert rel_err(out, ref[18:]) <= REL_TOL
        m.reset()
        assert rel_err(m.eval_all(a[:18] + b), ref) <= REL_TOL


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_f32_prosparse_activations_and_scales(tmp_path, activation):
    model = make_hf_llama(seed=7, n_layer=3, tied=True)
    kw = dict(activation=activation, threshold=0.05 if activation == "fatrelu" else 0.0,
              embedding_scale=3.0, residual_scale=0.4, logit_scale=0.2)
    path = write_gguf(model, tmp_path / "m.gguf", arch="prosparse", **kw)
    tokens = random_tokens(50, seed=5)
    ref = reference_logits(model, tokens, **kw)
    out = engine_all(path, tokens, n_batch=16)
    single = engine_one_by_one(path, tokens[:10])
    print(f"{activation}: rel err {rel_err(out, ref):.2e}")
    assert rel_err(out, ref) <= REL_TOL
    assert rel_err(single, ref[:10]) <= REL_TOL
    with Model(path, cache_type="f32", threads=2, n_ctx=64) as m:
        assert m.info.arch == "prosparse" and m.info.activation == activation


def test_prosparse_with_plain_ffn_down(tmp_path):
    """A prosparse file may keep ffn_down (not transposed): same function."""
    model = make_hf_llama(seed=8)
    path = write_gguf(model, tmp_path / "m.gguf", arch="prosparse", activation="relu", down_t=False)
    tokens = random_tokens(30, seed=6)
    assert rel_err(engine_all(path, tokens), reference_logits(model, tokens, activation="relu")) <= REL_TOL


def _count_active(model, tokens, activation, threshold=0.0):
    """Reference count, per layer, of non-zero x1 = act(gate) * up (forward hooks
    on a copy of the HF model with the activation patched in)."""
    import copy

    import torch

    patched = copy.deepcopy(model)
    counts = []
    for layer in patched.model.layers:
        layer.mlp.act_fn = Act(activation, threshold)
        layer.mlp.register_forward_hook(lambda mod, inp, out: counts.append(
            int((mod.act_fn(mod.gate_proj(inp[0])) * mod.up_proj(inp[0]) != 0).sum())))
    with torch.no_grad():
        patched(torch.tensor([tokens]))
    return counts


@pytest.mark.parametrize("activation", ["relu", "fatrelu"])
def test_dense_mode_counts_measured_sparsity(tmp_path, activation):
    model = make_hf_llama(seed=9, n_layer=2)
    thr = 0.1 if activation == "fatrelu" else 0.0
    path = write_gguf(model, tmp_path / "m.gguf", arch="prosparse", activation=activation, threshold=thr)
    tokens = random_tokens(40, seed=7)
    want = _count_active(model, tokens, activation, thr)
    with Model(path, cache_type="f32", threads=2, n_ctx=64, n_batch=16) as m:
        m.eval(tokens)
        st = m.stats()
    got = [layer["neurons_active"] for layer in st["layers"]]
    assert [layer["tokens"] for layer in st["layers"]] == [40, 40]
    assert [layer["neurons_total"] for layer in st["layers"]] == [40 * 96] * 2
    # exactly-zero decisions can differ only for gate values within rounding of the cut
    for g, w in zip(got, want):
        assert abs(g - w) <= 2, (got, want)
    assert 0.2 < st["sparsity"] < 0.8


@pytest.mark.parametrize("wtype,min_top1,max_err", [
    ("f16", 1.0, 1e-4), ("bf16", 1.0, 1e-4),
    ("q8_0", 0.95, 0.04), ("q4_0", 0.95, 0.04), ("q4_1", 0.95, 0.04),
])
def test_quantized_vs_dequantized_reference(tmp_path, wtype, min_top1, max_err):
    """Reference: the HF model with the file's rounded weights. Float weights
    match it exactly; for block-quantized ones the engine also rounds each
    matmul's input to 8 bits, which moves logits by ~2% of the largest: top-1
    may flip only where the reference's top-2 margin is smaller than that."""
    model = make_hf_llama(seed=10, n_layer=2, n_embd=128, n_ff=256, std=0.05)
    path = write_gguf(model, tmp_path / "m.gguf", wtype=wtype)
    tokens = random_tokens(200, seed=8)
    ref = reference_logits(dequantized_copy(model, wtype), tokens)
    out = engine_all(path, tokens, n_batch=64)
    agree = out.argmax(1) == ref.argmax(1)
    top2 = np.sort(ref, axis=1)[:, -2:]
    clear = (top2[:, 1] - top2[:, 0]) > 2.5 * max_err * np.abs(ref).max()
    err = rel_err(out, ref)
    print(f"{wtype}: top-1 agreement {agree.mean():.3f} ({agree[clear].mean():.3f} on {clear.sum()} "
          f"clear positions), max rel err {err:.2e}")
    assert agree.mean() >= min_top1
    assert agree[clear].all()
    assert err <= max_err
    with Model(path, cache_type="f32", threads=2, n_ctx=16) as m:
        assert m.info.weight_type == int(WEIGHT_TYPES[wtype])


@pytest.mark.asan
def test_modes_the_file_cannot_run_are_refused(tmp_path):
    """relu file without predictor or cut-offs: sparse runs, predict and
    threshold say what is missing (tests/test_sparse.py covers the modes)."""
    model = make_hf_llama(seed=11)
    path = write_gguf(model, tmp_path / "m.gguf", arch="prosparse", activation="relu")
    with Model(path, cache_type="f32", threads=1, n_ctx=32) as m:
        for mode, why in (("predict", "predictor"), ("threshold", "cut-offs")):
            with pytest.raises(ProSparseError, match=why):
                m.set_mode(mode)
        assert m.mode == "dense"
        m.set_mode("sparse")
        assert m.mode == "sparse"
    with pytest.raises(ProSparseError, match="predictor"):
        Model(path, cache_type="f32", threads=1, n_ctx=32, mode="predict")


@pytest.mark.asan
def test_bad_eval_arguments(tmp_path):
    model = make_hf_llama(seed=12)
    path = write_gguf(model, tmp_path / "m.gguf")
    with Model(path, cache_type="f32", threads=1, n_ctx=8) as m:
        with pytest.raises(ProSparseError, match="outside"):
            m.eval([1, N_VOCAB])
        with pytest.raises(ProSparseError, match="outside"):
            m.eval([-1])
        assert m.n_past == 0
        m.eval([1, 2, 3, 4, 5])
        with pytest.raises(ProSparseError, match="context"):
            m.eval([1, 2, 3, 4])
        assert m.n_past == 5
        m.eval([1, 2, 3])  # exactly full is fine
        assert m.n_past == 8


@pytest.fixture
def scalar_kernels():
    """Force the scalar reference kernels (matmuls and attention) for one test."""
    from prosparse_cpu._lib import lib

    before = lib().ps_simd_get()
    lib().ps_simd_set(0)
    yield
    lib().ps_simd_set(before)


@pytest.mark.parametrize("activation", ["silu", "relu2"])
def test_scalar_path_matches_transformers(tmp_path, scalar_kernels, activation):
    model = make_hf_llama(seed=13, n_head=4, n_head_kv=2)
    path = write_gguf(model, tmp_path / "m.gguf", arch="prosparse", activation=activation)
    tokens = random_tokens(40, seed=9)
    ref = reference_logits(model, tokens, activation=activation)
    assert rel_err(engine_all(path, tokens, n_batch=16), ref) <= REL_TOL
    assert rel_err(engine_one_by_one(path, tokens[:8]), ref[:8]) <= REL_TOL


def test_long_context_attention(tmp_path):
    """Positions up to 300 (many 4-key groups plus a remainder, several batches)."""
    model = make_hf_llama(seed=14, n_embd=128, n_head=2, n_head_kv=1, max_pos=512)  # head_dim 64
    path = write_gguf(model, tmp_path / "m.gguf")
    tokens = random_tokens(301, seed=10)
    ref = reference_logits(model, tokens)
    with Model(path, cache_type="f32", threads=2, n_ctx=512, n_batch=128) as m:
        out = m.eval_all(tokens[:290])
        rows = [out]
        for t in tokens[290:]:
            m.eval([t])
            rows.append(m.logits()[None])
    assert rel_err(np.concatenate(rows), ref) <= REL_TOL
