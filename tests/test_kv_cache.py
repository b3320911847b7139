"""KV cache types (f32 / f16 / q8_0) and the chunked attention over them.

- the f16 cache gives logits within 1e-3 (relative to the largest) of the
  f32 cache on tiny models with ordinary initialisation; q8_0 within 3e-2;
  on SmolLM2 the change is of the size llama.cpp's own F16 cache makes
  (see test_smollm2_cache_types);
- for every cache type, at depths spanning several 128-position chunks,
  1 and 2 threads give the same bits, and so do a prompt in one batch and
  the same tokens one at a time (the chunks are fixed in positions);
- the sparse modes stay exact (vs dense) and deterministic with every type;
- the session's KV allocation: f16 half of f32, q8_0 34/64 of f16, and the
  bytes per token and allocation at an n_ctx that `inspect` reports;
- a q8_0 cache on a head_dim that is not a multiple of 32 is refused.
"""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from support.gguf_files import write_gguf, write_tiny_llama
from support.hf_models import make_hf_llama
from prosparse_cpu import Model, ProSparseError

CACHE_TYPES = ("f32", "f16", "q8_0")
DEPTHS = (1, 127, 128, 300, 520)  # one chunk, its edge, several chunks


def rel_err(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.abs(a - b).max() / np.abs(b).max())


def toks(n: int, seed: int = 0, n_vocab: int = 265) -> list[int]:
    return [int(t) for t in np.random.default_rng(seed).integers(0, n_vocab, n)]


@pytest.fixture(scope="module")
def hd32(tmp_path_factory) -> str:
    """head_dim 32 (q8_0 can hold it), 4 query heads on 2 kv heads."""
    return str(write_tiny_llama(tmp_path_factory.mktemp("kv") / "hd32.gguf", n_embd=128, n_ff=128, n_head=4,
                                n_head_kv=2, seed=4, scale=0.5))


@pytest.fixture(scope="module")
def relu32(tmp_path_factory) -> str:
    """A prosparse ReLU file with head_dim 32 (the sparse modes run on it)."""
    return str(write_tiny_llama(tmp_path_factory.mktemp("kv") / "relu32.gguf", n_embd=128, n_ff=256, n_head=4,
                                n_head_kv=2, seed=5, activation="relu", scale=0.5))


def all_logits(path, ids, cache_type, threads=2, n_batch=512, mode="dense", n_ctx=640):
    with Model(path, threads=threads, n_ctx=n_ctx, n_batch=n_batch, cache_type=cache_type, mode=mode) as m:
        return m.eval_all(ids)


def decode_after(path, depth, cache_type, threads, n_new=3, mode="dense"):
    """Logits of n_new single-token steps after a depth-token prompt."""
    ids = toks(depth + n_new, seed=depth)
    with Model(path, threads=threads, n_ctx=640, n_batch=512, cache_type=cache_type, mode=mode) as m:
        m.eval(ids[:depth])
        rows = [m.logits()]
        for t in ids[depth:]:
            m.eval([t])
            rows.append(m.logits())
        return np.stack(rows)


@pytest.mark.parametrize("kw", [dict(n_embd=128, n_head=4, n_head_kv=2),   # head_dim 32, GQA
                                dict(n_embd=64, n_head=2, n_head_kv=1),    # head_dim 32, 2 heads per kv head
                                dict(n_embd=64, n_head=4, n_head_kv=4)])   # head_dim 16, MHA (no q8_0)
def test_f16_and_q8_0_close_to_f32(tmp_path, kw):
    path = write_gguf(make_hf_llama(seed=3, max_pos=1024, **kw), tmp_path / "m.gguf")
    ids = toks(400, seed=1)
    ref = all_logits(path, ids, "f32")
    err = rel_err(all_logits(path, ids, "f16"), ref)
    print(f"{kw}: f16 vs f32 rel err {err:.2e}")
    assert 0 < err <= 1e-3  # (0: the cache really is another type)
    if kw["n_embd"] // kw["n_head"] % 32 == 0:
        err = rel_err(all_logits(path, ids, "q8_0"), ref)
        print(f"{kw}: q8_0 vs f32 rel err {err:.2e}")
        assert 0 < err <= 3e-2


@pytest.mark.parametrize("cache_type", CACHE_TYPES)
def test_threads_bit_identical(hd32, cache_type):
    for depth in DEPTHS:
        one = decode_after(hd32, depth, cache_type, threads=1)
        two = decode_after(hd32, depth, cache_type, threads=2)
        assert np.array_equal(one, two), (cache_type, depth)


@pytest.mark.parametrize("cache_type", CACHE_TYPES)
def test_batch_equals_one_by_one(hd32, cache_type):
    """A prompt at depth in batches of 7 (tiles cut across chunk edges) and
    the same tokens one at a time: the same bits."""
    ids = toks(300, seed=3)
    batched = all_logits(hd32, ids, cache_type, n_batch=7)
    with Model(hd32, threads=2, n_ctx=640, cache_type=cache_type) as m:
        rows = []
        for t in ids:
            m.eval([t])
            rows.append(m.logits())
    assert np.array_equal(batched, np.stack(rows))


@pytest.mark.parametrize("cache_type", CACHE_TYPES)
def test_sparse_modes_exact_and_deterministic(relu32, cache_type):
    ids = toks(260, seed=4)
    dense = all_logits(relu32, ids, cache_type)
    sparse = all_logits(relu32, ids, cache_type, mode="sparse")
    assert rel_err(sparse, dense) <= 1e-5
    assert np.array_equal(sparse, all_logits(relu32, ids, cache_type, mode="sparse"))
    for depth in (1, 200):
        assert np.array_equal(decode_after(relu32, depth, cache_type, 1, mode="sparse"),
                              decode_after(relu32, depth, cache_type, 2, mode="sparse"))


def test_kv_bytes(hd32):
    got = {}
    for t in CACHE_TYPES:
        with Model(hd32, threads=1, n_ctx=4096, cache_type=t) as m:
            got[t] = m.kv_bytes
            assert m.kv_bytes == m.info.kv_bytes_per_token(t) * 4096
    i = Model(hd32, threads=1, n_ctx=16).info
    assert got["f32"] == 2 * i.n_layer * i.n_head_kv * i.head_dim * 4 * 4096
    assert got["f16"] * 2 == got["f32"]
    assert got["q8_0"] * 64 == got["f16"] * 34


def test_q8_0_needs_head_dim_32(tiny_path):
    with pytest.raises(ProSparseError, match="multiple of 32"):
        Model(tiny_path, threads=1, n_ctx=16, cache_type="q8_0")
    with pytest.raises(ProSparseError, match="unknown KV cache type"):
        Model(tiny_path, threads=1, n_ctx=16, cache_type="f8")


def test_cli_cache_type_and_inspect(hd32):
    run = [sys.executable, "-m", "prosparse_cpu.cli"]
    out = subprocess.run(run + ["inspect", hd32], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "KV cache bytes per token: f16 512, f32 1024, q8_0 272" in out.stdout
    # what a session at n_ctx 4096 allocates (test_kv_bytes: ps_session_kv_bytes)
    assert ("session KV allocation at n_ctx 4096: f16 2097152 (2.0 MiB), f32 4194304 (4.0 MiB), "
            "q8_0 1114112 (1.1 MiB)") in out.stdout
    out = subprocess.run(run + ["inspect", hd32, "--n-ctx", "100"], capture_output=True, text=True, timeout=120)
    assert "session KV allocation at n_ctx 100: f16 51200 " in out.stdout, out.stdout
    for t in CACHE_TYPES:
        out = subprocess.run(run + ["generate", hd32, "-p", "hi", "-n", "4", "--temp", "0", "--cache-type", t],
                             capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
    out = subprocess.run(run + ["generate", hd32, "-p", "hi", "--cache-type", "f8"], capture_output=True,
                         text=True, timeout=120)
    assert out.returncode != 0 and "error:" in out.stderr


@pytest.mark.real
def test_smollm2_cache_types(smollm2_path):
    """SmolLM2 on prose: the f16 and q8_0 caches keep the top-1 token at >= 95% of
    positions and move the logits by what llama.cpp's F16 cache moves them by
    (its F16-vs-F32 max change on this model is ~4.6e-2 of the largest logit)."""
    import sys
    sys.path.insert(0, str(__import__("pathlib").Path(__file__).parents[1] / "scripts"))
    from fidelity import default_text_path, read_text
    path = default_text_path()
    if not path:
        pytest.skip("no prose text on this machine")
    with Model(smollm2_path, threads=2, n_ctx=16) as m:
        ids = m.tokenize(read_text(path), add_bos=False)[:512]
    ref = all_logits(smollm2_path, ids, "f32", n_ctx=512)
    for t, bound in (("f16", 6e-2), ("q8_0", 8e-2)):
        got = all_logits(smollm2_path, ids, t, n_ctx=512)
        err, top1 = rel_err(got, ref), float((got.argmax(-1) == ref.argmax(-1)).mean())
        print(f"SmolLM2 {t} vs f32: max rel {err:.2e}, top-1 {top1:.2%}")
        assert 0 < err <= bound and top1 >= 0.95


@pytest.mark.real
def test_smollm2_kv_bytes_at_4096(smollm2_path):
    """The session's KV allocation at n_ctx 4096: 30 layers x 3 kv heads x 64."""
    want = {"f32": 188_743_680, "f16": 94_371_840, "q8_0": 50_135_040}
    for t, n in want.items():
        with Model(smollm2_path, threads=1, n_ctx=4096, cache_type=t) as m:
            assert m.kv_bytes == n, t


@pytest.mark.real
def test_smollm2_f16_cache_on_float_weights(smollm2_path, tmp_path):
    """The f16 cache's own cost on SmolLM2, measured on an F32 copy of its
    weights: there the matrix products take float activations, so a change
    in K/V is not re-drawn into new activation rounding downstream (on the
    Q4_1 file itself K/V rounded to 22 bits already move the perplexity by
    ~0.4% on this text: scripts/kv_cache_check.py). Perplexity within 0.1%."""
    sys.path.insert(0, str(__import__("pathlib").Path(__file__).parents[1] / "scripts"))
    from fidelity import default_text_path, read_text, write_f32_copy
    from prosparse_cpu.perplexity import perplexity
    path = default_text_path()
    if not path:
        pytest.skip("no prose text on this machine")
    copy = write_f32_copy(smollm2_path, str(tmp_path / "smollm2-f32.gguf"))
    text = read_text(path)
    res = {}
    for t in ("f32", "f16"):
        with Model(copy, threads=2, n_ctx=512, cache_type=t) as m:
            res[t] = perplexity(m, text, n_ctx=512, max_windows=2)
    change = res["f16"].ppl / res["f32"].ppl - 1
    print(f"SmolLM2 F32 weights: f16 cache perplexity change {change:+.4%}")
    assert not np.array_equal(res["f16"].nll, res["f32"].nll)  # the cache really is another type
    assert abs(change) <= 1e-3
