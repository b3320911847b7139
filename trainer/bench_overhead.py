"""Trainer throughput vs a plain forward/backward/step loop on the same model and batch.

    python -m prosparse_cpu.trainer.bench_overhead [--steps 12] [--hidden 256] [--layers 4] ...

The plain loop is the minimum any trainer does: forward with labels, backward, AdamW step,
zero_grad. The trainer step adds the L1 regulariser over every layer's x1 (lambda > 0 on every
step), sparsity counting, gradient clipping, the schedules and the JSONL log. Both use the same
ReLU model, data, micro-batch and sequence length; they run interleaved (plain, trainer, plain,
trainer) so machine noise hits both. Reported: median tokens/s of each and their ratio
(the issue's target: trainer >= 0.9 x plain). Not a test assertion: speed is measured, not asserted.
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
from .testing import make_tiny_model_dir, write_config, write_corpus

DOCS = Path("/usr/share/doc/python3.11/html/_sources")


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
    cfg_path = write_config(Path(out) / "bench.toml", model_dir, data_dir, out,
                            data={"seq_len": seq_len, "heldout_max_seqs": 2},
                            sparsity={"stages": [[0.0, 0], [0.01, steps]]},
                            optim={"lr": lr, "micro_batch": batch, "grad_accum": 1, "warmup_steps": 0})
    train(C.load(cfg_path))
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
        model_dir = make_tiny_model_dir(tmp / "model", hidden=args.hidden, n_ff=args.n_ff, layers=args.layers,
                                        heads=4, kv_heads=4)
        data_dir = DOCS / "tutorial" if DOCS.is_dir() else write_corpus(tmp / "data", n_docs=200)
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
