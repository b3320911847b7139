"""profile / predictors / plot: output shapes and the formats prosparse-convert reads."""
import json
import subprocess
import sys

import pytest
import torch
from safetensors import safe_open

from prosparse_cpu.trainer.cli import main
from prosparse_cpu.trainer.data import load_tokenizer
from prosparse_cpu.trainer.modeling import load_model, save_prosparse
from prosparse_cpu.trainer.predictors import train_layer
from prosparse_cpu.trainer.sparsify import sparsify
from support.hf_models import make_tiny_model_dir
from support.trainer_runs import write_config, write_corpus

N_FF, N_EMBD, LAYERS = 176, 64, 2


@pytest.fixture(scope="module")
def relu_model(tmp_path_factory):
    root = tmp_path_factory.mktemp("analysis")
    dense = make_tiny_model_dir(root / "dense", hidden=N_EMBD, n_ff=N_FF, layers=LAYERS)
    m, _, _ = load_model(str(dense))
    sparsify(m, "relu")
    save_prosparse(m, load_tokenizer(str(dense)), str(root / "relu"), "relu", 0.0)
    return dense, root / "relu", write_corpus(root / "data")


def test_profile_relu_writes_counts_in_both_layouts(relu_model, tmp_path, capsys):
    _, relu, data = relu_model
    out = tmp_path / "prof"
    assert main(["profile", str(relu), "--data", str(data), "-o", str(out), "--seq-len", "32",
                 "--max-tokens", "1024", "--search-tokens", "256", "--cett-tokens", "64"]) == 0
    prof = json.loads((out / "profile.json").read_text())
    assert prof["n_tokens"] == 1024 and len(prof["layer_sparsity"]) == LAYERS
    assert 0.2 < prof["sparsity"] < 0.8          # a random ReLU gate: about half the neurons are off
    with safe_open(str(out / "activation_stats.safetensors"), "pt") as f:
        assert f.metadata()["n_tokens"] == "1024"
        assert sorted(f.keys()) == [f"layers.{L}.counts" for L in range(LAYERS)]
        for L in range(LAYERS):
            c = f.get_tensor(f"layers.{L}.counts")
            assert c.shape == (N_FF,) and c.dtype == torch.int64 and 0 <= c.min() and c.max() <= 1024
            pt = torch.load(out / f"activation_{L}.pt")
            assert torch.equal(pt, c)
            # per-neuron counts and layer sparsity agree
            assert 1 - c.sum().item() / (1024 * N_FF) == pytest.approx(prof["layer_sparsity"][L], abs=1e-9)
    pp = prof["ppl_p"]
    assert pp["ppl"] <= pp["target_ppl"] == pytest.approx(pp["base_ppl"] * 1.01)
    assert pp["sparsity"] >= prof["sparsity"] - 1e-9   # truncation only adds zeros


def test_profile_silu_gets_ppl_p_sparsity(relu_model, tmp_path):
    dense, _, data = relu_model
    out = tmp_path / "prof"
    assert main(["profile", str(dense), "--data", str(data), "-o", str(out), "--seq-len", "32",
                 "--max-tokens", "512", "--search-tokens", "256", "--cett-tokens", "64"]) == 0
    prof = json.loads((out / "profile.json").read_text())
    assert prof["activation"] == "silu" and prof["sparsity"] < 0.01  # exact zeros only at the zero pad embedding
    assert prof["ppl_p"]["sparsity"] > 0.0


def test_predictors_formats_and_convert_reads_them(relu_model, tmp_path):
    _, relu, data = relu_model
    out = tmp_path / "pred"
    assert main(["predictors", str(relu), "--data", str(data), "-o", str(out), "--rank", "8",
                 "--tokens", "1024", "--seq-len", "32", "--epochs", "3"]) == 0
    summ = json.loads((out / "predictors.json").read_text())
    assert len(summ["layers"]) == LAYERS and summ["input"] == "residual"
    for r in summ["layers"]:
        assert 0 <= r["recall"] <= 1 and 0 <= r["predicted_sparsity"] <= 1 and 1 <= r["epoch"] <= 3
    with safe_open(str(out / "predictors.safetensors"), "pt") as f:
        meta = f.metadata()
        assert (meta["input"], meta["hidden_act"], float(meta["threshold"])) == ("residual", "relu", 0.0)
        for L in range(LAYERS):
            assert f.get_tensor(f"layers.{L}.fc1.weight").shape == (8, N_EMBD)
            assert f.get_tensor(f"layers.{L}.fc2.weight").shape == (N_FF, 8)
    for L in range(LAYERS):
        sd = torch.load(out / f"model_{L}.pt")
        assert set(sd) == {"fc1.weight", "fc2.weight"}
        assert sd["fc1.weight"].shape == (8, N_EMBD) and sd["fc2.weight"].shape == (N_FF, 8)
    # prosparse-convert accepts the trainer's outputs
    prof = tmp_path / "prof"
    assert main(["profile", str(relu), "--data", str(data), "-o", str(prof), "--seq-len", "32",
                 "--max-tokens", "256", "--no-cett"]) == 0
    r = subprocess.run([sys.executable, "-m", "prosparse_cpu.convert.cli", str(relu), "-o", str(tmp_path / "m.gguf"),
                        "--outtype", "f32", "--predictor", str(out), "--stats", str(prof)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-1500:]
    assert (tmp_path / "m.gguf").stat().st_size > 0


def test_predictor_training_learns_a_learnable_rule():
    torch.manual_seed(0)
    u = torch.randn(4000, 32)
    w = torch.randn(32, 48)
    y = (u @ w) > 4.0                       # ~23% active, a linear rule
    r = train_layer(u.half(), y, rank=32, hidden_act="none", threshold=0.0, epochs=10, lr=1e-2)
    # weighted BCE favours recall (positives weigh 1 - w ~ 0.77): nearly all actives found while
    # still skipping a good share of the inactive neurons
    assert r["recall"] > 0.95 and r["predicted_sparsity"] > 0.4
    assert r["true_sparsity"] == pytest.approx(1 - y.float().mean().item(), abs=0.03)


def test_plot(relu_model, tmp_path):
    dense, _, data = relu_model
    cfg = write_config(tmp_path / "c.toml", dense, data, tmp_path / "out", sparsity={"stages": [[0.0, 1], [0.1, 3]]})
    assert main(["train", str(cfg)]) == 0
    assert main(["plot", str(tmp_path / "out" / "log.jsonl"), "-o", str(tmp_path / "p.png")]) == 0
    assert (tmp_path / "p.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert main(["plot", str(tmp_path / "missing.jsonl"), "-o", str(tmp_path / "q.png")]) == 2
    assert not (tmp_path / "q.png").exists()
