"""Files whose tensors mix the Q5 and K-quant types with the older ones.

A tiny llama with every weight type the engine runs somewhere in it (the
embedding and output matrices included) must give the logits of the same
file with every tensor dequantized to F32 by gguf-py, up to the activation
rounding of the integer kernels: no worse than 3x the same model stored all
in Q8_0 against its own F32 copy (random weights amplify that rounding over
the layers, so an absolute bound would be arbitrary; a wrong kernel gives
unrelated logits). `prosparse inspect` reports the mix.
"""
from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter

import numpy as np
import pytest
from gguf import GGMLQuantizationType as QT

from prosparse_cpu import Model
from support.gguf_files import write_tiny_llama

# n_embd 256 and n_ff 512, so that every matrix can hold 256-element blocks
SHAPE = dict(n_embd=256, n_ff=512, n_head=4, n_head_kv=2)
MIX = {
    "token_embd.weight": QT.Q6_K, "output.weight": QT.Q4_K,
    "blk.0.attn_q.weight": QT.Q4_K, "blk.0.attn_k.weight": QT.Q5_K, "blk.0.attn_v.weight": QT.Q6_K,
    "blk.0.attn_output.weight": QT.Q3_K, "blk.0.ffn_gate.weight": QT.Q2_K, "blk.0.ffn_up.weight": QT.Q5_0,
    "blk.0.ffn_down.weight": QT.Q4_K,
    "blk.1.attn_q.weight": QT.Q5_1, "blk.1.attn_k.weight": QT.Q8_0, "blk.1.attn_v.weight": QT.Q4_0,
    "blk.1.attn_output.weight": QT.Q6_K, "blk.1.ffn_gate.weight": QT.Q4_K, "blk.1.ffn_up.weight": QT.Q6_K,
    "blk.1.ffn_down.weight": QT.Q5_K,
}


@pytest.fixture(scope="module")
def mixed_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("kquant")
    q8 = {name: QT.Q8_0 for name in MIX}
    files = [write_tiny_llama(d / "mixed.gguf", qtypes=MIX, seed=4, **SHAPE),
             write_tiny_llama(d / "mixed_f32.gguf", qtypes=MIX, dequantize_back=True, seed=4, **SHAPE),
             write_tiny_llama(d / "q8.gguf", qtypes=q8, seed=4, **SHAPE),
             write_tiny_llama(d / "q8_f32.gguf", qtypes=q8, dequantize_back=True, seed=4, **SHAPE)]
    return [str(f) for f in files]


def rel_err(got, want) -> float:
    return float(np.abs(got - want).max() / np.abs(want).max())


def logits(path, tokens, threads=2, n_batch=512):
    with Model(path, threads=threads, n_ctx=128, cache_type="f32", n_batch=n_batch) as m:
        return m.eval_all(tokens)


@pytest.mark.asan  # every new kernel runs here: `make asan` covers them in a model
def test_mixed_file_matches_its_f32_copy(mixed_files):
    mixed, ref, q8, q8_ref = mixed_files
    tokens = [int(t) for t in np.random.default_rng(0).integers(3, 60, 40)]
    got, want = logits(mixed, tokens), logits(ref, tokens)
    err, err_q8 = rel_err(got, want), rel_err(logits(q8, tokens), logits(q8_ref, tokens))
    top1 = float(np.mean(got.argmax(-1) == want.argmax(-1)))
    print(f"vs F32 copy: mixed rel err {err:.2e} (all-Q8_0 {err_q8:.2e}), top-1 agreement {top1:.3f}")
    assert err <= 3 * err_q8
    assert top1 >= 0.85
    # batching and thread count change nothing
    np.testing.assert_array_equal(logits(mixed, tokens, threads=1, n_batch=7), got)


def test_inspect_shows_the_type_mix(mixed_files):
    mixed = mixed_files[0]
    r = subprocess.run([sys.executable, "-m", "prosparse_cpu.cli", "inspect", mixed], capture_output=True,
                       text=True, env=dict(os.environ), timeout=120)
    assert r.returncode == 0, r.stderr
    line = next(ln for ln in r.stdout.splitlines() if "by type:" in ln)
    for qtype, n in Counter(MIX.values()).items():
        assert f" {qtype.name} {n}," in line + ",", line
