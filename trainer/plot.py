"""`prosparse-train plot LOG -o PNG`: loss, lambda and sparsity against the step."""
from __future__ import annotations

import json
import os
from pathlib import Path

from .config import ConfigError


def read_log(path) -> list[dict]:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"log not found: {p}")
    rows = []
    for n, line in enumerate(p.read_text().splitlines(), 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                raise ConfigError(f"{p}:{n}: not a JSON line") from None
    rows = [r for r in rows if "step" in r]
    if not rows:
        raise ConfigError(f"{p}: no training steps in the log")
    return rows


def plot_log(log, out):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = read_log(log)
    step = [r["step"] for r in rows]
    fig, ax = plt.subplots(3, 1, figsize=(8, 9), sharex=True)
    ax[0].plot(step, [r["loss"] for r in rows], label="loss")
    ax[0].plot(step, [r["lm_loss"] for r in rows], label="lm_loss")
    if any(r.get("kd_loss") for r in rows):
        ax[0].plot(step, [r["kd_loss"] for r in rows], label="kd_loss")
    ax[0].set_ylabel("loss")
    ax[0].legend()
    ax[1].plot(step, [r["lambda"] for r in rows], color="tab:red")
    ax[1].set_ylabel("lambda")
    ax[2].plot(step, [100 * r["sparsity"] for r in rows], color="tab:green", label="train batch")
    held = [(r["step"], 100 * r["heldout_sparsity"]) for r in rows if "heldout_sparsity" in r]
    if held:
        ax[2].plot(*zip(*held), "o", color="tab:olive", label="held-out")
        ax[2].legend()
    ax[2].set_ylabel("activation sparsity (%)")
    ax[2].set_xlabel("optimizer step")
    fig.suptitle(f"ProSparse training: {Path(log).name}")
    fig.tight_layout()
    tmp = f"{out}.tmp{os.getpid()}.png"
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    os.replace(tmp, out)
