"""A benchmark result as a terminal table, a JSON file and a PNG plot."""

from __future__ import annotations

import json
import os
import sys

import numpy as np

from .machine import BW_SPREAD, bandwidth_unstable, busy_note


def _fmt_pct(x) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def print_table(result: dict, file=None) -> None:
    from rich.console import Console
    from rich.table import Table

    cfg, mach = result["config"], result["machine"]
    busy = bool(mach.get("busy"))
    console = Console(file=file or sys.stdout, width=140)
    if busy:  # above the table: a reader who stops at the numbers must see it first
        console.print(f"[bold red]warning:[/] {busy_note(mach)}", highlight=False)
    table = Table(title=f"{os.path.basename(cfg['model'])}, {cfg['threads']} threads",
                  caption=f"median of {cfg['reps']} reps, engines interleaved, after a warm-up")
    for col, just in (("engine", "left"), ("test", "left"), ("t/s", "right"), ("min-max", "right"),
                      ("stdev", "right"), ("vs llama.cpp?" if busy else "vs llama.cpp", "right"), ("sparsity", "right"), ("recall", "right"),
                      ("MB/token", "right"), ("GB/s", "right"), ("bound t/s", "right"),
                      ("of bound", "right")):
        table.add_column(col, justify=just, no_wrap=col in ("engine", "test"))
    for e in result["engines"]:
        c = e.get("counters") or {}
        bpt = e.get("weight_bytes_per_token")
        for t, s in e["tests"].items():
            if not s.get("n"):
                continue
            ratio = s.get("ratio_vs_llama_cpp")
            tg = t.startswith("tg")  # counters and bytes describe decode steps
            table.add_row(e["name"], t, f"{s['median']:.1f}", f"{s['min']:.1f}-{s['max']:.1f}", f"{s['stdev']:.1f}",
                          "-" if ratio is None else f"{ratio:.2f}x" + ("?" if busy else ""),
                          _fmt_pct(c.get("sparsity")) if tg else "-",
                          _fmt_pct(c.get("recall")) if tg else "-",
                          f"{bpt / 1e6:.1f}" if tg and bpt else "-",
                          f"{s['implied_gb_per_s']:.1f}" if tg and s.get("implied_gb_per_s") else "-",
                          f"{s['bound_tps']:.1f}" if tg and s.get("bound_tps") else "-",
                          _fmt_pct(s.get("share_of_bandwidth")) if tg else "-")
    console.print(table)
    if cfg.get("kv_bytes_per_token"):
        deep = [d for d in cfg.get("depths", [0]) if d]
        console.print(f"KV cache ({cfg.get('cache_type', 'f16')}): {cfg['kv_bytes_per_token']} bytes per token"
                      + "".join(f"; at d{d} a decode step reads {cfg['kv_bytes_per_token'] * d / 1e6:.1f} MB of it"
                                for d in deep)
                      + ("; llama.cpp: F16 cache, flash attention "
                         + ("on" if cfg.get("llama_cpp", {}).get("flash_attn", True) else "off") if deep else ""),
                      highlight=False)
    la, lb = mach.get("loadavg_before"), mach.get("loadavg_after")
    console.print("MB/token: weight bytes a decode step reads (KV cache not counted); GB/s: that times tg t/s"
                  + (f"; bound t/s: read bandwidth / MB per token ({bandwidth_note(result)}); of bound: t/s / bound t/s"
                     if mach.get("read_bandwidth_gb_s") else "")
                  + "; recall of predict: from a separate untimed pass with the measure option"
                  + ("; ?: unreliable, the machine was busy (see the warning above)" if busy else ""), highlight=False)
    console.print(f"machine: {mach.get('cpu', '?')}, {mach.get('cpu_count')} cores; load average "
                  f"{la[0]:.2f} before, {lb[0]:.2f} after; {others_note(mach)}", highlight=False)


def others_note(mach: dict) -> str:
    """Other processes' share of the CPUs before and during the run, in words."""
    parts = [f"{100 * x:.0f}% {when}" for when, x in (("before", mach.get("others_cpu_share_before")),
                                                      ("during", mach.get("others_cpu_share_during")))
             if x is not None]
    return "other processes' share of the CPUs " + (", ".join(parts) if parts else "not measured")


def bandwidth_note(result: dict) -> str:
    """Which read bandwidths the bounds used, with their spread over the rounds."""
    cfg, mach = result["config"], result["machine"]

    def one(key: str) -> str:
        xs = mach.get(key + "_samples_gb_s") or [mach[key + "_gb_s"]]
        return f"{mach[key + '_gb_s']:.1f} GB/s (median of {len(xs)}, {min(xs):.1f}-{max(xs):.1f})"

    note = f"{cfg['threads']} threads of the engine's pool, measured between the rounds: "
    if mach.get("weights_read_bandwidth_gb_s"):
        note += (f"ours over our own weight copies, {one('weights_read_bandwidth')}; llama.cpp over a fresh "
                 f"buffer, {one('read_bandwidth')}")
    else:
        note += f"a fresh buffer, {one('read_bandwidth')}"
    if bandwidth_unstable(result):
        note += (f"; the samples differ by more than {BW_SPREAD - 1:.0%} (the memory's speed changed during the "
                 "run), so the shares of the bound are unreliable here")
    return note


def _write_atomic(path: str, write) -> None:
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_json(result: dict, path: str) -> None:
    def w(tmp):
        with open(tmp, "w") as f:
            json.dump(result, f, indent=2)
            f.write("\n")
    _write_atomic(path, w)


def write_plot(result: dict, path: str) -> None:
    """t/s per engine for each test (bars at the median, whiskers at min/max), and
    per-layer measured sparsity of our sparse modes when there are any."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    engines = result["engines"]
    tests = list(engines[0]["tests"]) if engines else []
    layered = [e for e in engines if e.get("counters", {}).get("layer_sparsity")
               and e["mode"] != "dense" and any(x for x in e["counters"]["layer_sparsity"])]
    ncols = len(tests) + (1 if layered else 0)
    fig, axes = plt.subplots(1, max(ncols, 1), figsize=(4.5 * max(ncols, 1), 4), squeeze=False)
    for ax, t in zip(axes[0], tests):
        names = [e["name"] for e in engines]
        med = [e["tests"][t].get("median", 0) for e in engines]
        lo = [m - e["tests"][t].get("min", m) for m, e in zip(med, engines)]
        hi = [e["tests"][t].get("max", m) - m for m, e in zip(med, engines)]
        colors = ["tab:gray" if e["kind"] == "llama.cpp" else "tab:blue" for e in engines]
        ax.bar(names, med, yerr=[lo, hi], color=colors, capsize=4)
        ax.set_title(f"{t} ({result['config']['threads']} threads)")
        ax.set_ylabel("tokens/s")
        ax.tick_params(axis="x", rotation=30)
    if layered:
        ax = axes[0][-1]
        for e in layered:
            ys = [np.nan if x is None else x for x in e["counters"]["layer_sparsity"]]
            ax.plot(range(len(ys)), ys, marker=".", label=e["name"])
        ax.set_xlabel("layer")
        ax.set_ylabel("measured sparsity")
        ax.set_ylim(0, 1)
        ax.legend()
    fig.suptitle(os.path.basename(result["config"]["model"]))
    fig.tight_layout()
    _write_atomic(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110))
    plt.close(fig)
