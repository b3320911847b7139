"""Inputs of a tiny prosparse-train run: a corpus and a TOML config."""
from __future__ import annotations

from pathlib import Path

from prosparse_cpu.trainer.config import to_toml


def write_corpus(folder, n_docs: int = 40, seed: int = 0) -> Path:
    """Plain-text documents with learnable structure (a repeating word pattern)."""
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

    text = to_toml(base)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(text)
    return Path(path)
