"""scripts/synth_sparse_model.py --format powerinfer writes PowerInfer's own layout:
checked key by key and tensor by tensor against PowerInfer's `quantize --pure` Q4_0
fixture, and run by the engine with the sparsity and recall it was built for."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from prosparse_cpu import Model
from prosparse_cpu.pwri import open_gguf
from test_powerinfer import FIXTURES

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.skipif(not (FIXTURES / "README.md").is_file(), reason="PowerInfer fixtures not found")


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth")
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / "synth_sparse_model.py"), "--shape", "tiny",
                        "--format", "powerinfer", "--vocab", "1024", "--out", str(out)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    return out / "powerinfer-tiny.powerinfer.gguf", out / "powerinfer-tiny.llama.gguf"


def layout(path):
    """(magic, [(key, value types)], [(tensor name with the layer as N, type)])."""
    r = open_gguf(path)
    keys = [(k, tuple(int(t) for t in f.types)) for k, f in r.fields.items() if not k.startswith("GGUF.")]
    tensors = [(re.sub(r"blk\.\d+\.", "blk.N.", t.name), t.tensor_type.name) for t in r.tensors]
    with open(path, "rb") as f:
        return f.read(4), keys, tensors


def test_layout_is_powerinfers(synth):
    magic, keys, tensors = layout(synth[0])
    ref_magic, ref_keys, ref_tensors = layout(FIXTURES / "relu-tiny.powerinfer.q4_0-pure.gguf")
    assert magic == ref_magic == b"PWRI"
    assert keys == ref_keys   # the same keys, value types and order
    n_layer_ref, n_layer = 2, 4

    def per_layer(ts, n):   # the block pattern once per layer, the predictor tail once per layer
        head, blocks, tail = ts[:2], ts[2:2 + 9 * n], ts[2 + 9 * n:]
        return head, blocks[:9], blocks == blocks[:9] * n, tail[0], tail[1:3], tail[1:] == tail[1:3] * n

    assert per_layer(tensors, n_layer) == per_layer(ref_tensors, n_layer_ref)
    r = open_gguf(synth[0])
    assert r.get_field("general.architecture").contents() == "llama"
    assert r.get_field("powerinfer.sparse_threshold").contents() < 0


def test_engine_runs_it_sparse(synth):
    ids = np.random.default_rng(0).integers(3, 1024, 48).tolist()
    m = Model(synth[0], threads=2, n_ctx=64, mode="predict", measure=True)
    assert m.info.powerinfer and m.info.activation == "relu" and m.info.predictor_rank == 96
    for t in ids:
        m.eval([t])
    st = m.stats()
    m.close()
    assert 0.85 < st["sparsity"] < 0.95       # built for 11% active
    assert st["recall"] >= 0.95                # built for 0.99
    twin = Model(synth[1], threads=1, n_ctx=64)
    assert twin.info.arch == "llama" and not twin.info.powerinfer and not twin.info.has_predictor
    twin.close()


def test_default_mix_with_q6k_output(tmp_path):
    """PowerInfer's default Q4_0 mix stores output.weight as Q6_K when n_embd is a multiple of 256: it
    runs and equals the float64 forward of its weights (the pure Q4_0 tiny file: 4.9e-3)."""
    from prosparse_cpu.convert.reference import gguf_logits
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / "synth_sparse_model.py"), "--shape", "tiny",
                        "--format", "powerinfer", "--output-type", "q6_k", "--vocab", "1024", "--no-twin",
                        "--out", str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    p = tmp_path / "powerinfer-tiny.powerinfer.gguf"
    assert open_gguf(p).get_tensor(0).tensor_type.name == "Q6_K"
    m = Model(p, threads=2, n_ctx=64, mode="sparse", cache_type="f32")
    ids = np.random.default_rng(0).integers(3, 1024, 32).tolist()
    got = m.eval_all(ids)
    m.close()
    ref = gguf_logits(p, ids)
    assert np.abs(got - ref).max() / np.abs(ref).max() <= 2e-2
