"""GGUF inputs: llama GGUF -> prosparse / re-typed llama GGUF; --llama-compat in llama.cpp.

Tensors that keep their type are copied byte for byte; ffn_down becomes
ffn_down_t (exact in F32/F16 sources; 4-bit sources are re-quantized to Q8_0
along the transposed rows). Engine and llama.cpp read the results.
"""
from __future__ import annotations

import numpy as np
import pytest

from prosparse_cpu.convert.cli import convert
from prosparse_cpu.convert.reference import GGUFModel, gguf_logits
from support import SMOLLM2
from support.compare import engine_logits, random_sequences, rel_err, top1_agreement
from support.hf_models import hf_folder
from support.torch_reference import torch_logits
TEXT = ("The converter is how users get their models in. Activation sparsity means that most neurons "
        "of a feed-forward layer output exactly zero for a given token, so their weights need not be read. "
        "def main():\n    print('hello, world', 12345)\n")


@pytest.fixture
def tiny_llama_gguf(tmp_path, tokenizers_dir):
    """A SiLU HF model and its llama GGUF in F32 (both made by the tests)."""
    n = hf_folder(tmp_path / "hf", tokenizers_dir, "llama", "silu")
    src = tmp_path / "llama-f32.gguf"
    assert convert(tmp_path / "hf", src, "f32", progress=False)["arch"] == "llama"
    return tmp_path / "hf", src, n


def test_llama_f32_to_prosparse_same_function(tmp_path, tiny_llama_gguf):
    hf, src, n = tiny_llama_gguf
    out = tmp_path / "ps.gguf"
    assert convert(src, out, "auto", prosparse=True, progress=False)["arch"] == "prosparse"
    a, b = GGUFModel(src), GGUFModel(out)
    assert b.hp("ffn.activation") == "silu" and b.type("blk.0.ffn_down_t.weight").name == "F32"
    assert np.array_equal(b.w("blk.1.ffn_down_t.weight"), a.w("blk.1.ffn_down.weight").T)
    for name in a.t:
        if "ffn_down" not in name:
            assert np.array_equal(a.t[name].data, b.t[name].data), name
    for key in ("tokenizer.ggml.tokens", "tokenizer.ggml.merges", "tokenizer.ggml.pre", "tokenizer.chat_template",
                "tokenizer.ggml.bos_token_id", "general.name"):
        assert a.kv(key) == b.kv(key), key
    ids = random_sequences(n, 1, 20)[0]
    assert rel_err(gguf_logits(out, ids), gguf_logits(src, ids)) < 1e-12
    assert rel_err(engine_logits(out, ids), engine_logits(src, ids)) < 1e-5
    assert rel_err(engine_logits(out, ids), torch_logits(hf, ids)) < 1e-4


@pytest.mark.parametrize("outtype", ["q8_0", "q4_1"])
def test_quantized_llama_retyped_keeps_bytes(tmp_path, tiny_llama_gguf, outtype):
    """Same type in and out: bytes copied, engine output bit-identical."""
    hf, f32, n = tiny_llama_gguf
    src, out = tmp_path / "src.gguf", tmp_path / "out.gguf"
    convert(f32, src, outtype, progress=False)
    convert(src, out, "auto", progress=False)
    a, b = GGUFModel(src), GGUFModel(out)
    assert b.arch == "llama" and sorted(a.t) == sorted(b.t)
    for name in a.t:
        assert a.type(name) == b.type(name) and np.array_equal(a.t[name].data, b.t[name].data), name
    ids = random_sequences(n, 1, 20)[0]
    assert np.array_equal(engine_logits(out, ids), engine_logits(src, ids))


def test_q4_1_llama_to_prosparse(tmp_path, tiny_llama_gguf):
    hf, f32, n = tiny_llama_gguf
    src, out = tmp_path / "q41.gguf", tmp_path / "ps.gguf"
    convert(f32, src, "q4_1", progress=False)
    convert(src, out, "auto", prosparse=True, progress=False)
    a, b = GGUFModel(src), GGUFModel(out)
    assert b.type("blk.0.ffn_gate.weight").name == "Q4_1"
    assert b.type("blk.0.ffn_down_t.weight").name == "Q8_0"
    x, y = a.w("blk.0.ffn_down.weight").T, b.w("blk.0.ffn_down_t.weight")
    assert (np.abs(x - y).reshape(-1, 32) <= np.abs(x).reshape(-1, 32).max(-1, keepdims=True) / 127 * 0.6).all()   # d/2, d rounded to f16
    seqs = random_sequences(n, 4, 32)
    ref = np.concatenate([gguf_logits(src, s) for s in seqs])
    got = np.concatenate([engine_logits(out, s) for s in seqs])
    raw, clear = top1_agreement(ref, got)
    assert clear >= 0.99, (raw, clear)


def test_gguf_input_errors(tmp_path, tiny_llama_gguf):
    from prosparse_cpu.convert.errors import ConvertError
    hf, src, n = tiny_llama_gguf
    ps = tmp_path / "ps.gguf"
    convert(src, ps, "f32", prosparse=True, progress=False)
    with pytest.raises(ConvertError, match="unsupported architecture 'prosparse'"):
        convert(ps, tmp_path / "x.gguf", "f32", progress=False)
    with pytest.raises(ConvertError, match="overwrite the input"):
        convert(src, src, "f32", progress=False)
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"GGUF\x03\x00\x00\x00" + b"\xff" * 40)
    with pytest.raises(ConvertError, match="not a readable GGUF"):
        convert(junk, tmp_path / "x.gguf", "f32", progress=False)
    assert not (tmp_path / "x.gguf").exists()


# ---- llama.cpp -------------------------------------------------------------
def _llama(path, **kw):
    llama_cpp = pytest.importorskip("llama_cpp")
    return llama_cpp.Llama(model_path=str(path), n_ctx=256, n_threads=2, n_threads_batch=2,
                           verbose=False, seed=0, **kw)


@pytest.mark.llamacpp
def test_llama_compat_silu_logits_in_llama_cpp(tmp_path, tiny_llama_gguf):
    """--llama-compat of a SiLU HF model: llama.cpp computes the PyTorch model."""
    hf, _, n = tiny_llama_gguf
    out = tmp_path / "compat.gguf"
    convert(hf, out, "f32", llama_compat=True, progress=False)
    llm = _llama(out, logits_all=True)
    seqs = random_sequences(n, 4, 32)
    got, ref = [], []
    for ids in seqs:
        llm.reset()
        llm.eval(ids)
        got.append(np.array(llm.scores[: len(ids)], dtype=np.float64))
        ref.append(torch_logits(hf, ids))
    got, ref = np.concatenate(got), np.concatenate(ref)
    raw, clear = top1_agreement(ref, got)
    assert clear >= 0.99 and rel_err(got, ref) < 1e-2, (raw, clear, rel_err(got, ref))


@pytest.mark.llamacpp
def test_llama_cpp_refuses_prosparse(tmp_path, tiny_llama_gguf):
    _, src, _ = tiny_llama_gguf
    out = tmp_path / "ps.gguf"
    convert(src, out, "f32", prosparse=True, progress=False)
    with pytest.raises(Exception):
        _llama(out)


@pytest.mark.real
def test_smollm2_to_prosparse_and_llama_compat(tmp_path):
    if not SMOLLM2.is_file():
        pytest.skip(f"{SMOLLM2} not present (make model)")
    ps, compat = tmp_path / "smol-ps.gguf", tmp_path / "smol-compat.gguf"
    convert(SMOLLM2, ps, "auto", prosparse=True, progress=False)
    convert(SMOLLM2, compat, "auto", llama_compat=True, progress=False)
    a, b, c = GGUFModel(SMOLLM2), GGUFModel(ps), GGUFModel(compat)
    assert b.arch == "prosparse" and b.hp("ffn.activation") == "silu"
    for name in a.t:   # every tensor but ffn_down is the source's bytes, in both outputs
        assert np.array_equal(a.t[name].data, c.t[name].data), name
        if "ffn_down" not in name:
            assert np.array_equal(a.t[name].data, b.t[name].data), name
    for L in (0, 29):
        x, y = a.w(f"blk.{L}.ffn_down.weight").T, b.w(f"blk.{L}.ffn_down_t.weight")
        assert (np.abs(x - y).reshape(-1, 32) <= np.abs(x).reshape(-1, 32).max(-1, keepdims=True) / 127 * 0.6).all()   # d/2, d rounded to f16
    for key in ("tokenizer.ggml.tokens", "tokenizer.ggml.merges", "tokenizer.ggml.token_type",
                "tokenizer.chat_template", "tokenizer.ggml.eos_token_id", "tokenizer.ggml.pre"):
        assert a.kv(key) == b.kv(key) == c.kv(key), key
    # Engine: same tokens, logits close (down_t re-rounded to Q8_0: near-ties may flip).
    from prosparse_cpu import Model
    with Model(str(SMOLLM2), threads=2, n_ctx=512) as ma, Model(str(ps), threads=2, n_ctx=512) as mb:
        ids = ma.tokenize(TEXT * 3)
        assert ids == mb.tokenize(TEXT * 3)
        la, lb = ma.eval_all(ids), mb.eval_all(ids)
    agree = float((la.argmax(-1) == lb.argmax(-1)).mean())
    print(f"SmolLM2 Q4_1 -> prosparse: engine top-1 agreement {agree:.4f} over {len(ids)} positions, "
          f"max rel logit diff {rel_err(lb, la):.4f}")
    assert agree >= 0.9 and rel_err(lb, la) < 0.15
    # llama.cpp: the --llama-compat file generates the same tokens as the source.
    pytest.importorskip("llama_cpp")
    outs = []
    for path in (SMOLLM2, compat):
        llm = _llama(path)
        outs.append(llm.create_completion(TEXT, max_tokens=24, temperature=0.0)["choices"][0]["text"])
        del llm
    assert outs[0] == outs[1] and len(outs[0]) > 0
