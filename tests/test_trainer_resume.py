"""SIGKILL a training run mid-way, resume it, and get the uninterrupted loss curve."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from support.hf_models import make_tiny_model_dir
from support.trainer_runs import write_config, write_corpus

TOTAL = 40


def read_log(path):
    return [json.loads(l) for l in open(path) if l.strip()]


def train_cmd(cfg, *extra):
    return [sys.executable, "-m", "prosparse_cpu.trainer.cli", "train", str(cfg), *extra]


@pytest.mark.slow
def test_sigkill_then_resume_matches_uninterrupted(tmp_path):
    model = make_tiny_model_dir(tmp_path / "model", hidden=64, n_ff=192, layers=2)
    data = write_corpus(tmp_path / "data", n_docs=60)
    stages = [[0.0, 5], [0.01, 10], [0.05, 30], [0.05, TOTAL]]
    common = dict(sparsity={"stages": stages}, train={"checkpoint_every": 5, "progress": False})
    ref_cfg = write_config(tmp_path / "ref.toml", model, data, tmp_path / "ref", **common)
    run_cfg = write_config(tmp_path / "run.toml", model, data, tmp_path / "run", **common)

    subprocess.run(train_cmd(ref_cfg), check=True, capture_output=True)
    ref = read_log(tmp_path / "ref" / "log.jsonl")
    assert [r["step"] for r in ref] == list(range(1, TOTAL + 1))

    # Start, wait until a checkpoint exists and a few steps past it are logged, then SIGKILL.
    proc = subprocess.Popen(train_cmd(run_cfg), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    log = tmp_path / "run" / "log.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline:
        if log.exists() and len(log.read_text().splitlines()) >= 12:
            break
        time.sleep(0.002)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    killed_at = len(read_log(log))
    assert 12 <= killed_at < TOTAL, f"the kill did not land mid-run (log has {killed_at} steps)"
    assert not (tmp_path / "run" / "final").exists()

    subprocess.run(train_cmd(run_cfg, "--resume"), check=True, capture_output=True)
    got = read_log(log)
    assert [r["step"] for r in got] == list(range(1, TOTAL + 1))
    for a, b in zip(ref, got):
        for key in ("loss", "lm_loss", "reg_loss", "lambda", "lr", "sparsity"):
            assert a[key] == pytest.approx(b[key], rel=1e-6, abs=1e-9), (a["step"], key, a[key], b[key])
    assert (tmp_path / "run" / "final" / "config.json").is_file()
