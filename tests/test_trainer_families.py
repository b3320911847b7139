"""prosparse-train on the newer SiLU-gated families: LLaMA 3.x (llama3 RoPE
scaling), Qwen2/2.5 (attention biases) and Qwen3 (per-head q/k norms).

Each family is a tiny random model built by transformers itself with the byte
tokenizer. A short run must follow the paper's lambda schedule, push the
L1 term of x1 down and the share of exact zeros up once lambda is on, keep
every state-dict name of the original checkpoint, and save a folder that
stock transformers reloads with the logits the trained model had in memory.
Gemma 3 (a GeGLU FFN) is refused with one clear line.
"""
import json

import pytest
import torch

from prosparse_cpu.trainer import loop
from prosparse_cpu.trainer.cli import main
from prosparse_cpu.trainer.schedule import lambda_at
from support.trainer_runs import write_config, write_corpus
from support.vocab import byte_tokenizer

# HF's initialisation keeps |x1| near 0.015, so lambda must be large for the L1 term
# to move it within ten steps at all; the schedule's shape is the paper's.
STAGES = [[0.0, 2], [2.0, 4], [20.0, 8], [20.0, 10]]


def tiny_family(family: str, vocab_size: int, eos: int):
    """A 2-layer random float32 causal LM of `family`, HF's own initialisation."""
    # the small Qwen2.5 / Qwen3 checkpoints tie the output to the embedding
    common = dict(vocab_size=vocab_size, hidden_size=64, intermediate_size=176, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                  hidden_act="silu", tie_word_embeddings=family.startswith("qwen"), bos_token_id=eos,
                  eos_token_id=eos, pad_token_id=eos)
    torch.manual_seed(0)
    if family == "llama":   # LLaMA-2 style: the reference the other families are held to
        from transformers import LlamaConfig, LlamaForCausalLM
        return LlamaForCausalLM(LlamaConfig(**common))
    if family == "llama3":
        from transformers import LlamaConfig, LlamaForCausalLM
        # original context 32 < seq_len, so the low/high-frequency rescaling is in play
        rope = {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0, "low_freq_factor": 1.0,
                "high_freq_factor": 4.0, "original_max_position_embeddings": 32}
        return LlamaForCausalLM(LlamaConfig(**common, rope_parameters=rope))
    if family == "qwen2":
        from transformers import Qwen2Config, Qwen2ForCausalLM
        return Qwen2ForCausalLM(Qwen2Config(**common, rope_parameters={"rope_type": "default",
                                                                        "rope_theta": 1000000.0}))
    from transformers import Qwen3Config, Qwen3ForCausalLM
    return Qwen3ForCausalLM(Qwen3Config(**common, head_dim=16,
                                        rope_parameters={"rope_type": "default", "rope_theta": 1000000.0}))


def model_dir(path, family: str):
    tok = byte_tokenizer()
    model = tiny_family(family, len(tok), tok.eos_token_id)
    model.save_pretrained(str(path))
    tok.save_pretrained(str(path))
    return path


def tensor_names(folder):
    from safetensors import safe_open
    names = set()
    for f in sorted(folder.glob("*.safetensors")):
        with safe_open(str(f), "pt") as h:
            names |= set(h.keys())
    return names


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return write_corpus(tmp_path_factory.mktemp("families") / "data")


@pytest.mark.parametrize("family", ["llama", "llama3", "qwen2", "qwen3"])
def test_family_trains_sparser_and_reloads(family, corpus, tmp_path, monkeypatch):
    from transformers import AutoModelForCausalLM

    src = model_dir(tmp_path / "model", family)
    # the trained model as it is in memory when the run saves it, on a fixed input
    probe = torch.randint(0, 256, (2, 40), generator=torch.Generator().manual_seed(1))
    seen = {}
    save = loop.save_prosparse

    def capture(model, *args, **kw):
        model.eval()
        with torch.no_grad():
            seen["logits"] = model(input_ids=probe).logits.clone()
        return save(model, *args, **kw)

    monkeypatch.setattr(loop, "save_prosparse", capture)
    cfg = write_config(tmp_path / "c.toml", src, corpus, tmp_path / "out", sparsity={"stages": STAGES})
    assert main(["train", str(cfg)]) == 0

    log = [json.loads(line) for line in open(tmp_path / "out" / "log.jsonl")]
    assert [r["step"] for r in log] == list(range(1, 11))
    assert [r["lambda"] for r in log] == [lambda_at(r["step"], STAGES) for r in log]
    before, after = log[STAGES[0][1] - 1], log[-1]      # the last lambda-0 step, the last step
    print(f"{family}: reg_loss {before['reg_loss']:.4f} -> {after['reg_loss']:.4f}, "
          f"sparsity {before['sparsity']:.3f} -> {after['sparsity']:.3f}")
    assert after["reg_loss"] < 0.8 * before["reg_loss"]
    assert after["sparsity"] > before["sparsity"] + 0.05
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["eval_end"]["sparsity"] > summary["eval_start"]["sparsity"]
    assert summary["eval_original"]["sparsity"] < 0.02   # the SiLU original has no exact zeros

    final = tmp_path / "out" / "final"
    assert tensor_names(final) == tensor_names(src)
    conf, orig = (json.loads((d / "config.json").read_text()) for d in (final, src))
    assert conf["model_type"] == orig["model_type"] and conf["hidden_act"] == "relu"
    assert conf["tie_word_embeddings"] == orig["tie_word_embeddings"] == family.startswith("qwen")
    assert conf.get("rope_parameters") == orig.get("rope_parameters")
    stock = AutoModelForCausalLM.from_pretrained(str(final)).eval()
    with torch.no_grad():
        reloaded = stock(input_ids=probe).logits
    assert torch.allclose(reloaded, seen["logits"], rtol=1e-5, atol=1e-5)


def test_gemma3_is_refused(capsys, corpus, tmp_path):
    from transformers import Gemma3TextConfig

    src = tmp_path / "gemma3"
    Gemma3TextConfig(vocab_size=300, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                     num_attention_heads=4, num_key_value_heads=1, head_dim=16).save_pretrained(str(src))
    byte_tokenizer().save_pretrained(str(src))
    cfg = write_config(tmp_path / "c.toml", src, corpus, tmp_path / "out")
    assert main(["train", str(cfg)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("prosparse-train: error:"), err
    assert "gemma3_text" in err and "GeGLU" in err
    assert not (tmp_path / "out" / "log.jsonl").exists()
