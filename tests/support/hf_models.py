"""Tiny random Hugging Face models (transformers, float32), three kinds:

- `make_hf_llama`: a LlamaForCausalLM in memory over vocab.byte_vocab() (GQA,
  optionally tied, linear RoPE scaling), weights spread wider than HF's
  default so logits are far from uniform: exported with gguf_files.write_gguf.
- `make_hf_model`: a saved folder for the converter (llama, mistral or a
  MiniCPM-style config over llama-named weights; sharded safetensors or
  pytorch_model*.bin; any of the five activations written into config.json).
- `make_tiny_model_dir`: a LlamaForCausalLM with HF's own initialisation and
  vocab.byte_tokenizer(), saved as a folder for prosparse-train.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch

from .vocab import N_VOCAB, byte_tokenizer

ACTIVATIONS = ("silu", "relu", "fatrelu", "relu2", "drelu")
FATRELU_T = 0.01   # the FATReLU threshold make_hf_model writes


# ---- in memory, for write_gguf ------------------------------------------------------

def make_hf_llama(seed: int = 0, n_layer: int = 2, n_embd: int = 64, n_head: int = 4, n_head_kv: int = 2,
                  n_ff: int = 96, tied: bool = False, rope_theta: float = 10000.0, std: float = 0.08,
                  max_pos: int = 512, rope_linear_factor: float | None = None):
    """A random float32 LlamaForCausalLM; weights drawn with a larger spread than
    HF's default so logits are far from uniform, norms randomised around 1."""
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(vocab_size=N_VOCAB, hidden_size=n_embd, intermediate_size=n_ff,
                      num_hidden_layers=n_layer, num_attention_heads=n_head, num_key_value_heads=n_head_kv,
                      rms_norm_eps=1e-5, max_position_embeddings=max_pos,
                      rope_parameters={"rope_type": "linear", "factor": rope_linear_factor, "rope_theta": rope_theta}
                      if rope_linear_factor else {"rope_type": "default", "rope_theta": rope_theta},
                      tie_word_embeddings=tied, hidden_act="silu", bos_token_id=0, eos_token_id=0)
    torch.manual_seed(seed)
    model = LlamaForCausalLM(cfg).float().eval()
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=gen))
            else:
                p.copy_(std * torch.randn(p.shape, generator=gen))
    return model


# ---- folders for the converter -------------------------------------------------------

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


def hf_folder(path: Path, tokenizers_dir: dict, family: str, act: str, tok: str = "bpe", **kw) -> int:
    """A converter input: a copy of the session's tokenizer files (the tokenizers_dir
    fixture: "bpe" or "spm") plus make_hf_model's weights; returns the vocabulary size."""
    src, n = tokenizers_dir[tok]
    shutil.copytree(src, path, dirs_exist_ok=True)
    make_hf_model(path, family, act, n, **kw)
    return n


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


# ---- folders for the trainer ---------------------------------------------------------

def tiny_llama(vocab_size: int, hidden: int = 64, n_ff: int = 176, layers: int = 2, heads: int = 4,
               kv_heads: int = 2, max_pos: int = 512, act: str = "silu", seed: int = 0, eos: int = 256):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=vocab_size, hidden_size=hidden, intermediate_size=n_ff,
                      num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=kv_heads,
                      max_position_embeddings=max_pos, hidden_act=act, tie_word_embeddings=False,
                      bos_token_id=eos, eos_token_id=eos, pad_token_id=eos)
    return LlamaForCausalLM(cfg)


def make_tiny_model_dir(path, **kw) -> Path:
    """Save tiny_llama(**kw) + byte_tokenizer() as an HF folder; returns the folder."""
    path = Path(path)
    tok = byte_tokenizer()
    model = tiny_llama(len(tok), eos=tok.eos_token_id, **kw)
    model.save_pretrained(str(path))
    tok.save_pretrained(str(path))
    return path


# ---- the other families (Llama 3, Qwen2, Qwen3, Gemma 3), for the converter -----------

LLAMA3_ROPE = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
               "original_max_position_embeddings": 32, "rope_theta": 10000.0}


def family_model(family: str, n_vocab: int, seed: int = 0, act: str | None = None, **over):
    """A random float32 transformers model of a family: llama3 (LlamaForCausalLM with llama3
    RoPE scaling whose wavelengths span all three regimes), qwen2 (random q/k/v biases),
    qwen3 (q/k norms, head_dim != hidden / heads), gemma3 (6 layers: five sliding, one
    full, window 5, its own local RoPE base and query scale). Norms, biases and q/k norms
    are randomised so that a wrong one shows."""
    import transformers as tr

    base = dict(vocab_size=n_vocab, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                rms_norm_eps=1e-5, tie_word_embeddings=False, initializer_range=0.15)
    if family == "llama3":
        cfg = tr.LlamaConfig(**{**base, "rope_parameters": dict(LLAMA3_ROPE), "hidden_act": act or "silu", **over})
        cls = tr.LlamaForCausalLM
    elif family == "qwen2":
        cfg = tr.Qwen2Config(**{**base, "rope_parameters": {"rope_type": "default", "rope_theta": 50000.0},
                                "hidden_act": act or "silu", **over})
        cls = tr.Qwen2ForCausalLM
    elif family == "qwen3":
        cfg = tr.Qwen3Config(**{**base, "head_dim": 32, "hidden_act": act or "silu", **over})
        cls = tr.Qwen3ForCausalLM
    elif family == "gemma3":
        cfg = tr.Gemma3TextConfig(**{**base, "num_hidden_layers": 6, "head_dim": 32, "query_pre_attn_scalar": 24,
                                     "sliding_window": 5, "tie_word_embeddings": True, "rms_norm_eps": 1e-6,
                                     "rope_parameters": {"full_attention": {"rope_type": "default", "rope_theta": 1e6},
                                                         "sliding_attention": {"rope_type": "default",
                                                                               "rope_theta": 10000.0}},
                                     "hidden_activation": act or "gelu_pytorch_tanh", **over})
        cls = tr.Gemma3ForCausalLM
    else:
        raise ValueError(family)
    torch.manual_seed(seed)
    model = cls(cfg).float().eval()
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                # Gemma's norms are x * (1 + w): around 0 there, around 1 elsewhere
                p.copy_((0.0 if family == "gemma3" else 1.0) + 0.3 * torch.randn(p.shape, generator=gen))
            elif name.endswith(".bias"):
                p.copy_(0.3 * torch.randn(p.shape, generator=gen))
    return model


def make_family_folder(path: Path, tokenizers_dir: dict, family: str, tok: str = "bpe", **kw):
    """family_model(...) saved with the session's tokenizer files; returns (model, n_vocab)."""
    src, n = tokenizers_dir[tok]
    shutil.copytree(src, path, dirs_exist_ok=True)
    model = family_model(family, n, **kw)
    model.save_pretrained(path)
    return model, n
