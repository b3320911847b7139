"""Bad input to prosparse-convert: one clear line on stderr, exit status 1 (130 on
Ctrl-C), no traceback, and no file left behind (not even the temporary one).
"""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file, save_file

from prosparse_cpu.convert.cli import main
from support.hf_models import hf_folder, make_hf_model
from support.predictors import powerinfer_dirs


def run_bad(args, out_dir, expect):
    before = sorted(p.name for p in out_dir.iterdir())
    r = CliRunner().invoke(main, [str(a) for a in args])
    assert r.exit_code == 1, (r.exit_code, r.output, r.exception)
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("prosparse-convert: error: "), r.stderr
    assert expect in lines[0], lines[0]
    assert "Traceback" not in r.output
    assert sorted(p.name for p in out_dir.iterdir()) == before, "a file was left behind"
    return lines[0]


@pytest.fixture
def model(tmp_path, tokenizers_dir):
    hf_folder(tmp_path / "hf", tokenizers_dir, "llama", "relu", shard=None)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    return tmp_path / "hf", out_dir


def edit_weights(hf, fn):
    sd = load_file(str(hf / "model.safetensors"))
    fn(sd)
    save_file(sd, str(hf / "model.safetensors"))


def edit_config(hf, **kv):
    cfg = json.loads((hf / "config.json").read_text())
    for k, v in kv.items():
        if v is None:
            cfg.pop(k, None)
        else:
            cfg[k] = v
    (hf / "config.json").write_text(json.dumps(cfg))


def test_missing_tensor(model):
    hf, out = model
    edit_weights(hf, lambda sd: sd.pop("model.layers.1.mlp.up_proj.weight"))
    run_bad([hf, "-o", out / "m.gguf"], out, "missing tensor blk.1.ffn_up.weight")


def test_extra_tensor(model):
    hf, out = model
    edit_weights(hf, lambda sd: sd.__setitem__("model.layers.0.mlp.extra_proj.weight", torch.zeros(4, 4)))
    run_bad([hf, "-o", out / "m.gguf"], out, "unexpected tensor model.layers.0.mlp.extra_proj.weight")


def test_wrong_shape(model):
    hf, out = model
    edit_weights(hf, lambda sd: sd.__setitem__("model.layers.0.mlp.gate_proj.weight", torch.zeros(127, 64)))
    run_bad([hf, "-o", out / "m.gguf"], out, "blk.0.ffn_gate.weight has shape [127, 64], expected [128, 64]")


def test_unsupported_architecture(model):
    hf, out = model
    edit_config(hf, architectures=["GPT2LMHeadModel"])
    run_bad([hf, "-o", out / "m.gguf"], out, "unsupported architecture")


@pytest.mark.parametrize("act,param,expect", [("gelu", None, "unsupported activation hidden_act='gelu'"),
                                              ("fatrelu", None, "hidden_act_param"),
                                              ("fatrelu", "abc", "hidden_act_param")])
def test_unsupported_activation(model, act, param, expect):
    hf, out = model
    edit_config(hf, hidden_act=act, hidden_act_param=param)
    run_bad([hf, "-o", out / "m.gguf"], out, expect)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_nan_inf_weights(model, bad):
    """Found while streaming (late in the file): the partial temporary file is removed."""
    hf, out = model

    def poison(sd):
        sd["model.layers.1.mlp.down_proj.weight"][3, 5] = float(bad)
    edit_weights(hf, poison)
    run_bad([hf, "-o", out / "m.gguf", "--outtype", "q8_0"], out,
            "tensor model.layers.1.mlp.down_proj.weight contains NaN or Inf values")


def test_vocab_size_mismatch_config_vs_embedding(model):
    hf, out = model
    cfg = json.loads((hf / "config.json").read_text())
    edit_config(hf, vocab_size=cfg["vocab_size"] + 8)
    run_bad([hf, "-o", out / "m.gguf"], out, "token_embd.weight has shape")


def test_vocab_size_mismatch_tokenizer_vs_embedding(tmp_path, tokenizers_dir):
    src, n = tokenizers_dir["bpe"]
    import shutil
    shutil.copytree(src, tmp_path / "hf")
    make_hf_model(tmp_path / "hf", "llama", "relu", n - 10, shard=None)
    (tmp_path / "out").mkdir()
    run_bad([tmp_path / "hf", "-o", tmp_path / "out" / "m.gguf"], tmp_path / "out",
            f"vocabulary size mismatch: the tokenizer has {n} tokens, the model's embedding has {n - 10} rows")


def test_unreadable_predictor(model, tmp_path):
    hf, out = model
    pred, _ = powerinfer_dirs(tmp_path)
    (pred / "model_1.pt").write_bytes(b"not a torch file")
    run_bad([hf, "-o", out / "m.gguf", "--predictor", pred], out, "model_1.pt: unreadable")


def test_mismatched_predictor(model, tmp_path):
    hf, out = model
    pred, _ = powerinfer_dirs(tmp_path)
    torch.save({"fc1.weight": torch.zeros(16, 32), "fc2.weight": torch.zeros(128, 16)}, pred / "model_0.pt")
    run_bad([hf, "-o", out / "m.gguf", "--predictor", pred], out, "do not fit the model")


def test_predictor_missing_layer_and_bad_stats(model, tmp_path):
    hf, out = model
    pred, stats = powerinfer_dirs(tmp_path)
    (pred / "model_1.pt").unlink()
    run_bad([hf, "-o", out / "m.gguf", "--predictor", pred], out, "model_1.pt is missing")
    torch.save(torch.ones(100), stats / "activation_1.pt")
    run_bad([hf, "-o", out / "m.gguf", "--stats", stats], out, "layer 1 counts have shape [100], expected [128]")
    run_bad([hf, "-o", out / "m.gguf", "--predictor", tmp_path / "nowhere"], out, "not a directory")


def test_unwritable_output(model, tmp_path):
    hf, out = model
    run_bad([hf, "-o", out / "no-such-dir" / "m.gguf"], out, "cannot write")
    run_bad([hf, "-o", out], out, "it is a directory")


def test_bad_sources(tmp_path, model):
    hf, out = model
    run_bad([tmp_path / "nothing-here", "-o", out / "m.gguf"], out, "no such file or folder")
    empty = tmp_path / "empty"
    empty.mkdir()
    run_bad([empty, "-o", out / "m.gguf"], out, "no config.json")
    (hf / "model.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{broken}")
    run_bad([hf, "-o", out / "m.gguf"], out, "unreadable weights")


def test_conflicting_options(model, tmp_path):
    hf, out = model
    pred, _ = powerinfer_dirs(tmp_path)
    run_bad([hf, "-o", out / "m.gguf", "--llama-compat", "--predictor", pred], out, "--llama-compat")


def test_keyboard_interrupt_leaves_nothing(model, monkeypatch):
    hf, out = model
    import gguf
    calls = {"n": 0}
    real = gguf.quants.quantize

    def interrupted(*a, **kw):
        calls["n"] += 1
        if calls["n"] == 6:
            raise KeyboardInterrupt
        return real(*a, **kw)
    monkeypatch.setattr(gguf.quants, "quantize", interrupted)
    r = CliRunner().invoke(main, [str(hf), "-o", str(out / "m.gguf"), "--no-progress"])
    assert r.exit_code == 130 and "interrupted" in r.stderr
    assert calls["n"] == 6
    assert list(out.iterdir()) == []


def test_console_script_exit_status(model):
    """The real entry point: status 1, one line, no traceback."""
    hf, out = model
    edit_config(hf, hidden_act="gelu")
    p = subprocess.run([sys.executable, "-m", "prosparse_cpu.convert.cli", str(hf), "-o", str(out / "m.gguf")],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 1
    assert p.stderr.strip().count("\n") == 0 and "unsupported activation" in p.stderr
    assert list(out.iterdir()) == []


def test_nan_in_gguf_input(model):
    """A GGUF source is checked too, also on the byte-copy path (the type stays)."""
    import gguf
    hf, out = model
    src_dir = out.parent / "src"
    src_dir.mkdir()
    edit_config(hf, hidden_act="silu")
    src = src_dir / "llama.gguf"
    assert CliRunner().invoke(main, [str(hf), "-o", str(src), "--outtype", "f32"]).exit_code == 0
    r = gguf.GGUFReader(str(src), "r+")
    t = next(t for t in r.tensors if t.name == "blk.1.attn_v.weight")
    t.data[2, 3] = np.inf
    r.data.flush()
    del r, t
    run_bad([src, "-o", out / "same-type.gguf"], out, "tensor blk.1.attn_v.weight contains NaN or Inf values")
    run_bad([src, "-o", out / "q8.gguf", "--outtype", "q8_0"], out,
            "tensor blk.1.attn_v.weight contains NaN or Inf values")


@pytest.mark.parametrize("sig", ["SIGTERM", "SIGINT"])
def test_signal_leaves_nothing(tmp_path, tokenizers_dir, sig):
    """`kill` or Ctrl-C during a conversion: the temporary file is removed, status 130."""
    import signal
    import time
    hf_folder(tmp_path / "hf", tokenizers_dir, "llama", "relu", shard="4MB", hidden_size=256,
              intermediate_size=1024, num_hidden_layers=12, num_attention_heads=8, num_key_value_heads=4)
    out = tmp_path / "out"
    out.mkdir()
    for attempt in range(3):   # on a loaded machine the poll may miss the window: try again
        for f in out.iterdir():
            f.unlink()
        p = subprocess.Popen([sys.executable, "-m", "prosparse_cpu.convert.cli", str(tmp_path / "hf"), "-o",
                              str(out / "m.gguf"), "--outtype", "q4_0"], stderr=subprocess.PIPE, text=True)
        deadline = time.time() + 120
        while not any(f.name.endswith(".part") for f in out.iterdir()) and p.poll() is None \
                and time.time() < deadline:
            time.sleep(0.01)
        if p.poll() is not None:
            p.communicate()
            continue
        p.send_signal(getattr(signal, sig))
        err = p.communicate(timeout=60)[1]
        if [f.name for f in out.iterdir()] == ["m.gguf"]:   # the signal came after the rename
            continue
        assert p.returncode == 130 and "interrupted" in err, err
        assert list(out.iterdir()) == []
        return
    pytest.fail("the conversion always ended before it could be interrupted")


def test_truncated_shard(model):
    """Damage found only when the tensor is read (the header is intact)."""
    hf, out = model
    data = (hf / "model.safetensors").read_bytes()
    (hf / "model.safetensors").write_bytes(data[: len(data) - 1000])
    msg = run_bad([hf, "-o", out / "m.gguf"], out, "model.safetensors")
    assert "unreadable weights" in msg or "cannot read tensor" in msg
