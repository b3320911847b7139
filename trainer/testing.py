"""Tiny models and tokenizers built on the spot: for tests, the overhead benchmark and replication.

Nothing is downloaded. `byte_tokenizer()` is a byte-level BPE with no merges
(256 byte symbols + specials) and a ChatML template; `train_bpe()` learns
merges from real text; `tiny_llama()` is a random LlamaForCausalLM.
"""
from __future__ import annotations

from pathlib import Path

CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
          "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


def _wrap(tok):
    from transformers import PreTrainedTokenizerFast

    t = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", bos_token="<|endoftext|>",
                                additional_special_tokens=SPECIALS[1:])
    t.chat_template = CHATML
    return t


def byte_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from tokenizers.pre_tokenizers import ByteLevel

    alphabet = ByteLevel.alphabet()
    vocab = {ch: i for i, ch in enumerate(sorted(alphabet))}
    for s in SPECIALS:
        vocab[s] = len(vocab)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(SPECIALS)
    return _wrap(tok)


def train_bpe(files, vocab_size: int = 4096):
    """A byte-level BPE learned from `files` (the `tokenizers` trainer)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIALS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train([str(f) for f in files], trainer)
    return _wrap(tok)


def tiny_llama(vocab_size: int, hidden: int = 64, n_ff: int = 176, layers: int = 2, heads: int = 4,
               kv_heads: int = 2, max_pos: int = 512, act: str = "silu", seed: int = 0, eos: int = 256):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=vocab_size, hidden_size=hidden, intermediate_size=n_ff,
                      num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=kv_heads,
                      max_position_embeddings=max_pos, hidden_act=act, tie_word_embeddings=False,
                      bos_token_id=eos, eos_token_id=eos, pad_token_id=eos)
    return LlamaForCausalLM(cfg)


def make_tiny_model_dir(path, **kw) -> Path:
    """Save a random tiny LLaMA + byte tokenizer as an HF folder; returns the folder."""
    path = Path(path)
    tok = byte_tokenizer()
    model = tiny_llama(len(tok), eos=tok.eos_token_id, **kw)
    model.save_pretrained(str(path))
    tok.save_pretrained(str(path))
    return path


def write_corpus(folder, n_docs: int = 40, seed: int = 0) -> Path:
    """Plain-text documents with learnable structure (for tests only; replication uses real text)."""
    import random

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    words = ["the", "model", "sparse", "neuron", "layer", "token", "weight", "gate", "relu", "step",
             "loss", "train", "data", "python", "value", "list", "function", "returns", "a", "of"]
    for d in range(n_docs):
        lines = []
        for _ in range(rng.randint(5, 15)):
            k = rng.randint(3, 12)
            start = rng.randrange(len(words))
            lines.append(" ".join(words[(start + 3 * j) % len(words)] for j in range(k)) + ".")
        (folder / f"doc{d:03d}.txt").write_text("\n".join(lines) + "\n")
    return folder


def write_config(path, model_path: str, data_path, out: str, **sections) -> Path:
    """A TOML config for a tiny run; `sections` = {"optim": {"lr": 1e-3}, ...} overrides the defaults."""
    base = {
        "model": {"path": str(model_path), "activation": "relu"},
        "data": {"train": [str(d) for d in (data_path if isinstance(data_path, (list, tuple)) else [data_path])],
                 "seq_len": 32, "heldout_max_seqs": 4},
        "sparsity": {"stages": [[0.0, 2], [0.01, 4], [0.05, 8], [0.05, 10]]},
        "optim": {"lr": 1e-3, "warmup_steps": 2, "micro_batch": 2, "grad_accum": 2},
        "train": {"out_dir": str(out), "progress": False},
    }
    for name, values in sections.items():
        base.setdefault(name, {}).update(values)

    def fmt(v):
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, str):
            return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
        if isinstance(v, (list, tuple)):
            return "[" + ", ".join(fmt(x) for x in v) + "]"
        return repr(v)

    text = "".join(f"[{name}]\n" + "".join(f"{k} = {fmt(v)}\n" for k, v in vals.items()) + "\n"
                   for name, vals in base.items())
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(text)
    return Path(path)
