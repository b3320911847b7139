"""The `prosparse` command line, run as a user runs it (a subprocess), on tiny models and SmolLM2."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest


def run(*args, stdin: str | None = None, timeout: int = 300, env: dict | None = None):
    return subprocess.run([sys.executable, "-m", "prosparse_cpu.cli", *map(str, args)], input=stdin,
                          capture_output=True, text=True, timeout=timeout, env=env)


def ok(r):
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr
    return r


def test_help():
    r = ok(run("--help"))
    for cmd in ("generate", "chat", "inspect", "bench"):
        assert cmd in r.stdout


def test_generate_streams_and_reports_speed(tiny_path):
    r = ok(run("generate", tiny_path, "-p", "hello", "-n", "8", "--temp", "0", "--threads", "2"))
    assert r.stdout.startswith("hello")
    assert "t/s" in r.stderr and "generated: " in r.stderr
    assert ok(run("generate", tiny_path, "-p", "hello", "-n", "8", "--temp", "0")).stdout == r.stdout


def test_generate_seeded(tiny_path):
    args = ("generate", tiny_path, "-p", "hello", "-n", "8", "--temp", "1.0", "--top-k", "20", "--top-p", "0.9")
    a = ok(run(*args, "--seed", "3"))
    b = ok(run(*args, "--seed", "3"))
    assert a.stdout == b.stdout


def test_generate_exact_text(successor_path):
    r = ok(run("generate", successor_path, "-p", "A", "--temp", "0"))
    assert r.stdout == "A😀BC\n"
    assert "stop: eog" in r.stderr


def test_chat_one_question(successor_path):
    r = ok(run("chat", successor_path, "-p", "hi", "--temp", "0"))
    assert r.stdout == "A😀BC\n"


def test_map_only_gives_the_same_text(successor_path):
    for cmd in ("chat", "generate"):
        r = ok(run(cmd, successor_path, "-p", "hi" if cmd == "chat" else "A", "--temp", "0", "--map-only"))
        assert r.stdout == "A😀BC\n"


def test_chat_script_reset_quit(successor_path):
    script = "hi\n\nsecond turn\n/reset\nafter reset\n/quit\nnever read\n"
    r = ok(run("chat", successor_path, "--temp", "0", "--system", "Be brief.", stdin=script))
    assert r.stdout == "A😀BC\n" * 3
    assert "conversation cleared" in r.stderr


def test_chat_eof_exits(successor_path):
    r = ok(run("chat", successor_path, "--temp", "0", stdin="hi\n"))
    assert r.stdout == "A😀BC\n"


def test_inspect(tiny_path):
    r = ok(run("inspect", tiny_path))
    out = r.stdout
    for needle in ("architecture: llama", "block_count: 2", "21 tensors", "F32", "blk.N (2 blocks",
                   "model: gpt2, pre: smollm", "vocabulary: 265 tokens", "chat template: present",
                   "general.name = 'tiny-test'", "loads: yes"):
        assert needle in out, needle


def test_bench_ours_alone(tiny_path, tmp_path):
    js, png = tmp_path / "b.json", tmp_path / "b.png"
    r = ok(run("bench", tiny_path, "--threads", "1", "--reps", "2", "--pp", "16", "--tg", "4", "--no-llama",
               "--json", js, "--plot", png))
    assert "ours dense" in r.stdout and "pp16" in r.stdout and "tg4" in r.stdout
    data = json.loads(js.read_text())
    (e,) = data["engines"]
    assert e["mode"] == "dense" and len(e["tests"]["pp16"]["seconds"]) == 2 and len(e["tests"]["tg4"]["tps"]) == 2
    assert data["config"]["threads"] == 1 and data["machine"]["cpu_count"] >= 1
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bench_flags_a_run_whose_bandwidth_changed():
    from prosparse_cpu.bench import bandwidth_note, bandwidth_unstable
    steady = {"config": {"threads": 2}, "machine": {"read_bandwidth_gb_s": 42.0,
                                                    "read_bandwidth_samples_gb_s": [41.0, 42.0, 44.0]}}
    moved = {"config": {"threads": 2}, "machine": {"read_bandwidth_gb_s": 42.0,
                                                   "read_bandwidth_samples_gb_s": [41.0, 42.0, 44.0],
                                                   "weights_read_bandwidth_gb_s": 49.6,
                                                   "weights_read_bandwidth_samples_gb_s": [64.5, 42.8, 49.6]}}
    assert not bandwidth_unstable(steady) and "unreliable" not in bandwidth_note(steady)
    assert bandwidth_unstable(moved) and "unreliable" in bandwidth_note(moved)


def test_bench_bad_options(tiny_path, tmp_path):
    for args in (["--modes", "dense,fastest"], ["--pp", "0", "--tg", "0"], ["--json", tmp_path / "no" / "x.json"]):
        r = run("bench", tiny_path, "--no-llama", *args)
        assert r.returncode != 0 and r.stderr.startswith("error: ") and len(r.stderr.strip().splitlines()) == 1


def test_bench_without_llama_cpp(tiny_path, tmp_path):
    # a llama_cpp package that fails to import stands for one that is not installed
    fake = tmp_path / "site" / "llama_cpp"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError('not installed (test)')\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(fake.parent), os.environ.get("PYTHONPATH", "")]))
    r = ok(run("bench", tiny_path, "--threads", "1", "--reps", "1", "--pp", "8", "--tg", "2", env=env))
    notes = [line for line in r.stderr.splitlines() if "llama_cpp" in line]
    assert len(notes) == 1 and "measuring ours alone" in notes[0]
    assert "ours dense" in r.stdout and "│ llama.cpp" not in r.stdout


@pytest.mark.llamacpp
def test_bench_baseline_file(tiny_path, tmp_path, llama_cpp):
    from support.gguf_files import write_tiny_llama

    relu = write_tiny_llama(tmp_path / "relu.gguf", activation="relu")  # llama.cpp cannot run a prosparse file
    js = tmp_path / "b.json"
    ok(run("bench", relu, "--baseline", tiny_path, "--modes", "dense", "--threads", "1", "--reps", "1",
           "--pp", "8", "--tg", "2", "--json", js))
    data = json.loads(js.read_text())
    assert [(e["name"], os.path.basename(e["file"])) for e in data["engines"]] == [
        ("llama.cpp", os.path.basename(tiny_path)), ("ours dense", "relu.gguf")]
    assert data["engines"][1]["counters"]["sparsity"] > 0.1  # ReLU zeros, measured while timing tg


@pytest.mark.llamacpp
def test_bench_against_llama_cpp(tiny_path, tmp_path, llama_cpp):
    js = tmp_path / "b.json"
    r = ok(run("bench", tiny_path, "--threads", "1", "--reps", "1", "--pp", "16", "--tg", "4", "--json", js))
    assert "llama.cpp" in r.stdout
    data = json.loads(js.read_text())
    names = [e["name"] for e in data["engines"]]
    assert names == ["llama.cpp", "ours dense"]
    assert data["engines"][1]["tests"]["tg4"]["ratio_vs_llama_cpp"] > 0


@pytest.mark.llamacpp
def test_bench_at_depth(tiny_path, tmp_path, llama_cpp):
    """--depth: pp/tg after a prompt of D tokens, for both engines, named as llama-bench's -d."""
    js = tmp_path / "b.json"
    r = ok(run("bench", tiny_path, "--threads", "1", "--reps", "2", "--pp", "8", "--tg", "4", "--depth", "0,40",
               "--cache-type", "f32", "--json", js))
    assert "tg4 @ d40" in r.stdout and "pp8 @ d40" in r.stdout and "at d40 a decode step reads" in r.stdout and "flash attention on" in r.stdout
    data = json.loads(js.read_text())
    assert data["config"]["depths"] == [0, 40] and data["config"]["cache_type"] == "f32"
    for e in data["engines"]:
        assert set(e["tests"]) == {"pp8", "tg4", "pp8 @ d40", "tg4 @ d40"}
        assert e["tests"]["tg4 @ d40"]["depth"] == 40 and len(e["tests"]["tg4 @ d40"]["tps"]) == 2
    ours = data["engines"][1]
    assert ours["tests"]["tg4 @ d40"]["kv_bytes_read_per_token"] == 40 * data["config"]["kv_bytes_per_token"]
    assert ours["tests"]["tg4 @ d40"]["ratio_vs_llama_cpp"] > 0
    r = run("bench", tiny_path, "--no-llama", "--depth", "0,-5")
    assert r.returncode != 0 and r.stderr.startswith("error: ")


@pytest.mark.real
def test_smollm2_chat_and_inspect(smollm2_path):
    # (plain "What is the capital of France?" is a near-tie: llama.cpp's greedy answer starts "L'Étoile")
    r = ok(run("chat", smollm2_path, "-p", "What is the capital of France? Answer in one word.", "--temp", "0",
               "-n", "48"))
    assert "Paris" in r.stdout, r.stdout
    r = ok(run("inspect", smollm2_path))
    assert "pre: smollm" in r.stdout and "Q4_1" in r.stdout and "vocabulary: 49152 tokens" in r.stdout


def test_inspect_prosparse_file(tmp_path):
    from support.gguf_files import write_tiny_llama

    path = write_tiny_llama(tmp_path / "ps.gguf", activation="relu", predictor_rank=8)
    out = ok(run("inspect", path)).stdout
    for needle in ("architecture: prosparse", "prosparse.ffn.activation: 'relu'", "ffn_down_t tensors: 2",
                   "predictor rank: 8", "layer   1: mean activation frequency", "activation relu, predictor rank 8"):
        assert needle in out, needle


def test_chat_history_is_trimmed_to_the_context(successor_path):
    r = ok(run("chat", successor_path, "--temp", "0", "--ctx", "64", "-n", "8", stdin="hi\n" * 6))
    assert r.stdout == "A😀BC\n" * 6
    assert "dropped the oldest turn" in r.stderr


def test_chat_message_longer_than_context(successor_path):
    r = run("chat", successor_path, "--temp", "0", "--ctx", "32", "-n", "4", "-p", "word " * 40)
    assert r.returncode != 0 and r.stderr.startswith("error: ") and "context" in r.stderr


def test_bytes_per_token_by_mode(tmp_path):
    from support.gguf_files import write_tiny_llama
    from prosparse_cpu.bench import bytes_per_token, weight_bytes

    path = write_tiny_llama(tmp_path / "p.gguf", activation="relu", predictor_rank=8)
    w = weight_bytes(str(path))
    e, f, kv, r, v = 32, 64, 16, 8, 265  # n_embd, n_ff, kv dim, rank, vocab; all F32
    assert w["attn"] == 2 * 4 * (e * e + 2 * kv * e + e * e)
    assert (w["gate"], w["up"], w["down"]) == (2 * 4 * f * e,) * 3
    assert w["pred"] == 2 * 4 * (r * e + f * r) and w["output"] == 4 * v * e and w["embd_row"] == 4 * e
    fixed = w["attn"] + w["output"] + w["embd_row"] + w["norms"]
    c = {"sparsity": 0.75, "predicted_share": 0.5}
    assert bytes_per_token(w, "dense", None) == fixed + 3 * w["gate"]
    assert bytes_per_token(w, "sparse", c) == fixed + w["gate"] + 0.25 * 2 * w["gate"]
    assert bytes_per_token(w, "predict", c) == fixed + w["pred"] + 0.5 * 2 * w["gate"] + 0.25 * w["gate"]
    assert bytes_per_token(w, "threshold", c) == fixed + w["gate"] + 0.5 * 2 * w["gate"]
    assert bytes_per_token(w, "sparse", None) is None
    # ffn_down_t is read by rows with a non-zero input even in dense mode; a plain ffn_down whole
    assert w["down_t"] == w["down"]
    assert bytes_per_token(w, "dense", c) == fixed + 2 * w["gate"] + 0.25 * w["gate"]
    plain = w | {"down_t": 0}
    assert bytes_per_token(plain, "dense", c) == fixed + 3 * w["gate"]
    assert bytes_per_token(plain, "sparse", c) == fixed + w["gate"] + 0.25 * w["gate"] + w["gate"]


def test_perplexity_command(tiny_path, tmp_path):
    text = tmp_path / "t.txt"
    text.write_text("The quick brown fox jumps over the lazy dog. " * 40)
    js = tmp_path / "p.json"
    r = ok(run("perplexity", tiny_path, text, "--ctx", "64", "--chunks", "3", "--json", js))
    assert r.stdout.startswith("PPL = ") and "3 windows of 64" in r.stdout
    data = json.loads(js.read_text())
    assert data["n_windows"] == 3 and data["ppl"] > 1 and len(data["chunk_ppl"]) == 3
    short = tmp_path / "s.txt"
    short.write_text("too short")
    r = run("perplexity", tiny_path, short, "--ctx", "64")
    assert r.returncode != 0 and r.stderr.startswith("error: ") and len(r.stderr.strip().splitlines()) == 1
