"""Shared fixtures: the real SmolLM2 file, llama.cpp availability, tiny GGUF models.

Tiny models are written here with gguf-py (a `llama` file with a GPT-2 style
byte-level vocabulary), so the API/CLI/bad-file tests need nothing downloaded.
Two kinds:
  - random: small random F32 weights (shapes, determinism, argmax chains);
  - successor: one-hot embeddings, zero attention/FFN weights and an output
    matrix that maps token t to a chosen next token, so greedy generation
    follows a chain the test wrote (streaming, stop strings, end of generation).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

SMOLLM2_DEFAULT = Path.home() / ".cache" / "prosparse-cpu" / "SmolLM2-135M-Instruct.Q4_1.gguf"

CHATML = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]  # ids 0, 1, 2 (bos 1, eos 2), as SmolLM2
MERGES = ["Ġ t", "h e", "l l", "he ll", "hell o", "ð Ł"]    # "ð Ł": the first two bytes of most emoji


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
    for m in MERGES:
        tokens.append(m.replace(" ", ""))
    return tokens


def token_id(text_bytes: bytes) -> int:
    """Id of the tiny vocabulary's token for these raw bytes."""
    b2u = byte_to_unicode()
    return tiny_vocab().index("".join(b2u[b] for b in text_bytes))


def write_tiny_llama(path, *, n_embd: int = 32, n_ff: int = 64, n_layer: int = 2, n_head: int = 4,
                     n_head_kv: int = 2, seed: int = 0, successor: dict[int, int] | None = None,
                     tied: bool = False, chat_template: str | None = CHATML, drop: tuple = (),
                     shapes: dict | None = None, scale: float = 0.3, activation: str | None = None,
                     predictor_rank: int = 0) -> Path:
    """Write a tiny `llama` GGUF (all F32). drop: tensor names to leave out;
    shapes: tensor name -> numpy shape to use instead of the right one.
    activation (relu, fatrelu, ...): a `prosparse` file instead, with ffn_down_t,
    ffn_freq and, with predictor_rank, predictor tensors."""
    import gguf

    tokens = tiny_vocab()
    n_vocab = len(tokens)
    rng = np.random.default_rng(seed)
    head_dim = n_embd // n_head
    kv = n_head_kv * head_dim
    if successor is not None:
        assert n_embd >= n_vocab, "successor models need one-hot embeddings (n_embd >= n_vocab)"
        tied = False

    def rand(*shape):
        return (rng.standard_normal(shape) * scale).astype(np.float32)

    def proj(*shape):  # zero in successor models: attention and FFN add nothing to the residual
        return np.zeros(shape, np.float32) if successor is not None else rand(*shape)

    tensors: dict[str, np.ndarray] = {}
    if successor is not None:
        embd = np.zeros((n_vocab, n_embd), np.float32)
        embd[np.arange(n_vocab), np.arange(n_vocab)] = 1.0
        out = np.zeros((n_vocab, n_embd), np.float32)
        for t, nxt in successor.items():
            out[nxt, t] = 1.0   # logits[nxt] = h[t] = sqrt(n_embd) after the final RMSNorm
        tensors["token_embd.weight"] = embd
        tensors["output.weight"] = out
    else:
        tensors["token_embd.weight"] = rand(n_vocab, n_embd)
        if not tied:
            tensors["output.weight"] = rand(n_vocab, n_embd)
    tensors["output_norm.weight"] = np.ones(n_embd, np.float32)
    for i in range(n_layer):
        b = f"blk.{i}."
        tensors[b + "attn_norm.weight"] = np.ones(n_embd, np.float32)
        tensors[b + "attn_q.weight"] = proj(n_embd, n_embd)
        tensors[b + "attn_k.weight"] = proj(kv, n_embd)
        tensors[b + "attn_v.weight"] = proj(kv, n_embd)
        tensors[b + "attn_output.weight"] = proj(n_embd, n_embd)
        tensors[b + "ffn_norm.weight"] = np.ones(n_embd, np.float32)
        tensors[b + "ffn_gate.weight"] = proj(n_ff, n_embd)
        tensors[b + "ffn_up.weight"] = proj(n_ff, n_embd)
        if activation is None:
            tensors[b + "ffn_down.weight"] = proj(n_embd, n_ff)
        else:
            tensors[b + "ffn_down_t.weight"] = proj(n_ff, n_embd)  # one row per neuron
            tensors[b + "ffn_freq"] = rng.uniform(0, 1, n_ff).astype(np.float32)
            if predictor_rank:
                tensors[b + "ffn_pred_in.weight"] = rand(predictor_rank, n_embd)
                tensors[b + "ffn_pred_out.weight"] = rand(n_ff, predictor_rank)
    for name, shape in (shapes or {}).items():
        tensors[name] = rand(*shape)

    w = gguf.GGUFWriter(str(path), "llama" if activation is None else "prosparse")
    if activation is not None:
        w.add_string("prosparse.ffn.activation", activation)
        w.add_float32("prosparse.ffn.activation_threshold", 0.1 if activation == "fatrelu" else 0.0)
        if predictor_rank:
            w.add_float32("prosparse.predictor.threshold", 0.0)
            w.add_string("prosparse.predictor.input", "residual")
    w.add_name("tiny-test")
    w.add_block_count(n_layer)
    w.add_context_length(256)
    w.add_embedding_length(n_embd)
    w.add_feed_forward_length(n_ff)
    w.add_head_count(n_head)
    w.add_head_count_kv(n_head_kv)
    w.add_rope_freq_base(10000.0)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_dimension_count(head_dim)
    w.add_vocab_size(n_vocab)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("smollm")
    w.add_token_list(tokens)
    w.add_token_types([3] * len(SPECIALS) + [1] * (n_vocab - len(SPECIALS)))
    w.add_token_merges(MERGES)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_add_bos_token(False)
    if chat_template:
        w.add_chat_template(chat_template)
    for name, arr in tensors.items():
        if name not in drop:
            w.add_tensor(name, arr)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return Path(path)


# ---- fixtures -------------------------------------------------------------------
@pytest.fixture(scope="session")
def smollm2_path() -> str:
    """The real SmolLM2-135M-Instruct Q4_1 file (env PROSPARSE_SMOLLM2, else the cache path)."""
    path = os.environ.get("PROSPARSE_SMOLLM2") or str(SMOLLM2_DEFAULT)
    if not os.path.isfile(path):
        pytest.skip(f"SmolLM2 not found at {path} (run `make model`, or set PROSPARSE_SMOLLM2)")
    return path


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
