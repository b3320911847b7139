"""ProSparse at small scale on CPU, one command: is progressive lambda better than constant?

    python scripts/replicate_small.py [--out runs/replicate] [--preset full|quick]

1. Corpus: the reST sources of the Python 3.11 documentation (Debian's python3.11-doc,
   /usr/share/doc/python3.11/html/_sources; `apt-get install python3.11-doc`), real text,
   ~12 MB. Or --corpus DIR with any text files.
2. A byte-level BPE tokenizer is learned from it; a dense SiLU LLaMA-style model is trained
   from scratch (the "original" model).
3. From that model, at the same token budget each:
     (a) vanilla ReLU continual training (lambda = 0 throughout)
     (b) ReLU + constant lambda = lambda_max from the first step
     (c) ReLU + ProSparse's progressive lambda (stage 0, warm-up, half-sine, constant,
         half-sine, constant: the paper's shape, compressed)
     (d) (c) + FATReLU threshold shifting (no extra training)
4. A table of held-out activation sparsity and perplexity (results.md, results.json).
The full preset is sized for <= 2 hours on 2 cores; quick proves the pipeline in minutes.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from prosparse_cpu.chat import CHATML_TEMPLATE
from prosparse_cpu.trainer import config as C
from prosparse_cpu.trainer.loop import train

DOCS = Path("/usr/share/doc/python3.11/html/_sources")

PRESETS = {
    # ~3.3M-parameter model (1.6M of it embeddings); 3M pre-training tokens + 3 x 1.2M variant tokens (6.6M tokens in all):
    "full": dict(vocab=4096, hidden=192, n_ff=512, layers=4, heads=4, seq_len=128, batch=16,
                 pretrain_tokens=3_000_000, variant_tokens=1_200_000, max_corpus_tokens=0, heldout=64),
    # a few minutes: proves the pipeline end to end, numbers mean little.
    "quick": dict(vocab=1024, hidden=64, n_ff=176, layers=2, heads=4, seq_len=64, batch=8,
                  pretrain_tokens=40_000, variant_tokens=16_000, max_corpus_tokens=300_000, heldout=16),
}


SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


def train_bpe(files, vocab_size: int):
    """A byte-level BPE learned from `files` (the `tokenizers` trainer), with ChatML specials."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIALS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train([str(f) for f in files], trainer)
    t = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=SPECIALS[0], bos_token=SPECIALS[0],
                                additional_special_tokens=SPECIALS[1:])
    t.chat_template = CHATML_TEMPLATE
    return t


def random_llama(vocab_size: int, hidden: int, n_ff: int, layers: int, heads: int, max_pos: int, eos: int):
    """A dense SiLU LlamaForCausalLM with HF's initialisation (seed 0), to pre-train from scratch."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=vocab_size, hidden_size=hidden, intermediate_size=n_ff,
                      num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=heads,
                      max_position_embeddings=max_pos, hidden_act="silu", tie_word_embeddings=False,
                      bos_token_id=eos, eos_token_id=eos, pad_token_id=eos)
    return LlamaForCausalLM(cfg)


def write_config(path: Path, model: Path, corpus: Path, out: Path, activation: str, data: dict, train: dict,
                 **sections) -> Path:
    """One run's TOML config (kept in --out, so a run can be repeated with prosparse-train)."""
    raw = {"model": {"path": str(model), "activation": activation},
           "data": {"train": [str(corpus)], **data}, **sections,
           "train": {"out_dir": str(out), **train}}
    path.write_text(C.to_toml(raw))
    return path


def progressive_stages(steps: int, lam_max: float) -> list:
    """The paper's shape (7B: 5000/6000/10000/12000/16000/16500 of 16500) scaled to `steps`."""
    fr = [5000, 6000, 10000, 12000, 16000, 16500]
    if steps < len(fr):
        raise ValueError(f"a progressive schedule needs at least {len(fr)} steps, got {steps}")
    ends = [max(1, round(steps * f / 16500)) for f in fr]
    for i in range(1, len(ends)):              # strictly increasing ...
        ends[i] = max(ends[i], ends[i - 1] + 1)
    ends[-1] = steps                           # ... and ending exactly at the shared budget
    for i in range(len(ends) - 2, -1, -1):
        ends[i] = min(ends[i], ends[i + 1] - 1)
    lams = [0.0, lam_max * 0.025, lam_max * 0.25, lam_max * 0.25, lam_max, lam_max]  # 7B: 0/5e-3/5e-2/5e-2/.2/.2
    return [[l, e] for l, e in zip(lams, ends)]


def run(cfg_path: Path, label: str) -> dict:
    t0 = time.time()
    print(f"== {label}", flush=True)
    summary = train(C.load(cfg_path))
    summary["seconds"] = time.time() - t0
    return summary


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="runs/replicate")
    ap.add_argument("--preset", choices=sorted(PRESETS), default="full")
    ap.add_argument("--corpus", default=str(DOCS), help="folder of real text (default: python3.11-doc's reST)")
    ap.add_argument("--lambda-max", type=float, default=5.0,
                    help="final lambda of (c), constant lambda of (b); a 4-layer model's summed mean|x1| is ~0.05, "
                         "so it needs a larger lambda than the paper's 32-layer 0.2 for the same pull")
    ap.add_argument("--scale", type=float, default=1.0,
                    help="multiply the preset's token budgets (e.g. 0.01 to time the full model in minutes)")
    ap.add_argument("--fatrelu", type=float, default=0.01, help="FATReLU threshold t for (d)")
    ap.add_argument("--lr", type=float, default=3e-4, help="peak LR of the continual-training runs")
    ap.add_argument("--pretrain-lr", type=float, default=2e-3)
    args = ap.parse_args(argv)
    P = dict(PRESETS[args.preset])
    P["pretrain_tokens"] = int(P["pretrain_tokens"] * args.scale)
    P["variant_tokens"] = int(P["variant_tokens"] * args.scale)
    corpus = Path(args.corpus)
    if not corpus.is_dir():
        print(f"replicate_small: no corpus at {corpus} (apt-get install python3.11-doc, or --corpus DIR)",
              file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    start = time.time()

    # 1-2. tokenizer and a random dense SiLU model
    init = out / "init"
    if not (init / "config.json").is_file():
        files = sorted(f for f in corpus.rglob("*") if f.is_file())
        tok = train_bpe(files, P["vocab"])
        model = random_llama(len(tok), hidden=P["hidden"], n_ff=P["n_ff"], layers=P["layers"], heads=P["heads"],
                             max_pos=P["seq_len"], eos=tok.eos_token_id)
        model.save_pretrained(str(init))
        tok.save_pretrained(str(init))
    tokens_per_step = P["batch"] * P["seq_len"]
    data = dict(seq_len=P["seq_len"], heldout_max_seqs=P["heldout"], max_tokens=P["max_corpus_tokens"],
                cache_dir=str(out / "cache"))
    common = dict(data=data, train={"progress": True, "seed": 1234})

    pre_steps = max(2, P["pretrain_tokens"] // tokens_per_step)
    pre_cfg = write_config(out / "pretrain.toml", init, corpus, out / "pretrain", "silu",
                           sparsity={"stages": [[0.0, pre_steps]]},
                           optim={"lr": args.pretrain_lr, "min_lr": args.pretrain_lr / 10, "warmup_steps": pre_steps // 20,
                                  "micro_batch": P["batch"], "grad_accum": 1, "weight_decay": 0.1}, **common)
    results = {"preset": args.preset, "corpus": str(corpus), "tokens_per_step": tokens_per_step}
    done = out / "pretrain" / "summary.json"
    if done.is_file() and (out / "pretrain" / "final" / "config.json").is_file():
        print(f"== dense SiLU pre-training: reusing {out / 'pretrain'}")   # delete it to retrain
        results["dense_silu"] = json.loads(done.read_text())
    else:
        results["dense_silu"] = run(pre_cfg, f"dense SiLU pre-training: {pre_steps} steps")
    dense = out / "pretrain" / "final"

    steps = max(6, P["variant_tokens"] // tokens_per_step)
    lam = args.lambda_max
    variants = {
        "a_relu": ([[0.0, steps]], 0.0),
        "b_constant": ([[0.0, 0], [lam, steps]], 0.0),
        "c_progressive": (progressive_stages(steps, lam), args.fatrelu),
    }
    optim = {"lr": args.lr, "min_lr": args.lr / 10, "warmup_steps": steps // 20, "micro_batch": P["batch"],
             "grad_accum": 1, "max_steps": steps}   # the same LR curve and token budget for every variant
    for name, (stages, t) in variants.items():
        cfg = write_config(out / f"{name}.toml", dense, corpus, out / name, "relu", sparsity={"stages": stages},
                           optim=optim, fatrelu={"threshold": t}, **common)
        results[name] = run(cfg, f"{name}: {steps} steps, stages {stages}")
        results[name]["stages"] = stages

    rows = [("dense SiLU (start)", "-", results["dense_silu"]["eval_end"])]
    rows += [("(a) ReLU, lambda 0", "0", results["a_relu"]["eval_end"]),
             ("(b) ReLU, constant lambda", f"{lam:g}", results["b_constant"]["eval_end"]),
             ("(c) ReLU, progressive lambda", f"0 -> {lam:g}", results["c_progressive"]["eval_end"]),
             (f"(d) (c) + FATReLU t={args.fatrelu:g}", f"0 -> {lam:g}", results["c_progressive"]["eval_fatrelu"])]
    lines = [f"Held-out: {P['heldout']} x {P['seq_len']} tokens of {corpus.name}; each variant "
             f"{steps} steps x {tokens_per_step} tokens = {steps * tokens_per_step:,} tokens.", "",
             "| model | lambda | sparsity (%) | held-out PPL |", "|---|---|---|---|"]
    for name, l, ev in rows:
        lines.append(f"| {name} | {l} | {100 * ev['sparsity']:.2f} | {ev['ppl']:.3f} |")
    total = time.time() - start
    lines += ["", f"wall time: {total / 60:.1f} min (preset {args.preset}, scale {args.scale:g})"]
    table = "\n".join(lines)
    results["wall_seconds"] = total
    (out / "results.json").write_text(json.dumps(results, indent=2, default=str))
    (out / "results.md").write_text(table + "\n")
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
