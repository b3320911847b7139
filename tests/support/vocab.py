"""Vocabularies and tokenizers for tiny models, and the text they are trained on.

- `tiny_vocab()`: SmolLM2's layout in miniature, for hand-made GGUF files:
  the three ChatML specials first (ids 0, 1, 2; bos 1, eos 2), the 256 GPT-2
  byte symbols, then a few merges ("ð Ł" joins the first two bytes of most emoji).
- `byte_vocab()`: the 256 byte symbols, a few merges, the specials last: the
  vocabulary of Hugging Face models exported by gguf_files.write_gguf.
- `make_bpe_tokenizer` / `make_spm_tokenizer`: tokenizer files for a Hugging
  Face folder (a byte-level BPE with SmolLM2-style digits; a SentencePiece
  BPE), trained on the standard library's docstrings, text on every machine.
- `byte_tokenizer()`: a transformers tokenizer of bytes and specials, no merges.

CHATML is the package's own ChatML template, the one every tiny model carries.
"""
from __future__ import annotations

import json
from pathlib import Path

from prosparse_cpu.chat import CHATML_TEMPLATE as CHATML

SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
TINY_MERGES = ["Ġ t", "h e", "l l", "he ll", "hell o", "ð Ł"]
BYTE_VOCAB_MERGES = [("Ġ", "t"), ("h", "e"), ("Ġt", "he"), ("i", "n"), ("e", "r"), ("a", "n")]


def byte_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable character map."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAC + 1)) + list(range(0xAE, 0xFF + 1))
    out, extra = {}, 0
    for b in range(256):
        if b in keep:
            out[b] = chr(b)
        else:
            out[b] = chr(256 + extra)
            extra += 1
    return out


def tiny_vocab() -> list[str]:
    b2u = byte_to_unicode()
    tokens = list(SPECIALS) + [b2u[b] for b in range(256)]
    for m in TINY_MERGES:
        tokens.append(m.replace(" ", ""))
    return tokens


def token_id(text_bytes: bytes) -> int:
    """Id of the tiny vocabulary's token for these raw bytes."""
    b2u = byte_to_unicode()
    return tiny_vocab().index("".join(b2u[b] for b in text_bytes))


def byte_vocab() -> tuple[list[str], list[int], list[str]]:
    """(tokens, token types, merges): 256 byte tokens, a few merges, 3 specials."""
    import gguf

    b2u = byte_to_unicode()
    tokens = [b2u[b] for b in range(256)]
    merges = []
    for a, b in BYTE_VOCAB_MERGES:
        tokens.append(a + b)
        merges.append(f"{a} {b}")
    types = [int(gguf.TokenType.NORMAL)] * len(tokens)
    tokens += SPECIALS
    types += [int(gguf.TokenType.CONTROL)] * len(SPECIALS)
    return tokens, types, merges


N_VOCAB = 256 + len(BYTE_VOCAB_MERGES) + len(SPECIALS)   # len(byte_vocab()[0])


# ---- text ---------------------------------------------------------------------

def corpus_text() -> str:
    import argparse, collections, csv, email, inspect, json as js, pathlib, re, textwrap
    parts = []
    for mod in (argparse, collections, csv, email, inspect, js, pathlib, re, textwrap):
        for _, obj in inspect.getmembers(mod):
            doc = inspect.getdoc(obj)
            if doc:
                parts.append(doc)
    return "\n\n".join(parts)


SAMPLE_TEXTS = [
    "Hello world! The quick brown fox jumps over the lazy dog.",
    "def f(x):\n    return x * 2  # 12345 and 3.14159",
    "  leading spaces,\ttabs\n\nand newlines   ",
    "Unicode: café, naïve, 日本語, emoji 🙂🚀",
    "Return a new list containing all items from the iterable in ascending order.",
]


# ---- tokenizer files and objects ------------------------------------------------

def make_bpe_tokenizer(folder: Path, vocab_size: int = 384) -> int:
    """tokenizer.json + tokenizer_config.json; returns the tokenizer's size."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                                 pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIALS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator([corpus_text()], trainer=trainer)
    folder.mkdir(parents=True, exist_ok=True)
    tok.save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": "<|im_start|>", "eos_token": "<|im_end|>", "unk_token": "<|endoftext|>",
        "add_bos_token": False,
        "chat_template": CHATML,
    }))
    return tok.get_vocab_size()


def make_spm_tokenizer(folder: Path, vocab_size: int = 400) -> int:
    import sentencepiece as spm
    folder.mkdir(parents=True, exist_ok=True)
    text_file = folder / "corpus.txt"
    text_file.write_text(corpus_text())
    spm.SentencePieceTrainer.train(input=str(text_file), model_prefix=str(folder / "tokenizer"),
                                   vocab_size=vocab_size, model_type="bpe", byte_fallback=True,
                                   character_coverage=1.0, num_threads=1, minloglevel=2,
                                   normalization_rule_name="identity", remove_extra_whitespaces=False)
    text_file.unlink()
    (folder / "tokenizer.vocab").unlink(missing_ok=True)
    (folder / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "LlamaTokenizer", "add_bos_token": True, "add_eos_token": False,
        "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}))
    sp = spm.SentencePieceProcessor(model_file=str(folder / "tokenizer.model"))
    return sp.vocab_size()


def byte_tokenizer():
    """A PreTrainedTokenizerFast: the 256 byte symbols (sorted) then the specials; eos = bos = <|endoftext|>;
    the ChatML template (the trainer benchmark's tokenizer, which has the same specials)."""
    from prosparse_cpu.trainer import bench_overhead

    assert bench_overhead.SPECIALS == SPECIALS
    t = bench_overhead.byte_tokenizer()
    t.chat_template = CHATML
    return t
