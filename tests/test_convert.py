"""prosparse-convert round trips on tiny random Hugging Face models.

For each architecture x activation: HF folder -> GGUF F32 -> logits match an
independent PyTorch float64 reference to <= 1e-4 relative (read back with
gguf-py + numpy, and through our engine when it is built); Q8_0 top-1
agreement >= 99% on random token sequences; sharded safetensors and .bin.
"""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from prosparse_cpu.convert.cli import convert
from prosparse_cpu.convert.reference import GGUFModel, gguf_logits
from support.compare import engine_logits, random_sequences, rel_err, top1_agreement
from support.hf_models import hf_folder, make_hf_model
from support.torch_reference import torch_logits

CASES = [(f, a) for f in ("llama", "mistral", "minicpm") for a in ("silu", "relu", "fatrelu", "relu2", "drelu")]


@pytest.mark.parametrize("family,act", CASES)
def test_f32_logits_match_pytorch(tmp_path, tokenizers_dir, family, act):
    tok = "spm" if family == "minicpm" else "bpe"
    n = hf_folder(tmp_path / "hf", tokenizers_dir, family, act, tok)
    out = tmp_path / "m.gguf"
    r = convert(tmp_path / "hf", out, "f32", progress=False)
    assert r["arch"] == ("llama" if act == "silu" and family != "minicpm" else "prosparse")
    m = GGUFModel(out)
    if r["arch"] == "prosparse":
        assert m.hp("ffn.activation") == act
        assert m.hp("ffn.activation_threshold") == pytest.approx(0.01 if act == "fatrelu" else 0.0)
        assert "blk.0.ffn_down_t.weight" in m.t and "blk.0.ffn_down.weight" not in m.t
        assert m.t["blk.0.ffn_down_t.weight"].shape.tolist() == [64, 128]   # ggml ne = [n_embd, n_ff]
        assert m.hp("ffn.reordered") is False
    if family == "minicpm":
        assert m.hp("embedding_scale") == pytest.approx(12.0)
        assert m.hp("residual_scale") == pytest.approx(1.4 / np.sqrt(2))
        assert m.hp("logit_scale") == pytest.approx(16 / 64)
        assert "output.weight" not in m.t
    ids = random_sequences(n, 1, 24)[0]
    assert rel_err(gguf_logits(out, ids), torch_logits(tmp_path / "hf", ids)) <= 1e-4


@pytest.mark.parametrize("family,act", CASES)
def test_engine_f32_logits_match_pytorch(tmp_path, tokenizers_dir, family, act):
    tok = "spm" if family == "minicpm" else "bpe"
    n = hf_folder(tmp_path / "hf", tokenizers_dir, family, act, tok)
    out = tmp_path / "m.gguf"
    convert(tmp_path / "hf", out, "f32", progress=False)
    ids = random_sequences(n, 1, 24)[0]
    assert rel_err(engine_logits(out, ids), torch_logits(tmp_path / "hf", ids)) <= 1e-4


@pytest.mark.parametrize("family,act", [("llama", "relu"), ("llama", "silu"), ("minicpm", "fatrelu"),
                                        ("mistral", "drelu"), ("llama", "relu2")])
def test_q8_0_top1_agreement(tmp_path, tokenizers_dir, family, act):
    n = hf_folder(tmp_path / "hf", tokenizers_dir, family, act)
    out = tmp_path / "m.gguf"
    convert(tmp_path / "hf", out, "q8_0", progress=False)
    assert GGUFModel(out).type("blk.0.ffn_gate.weight").name == "Q8_0"
    seqs = random_sequences(n, 8, 32)
    ref = np.concatenate([torch_logits(tmp_path / "hf", ids) for ids in seqs])
    got = np.concatenate([gguf_logits(out, ids) for ids in seqs])
    raw, clear = top1_agreement(ref, got)
    print(f"Q8_0 {family}/{act}: top-1 agreement {raw:.4f} raw, {clear:.4f} excluding near-ties")
    assert clear >= 0.99 and raw >= 0.9, (raw, clear)


def test_engine_q8_0_top1_agreement(tmp_path, tokenizers_dir):
    n = hf_folder(tmp_path / "hf", tokenizers_dir, "llama", "relu")
    out = tmp_path / "m.gguf"
    convert(tmp_path / "hf", out, "q8_0", progress=False)
    seqs = random_sequences(n, 8, 32)
    ref = np.concatenate([torch_logits(tmp_path / "hf", ids) for ids in seqs])
    exact = np.concatenate([gguf_logits(out, ids) for ids in seqs])    # the file's own weights, float64
    got = np.concatenate([engine_logits(out, ids) for ids in seqs])
    raw, clear = top1_agreement(ref, got)
    print(f"engine Q8_0 vs PyTorch: {raw:.4f} raw, {clear:.4f} excluding near-ties; "
          f"vs exact Q8_0 reference: {float((exact.argmax(-1) == got.argmax(-1)).mean()):.4f}")
    assert clear >= 0.99 and raw >= 0.9, (raw, clear)


@pytest.mark.parametrize("outtype", ["f16", "bf16", "q4_0", "q4_1"])
def test_other_types_close(tmp_path, tokenizers_dir, outtype):
    """Every matrix, read back, is within its type's rounding of the F32 file's."""
    n = hf_folder(tmp_path / "hf", tokenizers_dir, "llama", "relu")
    ref_file, out = tmp_path / "f32.gguf", tmp_path / "m.gguf"
    convert(tmp_path / "hf", ref_file, "f32", progress=False)
    convert(tmp_path / "hf", out, outtype, progress=False)
    ref, m = GGUFModel(ref_file), GGUFModel(out)
    assert m.type("blk.1.ffn_up.weight").name == outtype.upper()
    assert m.type("blk.1.ffn_norm.weight").name == "F32"
    assert sorted(m.t) == sorted(ref.t)
    for name in m.t:
        x, y = ref.w(name), m.w(name)
        if x.ndim == 1:
            assert np.array_equal(x, y), name
            continue
        blocks = np.abs(x.reshape(-1, 32)).max(-1, keepdims=True)
        err = np.abs((y - x).reshape(-1, 32))
        bound = {"f16": blocks * 2**-10, "bf16": blocks * 2**-7, "q4_0": blocks / 8 * 1.01,
                 "q4_1": blocks / 7.5 * 1.01}[outtype]
        assert (err <= bound).all(), name
    ids = random_sequences(n, 1, 16)[0]
    tol = {"f16": 5e-3, "bf16": 3e-2}.get(outtype)
    if tol:
        assert rel_err(gguf_logits(out, ids), torch_logits(tmp_path / "hf", ids)) < tol


def test_bin_weights_and_untied_and_shards(tmp_path, tokenizers_dir):
    """pytorch_model.bin (sharded, with index) reads like safetensors."""
    n = hf_folder(tmp_path / "hf", tokenizers_dir, "llama", "fatrelu", safe=False, shard="40KB")
    assert list((tmp_path / "hf").glob("pytorch_model*.bin"))
    assert not list((tmp_path / "hf").glob("*.safetensors"))
    out = tmp_path / "m.gguf"
    convert(tmp_path / "hf", out, "f32", progress=False)
    ids = random_sequences(n, 1, 16)[0]
    assert "output.weight" in GGUFModel(out).t
    assert rel_err(gguf_logits(out, ids), torch_logits(tmp_path / "hf", ids)) <= 1e-4


def test_tied_llama_has_no_output_tensor(tmp_path, tokenizers_dir):
    n = hf_folder(tmp_path / "hf", tokenizers_dir, "llama", "relu", tied=True)
    out = tmp_path / "m.gguf"
    convert(tmp_path / "hf", out, "f32", progress=False)
    assert "output.weight" not in GGUFModel(out).t
    ids = random_sequences(n, 1, 16)[0]
    assert rel_err(gguf_logits(out, ids), torch_logits(tmp_path / "hf", ids)) <= 1e-4


def test_silu_prosparse_on_request_and_llama_compat(tmp_path, tokenizers_dir):
    n = hf_folder(tmp_path / "hf", tokenizers_dir, "llama", "silu")
    a, b = tmp_path / "a.gguf", tmp_path / "b.gguf"
    assert convert(tmp_path / "hf", a, "f32", prosparse=True, progress=False)["arch"] == "prosparse"
    assert GGUFModel(a).hp("ffn.activation") == "silu"
    assert convert(tmp_path / "hf", b, "f32", llama_compat=True, progress=False)["arch"] == "llama"
    ids = random_sequences(n, 1, 16)[0]
    assert rel_err(gguf_logits(a, ids), gguf_logits(b, ids)) < 1e-9


def test_llama_compat_minicpm_folds_scalings(tmp_path, tokenizers_dir):
    """A plain llama reader computes MiniCPM's function from the folded, untied file."""
    n = hf_folder(tmp_path / "hf", tokenizers_dir, "minicpm", "silu", tok="spm")
    out = tmp_path / "m.gguf"
    assert convert(tmp_path / "hf", out, "f32", llama_compat=True, progress=False)["arch"] == "llama"
    m = GGUFModel(out)
    assert "output.weight" in m.t and m.r.get_field("llama.embedding_scale") is None
    ids = random_sequences(n, 1, 16)[0]
    assert rel_err(gguf_logits(out, ids), torch_logits(tmp_path / "hf", ids)) <= 1e-4


def test_llama_compat_warns_for_relu(tmp_path, tokenizers_dir):
    hf_folder(tmp_path / "hf", tokenizers_dir, "llama", "relu")
    msgs = []
    r = convert(tmp_path / "hf", tmp_path / "m.gguf", "f16", llama_compat=True, progress=False, warn=msgs.append)
    assert r["arch"] == "llama"
    assert any("tokens are wrong" in s for s in msgs)
    m = GGUFModel(tmp_path / "m.gguf")
    assert sorted(n for n in m.t if n.startswith("blk.0.")) == sorted(
        f"blk.0.{x}.weight" for x in ("attn_norm", "attn_q", "attn_k", "attn_v", "attn_output",
                                      "ffn_norm", "ffn_gate", "ffn_up", "ffn_down"))


def test_row_length_not_multiple_of_32_falls_back(tmp_path, tokenizers_dir):
    src, n = tokenizers_dir["bpe"]
    shutil.copytree(src, tmp_path / "hf")
    make_hf_model(tmp_path / "hf", "llama", "relu", n, hidden_size=48, num_attention_heads=4,
                  num_key_value_heads=2, intermediate_size=96)
    msgs = []
    convert(tmp_path / "hf", tmp_path / "m.gguf", "q8_0", progress=False, warn=msgs.append)
    m = GGUFModel(tmp_path / "m.gguf")
    assert m.type("blk.0.ffn_gate.weight").name == "F16"          # rows of 48
    assert m.type("blk.0.ffn_down_t.weight").name == "F16"        # rows of 48
    assert any("not a multiple of 32" in s for s in msgs)


def test_metadata_and_chat_template(tmp_path, tokenizers_dir):
    hf_folder(tmp_path / "hf", tokenizers_dir, "llama", "relu")
    out = tmp_path / "m.gguf"
    convert(tmp_path / "hf", out, "f16", progress=False)
    m = GGUFModel(out)
    cfg = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert m.kv("general.architecture") == "prosparse"
    for key, want in [("block_count", 2), ("embedding_length", 64), ("feed_forward_length", 128),
                      ("attention.head_count", 4), ("attention.head_count_kv", 2),
                      ("rope.dimension_count", 16), ("vocab_size", cfg["vocab_size"]),
                      ("context_length", 256)]:
        assert m.hp(key) == want, key
    assert m.hp("rope.freq_base") == pytest.approx(10000.0)
    assert m.kv("tokenizer.ggml.model") == "gpt2" and m.kv("tokenizer.ggml.pre") == "smollm"
    assert "<|im_start|>" in m.kv("tokenizer.chat_template")
    toks = m.kv("tokenizer.ggml.tokens")
    assert toks[m.kv("tokenizer.ggml.bos_token_id")] == "<|im_start|>"
    assert toks[m.kv("tokenizer.ggml.eos_token_id")] == "<|im_end|>"
    assert m.kv("tokenizer.ggml.token_type")[m.kv("tokenizer.ggml.eos_token_id")] == 3   # CONTROL


def test_streaming_holds_one_tensor_at_a_time(tmp_path, tokenizers_dir):
    """Peak Python-side memory while converting stays near the largest tensor, far below the model."""
    import tracemalloc
    n = hf_folder(tmp_path / "hf", tokenizers_dir, "llama", "relu", shard="1MB", hidden_size=256,
                  intermediate_size=1024, num_hidden_layers=6, num_attention_heads=8, num_key_value_heads=4)
    model_bytes = 4 * (6 * (2 * 256 * 256 + 2 * 128 * 256 + 3 * 256 * 1024) + 2 * n * 256)   # as float32
    largest = 4 * 1024 * 256
    tracemalloc.start()
    try:
        convert(tmp_path / "hf", tmp_path / "m.gguf", "q8_0", progress=False)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    print(f"model {model_bytes / 2**20:.1f} MiB as f32, largest tensor {largest / 2**20:.1f} MiB, "
          f"peak traced {peak / 2**20:.1f} MiB")
    assert peak < 4 * largest < model_bytes / 5


def test_prosparse_checkpoint_class_name(tmp_path, tokenizers_dir):
    """The published ProSparse LLaMA checkpoints name a custom class; their weights are llama's."""
    n = hf_folder(tmp_path / "hf", tokenizers_dir, "llama", "fatrelu")
    cfg = json.loads((tmp_path / "hf" / "config.json").read_text())
    cfg.update(architectures=["SparseLlamaForCausalLM"], model_type="sparsellama",
               auto_map={"AutoModelForCausalLM": "modeling_sparsellama.SparseLlamaForCausalLM"})
    (tmp_path / "hf" / "config.json").write_text(json.dumps(cfg))
    out = tmp_path / "m.gguf"
    assert convert(tmp_path / "hf", out, "f32", progress=False)["arch"] == "prosparse"
    ids = random_sequences(n, 1, 16)[0]
    assert rel_err(gguf_logits(out, ids), torch_logits(tmp_path / "hf", ids)) <= 1e-4
