#!/usr/bin/env python3
"""Write a random-weight Hugging Face checkpoint of a real model's shape, for
conversion and speed benchmarks (never committed; ~13 GB for the 7B shape).

    python scripts/synth_checkpoint.py OUT_DIR [--shape llama2-7b|1b|tiny] [--dtype bf16|f16]
                                       [--act fatrelu --sparsity 0.89] [--predictor-rank 1024]

- Sharded safetensors (model-0000i-of-0000n.safetensors + index), written one
  tensor at a time, so memory stays near one shard.
- FATReLU threshold: with unit RMSNorm weights the FFN input x has ||x||² = n_embd,
  so each gate value w·x is N(0, std² · n_embd) and the threshold
  t = std · sqrt(n_embd) · Φ⁻¹(sparsity) leaves that share of neurons inactive.
- A small SentencePiece tokenizer (trained on Python's own docstrings); the
  converter pads the vocabulary to the embedding's rows.
- --predictor-rank R also writes predictors/predictors.safetensors (random) and
  stats/activation_stats.safetensors (random counts) in prosparse-train's format.
"""
from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from pathlib import Path

import torch
from safetensors.torch import save_file

SHAPES = {   # hidden, intermediate, layers, heads, kv heads, vocab
    "llama2-7b": (4096, 11008, 32, 32, 32, 32000),
    "1b": (2048, 5632, 22, 32, 4, 32000),
    "tiny": (256, 768, 4, 8, 4, 4096),
}


def tensors(shape, std, gen, dtype):
    """(name, tensor) in checkpoint order, created one at a time."""
    e, f, n_layer, n_head, n_kv, vocab = shape
    kv = e // n_head * n_kv

    def rand(*dims):
        return (torch.randn(*dims, generator=gen) * std).to(dtype)
    yield "model.embed_tokens.weight", rand(vocab, e)
    for i in range(n_layer):
        p = f"model.layers.{i}."
        yield p + "input_layernorm.weight", torch.ones(e, dtype=dtype)
        yield p + "self_attn.q_proj.weight", rand(e, e)
        yield p + "self_attn.k_proj.weight", rand(kv, e)
        yield p + "self_attn.v_proj.weight", rand(kv, e)
        yield p + "self_attn.o_proj.weight", rand(e, e)
        yield p + "post_attention_layernorm.weight", torch.ones(e, dtype=dtype)
        yield p + "mlp.gate_proj.weight", rand(f, e)
        yield p + "mlp.up_proj.weight", rand(f, e)
        yield p + "mlp.down_proj.weight", rand(e, f)
    yield "model.norm.weight", torch.ones(e, dtype=dtype)
    yield "lm_head.weight", rand(vocab, e)


def write_shards(out: Path, items, shard_bytes: int) -> int:
    """Group tensors into shards of about shard_bytes; returns the shard count."""
    shards, cur, size, weight_map = [], {}, 0, {}

    def flush():
        nonlocal cur, size
        if cur:
            idx = len(shards) + 1
            tmp = out / f"shard-{idx}.tmp"
            save_file(cur, str(tmp), metadata={"format": "pt"})
            shards.append((tmp, list(cur)))
            print(f"  shard {idx}: {size / 2**30:.2f} GiB", flush=True)
            cur, size = {}, 0
    for name, t in items:
        nb = t.numel() * t.element_size()
        if size and size + nb > shard_bytes:
            flush()
        cur[name] = t
        size += nb
    flush()
    n = len(shards)
    for i, (tmp, names) in enumerate(shards):
        final = f"model-{i + 1:05d}-of-{n:05d}.safetensors"
        tmp.rename(out / final)
        weight_map.update({k: final for k in names})
    (out / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    return n


def write_tokenizer(out: Path) -> None:
    import inspect

    import sentencepiece as spm
    mods = [__import__(m) for m in ("argparse", "collections", "json", "pathlib", "re", "textwrap", "inspect")]
    text = "\n".join(inspect.getdoc(o) or "" for m in mods for _, o in inspect.getmembers(m))
    (out / "corpus.txt").write_text(text)
    spm.SentencePieceTrainer.train(input=str(out / "corpus.txt"), model_prefix=str(out / "tokenizer"),
                                   vocab_size=500, model_type="bpe", byte_fallback=True, minloglevel=2,
                                   normalization_rule_name="identity", remove_extra_whitespaces=False)
    (out / "corpus.txt").unlink()
    (out / "tokenizer.vocab").unlink()
    (out / "tokenizer_config.json").write_text(json.dumps({"add_bos_token": True, "bos_token": "<s>",
                                                           "eos_token": "</s>", "unk_token": "<unk>"}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--shape", choices=SHAPES, default="llama2-7b")
    ap.add_argument("--dtype", choices=["bf16", "f16"], default="bf16")
    ap.add_argument("--act", choices=["relu", "fatrelu", "silu", "relu2", "drelu"], default="fatrelu")
    ap.add_argument("--sparsity", type=float, default=0.89, help="share of inactive neurons (fatrelu)")
    ap.add_argument("--std", type=float, default=0.02)
    ap.add_argument("--predictor-rank", type=int, default=0)
    ap.add_argument("--shard-gib", type=float, default=2.0)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    shape = SHAPES[a.shape]
    e, f, n_layer, n_head, n_kv, vocab = shape
    a.out.mkdir(parents=True, exist_ok=True)
    dtype = torch.bfloat16 if a.dtype == "bf16" else torch.float16
    gen = torch.Generator().manual_seed(a.seed)
    t0 = time.time()
    n = write_shards(a.out, tensors(shape, a.std, gen, dtype), int(a.shard_gib * 2**30))
    cfg = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": e,
           "intermediate_size": f, "num_hidden_layers": n_layer, "num_attention_heads": n_head,
           "num_key_value_heads": n_kv, "vocab_size": vocab, "max_position_embeddings": 4096,
           "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "tie_word_embeddings": False,
           "hidden_act": a.act, "torch_dtype": "bfloat16" if a.dtype == "bf16" else "float16"}
    if a.act == "fatrelu":
        cfg["hidden_act_param"] = a.std * math.sqrt(e) * statistics.NormalDist().inv_cdf(a.sparsity)
    (a.out / "config.json").write_text(json.dumps(cfg, indent=1))
    write_tokenizer(a.out)
    if a.predictor_rank:
        r = a.predictor_rank
        (a.out / "predictors").mkdir(exist_ok=True)
        (a.out / "stats").mkdir(exist_ok=True)
        save_file({f"layers.{L}.fc{i}.weight": (torch.randn(*s, generator=gen) / math.sqrt(s[1])).to(dtype)
                   for L in range(n_layer) for i, s in ((1, (r, e)), (2, (f, r)))},
                  str(a.out / "predictors" / "predictors.safetensors"),
                  metadata={"threshold": "0", "input": "residual", "hidden_act": "relu"})
        save_file({f"layers.{L}.counts": torch.randint(0, 10000, (f,), generator=gen).float()
                   for L in range(n_layer)}, str(a.out / "stats" / "activation_stats.safetensors"),
                  metadata={"n_tokens": "10000"})
    print(f"wrote {a.out}: {a.shape}, {n} shards, {a.dtype}, hidden_act {a.act}"
          + (f" (t = {cfg['hidden_act_param']:.4f})" if a.act == "fatrelu" else "")
          + f", {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
