"""Trainer throughput vs a plain forward/backward/step loop on the same model and batch.

    python -m prosparse_cpu.trainer.bench_overhead [--steps 12] [--hidden 256] [--layers 4] ...

The plain loop is the minimum any trainer does: forward with labels, backward, AdamW step,
zero_grad. The trainer step adds the L1 regulariser over every layer's x1 (lambda > 0 on every
step), sparsity counting, gradient clipping, the schedules and the JSONL log. Both use the same
ReLU model, data, micro-batch and sequence length; they run interleaved (plain, trainer, plain,
trainer) so machine noise hits both. Reported: median tokens/s of each and their ratio
(the target: trainer >= 0.9 x plain). Not a test assertion: speed is measured, not asserted.
"""
from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

from . import config as C
from .data import load_tokenizer, pack, tokenize_files
from .loop import train
from .modeling import load_model
from .sparsify import sparsify

DOCS = Path("/usr/share/doc/python3.11/html/_sources")
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


# ---- the model and data the benchmark runs on -------------------------------------
def byte_tokenizer():
    """A transformers tokenizer of the 256 byte symbols (sorted), then SPECIALS;
    no merges; eos = bos = SPECIALS[0]."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {ch: i for i, ch in enumerate(sorted(pre_tokenizers.ByteLevel.alphabet()))}
    for s in SPECIALS:
        vocab[s] = len(vocab)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(SPECIALS)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=SPECIALS[0], bos_token=SPECIALS[0],
                                   additional_special_tokens=SPECIALS[1:])


def tiny_model_dir(path: Path, hidden: int, n_ff: int, layers: int, heads: int) -> Path:
    """A random LlamaForCausalLM (HF's initialisation, seed 0) with byte_tokenizer(),
    saved as an HF folder."""
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = byte_tokenizer()
    torch.manual_seed(0)
    eos = tok.eos_token_id
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=hidden, intermediate_size=n_ff, num_hidden_layers=layers,
                      num_attention_heads=heads, num_key_value_heads=heads, max_position_embeddings=512,
                      hidden_act="silu", tie_word_embeddings=False, bos_token_id=eos, eos_token_id=eos,
                      pad_token_id=eos)
    LlamaForCausalLM(cfg).save_pretrained(str(path))
    tok.save_pretrained(str(path))
    return path


def word_corpus(folder: Path, n_docs: int) -> Path:
    """Plain-text documents with learnable structure, where python3.11-doc is not installed."""
    import random

    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(0)
    words = ["the", "model", "sparse", "neuron", "layer", "token", "weight", "gate", "relu", "step",
             "loss", "train", "data", "python", "value", "list", "function", "returns", "a", "of"]
    for d in range(n_docs):
        lines = []
        for _ in range(rng.randint(5, 15)):
            k, start = rng.randint(3, 12), rng.randrange(len(words))
            lines.append(" ".join(words[(start + 3 * j) % len(words)] for j in range(k)) + ".")
        (folder / f"doc{d:03d}.txt").write_text("\n".join(lines) + "\n")
    return folder


# ---- the two loops -------------------------------------------------------------------


def plain_loop(model_dir, data_dir, seq_len, batch, steps, lr) -> float:
    tok = load_tokenizer(str(model_dir))
    data = pack(tokenize_files([data_dir], tok), seq_len, 0.05, 8, batch, seed=1)
    model, _, _ = load_model(str(model_dir))
    sparsify(model, "relu")
    model.config.use_cache = False
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    times = []
    for s in range(steps):
        t0 = time.perf_counter()
        x = data.batch(s * batch, batch)
        model(input_ids=x, labels=x).loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - t0)
    return batch * seq_len / statistics.median(times[2:])


def trainer_run(model_dir, data_dir, out, seq_len, batch, steps, lr) -> float:
    train(C.from_dict({
        "model": {"path": str(model_dir), "activation": "relu"},
        "data": {"train": [str(data_dir)], "seq_len": seq_len, "heldout_max_seqs": 2},
        "sparsity": {"stages": [[0.0, 0], [0.01, steps]]},
        "optim": {"lr": lr, "warmup_steps": 0, "micro_batch": batch, "grad_accum": 1},
        "train": {"out_dir": str(out), "progress": False},
    }))
    rows = [json.loads(l) for l in open(Path(out) / "log.jsonl")]
    return statistics.median(r["tokens_per_s"] for r in rows[2:])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--n-ff", type=int, default=704)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model_dir = tiny_model_dir(tmp / "model", hidden=args.hidden, n_ff=args.n_ff, layers=args.layers, heads=4)
        data_dir = DOCS / "tutorial" if DOCS.is_dir() else word_corpus(tmp / "data", n_docs=200)
        plain, trainer = [], []
        for r in range(args.rounds):
            plain.append(plain_loop(model_dir, data_dir, args.seq_len, args.batch, args.steps, 1e-4))
            trainer.append(trainer_run(model_dir, data_dir, tmp / f"run{r}", args.seq_len, args.batch, args.steps, 1e-4))
    # each round's pair ran back to back: the median of per-round ratios resists load changes
    ratios = [t / p for p, t in zip(plain, trainer)]
    ratio = statistics.median(ratios)
    print(json.dumps({"model": {"hidden": args.hidden, "n_ff": args.n_ff, "layers": args.layers},
                      "batch": args.batch, "seq_len": args.seq_len, "steps": args.steps, "rounds": args.rounds,
                      "plain_tokens_per_s": plain, "trainer_tokens_per_s": trainer,
                      "round_ratios": ratios, "ratio": ratio}, indent=2))
    print(f"trainer / plain throughput: {ratio:.3f} (median of {len(ratios)} rounds; target >= 0.9)")


if __name__ == "__main__":
    main()
