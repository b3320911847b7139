"""`prosparse bench`: llama-bench's convention, our engine next to llama.cpp.

- pp N: one prompt of N tokens from an empty cache (one batched eval);
- tg N: N single-token evals from an empty cache (no sampling, as llama-bench);
- the same random token ids and the same thread count for every engine;
- a warm-up round first, then `reps` repetitions in which the engines take
  turns (interleaved), so drift in machine load hits all of them alike;
- the median t/s with its spread (min, max, stdev), and ours / llama.cpp.

llama.cpp runs through llama-cpp-python's low-level API with
llama_synchronize() after each decode, so a timing covers finished work.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field

import numpy as np

from ._lib import ProSparseError

RELU_FAMILY = ("relu", "fatrelu", "relu2", "drelu")


# ---- bytes per token ----------------------------------------------------------
def weight_bytes(path: str) -> dict[str, int]:
    """Bytes of weights by role, from the file's tensor table (what a decode step may read)."""
    from .gguf_info import open_reader

    reader = open_reader(path)
    roles = dict(attn=0, gate=0, up=0, down=0, down_t=0, pred=0, output=0, embd_row=0, norms=0)
    names = {t.name for t in reader.tensors}
    for t in reader.tensors:
        n, name = int(t.n_bytes), t.name
        if name == "token_embd.weight":
            roles["embd_row"] = n // max(int(t.shape[-1]), 1)  # one row per token (ggml shape [n_embd, n_vocab])
            if "output.weight" not in names:
                roles["output"] += n  # tied: the whole matrix is the output projection
        elif name == "output.weight":
            roles["output"] += n
        elif re.search(r"\.attn_(q|k|v|output)\.weight$", name):
            roles["attn"] += n
        elif name.endswith(".ffn_gate.weight"):
            roles["gate"] += n
        elif name.endswith(".ffn_up.weight"):
            roles["up"] += n
        elif name.endswith((".ffn_down.weight", ".ffn_down_t.weight")):
            roles["down"] += n
            if name.endswith(".ffn_down_t.weight"):
                roles["down_t"] += n  # row-major by neuron: the engine reads only rows with a non-zero input
        elif ".ffn_pred_" in name:
            roles["pred"] += n
        elif name.endswith("norm.weight"):
            roles["norms"] += n
    return roles


def bytes_per_token(roles: dict[str, int], mode: str, counters: dict | None) -> float | None:
    """Weight bytes one decode step reads in a mode, given the measured shares of
    active (non-zero) and kept (predicted / above threshold) FFN neurons.
    KV-cache reads are not counted. None when a sparse mode lacks its counters.

    ffn_down_t (prosparse files) is read only at rows whose input is non-zero,
    in every mode, dense included (the accumulate-rows kernel skips zeros); a
    plain ffn_down is read whole whatever the mode."""
    fixed = roles["attn"] + roles["output"] + roles["embd_row"] + roles["norms"]
    ffn = roles["gate"] + roles["up"] + roles["down"]
    c = counters or {}
    active = None if c.get("sparsity") is None else 1.0 - c["sparsity"]
    kept = c.get("predicted_share")
    by_row = roles.get("down_t", 0) == roles["down"] > 0

    def down(share):
        return (share if by_row else 1.0) * roles["down"]

    if mode == "dense":
        if by_row and active is not None:
            return fixed + roles["gate"] + roles["up"] + down(active)
        return float(fixed + ffn)
    if mode == "sparse" and active is not None:
        return fixed + roles["gate"] + active * roles["up"] + down(active)
    if mode == "predict" and active is not None and kept is not None:
        return fixed + roles["pred"] + kept * (roles["gate"] + roles["up"]) + down(active)
    if mode == "threshold" and kept is not None:
        return fixed + roles["gate"] + kept * roles["up"] + down(kept)
    return None


def measure_read_bandwidth(threads: int, gib: float = 1.0, reps: int = 5) -> float:
    """Main-memory read bandwidth in GB/s with `threads` threads of the engine's own
    pool (native ps_debug_read_bandwidth): the median of `reps` passes over a
    `gib` GiB buffer, far above any L3. Repeated calls agree within a few percent."""
    from ._lib import read_bandwidth

    return read_bandwidth(threads, gib, reps)


# ---- engines ----------------------------------------------------------------
class LlamaCppEngine:
    """Dense llama.cpp on a file, timed through the low-level decode API."""

    kind = "llama.cpp"
    mode = "dense"

    def __init__(self, path: str, threads: int, n_ctx: int, n_batch: int):
        import llama_cpp

        self.llama_cpp = llama_cpp
        self.name = "llama.cpp"
        self.path = path
        try:
            self.llm = llama_cpp.Llama(model_path=path, n_ctx=n_ctx, n_threads=threads, n_threads_batch=threads,
                                       n_batch=n_batch, verbose=False)
        except Exception as e:  # llama-cpp-python raises ValueError("Failed to load model from file")
            raise ProSparseError(f"llama.cpp cannot load {path}: {e}") from None
        self.ctx = self.llm._ctx.ctx
        self.n_vocab = self.llm.n_vocab()

    def reset(self) -> None:
        lc = self.llama_cpp
        lc.llama_memory_clear(lc.llama_get_memory(self.ctx), True)

    def decode(self, ids: np.ndarray) -> None:
        lc = self.llama_cpp
        arr = (lc.llama_token * len(ids))(*[int(t) for t in ids])
        rc = lc.llama_decode(self.ctx, lc.llama_batch_get_one(arr, len(ids)))
        if rc != 0:
            raise ProSparseError(f"llama.cpp: llama_decode returned {rc}")
        lc.llama_synchronize(self.ctx)

    def counters(self) -> dict | None:
        return None

    def close(self) -> None:
        self.llm.close()


class OurEngine:
    """Our engine in one mode; modes of one file share a Model (set_mode between turns)."""

    kind = "prosparse"

    def __init__(self, model, mode: str):
        self.model = model
        self.mode = mode
        self.name = f"ours {mode}"
        self.path = model.path
        self.n_vocab = model.n_vocab
        self.last_stats: dict | None = None

    def reset(self) -> None:
        self.model.set_mode(self.mode)
        self.model.reset()

    def decode(self, ids: np.ndarray) -> None:
        self.model.eval(ids)

    def counters(self) -> dict | None:
        s = self.model.stats()
        return {k: s[k] for k in ("sparsity", "predicted_share", "recall", "tokens")} | {
            "layer_sparsity": [x["sparsity"] for x in s["layers"]],
            "layer_recall": [x["recall"] for x in s["layers"]],
        }

    def close(self) -> None:
        pass


# ---- measuring ----------------------------------------------------------------
@dataclass
class Series:
    """Timings of one (engine, test) pair over the repetitions."""

    n_tokens: int
    seconds: list[float] = field(default_factory=list)      # wall time of each repetition
    cpu_seconds: list[float] = field(default_factory=list)  # process CPU time (all threads): shows preemption

    @property
    def tps(self) -> list[float]:
        return [self.n_tokens / s for s in self.seconds if s > 0]

    def summary(self) -> dict:
        t = self.tps
        if not t:
            return {}
        return {"median": statistics.median(t), "min": min(t), "max": max(t),
                "stdev": statistics.stdev(t) if len(t) > 1 else 0.0, "n": len(t)}


def time_pp(engine, ids: np.ndarray) -> tuple[float, float]:
    """(wall, cpu) seconds of one prompt of len(ids) tokens from an empty cache."""
    engine.reset()
    c0, t0 = time.process_time(), time.perf_counter()
    engine.decode(ids)
    return time.perf_counter() - t0, time.process_time() - c0


def time_tg(engine, ids: np.ndarray) -> tuple[float, float]:
    """(wall, cpu) seconds of len(ids) single-token decodes from an empty cache."""
    engine.reset()
    c0, t0 = time.process_time(), time.perf_counter()
    for i in range(len(ids)):
        engine.decode(ids[i:i + 1])
    return time.perf_counter() - t0, time.process_time() - c0


def machine_info() -> dict:
    info = {
        "date_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "cpu_count": os.cpu_count(),
        "cpu": platform.processor(),
    }
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    info["cpu"] = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        with open("/proc/meminfo") as f:
            info["mem_total_kib"] = int(f.readline().split()[1])
    except (OSError, ValueError, IndexError):
        pass
    try:
        from ._lib import lib

        info["prosparse_simd"] = {0: "scalar", 1: "avx2", 2: "avx512"}.get(lib().ps_simd_get(), "?")
    except Exception:
        pass
    try:
        import llama_cpp

        info["llama_cpp_python"] = llama_cpp.__version__
        info["llama_cpp_system"] = llama_cpp.llama_print_system_info().decode(errors="replace").strip()
    except Exception:
        pass
    try:
        here = os.path.dirname(os.path.abspath(__file__))
        info["git_commit"] = subprocess.run(["git", "-C", here, "rev-parse", "--short", "HEAD"], capture_output=True,
                                            text=True, timeout=5).stdout.strip() or None
    except Exception:
        pass
    return info


def default_modes(model) -> list[str]:
    """dense, plus the sparse modes this file's activation and tensors allow."""
    info = model.info
    modes = ["dense"]
    if info.activation in RELU_FAMILY:
        modes.append("sparse")
    if info.has_predictor:
        modes.append("predict")
    if info.arch == "prosparse" and info.activation == "silu":
        modes.append("threshold")
    return modes


def run_bench(path: str, baseline: str | None = None, threads: int = 2, reps: int = 5, n_pp: int = 512,
              n_tg: int = 128, modes: list[str] | None = None, llama: bool = True, seed: int = 1234,
              measure_bandwidth: bool = True, log=None) -> dict:
    """Measure and return everything as one JSON-ready dict (see write_json)."""
    from rich.console import Console

    from .model import Model

    console = Console(stderr=True)
    say = log or (lambda msg: console.print(msg, highlight=False, soft_wrap=True))
    n_ctx = n_pp + n_tg + 8
    n_batch = max(n_pp, 1)
    load_before = os.getloadavg()

    model = Model(path, threads=threads, n_ctx=n_ctx, n_batch=min(n_batch, 512))
    engines: list = []
    try:
        explicit = modes is not None
        for mode in (modes if explicit else default_modes(model)):
            try:
                model.set_mode(mode)
            except ProSparseError as e:
                if explicit:
                    raise
                say(f"ours {mode}: skipped ({e})")
                continue
            engines.append(OurEngine(model, mode))
        if llama:
            try:
                import llama_cpp  # noqa: F401
            except Exception as e:
                say(f"llama.cpp: llama_cpp is not importable ({type(e).__name__}: {e}); measuring ours alone")
            else:
                try:
                    # n_batch bounds one llama_decode call; llama.cpp splits it into micro-batches of
                    # 512 (n_ubatch), as our engine splits a long prompt into batches of 512
                    engines.insert(0, LlamaCppEngine(baseline or path, threads, n_ctx, max(n_batch, 512)))
                except ProSparseError as e:
                    say(f"{e}; measuring ours alone (give a --baseline file llama.cpp can run)")
        n_vocab = min(e.n_vocab for e in engines)
        rng = np.random.default_rng(seed)
        pp_ids = rng.integers(0, n_vocab, size=n_pp, dtype=np.int32)
        tg_ids = rng.integers(0, n_vocab, size=n_tg, dtype=np.int32)
        tests = [(f"pp{n_pp}", time_pp, pp_ids)] * (n_pp > 0) + [(f"tg{n_tg}", time_tg, tg_ids)] * (n_tg > 0)
        series = {(e.name, t): Series(len(ids)) for e in engines for t, _, ids in tests}
        counters: dict[str, list] = {e.name: [] for e in engines}
        bw_samples: list[float] = []  # GB/s, one after each round of repetitions
        weights_bw: list[float] = []  # the same over our model's own weight copies
        measure_weights = measure_bandwidth

        with _progress(console, len(engines) * len(tests) * (reps + 1)) as step:
            for e in engines:  # warm-up: one full prompt and a few decodes each, not recorded
                for t, fn, ids in tests:
                    fn(e, ids if fn is time_pp else ids[:8])
                    step(f"warm-up {e.name} {t}")
            for r in range(reps):
                for t, fn, ids in tests:
                    for e in (engines if r % 2 == 0 else engines[::-1]):  # alternate who goes first
                        wall, cpu = fn(e, ids)
                        series[(e.name, t)].seconds.append(wall)
                        series[(e.name, t)].cpu_seconds.append(cpu)
                        if fn is time_tg:
                            c = e.counters()
                            if c is not None:
                                counters[e.name].append(c)
                        step(f"rep {r + 1}/{reps} {e.name} {t}")
                if measure_bandwidth:  # interleaved too: the host's memory bandwidth drifts over minutes
                    try:
                        bw_samples.append(measure_read_bandwidth(threads, reps=3))
                    except ProSparseError as e:
                        say(f"read bandwidth: {e}")
                        measure_bandwidth = False
                if measure_weights:
                    try:
                        weights_bw.append(model.read_bandwidth(reps=3))
                    except ProSparseError as e:
                        say(f"read bandwidth of the weights: {e}; bounds use the machine's figure")
                        measure_weights = False
        # predictor recall needs the dense gate as well (the measure option): one
        # separate, untimed pass per predict engine, never mixed into the timings
        for e in engines:
            if e.kind == "prosparse" and e.mode == "predict" and n_tg > 0:
                model.set_measure(True)
                try:
                    time_tg(e, tg_ids)
                    measured = e.counters()
                finally:
                    model.set_measure(False)
                if counters[e.name]:
                    counters[e.name][-1] |= {"recall": measured["recall"], "layer_recall": measured["layer_recall"],
                                             "recall_from": "separate untimed measuring pass"}
    finally:
        for e in engines:
            e.close()
        model.close()
    bandwidth = statistics.median(bw_samples) if bw_samples else None
    weights_bandwidth = statistics.median(weights_bw) if weights_bw else None

    result = {
        "config": {"model": os.path.abspath(path), "baseline": os.path.abspath(baseline or path), "threads": threads,
                   "reps": reps, "n_pp": n_pp, "n_tg": n_tg, "n_ctx": n_ctx, "token_seed": seed},
        "machine": machine_info() | {"loadavg_before": load_before, "loadavg_after": os.getloadavg(),
                                     "read_bandwidth_gb_s": bandwidth, "read_bandwidth_samples_gb_s": bw_samples,
                                     "weights_read_bandwidth_gb_s": weights_bandwidth,
                                     "weights_read_bandwidth_samples_gb_s": weights_bw},
        "engines": [],
    }
    result["machine"]["bandwidth_unstable"] = bandwidth_unstable(result)
    for e in engines:
        entry = {"name": e.name, "kind": e.kind, "mode": e.mode, "file": os.path.abspath(e.path), "tests": {}}
        for t, _, _ in tests:
            s = series[(e.name, t)]
            entry["tests"][t] = {"n_tokens": s.n_tokens, "seconds": s.seconds, "cpu_seconds": s.cpu_seconds,
                                 "tps": s.tps} | s.summary()
        if counters[e.name]:
            entry["counters"] = counters[e.name][-1]  # counters of the last tg run
        try:
            bpt = bytes_per_token(weight_bytes(e.path), e.mode, entry.get("counters"))
        except ProSparseError:
            bpt = None
        entry["weight_bytes_per_token"] = bpt
        for t, s in entry["tests"].items():
            if t.startswith("tg") and bpt and s.get("median"):
                s["implied_gb_per_s"] = bpt * s["median"] / 1e9
                # the bound: every byte read at the read bandwidth of the memory it is in;
                # ours: our weight copies (on a VM, memory differs: see bandwidth.c);
                # llama.cpp's page-cache pages cannot be measured: the machine's figure
                bw = weights_bandwidth if e.kind == "prosparse" and weights_bandwidth else bandwidth
                if bw:
                    s["bound_tps"] = bw * 1e9 / bpt
                    s["bound_bandwidth_gb_s"] = bw
                    s["share_of_bandwidth"] = s["median"] / s["bound_tps"]
        result["engines"].append(entry)
    _add_ratios(result)
    return result


def _add_ratios(result: dict) -> None:
    ref = next((e for e in result["engines"] if e["kind"] == "llama.cpp"), None)
    for e in result["engines"]:
        for t, s in e["tests"].items():
            r = ref["tests"].get(t, {}).get("median") if ref else None
            s["ratio_vs_llama_cpp"] = s["median"] / r if r and s.get("median") else None


class _progress:
    """A transient rich progress bar on stderr (nothing when stderr is not a terminal)."""

    def __init__(self, console, total: int):
        self.console, self.total = console, total

    def __enter__(self):
        from rich.progress import BarColumn, Progress, TextColumn

        self.p = Progress(TextColumn("{task.description:<28}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                          console=self.console, transient=True, disable=not self.console.is_terminal)
        self.p.__enter__()
        self.task = self.p.add_task("bench", total=self.total)
        return lambda what: self.p.update(self.task, advance=1, description=what)

    def __exit__(self, *exc):
        self.p.__exit__(*exc)


# ---- reporting ------------------------------------------------------------------
def _fmt_pct(x) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def print_table(result: dict, file=None) -> None:
    from rich.console import Console
    from rich.table import Table

    cfg, mach = result["config"], result["machine"]
    table = Table(title=f"{os.path.basename(cfg['model'])}, {cfg['threads']} threads",
                  caption=f"median of {cfg['reps']} reps, engines interleaved, after a warm-up")
    for col, just in (("engine", "left"), ("test", "left"), ("t/s", "right"), ("min-max", "right"),
                      ("stdev", "right"), ("vs llama.cpp", "right"), ("sparsity", "right"), ("recall", "right"),
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
                          "-" if ratio is None else f"{ratio:.2f}x",
                          _fmt_pct(c.get("sparsity")) if tg else "-",
                          _fmt_pct(c.get("recall")) if tg else "-",
                          f"{bpt / 1e6:.1f}" if tg and bpt else "-",
                          f"{s['implied_gb_per_s']:.1f}" if tg and s.get("implied_gb_per_s") else "-",
                          f"{s['bound_tps']:.1f}" if tg and s.get("bound_tps") else "-",
                          _fmt_pct(s.get("share_of_bandwidth")) if tg else "-")
    console = Console(file=file or sys.stdout, width=140)
    console.print(table)
    la, lb = mach.get("loadavg_before"), mach.get("loadavg_after")
    console.print("MB/token: weight bytes a decode step reads (KV cache not counted); GB/s: that times tg t/s"
                  + (f"; bound t/s: read bandwidth / MB per token ({bandwidth_note(result)}); of bound: t/s / bound t/s"
                     if mach.get("read_bandwidth_gb_s") else "")
                  + "; recall of predict: from a separate untimed pass with the measure option", highlight=False)
    console.print(f"machine: {mach.get('cpu', '?')}, {mach.get('cpu_count')} cores; load average "
                  f"{la[0]:.2f} before, {lb[0]:.2f} after (a busy machine makes every number noisy)", highlight=False)


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


BW_SPREAD = 1.2  # largest/smallest bandwidth sample of a run beyond which its bounds are called unreliable


def bandwidth_unstable(result: dict) -> bool:
    """True when a run's read-bandwidth samples spread too far for one bound to describe it."""
    mach = result["machine"]
    for key in ("read_bandwidth_samples_gb_s", "weights_read_bandwidth_samples_gb_s"):
        xs = [x for x in mach.get(key) or [] if x]
        if len(xs) > 1 and max(xs) > BW_SPREAD * min(xs):
            return True
    return False


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
