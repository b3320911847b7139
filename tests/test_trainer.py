"""Trainer: the lambda schedule against PAPER.md, the paper configs, bad inputs, output format."""
import json
import math

import pytest

from prosparse_cpu.trainer import config as C
from prosparse_cpu.trainer.cli import main
from prosparse_cpu.trainer.schedule import lambda_at, lr_at, stage_table
from support.hf_models import make_tiny_model_dir
from support.trainer_runs import write_config, write_corpus


def paper_lambda(t, stages):
    """PAPER.md restated independently: stage 0 is 0, stage 1 constant, then half sines."""
    T = [e for _, e in stages]
    lam = [l for l, _ in stages]
    if t <= T[0]:
        return 0.0
    if t <= T[1]:
        return lam[1]
    for i in range(2, len(T)):
        if T[i - 1] < t <= T[i]:
            eta = 0.5 * (math.sin(-math.pi / 2 + math.pi * (t - T[i - 1]) / (T[i] - T[i - 1])) + 1)
            return lam[i - 1] + eta * (lam[i] - lam[i - 1])
    return lam[-1]


PAPER = {
    "paper_llama2_7b": [(0, 5000), (5e-3, 6000), (5e-2, 10000), (5e-2, 12000), (2e-1, 16000), (2e-1, 16500)],
    "paper_llama2_13b": [(0, 5500), (5e-3, 6750), (1e-2, 10750), (1e-2, 11000), (2e-2, 15000), (2e-2, 16000)],
    "paper_minicpm_1b": [(0, 10000), (1e-3, 15000), (5e-3, 20000), (5e-3, 25000), (5e-2, 35000)],
}
PAPER_LR = {"paper_llama2_7b": 3e-5, "paper_llama2_13b": 5e-5}


@pytest.mark.parametrize("name", sorted(PAPER))
def test_paper_configs_reproduce_the_stage_table(name):
    cfg = C.load(C.resolve(name))
    assert [tuple(s) for s in cfg.sparsity.stages] == [(float(l), e) for l, e in PAPER[name]]
    assert cfg.model.activation == "relu" and cfg.data.seq_len == 4096
    if name in PAPER_LR:
        assert cfg.optim.lr == PAPER_LR[name]
    for t in range(1, cfg.total_steps + 1):
        assert lambda_at(t, cfg.sparsity.stages) == pytest.approx(paper_lambda(t, PAPER[name]), abs=1e-15)
    kinds = [r["kind"] for r in stage_table(cfg.sparsity.stages)]
    assert kinds[:2] == ["substitution (lambda 0)", "warm-up (constant)"]


def test_schedule_shape():
    st = [[0.0, 10], [0.1, 20], [0.5, 40], [0.5, 50]]
    assert lambda_at(10, st) == 0 and lambda_at(11, st) == 0.1 and lambda_at(20, st) == 0.1
    assert lambda_at(30, st) == pytest.approx(0.3)          # half way up the half sine
    assert lambda_at(40, st) == pytest.approx(0.5) and lambda_at(45, st) == 0.5 and lambda_at(99, st) == 0.5
    assert lr_at(5, 1.0, 0.0, 10, 100) == 0.5 and lr_at(10, 1.0, 0.0, 10, 100) == 1.0
    assert lr_at(55, 1.0, 0.1, 10, 100) == pytest.approx(0.55) and lr_at(100, 1.0, 0.1, 10, 100) == pytest.approx(0.1)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    return make_tiny_model_dir(root / "model"), write_corpus(root / "data")


def test_log_lambda_equals_paper_formula_and_output_format(tiny, tmp_path):
    model, data = tiny
    stages = [[0.0, 3], [0.02, 5], [0.2, 9], [0.2, 10], [0.5, 13], [0.5, 14]]
    cfg = write_config(tmp_path / "c.toml", model, data, tmp_path / "out",
                       sparsity={"stages": stages}, fatrelu={"threshold": 0.01})
    assert main(["train", str(cfg)]) == 0
    log = [json.loads(l) for l in open(tmp_path / "out" / "log.jsonl")]
    assert [r["step"] for r in log] == list(range(1, 15))
    for r in log:
        assert r["lambda"] == pytest.approx(paper_lambda(r["step"], stages), abs=1e-15)
        for key in ("lr", "loss", "lm_loss", "reg_loss", "sparsity", "tokens_per_s"):
            assert isinstance(r[key], float)
        assert len(r["layer_sparsity"]) == 2 and 0 <= r["sparsity"] <= 1
        assert r["loss"] == pytest.approx(r["lm_loss"] + r["lambda"] * r["reg_loss"], rel=1e-5)
    final = tmp_path / "out" / "final"
    conf = json.loads((final / "config.json").read_text())
    assert conf["hidden_act"] == "fatrelu" and conf["hidden_act_param"] == 0.01
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    # FATReLU can only zero more neurons than ReLU
    assert summary["eval_fatrelu"]["sparsity"] >= summary["eval_end"]["sparsity"]
    assert summary["eval_end"]["ppl"] < summary["eval_start"]["ppl"]
    # the SiLU original, measured before the swap, has (almost) no exact zeros
    assert summary["eval_original"]["sparsity"] < 0.02 < summary["eval_start"]["sparsity"]


def test_loader_rebuilds_fatrelu_and_drelu(tiny, tmp_path):
    import torch
    from prosparse_cpu.trainer.modeling import load_model, save_prosparse
    from prosparse_cpu.trainer.sparsify import SparseMLP, sparsify
    from prosparse_cpu.trainer.data import load_tokenizer

    model_dir, _ = tiny
    for kind, t in (("drelu", 0.0), ("relu", 0.05), ("relu2", 0.0)):
        m, _, _ = load_model(str(model_dir))
        sparsify(m, kind, t)
        if t:
            for mlp in m.model.layers:
                mlp.mlp.set_activation("fatrelu", t)
        out = save_prosparse(m, load_tokenizer(str(model_dir)), str(tmp_path / kind), kind, t)
        m2, kind2, t2 = load_model(str(out))
        assert kind2 == ("fatrelu" if t else kind) and t2 == t
        assert all(isinstance(l.mlp, SparseMLP) for l in m2.model.layers)
        x = torch.randint(0, 200, (1, 16))
        with torch.no_grad():
            assert torch.allclose(m(input_ids=x).logits, m2(input_ids=x).logits, atol=1e-5)
    # relu2 is in stock transformers' ACT2FN: it loads without any help
    from transformers import AutoModelForCausalLM
    stock = AutoModelForCausalLM.from_pretrained(str(tmp_path / "relu2"))
    with torch.no_grad():
        assert torch.allclose(stock(input_ids=x).logits, m2(input_ids=x).logits, atol=1e-5)


def test_kd_and_grad_checkpointing_run(tiny, tmp_path):
    model, data = tiny
    cfg = write_config(tmp_path / "c.toml", model, data, tmp_path / "out", kd={"weight": 0.5, "temperature": 2.0},
                       model={"path": str(model), "activation": "drelu", "gradient_checkpointing": True},
                       sparsity={"stages": [[0.0, 1], [0.01, 3]]})
    assert main(["train", str(cfg)]) == 0
    log = [json.loads(l) for l in open(tmp_path / "out" / "log.jsonl")]
    assert all(r["kd_loss"] > 0 for r in log)
    r = log[-1]
    assert r["loss"] == pytest.approx(0.5 * r["lm_loss"] + 0.5 * r["kd_loss"] + r["lambda"] * r["reg_loss"], rel=1e-5)
    assert json.loads((tmp_path / "out" / "final" / "config.json").read_text())["hidden_act"] == "drelu"


# ---------------------------------------------------------------- bad input: a clear error before training

def bad_run(capsys, tmp_path, cfg_path):
    code = main(["train", str(cfg_path)])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1 and err.startswith("prosparse-train: error:"), err
    assert "Traceback" not in err
    assert not (tmp_path / "out" / "log.jsonl").exists()
    assert not (tmp_path / "out" / "checkpoints").exists()
    return err


@pytest.mark.parametrize("override,needle", [
    ({"sparsity": {"stages": [[0.0, 10], [0.01, 5]]}}, "end steps must increase"),
    ({"sparsity": {"stages": [[0.0, 10], [0.01, 10]]}}, "end steps must increase"),
    ({"sparsity": {"stages": [[0.0, 10], [-0.01, 20]]}}, "must not be negative"),
    ({"sparsity": {"stages": [[0.1, 10]]}}, "stage 0"),
    ({"sparsity": {"stages": [[0.0, 10]], "bogus": 1}}, "unknown config key 'sparsity.bogus'"),
    ({"optimizer": {"lr": 1e-3}}, "unknown config section"),
    ({"model": {"activation": "gelu"}}, "unknown activation 'gelu'"),
    ({"sparsity": {"stages": [[0.0, 2], [0.01, 4]], "norm": "l2"}}, "unknown sparsity.norm"),
])
def test_bad_config(capsys, tmp_path, tiny, override, needle):
    model, data = tiny
    cfg = write_config(tmp_path / "c.toml", model, data, tmp_path / "out", **override)
    assert needle in bad_run(capsys, tmp_path, cfg)


def test_unknown_architecture(capsys, tmp_path, tiny):
    model, data = tiny
    other = tmp_path / "gpt2"
    other.mkdir()
    conf = json.loads((model / "config.json").read_text())
    conf.update(model_type="gpt2", architectures=["GPT2LMHeadModel"])
    (other / "config.json").write_text(json.dumps(conf))
    cfg = write_config(tmp_path / "c.toml", other, data, tmp_path / "out")
    assert "unknown architecture 'gpt2'" in bad_run(capsys, tmp_path, cfg)


def test_missing_model(capsys, tmp_path, tiny):
    _, data = tiny
    cfg = write_config(tmp_path / "c.toml", tmp_path / "nope", data, tmp_path / "out")
    assert "model not found" in bad_run(capsys, tmp_path, cfg)


def test_empty_data(capsys, tmp_path, tiny):
    model, _ = tiny
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "a.txt").write_text("  \n\n")
    cfg = write_config(tmp_path / "c.toml", model, tmp_path / "empty", tmp_path / "out")
    assert "is empty" in bad_run(capsys, tmp_path, cfg)
    (tmp_path / "none").mkdir()
    cfg = write_config(tmp_path / "c.toml", model, tmp_path / "none", tmp_path / "out")
    assert "no data files" in bad_run(capsys, tmp_path, cfg)


def test_too_short_data(capsys, tmp_path, tiny):
    model, _ = tiny
    (tmp_path / "short.txt").write_text("the model is sparse. " * 4)
    cfg = write_config(tmp_path / "c.toml", model, tmp_path / "short.txt", tmp_path / "out")
    assert "data too short" in bad_run(capsys, tmp_path, cfg)


def test_bad_jsonl(capsys, tmp_path, tiny):
    model, _ = tiny
    (tmp_path / "d.jsonl").write_text('{"text": "fine"}\n{"foo": 1}\n')
    cfg = write_config(tmp_path / "c.toml", model, tmp_path / "d.jsonl", tmp_path / "out")
    assert "d.jsonl:2" in bad_run(capsys, tmp_path, cfg)


def test_jsonl_chat_messages_use_the_template(tiny):
    from prosparse_cpu.trainer.data import load_tokenizer, read_documents
    from pathlib import Path
    import tempfile

    model, _ = tiny
    tok = load_tokenizer(str(model))
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "chat.jsonl"
        p.write_text(json.dumps({"messages": [{"role": "user", "content": "hi"},
                                              {"role": "assistant", "content": "hello"}]}) + "\n"
                     + json.dumps({"text": "plain"}) + "\n")
        docs = list(read_documents([p], tok))
    assert docs == ["<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\nhello<|im_end|>\n", "plain"]


def test_activation_checkpointing_gives_the_same_curve(tiny, tmp_path):
    model, data = tiny
    logs = []
    for gc in (False, True):
        out = tmp_path / f"gc{gc}"
        cfg = write_config(tmp_path / "c.toml", model, data, out,
                           model={"path": str(model), "activation": "relu", "gradient_checkpointing": gc},
                           sparsity={"stages": [[0.0, 1], [0.5, 6]]})
        assert main(["train", str(cfg)]) == 0
        logs.append([json.loads(l) for l in open(out / "log.jsonl")])
    for a, b in zip(*logs):
        for key in ("loss", "reg_loss", "sparsity", "grad_norm"):
            assert a[key] == pytest.approx(b[key], rel=1e-5), (a["step"], key)
