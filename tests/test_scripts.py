"""scripts/ab_libs.py runs two builds of the library (or two modes) in one process; scripts/same_logits.py compares their logits."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from prosparse_cpu import _lib
from prosparse_cpu._lib import library_path
from support.gguf_files import write_gguf
from support.hf_models import make_hf_llama

ROOT = Path(__file__).resolve().parent.parent
AB = ROOT / "scripts" / "ab_libs.py"


def test_ab_libs_times_two_builds_in_one_process(tmp_path):
    model = make_hf_llama(seed=3, n_layer=2, n_embd=64, n_ff=96)
    path = write_gguf(model, tmp_path / "relu.gguf", wtype="q4_0", arch="prosparse", activation="relu")
    a, b = tmp_path / "a.so", tmp_path / "b.so"  # two paths: two copies of the library in one process
    shutil.copy(library_path(), a)
    shutil.copy(library_path(), b)
    r = subprocess.run([sys.executable, str(AB), str(path), str(a), str(b), "--mode", "sparse", "--rounds", "2",
                        "--tokens", "4", "--simd-b", "0"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "sparse, 2 threads, 2 rounds of 4 tokens" in r.stdout
    assert "B/A" in r.stdout


def test_ab_libs_compares_two_modes(tmp_path):
    model = make_hf_llama(seed=4, n_layer=2, n_embd=64, n_ff=96)
    path = write_gguf(model, tmp_path / "relu.gguf", wtype="q8_0", arch="prosparse", activation="relu")
    lib = str(library_path())
    r = subprocess.run([sys.executable, str(AB), str(path), lib, lib, "--mode", "dense", "--mode-b", "sparse",
                        "--rounds", "2", "--tokens", "4"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "A dense, B sparse, 2 threads" in r.stdout


def test_ab_libs_bad_model_is_one_error_line(tmp_path):
    r = subprocess.run([sys.executable, str(AB), str(tmp_path / "missing.gguf"), str(library_path()),
                        str(library_path())], capture_output=True, text=True, timeout=60)
    assert r.returncode == 1
    assert r.stderr.strip().startswith("error:") and "missing.gguf" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_ab_libs_refuses_a_simd_level_this_cpu_does_not_run(tmp_path):
    """ps_simd_set falls back to a level the CPU runs; timing that under another level's name would mislead."""
    lib = library_path()
    other = 1 if _lib.lib().ps_simd_supported() >= _lib.PS_SIMD_NEON else _lib.PS_SIMD_NEON  # the other architecture's
    r = subprocess.run([sys.executable, str(AB), str(tmp_path / "unused.gguf"), str(lib), str(lib),
                        "--simd-a", str(other)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 1
    assert r.stderr.strip().startswith("error:") and f"SIMD level {other} " in r.stderr
    assert "does not run on this CPU" in r.stderr and len(r.stderr.strip().splitlines()) == 1


SAME = ROOT / "scripts" / "same_logits.py"


def test_same_logits_of_one_build_twice(tmp_path):
    model = make_hf_llama(seed=5, n_layer=2, n_embd=64, n_ff=96)
    path = write_gguf(model, tmp_path / "relu.gguf", wtype="q4_0", arch="prosparse", activation="relu")
    lib = str(library_path())
    r = subprocess.run([sys.executable, str(SAME), str(path), lib, lib, "--tokens", "12", "--batch", "5"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "level 0 dense: identical" in r.stdout and "level 0 sparse: identical" in r.stdout
    assert "different" in r.stdout.splitlines()[-1] and r.stdout.splitlines()[-1].endswith("0 different")


def test_same_logits_finds_a_difference(tmp_path):
    model = make_hf_llama(seed=5, n_layer=2, n_embd=64, n_ff=96)
    a = write_gguf(model, tmp_path / "a.gguf", wtype="f32")
    b = write_gguf(model, tmp_path / "b.gguf", wtype="f16")
    lib = str(library_path())
    r = subprocess.run([sys.executable, str(SAME), str(a), lib, lib, "--model-b", str(b), "--tokens", "8"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "level 0 dense: differs, max |A-B| / max |A| = " in r.stdout


# ---- serve_throughput.py ---------------------------------------------------------------------
THROUGHPUT = ROOT / "scripts" / "serve_throughput.py"


@pytest.mark.real
def test_serve_throughput_measures_our_server(smollm2_path, tmp_path):
    pytest.importorskip("openai")
    pytest.importorskip("fastapi")
    r = subprocess.run([sys.executable, str(THROUGHPUT), "--model", smollm2_path, "--engines", "prosparse",
                        "--clients", "1,2", "--reps", "1", "--requests", "1", "--max-tokens", "4",
                        "--out", str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    res = json.loads((tmp_path / "serve_throughput.json").read_text())
    assert [lv["clients"] for lv in res["levels"]] == [1, 2]
    for lv in res["levels"]:
        e = lv["engines"]["prosparse"]
        assert e["sessions"] == lv["clients"]            # min(clients, 2 threads)
        reqs = e["rounds"][0]["requests"]
        assert len(reqs) == lv["clients"] and all(q["completion_tokens"] == 4 and q["ttft_s"] > 0 for q in reqs)
        assert e["summary"]["tokens_per_s"] > 0
    assert "agg t/s" in r.stdout


def test_serve_throughput_bad_input_is_one_error_line(tmp_path):
    r = subprocess.run([sys.executable, str(THROUGHPUT), "--model", str(tmp_path / "missing.gguf")],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and r.stderr.startswith("error:") and "missing.gguf" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
