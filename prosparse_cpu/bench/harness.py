"""The measuring loop of `prosparse bench`: llama-bench's convention, our engine
next to llama.cpp.

- pp N: one prompt of N tokens from an empty cache (one batched eval);
- tg N: N single-token evals from an empty cache (no sampling, as llama-bench);
- at depth D (llama-bench's -d), "pp N @ dD" / "tg N @ dD": the same after a
  prompt of D other tokens, evaluated once per engine and cut back to D
  before every repetition (untimed);
- the same random token ids and the same thread count for every engine;
- a warm-up round first, then `reps` repetitions in which the engines take
  turns (interleaved), so drift in machine load hits all of them alike;
- the median t/s with its spread (min, max, stdev), and ours / llama.cpp.
"""

from __future__ import annotations

import os
import statistics
import time
from dataclasses import dataclass, field

import numpy as np

from .._lib import ProSparseError
from .engines import LlamaCppEngine, OurEngine
from .machine import (bandwidth_unstable, busy_verdict, cpu_clock, machine_info, measure_read_bandwidth, others_share,
                      sample_others)
from .traffic import bytes_per_token, weight_bytes


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


def time_pp(engine, ids: np.ndarray, prefix=()) -> tuple[float, float]:
    """(wall, cpu) seconds of one prompt of len(ids) tokens after the prefix (none: an empty cache)."""
    engine.start(prefix)
    c0, t0 = time.process_time(), time.perf_counter()
    engine.decode(ids)
    return time.perf_counter() - t0, time.process_time() - c0


def time_tg(engine, ids: np.ndarray, prefix=()) -> tuple[float, float]:
    """(wall, cpu) seconds of len(ids) single-token decodes after the prefix (none: an empty cache)."""
    engine.start(prefix)
    c0, t0 = time.process_time(), time.perf_counter()
    for i in range(len(ids)):
        engine.decode(ids[i:i + 1])
    return time.perf_counter() - t0, time.process_time() - c0


def default_modes(model) -> list[str]:
    """dense, plus every sparse mode this file can run: the engine's own answer."""
    return model.supported_modes()


def run_bench(path: str, baseline: str | None = None, threads: int = 2, reps: int = 5, n_pp: int = 512,
              n_tg: int = 128, modes: list[str] | None = None, llama: bool = True, seed: int = 1234,
              measure_bandwidth: bool = True, log=None, depths: list[int] | None = None,
              cache_type: str = "f16", llama_flash_attn: bool = True,
              activation_threshold: float = 0.0) -> dict:
    """Measure and return everything as one JSON-ready dict (see report.write_json).
    depths: the cache depths to measure at (default [0]); cache_type: our KV cache's."""
    from rich.console import Console

    from ..model import Model

    console = Console(stderr=True)
    say = log or (lambda msg: console.print(msg, highlight=False, soft_wrap=True))
    depths = sorted(set(int(d) for d in (depths or [0])))
    n_ctx = max(depths) + n_pp + n_tg + 8
    n_batch = max(n_pp, 1)
    load_before = os.getloadavg()
    others_before = sample_others()

    model = Model(path, threads=threads, n_ctx=n_ctx, n_batch=min(n_batch, 512), cache_type=cache_type,
                  activation_threshold=activation_threshold)
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
                    engines.insert(0, LlamaCppEngine(baseline or path, threads, n_ctx, max(n_batch, 512),
                                                      flash_attn=llama_flash_attn))
                except ProSparseError as e:
                    hint = "give a --baseline file llama.cpp can run"
                    if baseline is None and model.info.powerinfer:
                        hint += ", e.g. its twin from prosparse-convert MODEL -o TWIN.gguf --llama-compat"
                    say(f"{e}; measuring ours alone ({hint})")
        n_vocab = min(e.n_vocab for e in engines)
        rng = np.random.default_rng(seed)
        pp_ids = rng.integers(0, n_vocab, size=n_pp, dtype=np.int32)
        tg_ids = rng.integers(0, n_vocab, size=n_tg, dtype=np.int32)
        depth_ids = rng.integers(0, n_vocab, size=max(depths), dtype=np.int32)
        tests = []  # (name, fn, ids, prefix); depth 0 keeps llama-bench's plain names
        for d in depths:
            at = f" @ d{d}" if d else ""
            prefix = depth_ids[:d]
            tests += [(f"pp{n_pp}{at}", time_pp, pp_ids, prefix)] * (n_pp > 0)
            tests += [(f"tg{n_tg}{at}", time_tg, tg_ids, prefix)] * (n_tg > 0)
        series = {(e.name, t): Series(len(ids)) for e in engines for t, _, ids, _ in tests}
        counters: dict[str, list] = {e.name: [] for e in engines}
        bw_samples: list[float] = []  # GB/s, one after each round of repetitions
        weights_bw: list[float] = []  # the same over our model's own weight copies
        measure_weights = measure_bandwidth

        clock_start = clock_round = cpu_clock()
        others_rounds: list[float | None] = []  # others' CPU share in each round of repetitions
        with _progress(console, len(engines) * len(tests) * (reps + 1)) as step:
            for e in engines:  # warm-up: one full prompt and a few decodes each, not recorded
                for t, fn, ids, prefix in tests:
                    fn(e, ids if fn is time_pp else ids[:8], prefix)
                    step(f"warm-up {e.name} {t}")
            for r in range(reps):
                for t, fn, ids, prefix in tests:
                    for e in (engines if r % 2 == 0 else engines[::-1]):  # alternate who goes first
                        wall, cpu = fn(e, ids, prefix)
                        series[(e.name, t)].seconds.append(wall)
                        series[(e.name, t)].cpu_seconds.append(cpu)
                        if fn is time_tg and len(prefix) == 0:  # (at depth the counters include the prompt)
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
                clock = cpu_clock()
                others_rounds.append(others_share(clock_round, clock))
                clock_round = clock
        others_during = others_share(clock_start, cpu_clock())
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
                   "reps": reps, "n_pp": n_pp, "n_tg": n_tg, "n_ctx": n_ctx, "token_seed": seed,
                   "depths": depths, "cache_type": cache_type,
                   "kv_bytes_per_token": model.info.kv_bytes_per_token(cache_type),
                   "llama_cpp": {"flash_attn": llama_flash_attn, "cache_type": "f16"}},
        "machine": machine_info() | {"loadavg_before": load_before, "loadavg_after": os.getloadavg(),
                                     "read_bandwidth_gb_s": bandwidth, "read_bandwidth_samples_gb_s": bw_samples,
                                     "weights_read_bandwidth_gb_s": weights_bandwidth,
                                     "weights_read_bandwidth_samples_gb_s": weights_bw},
        "engines": [],
    }
    result["machine"]["bandwidth_unstable"] = bandwidth_unstable(result)
    result["machine"] |= busy_verdict(others_before, others_during) | {"others_cpu_share_rounds": others_rounds}
    for e in engines:
        entry = {"name": e.name, "kind": e.kind, "mode": e.mode, "file": os.path.abspath(e.path), "tests": {}}
        for t, _, _, prefix in tests:
            s = series[(e.name, t)]
            entry["tests"][t] = {"n_tokens": s.n_tokens, "depth": len(prefix), "seconds": s.seconds,
                                 "cpu_seconds": s.cpu_seconds, "tps": s.tps} | s.summary()
        if counters[e.name]:
            entry["counters"] = counters[e.name][-1]  # counters of the last tg run
        try:
            bpt = bytes_per_token(weight_bytes(e.path), e.mode, entry.get("counters"))
        except ProSparseError:
            bpt = None
        entry["weight_bytes_per_token"] = bpt
        kv_type = cache_type if e.kind == "prosparse" else "f16"
        for t, st in entry["tests"].items():  # the cache a decode step reads at its depth
            st["kv_bytes_read_per_token"] = model.info.kv_bytes_per_token(kv_type) * st["depth"]
        for t, s in entry["tests"].items():
            if t.startswith("tg") and bpt and s.get("median"):
                s["implied_gb_per_s"] = bpt * s["median"] / 1e9
                # the bound: every byte read at the read bandwidth of the memory it is in;
                # ours: our weight copies (memory can differ in speed by where it lies);
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
    """Each test's ratio to llama.cpp's median, and whether the machine was quiet enough to trust it."""
    ref = next((e for e in result["engines"] if e["kind"] == "llama.cpp"), None)
    busy = bool(result["machine"].get("busy"))
    for e in result["engines"]:
        for t, s in e["tests"].items():
            r = ref["tests"].get(t, {}).get("median") if ref else None
            s["ratio_vs_llama_cpp"] = s["median"] / r if r and s.get("median") else None
            s["ratio_reliable"] = None if s["ratio_vs_llama_cpp"] is None else not busy


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
