"""Shared pieces of the converter tests (no tests of its own besides the
reference checks at the bottom):

- tiny tokenizers: a byte-level BPE tokenizer.json (SmolLM2-style digits +
  byte-level pre-tokenizer) made with `tokenizers`, and a SentencePiece
  tokenizer.model trained with `sentencepiece`, both on the docstrings of the
  Python standard library (text present on every machine);
- tiny random Hugging Face folders: LlamaForCausalLM / MistralForCausalLM via
  transformers, and a MiniCPM-style folder (config + llama-named weights);
- `torch_logits`: an independent PyTorch forward of those folders (rotate-half
  RoPE, GQA, the five activations, MiniCPM scalings), itself checked
  against transformers below;
- `gguf_logits`: a numpy forward that reads a converted GGUF with gguf-py
  (adjacent-pair RoPE on permuted q/k, ffn_down_t, the prosparse.* keys):
  the file contract, checked without our C engine.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import gguf
import numpy as np
import pytest
import torch

ACTS = ("silu", "relu", "fatrelu", "relu2", "drelu")
FATRELU_T = 0.01


# ---- text and tokenizers ------------------------------------------------
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


def make_bpe_tokenizer(folder: Path, vocab_size: int = 384) -> int:
    """tokenizer.json + tokenizer_config.json; returns the tokenizer's size."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                                 pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)])
    tok.decoder = decoders.ByteLevel()
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator([corpus_text()], trainer=trainer)
    folder.mkdir(parents=True, exist_ok=True)
    tok.save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": "<|im_start|>", "eos_token": "<|im_end|>", "unk_token": "<|endoftext|>",
        "add_bos_token": False,
        "chat_template": "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}",
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


# ---- tiny Hugging Face folders -----------------------------------------
def tiny_config(family: str, act: str, n_vocab: int, tied: bool = False, **over) -> dict:
    cfg = dict(vocab_size=n_vocab, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
               num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
               rms_norm_eps=1e-5, rope_theta=10000.0, tie_word_embeddings=tied, hidden_act=act,
               initializer_range=0.15)
    cfg.update(over)
    return cfg


def make_hf_model(folder: Path, family: str, act: str, n_vocab: int, tied: bool = False,
                  shard: str | None = "40KB", safe: bool = True, seed: int = 0, **over) -> dict:
    """Random weights in a HF folder (tokenizer files are made separately). Returns config."""
    torch.manual_seed(seed)
    cfg = tiny_config(family, act, n_vocab, tied or family == "minicpm", **over)
    hf_act = {"fatrelu": "relu", "drelu": "relu"}.get(act, act)
    if family == "mistral":
        from transformers import MistralConfig, MistralForCausalLM
        model = MistralForCausalLM(MistralConfig(**{**cfg, "hidden_act": hf_act}))
    else:
        from transformers import LlamaConfig, LlamaForCausalLM
        model = LlamaForCausalLM(LlamaConfig(**{**cfg, "hidden_act": hf_act}))
    with torch.no_grad():   # non-trivial norms, so a wrong norm weight shows
        for n, p in model.named_parameters():
            if p.ndim == 1:
                p.copy_(1.0 + 0.3 * torch.randn_like(p))
    kw = {"max_shard_size": shard} if shard else {}
    model.save_pretrained(folder, **kw)
    if not safe:
        to_bin(folder)
    c = json.loads((folder / "config.json").read_text())
    c["hidden_act"] = act
    if act == "fatrelu":
        c["hidden_act_param"] = FATRELU_T
    if family == "minicpm":
        c["architectures"] = ["MiniCPMForCausalLM"]
        c["model_type"] = "minicpm"
        c.update(scale_emb=12.0, scale_depth=1.4, dim_model_base=16)
    (folder / "config.json").write_text(json.dumps(c, indent=1))
    return c


def to_bin(folder: Path) -> None:
    """Rewrite the folder's safetensors shards as pytorch_model*.bin (+ index), as older
    checkpoints ship (transformers 5 no longer writes them)."""
    from safetensors.torch import load_file
    shards = sorted(folder.glob("*.safetensors"))
    weight_map = {}
    for i, f in enumerate(shards):
        name = f"pytorch_model-{i + 1:05d}-of-{len(shards):05d}.bin" if len(shards) > 1 else "pytorch_model.bin"
        sd = load_file(str(f))
        torch.save(sd, folder / name)
        weight_map.update({k: name for k in sd})
        f.unlink()
    (folder / "model.safetensors.index.json").unlink(missing_ok=True)
    if len(shards) > 1:
        (folder / "pytorch_model.bin.index.json").write_text(json.dumps({"weight_map": weight_map}))


def load_hf_state(folder: Path) -> dict[str, torch.Tensor]:
    out = {}
    for f in sorted(folder.glob("*.safetensors")):
        from safetensors.torch import load_file
        out.update(load_file(str(f)))
    for f in sorted(folder.glob("pytorch_model*.bin")):
        out.update(torch.load(str(f), weights_only=True))
    return {k: v.to(torch.float64) for k, v in out.items()}


def _act(act: str, g: torch.Tensor, u: torch.Tensor, t: float) -> torch.Tensor:
    if act == "silu":
        return torch.nn.functional.silu(g) * u
    if act == "relu":
        return torch.relu(g) * u
    if act == "fatrelu":
        return torch.where(g >= t, g, torch.zeros_like(g)) * u
    if act == "relu2":
        return torch.relu(g) ** 2 * u
    if act == "drelu":
        return torch.relu(g) * torch.relu(u)
    raise ValueError(act)


def torch_logits(folder: Path, ids: list[int], gate_acts: list | None = None) -> np.ndarray:
    """float64 PyTorch reference of a tiny HF folder: [len(ids), n_vocab].
    gate_acts: if a list, receives each layer's act(gate) [len(ids), n_ff]."""
    c = json.loads((folder / "config.json").read_text())
    W = load_hf_state(folder)
    E, H, L = c["hidden_size"], c["num_attention_heads"], c["num_hidden_layers"]
    KV = c["num_key_value_heads"]
    hd = E // H
    eps = c["rms_norm_eps"]
    theta = (c.get("rope_parameters") or {}).get("rope_theta", c.get("rope_theta", 10000.0))
    minicpm = "MiniCPMForCausalLM" in c["architectures"]
    act, t = c["hidden_act"], c.get("hidden_act_param", 0.0)

    def norm(x, w):
        return x * torch.rsqrt((x * x).mean(-1, keepdim=True) + eps) * w

    T = len(ids)
    pos = torch.arange(T, dtype=torch.float64)
    inv = 1.0 / theta ** (torch.arange(0, hd, 2, dtype=torch.float64) / hd)
    ang = torch.outer(pos, inv)
    cos, sin = torch.cat([ang.cos()] * 2, -1), torch.cat([ang.sin()] * 2, -1)

    def rope(x):   # x [T, heads, hd], rotate-half (HF convention)
        x1, x2 = x[..., : hd // 2], x[..., hd // 2:]
        rot = torch.cat([-x2, x1], -1)
        return x * cos[:, None] + rot * sin[:, None]

    h = W["model.embed_tokens.weight"][torch.tensor(ids)]
    rs = 1.0
    if minicpm:
        h = h * c["scale_emb"]
        rs = c["scale_depth"] / math.sqrt(L)
    mask = torch.full((T, T), float("-inf"), dtype=torch.float64).triu(1)
    for i in range(L):
        p = f"model.layers.{i}."
        x = norm(h, W[p + "input_layernorm.weight"])
        q = rope((x @ W[p + "self_attn.q_proj.weight"].T).view(T, H, hd))
        k = rope((x @ W[p + "self_attn.k_proj.weight"].T).view(T, KV, hd))
        v = (x @ W[p + "self_attn.v_proj.weight"].T).view(T, KV, hd)
        k = k.repeat_interleave(H // KV, dim=1)
        v = v.repeat_interleave(H // KV, dim=1)
        att = torch.einsum("thd,shd->hts", q, k) / math.sqrt(hd) + mask
        o = torch.einsum("hts,shd->thd", att.softmax(-1), v).reshape(T, E)
        h = h + rs * (o @ W[p + "self_attn.o_proj.weight"].T)
        x = norm(h, W[p + "post_attention_layernorm.weight"])
        g = x @ W[p + "mlp.gate_proj.weight"].T
        if gate_acts is not None:
            gate_acts.append(_act(act, g, torch.ones_like(g), t).numpy())
        a = _act(act, g, x @ W[p + "mlp.up_proj.weight"].T, t)
        h = h + rs * (a @ W[p + "mlp.down_proj.weight"].T)
    h = norm(h, W["model.norm.weight"])
    out = W.get("lm_head.weight", W["model.embed_tokens.weight"])
    if c.get("tie_word_embeddings") or minicpm:
        out = W["model.embed_tokens.weight"]
    logits = h @ out.T
    if minicpm:
        logits = logits / (E / c["dim_model_base"])
    return logits.numpy()


# ---- numpy forward of a GGUF file (the file contract) -------------------
class GGUFModel:
    def __init__(self, path: Path):
        self.r = gguf.GGUFReader(str(path))
        self.arch = self.kv("general.architecture")
        self.t = {t.name: t for t in self.r.tensors}

    def kv(self, key, default=None):
        f = self.r.get_field(key)
        return default if f is None else f.contents()

    def hp(self, suffix, default=None):
        return self.kv(f"{self.arch}.{suffix}", default)

    def w(self, name) -> np.ndarray:
        t = self.t[name]
        x = gguf.quants.dequantize(t.data, t.tensor_type)
        return np.asarray(x, dtype=np.float64).reshape(list(reversed(t.shape.tolist())))

    def type(self, name):
        return self.t[name].tensor_type


def gguf_logits(path: Path, ids: list[int], gate_acts: list | None = None) -> np.ndarray:
    """float64 forward of a GGUF file; gate_acts: if a list, receives each layer's act(gate)."""
    m = GGUFModel(path)
    E, L, H = m.hp("embedding_length"), m.hp("block_count"), m.hp("attention.head_count")
    KV, eps = m.hp("attention.head_count_kv"), m.hp("attention.layer_norm_rms_epsilon")
    theta = m.hp("rope.freq_base")
    hd = E // H
    sparse = m.arch == "prosparse"
    act = m.hp("ffn.activation") if sparse else "silu"
    t = m.hp("ffn.activation_threshold", 0.0) if sparse else 0.0
    es = m.hp("embedding_scale", 1.0) if sparse else 1.0
    rs = m.hp("residual_scale", 1.0) if sparse else 1.0
    ls = m.hp("logit_scale", 1.0) if sparse else 1.0

    def norm(x, w):
        return x * (1.0 / np.sqrt((x * x).mean(-1, keepdims=True) + eps)) * w

    T = len(ids)
    inv = 1.0 / theta ** (np.arange(0, hd, 2) / hd)
    ang = np.outer(np.arange(T), inv)                   # [T, hd/2]
    cos, sin = np.cos(ang)[:, None], np.sin(ang)[:, None]

    def rope(x):   # adjacent pairs (llama.cpp "norm" rope on permuted rows)
        x0, x1 = x[..., 0::2], x[..., 1::2]
        y = np.empty_like(x)
        y[..., 0::2] = x0 * cos - x1 * sin
        y[..., 1::2] = x0 * sin + x1 * cos
        return y

    emb = m.w("token_embd.weight")
    h = emb[np.array(ids)] * es
    mask = np.triu(np.full((T, T), -np.inf), 1)
    for i in range(L):
        b = f"blk.{i}."
        x = norm(h, m.w(b + "attn_norm.weight"))
        q = rope((x @ m.w(b + "attn_q.weight").T).reshape(T, H, hd))
        k = rope((x @ m.w(b + "attn_k.weight").T).reshape(T, KV, hd))
        v = (x @ m.w(b + "attn_v.weight").T).reshape(T, KV, hd)
        k, v = np.repeat(k, H // KV, axis=1), np.repeat(v, H // KV, axis=1)
        att = np.einsum("thd,shd->hts", q, k) / math.sqrt(hd) + mask
        att = np.exp(att - att.max(-1, keepdims=True))
        att /= att.sum(-1, keepdims=True)
        o = np.einsum("hts,shd->thd", att, v).reshape(T, E)
        h = h + rs * (o @ m.w(b + "attn_output.weight").T)
        x = norm(h, m.w(b + "ffn_norm.weight"))
        g = torch.from_numpy(x @ m.w(b + "ffn_gate.weight").T)
        if gate_acts is not None:
            gate_acts.append(_act(act, g, torch.ones_like(g), t).numpy())
        a = _act(act, g, torch.from_numpy(x @ m.w(b + "ffn_up.weight").T), t).numpy()
        if sparse:
            h = h + rs * (a @ m.w(b + "ffn_down_t.weight"))
        else:
            h = h + rs * (a @ m.w(b + "ffn_down.weight").T)
    h = norm(h, m.w("output_norm.weight"))
    out = m.w("output.weight") if "output.weight" in m.t else emb
    return (h @ out.T) * ls


def rel_err(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).max() / np.abs(b).max())


# ---- the references themselves are checked -----------------------------
@pytest.mark.parametrize("family,act", [("llama", "silu"), ("llama", "relu"), ("mistral", "relu2")])
def test_torch_reference_matches_transformers(tmp_path, family, act):
    """torch_logits (used for every activation) equals transformers where transformers can run it."""
    cfg = make_hf_model(tmp_path, family, act, n_vocab=96, shard=None)
    from transformers import AutoModelForCausalLM
    model = AutoModelForCausalLM.from_pretrained(tmp_path, dtype=torch.float64)
    ids = [3, 17, 5, 90, 41, 8, 8, 60]
    with torch.no_grad():
        want = model(torch.tensor([ids])).logits[0].numpy()
    assert rel_err(torch_logits(tmp_path, ids), want) < 2e-6   # transformers builds RoPE tables in float32
    assert cfg["hidden_act"] == act
