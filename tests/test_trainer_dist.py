"""2 processes (gloo DDP) and 1 process with the same global batch give the same loss curve."""
import json
import socket
import subprocess
import sys

import pytest

from support.hf_models import make_tiny_model_dir
from support.trainer_runs import write_config, write_corpus


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def read_log(path):
    return [json.loads(l) for l in open(path) if l.strip()]


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_gloo_two_processes_match_one(tmp_path, strategy):
    model = make_tiny_model_dir(tmp_path / "model")
    data = write_corpus(tmp_path / "data")
    one = write_config(tmp_path / "one.toml", model, data, tmp_path / "one",
                       optim={"micro_batch": 2, "grad_accum": 4})
    two = write_config(tmp_path / "two.toml", model, data, tmp_path / "two",
                       optim={"micro_batch": 2, "grad_accum": 2}, train={"strategy": strategy, "progress": False})
    cli = ["-m", "prosparse_cpu.trainer.cli", "train"]
    subprocess.run([sys.executable, *cli, str(one)], check=True, capture_output=True)
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
                        f"--master_port={free_port()}", *cli, str(two)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-4000:]   # the whole tail: the first failing rank's own message
    a, b = read_log(tmp_path / "one" / "log.jsonl"), read_log(tmp_path / "two" / "log.jsonl")
    assert len(a) == len(b) == 10
    summary = json.loads((tmp_path / "two" / "summary.json").read_text())
    assert summary["world"] == 2 and summary["global_batch"] == 8 and summary["strategy"] == strategy
    for x, y in zip(a, b):
        assert x["lambda"] == y["lambda"] and x["lr"] == y["lr"]
        for key in ("loss", "lm_loss", "reg_loss", "sparsity"):
            assert x[key] == pytest.approx(y[key], rel=1e-4), (x["step"], key)
    assert json.loads((tmp_path / "two" / "final" / "config.json").read_text())["hidden_act"] == "relu"
    # and the loss actually moved, so the comparison is not between two flat lines
    assert a[-1]["lm_loss"] < a[0]["lm_loss"] - 0.1
