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


# ---- synth_sparse_model.py --type q4_k_m ----------------------------------------------------
SYNTH = ROOT / "scripts" / "synth_sparse_model.py"


def test_random_blocks_dequantize_to_unit_spread_rows():
    """Each random block writer's bytes: gguf-py's dequantize and the engine's agree bit for bit,
    and a row's product with a unit-rms input has spread ~1 around ~0 (the model stays tame)."""
    import ctypes

    import gguf
    import numpy as np

    sys.path.insert(0, str(ROOT / "scripts"))
    from synth_gguf import RANDOM_BLOCKS, random_blocks

    rng = np.random.default_rng(1)
    x = rng.standard_normal((512, 32)).astype(np.float32)
    dll = _lib.lib()
    for qt in RANDOM_BLOCKS:
        b = random_blocks(rng, qt, 128, 512, gain=2.0)
        assert b.shape == (128, 512 // gguf.GGML_QUANT_SIZES[qt][0] * gguf.GGML_QUANT_SIZES[qt][1])
        w = gguf.quants.dequantize(b, qt).reshape(128, 512).astype(np.float32)
        ours = np.empty(128 * 512, np.float32)
        assert dll.ps_debug_dequantize(int(qt), b.ctypes.data_as(ctypes.c_void_p), ours.size,
                                       ours.ctypes.data_as(ctypes.POINTER(ctypes.c_float))) == 0, qt.name
        assert np.array_equal(ours.reshape(128, 512), w), qt.name
        y = w @ x
        assert 1.8 < y.std() < 2.2 and abs(y.mean()) < 0.1, (qt.name, y.std(), y.mean())
        assert abs(w.mean()) * np.sqrt(512) < 0.05, qt.name


@pytest.fixture(scope="module")
def synth_q4km(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth_q4km")
    r = subprocess.run([sys.executable, str(SYNTH), "--shape", "tiny", "--type", "q4_k_m", "--vocab", "1024",
                        "--out", str(out)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    return out / "prosparse-tiny-q4_k_m.gguf", out / "llama-tiny-q4_k_m.gguf"


def test_synth_q4_k_m_has_llama_cpps_mix(synth_q4km):
    """The tiny shape (4 layers, n_ff 704) as llama.cpp's Q4_K_M: Q6_K output, attn_v and ffn_down in
    layers 2 and 3 (the last eighth and every third after the first eighth), Q4_K elsewhere; rows of
    704 fall back to Q5_0 (from Q4_K) and Q8_0 (from Q6_K); the predictor stays Q4_0."""
    import gguf

    def types(p):
        r = gguf.GGUFReader(p)
        assert r.get_field("general.file_type").contents() == 15   # LLAMA_FTYPE_MOSTLY_Q4_K_M
        return {t.name: t.tensor_type.name for t in r.tensors}

    sp, ll = types(synth_q4km[0]), types(synth_q4km[1])
    for t in (sp, ll):
        assert t["output.weight"] == "Q6_K" and t["token_embd.weight"] == "Q4_K"
        for i in range(4):
            assert t[f"blk.{i}.attn_v.weight"] == ("Q6_K" if i >= 2 else "Q4_K")
            for n in ("attn_q", "attn_k", "attn_output", "ffn_gate", "ffn_up"):
                assert t[f"blk.{i}.{n}.weight"] == "Q4_K"
    for i in range(4):
        assert sp[f"blk.{i}.ffn_down_t.weight"] == ("Q6_K" if i >= 2 else "Q4_K")   # rows of n_embd = 256
        assert ll[f"blk.{i}.ffn_down.weight"] == ("Q8_0" if i >= 2 else "Q5_0")     # rows of n_ff = 704
        assert sp[f"blk.{i}.ffn_pred_in.weight"] == sp[f"blk.{i}.ffn_pred_out.weight"] == "Q4_0"


def test_synth_q4_k_m_runs_sparse_and_its_twin_matches_llama_cpp(synth_q4km, llama_cpp):
    import numpy as np

    from prosparse_cpu import Model

    ids = np.random.default_rng(0).integers(3, 1024, 48).tolist()
    with Model(synth_q4km[0], threads=2, n_ctx=64, mode="predict", measure=True) as m:
        for t in ids:
            m.eval([t])
        st = m.stats()
    assert 0.85 < st["sparsity"] < 0.93       # built for 11% active
    assert st["recall"] >= 0.95                # built for 0.99
    with Model(synth_q4km[1], threads=2, n_ctx=64) as m:
        ours = m.eval_all(ids[:16])
    ref = llama_cpp.Llama(str(synth_q4km[1]), n_ctx=64, logits_all=True, verbose=False)
    ref.eval(ids[:16])
    want = np.asarray(ref.scores[:16])
    assert (ours.argmax(1) == want.argmax(1)).mean() >= 0.9
    assert np.abs(ours - want).max() / np.abs(want).max() < 0.05
