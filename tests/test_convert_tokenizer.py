"""The tokenizer written into the GGUF gives the same ids as the Hugging Face
tokenizer it came from: byte-level BPE (tokenizer.json, checked against the
`tokenizers` library) and SentencePiece (tokenizer.model, checked against the
`sentencepiece` library). Read back by llama.cpp (llama-cpp-python, vocab
only) and by our engine.
"""
from __future__ import annotations

import shutil

import pytest

from prosparse_cpu.convert.cli import convert
from prosparse_cpu.convert.reference import GGUFModel
from support.compare import engine, open_engine
from support.hf_models import hf_folder, make_hf_model
from support.vocab import SAMPLE_TEXTS, corpus_text

TEXTS = SAMPLE_TEXTS + [corpus_text()[:2000]]


def hf_ids(folder, kind, text):
    if kind == "bpe":
        from tokenizers import Tokenizer
        return Tokenizer.from_file(str(folder / "tokenizer.json")).encode(text, add_special_tokens=False).ids
    import sentencepiece as spm
    return spm.SentencePieceProcessor(model_file=str(folder / "tokenizer.model")).encode(text)


@pytest.fixture(params=["bpe", "spm"])
def converted(request, tmp_path, tokenizers_dir):
    kind = request.param
    hf_folder(tmp_path / "hf", tokenizers_dir, "llama", "silu", tok=kind)
    out = tmp_path / "m.gguf"
    convert(tmp_path / "hf", out, "f16", progress=False)
    return kind, tmp_path / "hf", out


def test_gguf_vocab_is_the_tokenizers(converted):
    kind, hf, out = converted
    m = GGUFModel(out)
    toks = m.kv("tokenizer.ggml.tokens")
    if kind == "bpe":
        import json
        vocab = json.loads((hf / "tokenizer.json").read_text())["model"]["vocab"]
        assert all(toks[i] == t for t, i in vocab.items())
        assert m.kv("tokenizer.ggml.model") == "gpt2"
        assert len(m.kv("tokenizer.ggml.merges")) > 0
    else:
        import sentencepiece as spm
        sp = spm.SentencePieceProcessor(model_file=str(hf / "tokenizer.model"))
        assert toks == [sp.id_to_piece(i) for i in range(sp.vocab_size())]
        assert m.kv("tokenizer.ggml.model") == "llama"
        assert m.kv("tokenizer.ggml.bos_token_id") == sp.bos_id()
        assert m.kv("tokenizer.ggml.eos_token_id") == sp.eos_id()
        assert m.kv("tokenizer.ggml.add_bos_token") is True
        assert m.kv("tokenizer.ggml.add_space_prefix") is True


@pytest.mark.llamacpp
def test_llama_cpp_tokenizes_like_hf(converted):
    llama_cpp = pytest.importorskip("llama_cpp")
    kind, hf, out = converted
    llm = llama_cpp.Llama(model_path=str(out), vocab_only=True, verbose=False, n_threads=2, n_threads_batch=2)
    for text in TEXTS:
        assert llm.tokenize(text.encode(), add_bos=False, special=False) == hf_ids(hf, kind, text), text[:40]


def test_engine_tokenizes_like_hf(converted):
    kind, hf, out = converted
    with open_engine(out, threads=1, n_ctx=64) as m:
        for text in TEXTS:
            assert m.tokenize(text, add_bos=False) == hf_ids(hf, kind, text), text[:40]
        if kind == "bpe":
            assert m.tokenize("<|im_start|>user", add_bos=False, special=True)[0] == 1


def test_bytefallback_bpe_tokenizer_json(tmp_path, tokenizers_dir):
    """A LLaMA-style tokenizer.json (BPE + byte fallback) without tokenizer.model: merges
    become SentencePiece scores. Known difference, as in llama.cpp: HF's Metaspace adds no
    '▁' before text that already starts with a space; SentencePiece (and so llama.cpp) does."""
    from transformers import AutoTokenizer
    src, _ = tokenizers_dir["spm"]
    hf = tmp_path / "hf"
    AutoTokenizer.from_pretrained(src).save_pretrained(hf)
    (hf / "tokenizer.model").unlink(missing_ok=True)
    tok = AutoTokenizer.from_pretrained(hf)
    make_hf_model(hf, "llama", "silu", len(tok), shard=None)
    out = tmp_path / "m.gguf"
    convert(hf, out, "f16", progress=False)
    m = GGUFModel(out)
    assert m.kv("tokenizer.ggml.model") == "llama" and m.kv("tokenizer.ggml.add_space_prefix") is True
    texts = [t for t in TEXTS if not t[0].isspace()]
    want = [tok.encode(t, add_special_tokens=False) for t in texts]
    Model, ProSparseError = engine()
    try:
        with Model(str(out), threads=1, n_ctx=64) as em:
            assert [em.tokenize(t, add_bos=False) for t in texts] == want
    except ProSparseError as e:
        if "cannot load native library" not in str(e):
            raise
    llama_cpp = pytest.importorskip("llama_cpp")
    llm = llama_cpp.Llama(model_path=str(out), vocab_only=True, verbose=False, n_threads=2, n_threads_batch=2)
    assert [llm.tokenize(t.encode(), add_bos=False) for t in texts] == want
