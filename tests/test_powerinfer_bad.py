"""Broken PowerInfer (PWRI) files, each rewritten from a real fixture: one clear
error line from Model() and from the CLI, never a crash (`make asan` runs these
under AddressSanitizer + UBSan). GPU split files beside a model are ignored with
a note."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from prosparse_cpu import Model, ProSparseError
from support.pwri_files import rewrite_pwri, set_tensor_type, write_gpuidx
from test_powerinfer import FIXTURES

pytestmark = [pytest.mark.asan,
              pytest.mark.skipif(not (FIXTURES / "README.md").is_file(), reason="PowerInfer fixtures not found")]

SRC = FIXTURES / "relu-tiny.powerinfer.f32.gguf"

# kind -> (how to make it, words the error must contain)
CASES = {
    "truncated": (None, "past end of file"),
    "fc1_shape": (dict(replace={"blk.1.fc1.weight": np.zeros((64, 128))}), "blk.1.fc2.weight' has shape [96, 352"),
    "fc2_shape": (dict(replace={"blk.0.fc2.weight": np.zeros((352, 64))}), "blk.0.fc2.weight"),
    "rank_above_n_ff": (dict(replace={"blk.0.fc1.weight": np.zeros((384, 128)),
                                      "blk.0.fc2.weight": np.zeros((352, 384))}), "rank 384 out of range [1, 352]"),
    "fc1_transposed": (dict(replace={"blk.0.fc1.weight": np.zeros((128, 96))}), "fc1"),
    "only_fc1": (dict(drop=("blk.1.fc2.weight",)), "only one of fc1 / fc2"),
    "no_down_t": (dict(drop=("blk.0.ffn_down_t.weight",)), "missing tensor 'blk.0.ffn_down_t.weight'"),
    "down_not_t": (dict(rename={"blk.1.ffn_down_t.weight": "blk.1.ffn_down.weight"}), "ffn_down_t"),
    "unknown_arch": (dict(arch="gpt2"), "architecture 'gpt2'"),
    "falcon": (dict(arch="falcon"), "falcon files are not supported"),
    "opt": (dict(arch="opt"), "opt files are not supported"),
    "gpuidx": (dict(arch="generic.gpu_index"), "GPU neuron split"),
}


def make(kind: str, tmp_path):
    how, _ = CASES[kind]
    dst = tmp_path / f"{kind}.powerinfer.gguf"
    if how is None:
        data = SRC.read_bytes()
        dst.write_bytes(data[: len(data) - 5000])
    else:
        rewrite_pwri(SRC, dst, **how)
    return str(dst)


@pytest.mark.parametrize("kind", sorted(CASES))
def test_model_error(kind, tmp_path):
    p = make(kind, tmp_path)
    with pytest.raises(ProSparseError) as err:
        Model(p, threads=1, n_ctx=32)
    msg = str(err.value)
    assert "\n" not in msg and CASES[kind][1] in msg, msg


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "prosparse_cpu.cli", *args], capture_output=True, text=True,
                          timeout=120)


@pytest.mark.parametrize("kind", ["truncated", "fc2_shape", "no_down_t", "falcon"])
def test_cli_one_line(kind, tmp_path):
    p = make(kind, tmp_path)
    for cmd in (["generate", p, "-p", "hi", "-n", "2"], ["inspect", p]):
        r = _cli(*cmd)
        lines = r.stderr.strip().splitlines()
        assert r.returncode != 0 and len(lines) == 1 and lines[0].startswith("error: "), r.stderr
        assert r.stdout == ""


def test_gpu_split_file_beside_the_model_is_ignored(tmp_path):
    model = tmp_path / "m.powerinfer.gguf"
    shutil.copy(SRC, model)
    (tmp_path / "m.powerinfer.gguf.generated.gpuidx").write_bytes(b"PWRI" + bytes(60))
    r = _cli("generate", str(model), "-p", "Once", "-n", "2", "--temp", "0", "--mode", "predict")
    assert r.returncode == 0, r.stderr
    assert "note: m.powerinfer.gguf.generated.gpuidx (PowerInfer's GPU neuron split) is not used" in r.stderr


def test_gpuidx_file_as_model(tmp_path):
    p = write_gpuidx(tmp_path / "m.gpuidx", 2, 352, 40)
    with pytest.raises(ProSparseError, match="PowerInfer's GPU neuron split"):
        Model(p, threads=1, n_ctx=32)


def test_gpu_split_tensors_in_a_model_are_ignored(tmp_path):
    """gpu_idx / gpu_bucket tensors (PowerInfer's I32, id 18) inside a model file: ignored."""
    idx = np.zeros(352, np.int32)
    idx[:40] = 1
    p = rewrite_pwri(SRC, tmp_path / "with_split.gguf",
                     add={"blk.0.gpu_idx": idx, "blk.0.gpu_bucket": np.arange(40, dtype=np.int32)})
    set_tensor_type(p, "blk.0.gpu_idx", 18)
    set_tensor_type(p, "blk.0.gpu_bucket", 18)
    ids = [1, 343, 315, 318, 310]
    a, b = Model(SRC, threads=1, n_ctx=32, mode="predict"), Model(p, threads=1, n_ctx=32, mode="predict")
    a.eval(ids)
    b.eval(ids)
    assert np.array_equal(a.logits(), b.logits())
    a.close(), b.close()
    r = _cli("inspect", str(p))
    assert r.returncode == 0 and "gpu_idx" in r.stdout and "loads: yes" in r.stdout, r.stderr


@pytest.mark.parametrize("bad", [-0.5, float("nan"), float("inf")])
def test_bad_activation_threshold(bad):
    with pytest.raises(ProSparseError, match="activation threshold"):
        Model(SRC, threads=1, n_ctx=32, activation_threshold=bad)


def test_activation_threshold_needs_relu(tiny_path):
    with pytest.raises(ProSparseError, match="applies to relu and fatrelu models; this one uses silu"):
        Model(tiny_path, threads=1, n_ctx=32, activation_threshold=0.01)
