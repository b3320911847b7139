"""Session fixtures: the real SmolLM2 file, llama.cpp availability, tiny GGUF
models, the converter tests' tokenizers. They are built from support/.

The tiny models (support/gguf_files.py: a `llama` file with a GPT-2 style
byte-level vocabulary) need nothing downloaded: a random one, and a successor
model whose greedy chain the test wrote.
"""
from __future__ import annotations

import pytest

from support import SMOLLM2
from support.gguf_files import write_tiny_llama
from support.vocab import make_bpe_tokenizer, make_spm_tokenizer, tiny_vocab, token_id


@pytest.fixture(scope="session")
def smollm2_path() -> str:
    """The real SmolLM2-135M-Instruct Q4_1 file (env PROSPARSE_SMOLLM2, else the cache path)."""
    if not SMOLLM2.is_file():
        pytest.skip(f"SmolLM2 not found at {SMOLLM2} (run `make model`, or set PROSPARSE_SMOLLM2)")
    return str(SMOLLM2)


@pytest.fixture(scope="session")
def llama_cpp():
    """The llama_cpp module (llama-cpp-python), or skip with the reason."""
    try:
        import llama_cpp as mod
    except Exception as e:
        pytest.skip(f"llama_cpp is not importable ({type(e).__name__}: {e})")
    return mod


@pytest.fixture(scope="session")
def tiny_path(tmp_path_factory) -> str:
    """A tiny random llama GGUF (F32, 2 layers, 265-token byte-level vocabulary)."""
    return str(write_tiny_llama(tmp_path_factory.mktemp("tiny") / "tiny.gguf"))


@pytest.fixture(scope="session")
def successor_path(tmp_path_factory) -> str:
    """A tiny model whose greedy chain is: 'A' -> 😀 (as the tokens ðŁ, 0x98, 0x80) -> 'B' -> 'C' -> <|im_end|>;
    a newline -> 'A' (so a ChatML prompt is answered "A😀BC"); every other token -> 'Z'."""
    n_vocab = len(tiny_vocab())
    A, B, C, Z = (token_id(c.encode()) for c in "ABCZ")
    e1, e2, e3 = token_id(b"\xf0\x9f"), token_id(b"\x98"), token_id(b"\x80")
    succ = {t: Z for t in range(n_vocab)}
    succ.update({A: e1, e1: e2, e2: e3, e3: B, B: C, C: 2, token_id(b"\n"): A})
    return str(write_tiny_llama(tmp_path_factory.mktemp("succ") / "succ.gguf", n_embd=288, n_ff=32, n_layer=1,
                                n_head=4, n_head_kv=2, successor=succ))


@pytest.fixture(scope="session")
def tokenizers_dir(tmp_path_factory):
    """One BPE and one SentencePiece tokenizer for Hugging Face folders, trained once per session."""
    d = tmp_path_factory.mktemp("tok")
    return {"bpe": (d / "bpe", make_bpe_tokenizer(d / "bpe")),
            "spm": (d / "spm", make_spm_tokenizer(d / "spm"))}
