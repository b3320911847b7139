"""`make bench`: the README's speed and quality tables, measured on this machine.

Sections (--sections, comma-separated; default all, in this order):
  sparse7b   synthetic LLaMA-2-7B-shaped `prosparse` model (FATReLU, ~89%
             inactive, rank-1024 predictor; scripts/synth_sparse_model.py, made
             once into --synth-dir) in each of --synth-types (Q4_0, llama.cpp's
             Q4_K_M mix) vs llama.cpp on its --llama-compat twin, one table:
             tg in modes dense, sparse, predict; MB/token, share of the
             bytes-per-token bound, measured sparsity, predictor recall;
  sparse1b   the same for a ~1B shape;
  pwri7b     the 7B shape written as PowerInfer's own PWRI file (`synth_sparse_model.py
             --format powerinfer`: ReLU at ~89% inactive, fc1/fc2 predictor, Q4_0),
             run as it is: dense, sparse, predict vs llama.cpp on its llama twin;
  pwri1b     the same for the ~1B shape;
  threshold  SmolLM2-135M-Instruct (SiLU), Q4_0: converted with --calibrate on
             --calib-text at each --targets sparsity; tg dense vs threshold vs
             llama.cpp, and perplexity (dense and threshold) on --eval-text, a
             text not used for calibration;
  smollm2    SmolLM2-135M-Instruct in Q4_1 / Q8_0 / Q4_0: pp and tg vs llama.cpp;
  dense0     the ~1B shape with 99.9% of neurons active: every mode's pp and tg
             against our own dense, to show the sparse machinery costs little
             when there is nothing to skip;
  depth      decode deep in the context (llama-bench -d): tg after a prompt of
             --depths tokens (SmolLM2 also at --smollm2-depth, 8192: its context) for SmolLM2
             Q4_1 / Q4_0 and the --depth-shapes synthetic models (dense and
             predict), ours with the F16 KV cache vs llama.cpp with flash
             attention and its F16 cache; KV MB read per step.

Every measurement is `prosparse bench`'s (engines interleaved, same threads,
median of --reps after a warm-up). Raw results: OUT/<section>_<file>.json;
OUT/summary.md (markdown tables, each headed by the command that reproduces
it), OUT/summary.json, OUT/summary.png.

    python scripts/bench_all.py --threads 2 [--sections sparse1b,threshold] [--reps 3] [--out out/bench]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

from prosparse_cpu import ProSparseError
from prosparse_cpu.bench import bandwidth_note, print_table, run_bench, write_json

HERE = Path(__file__).resolve().parent
CACHE = Path.home() / ".cache" / "prosparse-cpu"
DEFAULT_MODEL = CACHE / "SmolLM2-135M-Instruct.Q4_1.gguf"
SECTIONS = ("sparse7b", "sparse1b", "pwri7b", "pwri1b", "threshold", "smollm2", "dense0", "depth")
DEPTH_TARGET = 1.8  # tg at depth >= 2048: ours / llama.cpp
SPARSE_TARGETS = {"sparse": 1.5, "predict": 1.8}  # the project's targets: tg speed-up over llama.cpp dense
BOUND_TARGET = 0.8                                 # and share of the bytes-per-token bound
SYNTH_TYPES = ("q4_0", "q4_k_m")  # synth_sparse_model.py's --type choices
MACHINES: list[dict] = []  # each measurement's machine record (load, others' CPU share, busy) of the current section


def say(msg: str) -> None:
    print(msg, flush=True)


def f(x, fmt: str) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, fmt)


def pct(x) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def bench_cmd(path: Path, baseline: Path | None, a: argparse.Namespace, pp: int, tg: int, modes: list[str],
              depths: list[int] | None = None) -> str:
    """The `prosparse bench` command line that measures what run_bench is given."""
    cmd = ["prosparse", "bench", str(path)] + (["--baseline", str(baseline)] if baseline else [])
    cmd += ["--threads", str(a.threads), "--reps", str(a.reps), "--pp", str(pp), "--tg", str(tg),
            "--modes", ",".join(modes)]
    if depths:
        cmd += ["--depth", ",".join(map(str, depths))]
    return shlex.join(cmd)


# ---- files made once ---------------------------------------------------------------
def variants(src: Path, types: list[str]) -> list[Path]:
    """The source file for its own type, quantized siblings (made once) for the others."""
    own = src.name.split(".")[1].lower() if src.name.count(".") >= 2 else None
    stem = src.name.split(".")[0]
    out = [src if t == own else src.parent / f"{stem}.{t.upper()}.gguf" for t in types]
    missing = [t for t, p in zip(types, out) if not p.is_file()]
    if missing:
        say(f"  making {', '.join(missing)} variants of {src.name} (once)")
        for t, p in zip(types, out):
            if t in missing:
                subprocess.run([sys.executable, "-m", "prosparse_cpu.convert.cli", str(src), "-o", str(p),
                                "--outtype", t], check=True, stdout=subprocess.DEVNULL)
    return out


def synth_files(shape: str, synth_dir: Path, fmt: str = "prosparse", wtype: str = "q4_0") -> tuple[Path, Path]:
    """(sparse model, llama twin) of a synthetic shape in weight type wtype (q4_0, q4_k_m), generated
    once into synth_dir; fmt powerinfer: the model is a PowerInfer PWRI file (Q4_0)."""
    suffix = "" if wtype == "q4_0" else f"-{wtype}"
    if fmt == "powerinfer":
        model, twin = (synth_dir / f"powerinfer-{shape}.powerinfer.gguf", synth_dir / f"powerinfer-{shape}.llama.gguf")
    else:
        model, twin = synth_dir / f"prosparse-{shape}{suffix}.gguf", synth_dir / f"llama-{shape}{suffix}.gguf"
    if not (model.is_file() and twin.is_file()):
        say(f"  generating the synthetic {shape} {fmt} {wtype} model and its twin into {synth_dir} (once)")
        synth_dir.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, str(HERE / "synth_sparse_model.py"), "--shape", shape, "--format", fmt,
                        "--type", wtype, "--out", str(synth_dir)], check=True)
    return model, twin


def dense0_file(synth_dir: Path) -> Path:
    """The ~1B synthetic shape with (almost) every neuron active, generated once."""
    out = synth_dir / "dense0"
    model = out / "prosparse-1b.gguf"
    if not model.is_file():
        say(f"  generating the 0%-sparsity 1B model into {out} (once)")
        out.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, str(HERE / "synth_sparse_model.py"), "--shape", "1b", "--active", "0.999",
                        "--no-twin", "--out", str(out)], check=True)
    return model


def calibrated(src: Path, text: Path, target: float, tokens: int, cache: Path) -> tuple[Path, str]:
    """src converted with threshold-mode cut-offs for `target` (made once into cache); and the command."""
    out = cache / f"{src.stem}.thr{round(100 * target):02d}.{text.name}.{tokens}.gguf"
    cmd = ["prosparse-convert", str(src), "-o", str(out), "--calibrate", str(text), "--target-sparsity",
           str(target), "--calibrate-tokens", str(tokens)]
    if not out.is_file():
        say(f"  calibrating {src.name} at {target:.0%} on {text.name} (once)")
        cache.mkdir(parents=True, exist_ok=True)
        exe = Path(sys.executable).parent / "prosparse-convert"
        subprocess.run([str(exe) if exe.exists() else "prosparse-convert"] + cmd[1:] + ["--no-progress"], check=True)
    return out, shlex.join(cmd)


# ---- sections ------------------------------------------------------------------------
def engine_rows(res: dict) -> list[dict]:
    """One flat row per engine of a run_bench result (its tg test, and pp when there)."""
    rows = []
    for e in res["engines"]:
        row = {"engine": e["name"], "kind": e["kind"], "mode": e["mode"], "file": os.path.basename(e["file"]),
               "mb_per_token": None if e.get("weight_bytes_per_token") is None else e["weight_bytes_per_token"] / 1e6}
        c = e.get("counters") or {}
        row["sparsity"], row["recall"], row["kept"] = c.get("sparsity"), c.get("recall"), c.get("predicted_share")
        for t, s in e["tests"].items():
            k = "pp" if t.startswith("pp") else "tg"
            row[f"{k}_tps"], row[f"{k}_ratio"] = s.get("median"), s.get("ratio_vs_llama_cpp")
            row[f"{k}_min"], row[f"{k}_max"] = s.get("min"), s.get("max")
            if k == "tg":
                row["bound_tps"], row["bound_share"] = s.get("bound_tps"), s.get("share_of_bandwidth")
        rows.append(row)
    return rows


def measure(label: str, path: Path, baseline: Path | None, a, pp: int, tg: int, modes: list[str], out: Path,
            depths: list[int] | None = None) -> dict:
    res = run_bench(str(path), baseline=str(baseline) if baseline else None, threads=a.threads, reps=a.reps,
                    n_pp=pp, n_tg=tg, modes=modes, depths=depths)
    print_table(res)
    write_json(res, str(out / f"{label}_{path.stem}.json"))
    MACHINES.append(res["machine"])
    return res


def section_sparse(shape: str, a, out: Path, fmt: str = "prosparse") -> dict:
    """One table for the shape: per weight type (--synth-types; PWRI files are Q4_0 only) llama.cpp on
    the twin, and our dense, sparse and predict on the model."""
    tg = a.tg_7b if shape == "7b" else a.tg_1b
    modes = ["dense", "sparse", "predict"]
    name = f"pwri{shape}" if fmt == "powerinfer" else f"sparse{shape}"
    wtypes = ["q4_0"] if fmt == "powerinfer" else a.synth_types
    rows, cmds, notes = [], [], []
    for wtype in wtypes:
        model, twin = synth_files(shape, a.synth_dir, fmt, wtype)
        res = measure(name, model, twin, a, a.sparse_pp, tg, modes, out)
        cmds.append(bench_cmd(model, twin, a, a.sparse_pp, tg, modes))
        notes.append(bandwidth_note(res))
        typed = [r | {"weights": wtype.upper()} for r in engine_rows(res)]
        dense = next((r.get("tg_tps") for r in typed if r["kind"] == "prosparse" and r["mode"] == "dense"), None)
        for r in typed:
            r["tg_vs_dense"] = r["tg_tps"] / dense if r["kind"] == "prosparse" and dense and r.get("tg_tps") else None
        rows += typed
    if fmt == "powerinfer":
        what = (f"**PowerInfer file, LLaMA-2-{shape.upper()} shape** (`scripts/synth_sparse_model.py --shape {shape} "
                "--format powerinfer`: a PWRI file in PowerInfer's own layout, random Q4_0 weights, ReLU at ~89% "
                "inactive, fc1/fc2 predictor; run as it is) vs llama.cpp on its llama twin")
    else:
        what = (f"**Synthetic LLaMA-2-{shape.upper()}-shaped model** (`scripts/synth_sparse_model.py --shape {shape} "
                f"--type T`, T in {', '.join(wtypes)}: random weights (Q4_0, or llama.cpp's Q4_K_M mix), FATReLU "
                "at ~89% inactive, low-rank predictor) vs llama.cpp on its `--llama-compat` twin")
    lines = [f"{what}; {a.threads} threads, tg{tg}, median of {a.reps}. Read bandwidth for the "
             f"bounds: {notes[0]}.",
             "", *[f"    {c}" for c in cmds], "",
             "| weights | engine | tg t/s (min-max) | vs llama.cpp | vs our dense | MB/token | bound t/s | of bound "
             "| sparsity | recall |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    checks = []
    for r in rows:
        lines.append(f"| {r['weights']} | {r['engine']} | {f(r.get('tg_tps'), '.2f')} ({f(r.get('tg_min'), '.2f')}-"
                     f"{f(r.get('tg_max'), '.2f')}) | {f(r.get('tg_ratio'), '.2f')}x | {f(r['tg_vs_dense'], '.2f') + 'x' * (r['tg_vs_dense'] is not None)} "
                     f"| {f(r['mb_per_token'], '.0f')} | {f(r.get('bound_tps'), '.1f')} | {pct(r.get('bound_share'))} "
                     f"| {pct(r['sparsity'])} | {pct(r['recall'])} |")
        want = SPARSE_TARGETS.get(r["mode"]) if r["kind"] == "prosparse" else None
        if want and r.get("tg_ratio") is not None:
            checks.append(f"{r['weights']} {r['mode']} {r['tg_ratio']:.2f}x llama.cpp (target >= {want}x: "
                          f"{'met' if r['tg_ratio'] >= want else 'NOT met'})")
        if r["kind"] == "prosparse" and r["mode"] != "dense" and r.get("bound_share") is not None:
            checks.append(f"{r['weights']} {r['mode']} at {pct(r['bound_share'])} of its bound (target >= "
                          f"{BOUND_TARGET:.0%}: {'met' if r['bound_share'] >= BOUND_TARGET else 'NOT met'})")
    if checks:
        lines += ["", "Targets: " + "; ".join(checks) + "."]
    return {"section": name, "rows": rows, "markdown": "\n".join(lines) + "\n",
            "read_bandwidth_gb_s": res["machine"].get("read_bandwidth_gb_s"), "command": cmds[0], "commands": cmds}


def section_dense0(a, out: Path) -> dict:
    """At 0% sparsity: every mode against our own dense, to show what the sparse machinery costs."""
    model = dense0_file(a.synth_dir)
    modes = ["dense", "sparse", "predict"]
    res = run_bench(str(model), threads=a.threads, reps=a.reps, n_pp=a.dense0_pp, n_tg=a.tg_1b, modes=modes,
                    llama=False)
    print_table(res)
    write_json(res, str(out / f"dense0_{model.stem}.json"))
    MACHINES.append(res["machine"])
    rows = engine_rows(res)
    base = next(r for r in rows if r["mode"] == "dense")
    cmd = bench_cmd(model, None, a, a.dense0_pp, a.tg_1b, modes) + " --no-llama"
    lines = [f"**0% sparsity** (`scripts/synth_sparse_model.py --shape 1b --active 0.999 --no-twin`: the ~1B shape "
             f"with 99.9% of neurons active per token); {a.threads} threads, pp{a.dense0_pp} and tg{a.tg_1b}, "
             f"median of {a.reps}, each mode against our own dense.", "", "    " + cmd, "",
             "| mode | pp t/s | pp vs dense | tg t/s | tg vs dense | sparsity |", "|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        pp_rel = r.get("pp_tps") / base["pp_tps"] if r.get("pp_tps") and base.get("pp_tps") else None
        tg_rel = r.get("tg_tps") / base["tg_tps"] if r.get("tg_tps") and base.get("tg_tps") else None
        r["pp_vs_dense"], r["tg_vs_dense"] = pp_rel, tg_rel
        lines.append(f"| {r['mode']} | {f(r.get('pp_tps'), '.1f')} | {f(pp_rel, '.3f')}x | {f(r.get('tg_tps'), '.1f')} "
                     f"| {f(tg_rel, '.3f')}x | {pct(r['sparsity'])} |")
    return {"section": "dense0", "rows": rows, "markdown": "\n".join(lines) + "\n", "command": cmd}


def perplexity_of(path: Path, mode: str, text: str, a) -> dict:
    from prosparse_cpu import Model
    from prosparse_cpu.perplexity import perplexity

    with Model(path, threads=a.threads, n_ctx=a.ppl_ctx, mode=mode, n_batch=min(a.ppl_ctx, 512)) as m:
        r = perplexity(m, text, n_ctx=a.ppl_ctx, max_windows=a.ppl_chunks)
        st = m.stats()
    return {"ppl": r.ppl, "ppl_stderr": r.ppl_stderr, "n_tokens_scored": r.n_tokens_scored,
            "n_windows": r.n_windows, "kept": st.get("predicted_share")}


def section_threshold(a, out: Path) -> dict:
    src = variants(a.model, ["q4_0"])[0]  # Q4_0: a type the sparse kernels run; llama.cpp runs the same bytes
    text = a.eval_text.read_text(encoding="utf-8")
    def ppl_cmd(path: Path, mode: str) -> str:
        return shlex.join(["prosparse", "perplexity", str(path), str(a.eval_text), "--mode", mode, "--threads",
                           str(a.threads), "--ctx", str(a.ppl_ctx)]
                          + (["--chunks", str(a.ppl_chunks)] if a.ppl_chunks else []))

    rows, cmds, dense_ppl = [], [], None
    for target in a.targets:
        path, conv = calibrated(src, a.calib_text, target, a.calib_tokens, a.synth_dir.parent / "calibrated")
        cmds.append(conv)
        res = measure(f"threshold{round(100 * target):02d}", path, src, a, 0, a.tg_threshold,
                      ["dense", "threshold"], out)
        cmds.append(bench_cmd(path, src, a, 0, a.tg_threshold, ["dense", "threshold"]))
        say(f"  perplexity on {a.eval_text.name}")
        if dense_ppl is None:  # the converted file's dense mode = the source's weights
            dense_ppl = perplexity_of(path, "dense", text, a)
            cmds.append(ppl_cmd(path, "dense"))
        thr_ppl = perplexity_of(path, "threshold", text, a)
        cmds.append(ppl_cmd(path, "threshold"))
        eng = {r["mode"] if r["kind"] == "prosparse" else "llama.cpp": r for r in engine_rows(res)}
        rows.append({"target": target, "file": path.name, "engines": eng, "ppl_dense": dense_ppl,
                     "ppl_threshold": thr_ppl})
    lines = [f"**SmolLM2-135M-Instruct (SiLU), threshold mode**: {src.name} converted with cut-offs calibrated on "
             f"`{a.calib_text}` (first {a.calib_tokens} tokens); speed vs llama.cpp on {src.name}, "
             f"{a.threads} threads, "
             f"tg{a.tg_threshold}, median of {a.reps}; perplexity on `{a.eval_text}` (not used for calibration), "
             f"windows of {a.ppl_ctx}. \"dense\" is the converted file in dense mode: it keeps the source's "
             "tensors, so it computes exactly what the source does (its up matrix stays row-major for threshold "
             "mode's row reads, so its dense mode runs a little slower than the source's).", "", *[f"    {c}" for c in cmds], "",
             "| target | skipped (measured) | llama.cpp t/s | dense t/s | threshold t/s | threshold vs llama.cpp "
             "| threshold vs dense | PPL dense | PPL threshold | PPL change |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        e = r["engines"]
        lc, d, t = (e.get(k, {}) for k in ("llama.cpp", "dense", "threshold"))
        kept = t.get("kept")
        vs_dense = t["tg_tps"] / d["tg_tps"] if t.get("tg_tps") and d.get("tg_tps") else None
        pd, pt = r["ppl_dense"], r["ppl_threshold"]
        lines.append(f"| {r['target']:.0%} | {pct(None if kept is None else 1 - kept)} | {f(lc.get('tg_tps'), '.1f')} "
                     f"| {f(d.get('tg_tps'), '.1f')} | {f(t.get('tg_tps'), '.1f')} | {f(t.get('tg_ratio'), '.2f')}x "
                     f"| {f(vs_dense, '.2f')}x | {pd['ppl']:.3f} ± {pd['ppl_stderr']:.3f} "
                     f"| {pt['ppl']:.3f} ± {pt['ppl_stderr']:.3f} | {100 * (pt['ppl'] / pd['ppl'] - 1):+.1f}% |")
    return {"section": "threshold", "rows": rows, "markdown": "\n".join(lines) + "\n", "commands": cmds}


def section_smollm2(a, out: Path) -> dict:
    types = [t.strip().lower() for t in a.types.split(",") if t.strip()]
    rows, cmds = [], []
    for path in variants(a.model, types):
        say(f"  {path.name}")
        res = measure("smollm2", path, None, a, a.pp, a.tg, ["dense"], out)
        cmds.append(bench_cmd(path, None, a, a.pp, a.tg, ["dense"]))
        rows += [r for r in engine_rows(res) if r["kind"] == "prosparse"
                 ] + [r | {"engine": "llama.cpp"} for r in engine_rows(res) if r["kind"] == "llama.cpp"]
    lines = [f"**SmolLM2-135M-Instruct, dense**: {a.threads} threads, median of {a.reps}, engines interleaved "
             "(llama-bench convention).", "", *[f"    {c}" for c in cmds], "",
             "| file | pp t/s ours (llama.cpp) | pp ratio | tg t/s ours (llama.cpp) | tg ratio | tg of bound |",
             "|---|---:|---:|---:|---:|---:|"]
    ours = [r for r in rows if r["kind"] == "prosparse"]
    for r in ours:
        ref = next((x for x in rows if x["kind"] == "llama.cpp" and x["file"] == r["file"]), {})
        lines.append(f"| {r['file']} | {f(r.get('pp_tps'), '.1f')} ({f(ref.get('pp_tps'), '.1f')}) "
                     f"| {f(r.get('pp_ratio'), '.2f')}x | {f(r.get('tg_tps'), '.1f')} ({f(ref.get('tg_tps'), '.1f')}) "
                     f"| {f(r.get('tg_ratio'), '.2f')}x | {pct(r.get('bound_share'))} |")
    return {"section": "smollm2", "rows": rows, "markdown": "\n".join(lines) + "\n", "commands": cmds}


def section_depth(a, out: Path) -> dict:
    """tg deep in the context: SmolLM2 (to its 8k context) and the synthetic shapes."""
    deep = sorted(set(a.depths + [a.smollm2_depth] * (a.smollm2_depth > 0)))
    files = [(p, None, ["dense"], deep) for p in variants(a.model, ["q4_1", "q4_0"])]
    for shape in a.depth_shapes:
        model, twin = synth_files(shape, a.synth_dir)
        files.append((model, twin, ["dense", "predict"], a.depths))
    rows, cmds, checks = [], [], []
    for path, twin, modes, depths in files:
        say(f"  {path.name} at depths {depths}")
        res = measure("depth", path, twin, a, 0, a.tg_depth, modes, out, depths)
        cmds.append(bench_cmd(path, twin, a, 0, a.tg_depth, modes, depths))
        kv = res["config"]["kv_bytes_per_token"]
        for e in res["engines"]:
            for t, st in e["tests"].items():
                rows.append({"file": path.name, "engine": e["name"], "kind": e["kind"], "depth": st["depth"],
                             "tg_tps": st.get("median"), "tg_min": st.get("min"), "tg_max": st.get("max"),
                             "tg_ratio": st.get("ratio_vs_llama_cpp"), "kv_mb": kv * st["depth"] / 1e6})
                r = rows[-1]
                if e["kind"] == "prosparse" and r["depth"] >= 2048 and r["tg_ratio"] is not None:
                    checks.append(f"{path.name} {e['name']} d{r['depth']} {r['tg_ratio']:.2f}x "
                                  f"({'met' if r['tg_ratio'] >= DEPTH_TARGET else 'NOT met'})")
    lines = [f"**Decode deep in the context** (llama-bench's -d: tg{a.tg_depth} after a prompt of D tokens): ours "
             "with the F16 KV cache, llama.cpp (llama-cpp-python) with flash attention and its F16 cache; "
             f"{a.threads} threads, median of {a.reps}.", "", *[f"    {c}" for c in cmds], "",
             "| file | engine | depth | tg t/s (min-max) | vs llama.cpp | KV MB read per step |",
             "|---|---|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['file']} | {r['engine']} | {r['depth']} | {f(r['tg_tps'], '.1f')} "
                     f"({f(r['tg_min'], '.1f')}-{f(r['tg_max'], '.1f')}) | {f(r['tg_ratio'], '.2f')}x "
                     f"| {r['kv_mb']:.1f} |")
    if checks:
        lines += ["", f"Target tg at depth >= 2048 >= {DEPTH_TARGET}x llama.cpp: " + "; ".join(checks) + "."]
    return {"section": "depth", "rows": rows, "markdown": "\n".join(lines) + "\n", "commands": cmds}


# ---- plot ------------------------------------------------------------------------------
def plot(results: list[dict], path: Path) -> None:
    """tg t/s per engine and mode, one panel per section (threshold: one bar group per target)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = []
    for r in results:
        if r["section"] == "threshold":
            bars = []
            for row in r["rows"]:
                for k, e in row["engines"].items():
                    bars.append((f"{k} @{row['target']:.0%}" if k == "threshold" else k, e.get("tg_tps"),
                                 e["kind"]))
            seen, uniq = set(), []
            for b in bars:  # llama.cpp and dense repeat per target: keep the first of each
                if b[0] not in seen:
                    seen.add(b[0])
                    uniq.append(b)
            panels.append(("threshold (SmolLM2 Q4_0)", uniq))
        elif r["section"] == "depth":
            panels.append(("tg at depth", [(f"{x['engine']} {x['file'].split('.')[1]} d{x['depth']}", x.get("tg_tps"),
                                            x["kind"]) for x in r["rows"] if x["depth"]]))
        else:
            panels.append((r["section"], [(f"{x['engine']} {x['file'].split('.')[1]}" if r["section"] == "smollm2"
                                           else f"{x['engine']} {x['weights']}" if len(
                                               {y.get("weights") for y in r["rows"]}) > 1
                                           else x["engine"], x.get("tg_tps"), x["kind"]) for x in r["rows"]]))
    fig, axes = plt.subplots(1, len(panels), figsize=(4.5 * len(panels), 4.2), squeeze=False)
    for ax, (title, bars) in zip(axes[0], panels):
        ax.bar([b[0] for b in bars], [b[1] or 0 for b in bars],
               color=["tab:gray" if b[2] == "llama.cpp" else "tab:blue" for b in bars])
        ax.set_title(title)
        ax.set_ylabel("tg tokens/s")
        ax.tick_params(axis="x", rotation=40, labelsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sections", default=",".join(SECTIONS), help=f"comma-separated, of {', '.join(SECTIONS)}")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--out", type=Path, default=Path("out/bench"))
    ap.add_argument("--model", type=Path, default=Path(os.environ.get("PROSPARSE_SMOLLM2") or DEFAULT_MODEL),
                    help="SmolLM2-135M-Instruct GGUF (smollm2, threshold)")
    ap.add_argument("--synth-dir", type=Path, default=CACHE / "synth",
                    help="synthetic models (made once); calibrated files go to its parent's calibrated/")
    ap.add_argument("--types", default="q4_1,q8_0,q4_0", help="smollm2: weight types (variants are made once)")
    ap.add_argument("--pp", type=int, default=512, help="smollm2: prompt tokens")
    ap.add_argument("--tg", type=int, default=128, help="smollm2: generated tokens")
    ap.add_argument("--synth-types", default="q4_0,q4_k_m",
                    help="sparse7b/1b: weight types of the synthetic models (q4_0, q4_k_m; made once)")
    ap.add_argument("--sparse-pp", type=int, default=0, help="sparse7b/1b: prompt tokens (0: skip)")
    ap.add_argument("--tg-7b", type=int, default=32, help="sparse7b: generated tokens")
    ap.add_argument("--tg-1b", type=int, default=64, help="sparse1b, dense0: generated tokens")
    ap.add_argument("--dense0-pp", type=int, default=64, help="dense0: prompt tokens")
    ap.add_argument("--targets", default="0.3,0.5,0.7", help="threshold: target sparsities")
    ap.add_argument("--tg-threshold", type=int, default=128, help="threshold: generated tokens")
    ap.add_argument("--calib-text", type=Path, default=Path("/usr/share/common-licenses/GPL-3"))
    ap.add_argument("--calib-tokens", type=int, default=2048)
    ap.add_argument("--eval-text", type=Path, default=Path("/usr/share/common-licenses/Apache-2.0"))
    ap.add_argument("--ppl-ctx", type=int, default=512)
    ap.add_argument("--depths", default="0,2048,4096", help="depth: cache depths (SmolLM2 also 8192)")
    ap.add_argument("--depth-shapes", default="1b", help="depth: synthetic shapes too (1b, 7b; empty: none)")
    ap.add_argument("--smollm2-depth", type=int, default=8192, help="depth: one more depth for SmolLM2 (0: none)")
    ap.add_argument("--tg-depth", type=int, default=64, help="depth: generated tokens")
    ap.add_argument("--ppl-chunks", type=int, default=None, help="threshold: at most this many perplexity windows")
    a = ap.parse_args()
    sections = [s.strip() for s in a.sections.split(",") if s.strip()]
    bad = [s for s in sections if s not in SECTIONS]
    if bad or not sections:
        print(f"error: unknown section(s) {', '.join(bad) or '(none)'}; choose from {', '.join(SECTIONS)}",
              file=sys.stderr)
        return 1
    if a.threads < 1 or a.reps < 1:
        print("error: --threads and --reps must be >= 1", file=sys.stderr)
        return 1
    try:
        a.targets = [float(x) for x in a.targets.split(",") if x.strip()]
    except ValueError:
        print(f"error: --targets: not a list of numbers: {a.targets}", file=sys.stderr)
        return 1
    try:
        a.depths = [int(x) for x in a.depths.split(",") if x.strip()]
    except ValueError:
        print(f"error: --depths: not a list of token counts: {a.depths}", file=sys.stderr)
        return 1
    a.depth_shapes = [x.strip() for x in a.depth_shapes.split(",") if x.strip()]
    a.synth_types = [x.strip().lower() for x in a.synth_types.split(",") if x.strip()]
    if not a.synth_types or any(x not in SYNTH_TYPES for x in a.synth_types):
        print(f"error: --synth-types takes {', '.join(SYNTH_TYPES)} (comma-separated), not {a.synth_types}",
              file=sys.stderr)
        return 1
    if any(x not in ("1b", "7b") for x in a.depth_shapes) or any(d < 0 for d in a.depths):
        print("error: --depth-shapes takes 1b, 7b; --depths counts >= 0", file=sys.stderr)
        return 1
    if not all(0 < t < 1 for t in a.targets):
        print("error: --targets must lie in (0, 1)", file=sys.stderr)
        return 1
    needs = [(a.model, "run `make model`")] * bool({"smollm2", "threshold", "depth"} & set(sections))
    needs += [(a.calib_text, "pass --calib-text"), (a.eval_text, "pass --eval-text")] * ("threshold" in sections)
    for p, hint in needs:
        if not p.is_file():
            print(f"error: {p}: no such file ({hint})", file=sys.stderr)
            return 1
    a.out.mkdir(parents=True, exist_ok=True)
    command = shlex.join(["python", "scripts/bench_all.py", *sys.argv[1:]])
    run = {"sparse7b": lambda: section_sparse("7b", a, a.out), "sparse1b": lambda: section_sparse("1b", a, a.out),
           "pwri7b": lambda: section_sparse("7b", a, a.out, "powerinfer"),
           "pwri1b": lambda: section_sparse("1b", a, a.out, "powerinfer"),
           "threshold": lambda: section_threshold(a, a.out), "smollm2": lambda: section_smollm2(a, a.out), "dense0": lambda: section_dense0(a, a.out),
           "depth": lambda: section_depth(a, a.out)}
    results, t_start = [], time.monotonic()
    try:
        for i, name in enumerate(sections):
            t0 = time.monotonic()
            say(f"== [{i + 1}/{len(sections)}] {name} (elapsed {time.monotonic() - t_start:.0f} s)")
            results.append(run[name]())
            results[-1]["seconds"] = time.monotonic() - t0
            results[-1]["max_loadavg"] = max((max(m["loadavg_before"][0], m["loadavg_after"][0])
                                              for m in MACHINES), default=None)
            busy = [m for m in MACHINES if m.get("busy")]
            results[-1]["busy"] = bool(busy)
            if busy:
                worst = max(max(m.get("others_cpu_share_before") or 0, m.get("others_cpu_share_during") or 0)
                            for m in busy)
                results[-1]["markdown"] = (f"Warning: the machine was busy in {len(busy)} of {len(MACHINES)} "
                                           f"runs of this section (other processes' share of the CPUs' time up to "
                                           f"{worst:.0%}, limit {busy[0]['busy_threshold_share']:.0%}): its ratios "
                                           "to llama.cpp are unreliable.\n\n" + results[-1]["markdown"])
            MACHINES.clear()
            say(f"   {name} done in {results[-1]['seconds']:.0f} s")
    except (ProSparseError, subprocess.CalledProcessError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    md = [f"Produced by `{command}` ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
          f"{time.monotonic() - t_start:.0f} s). Each table's own commands reproduce it alone.", ""]
    own_flags = {"depth": f" --depths {','.join(map(str, a.depths))} --depth-shapes {','.join(a.depth_shapes) or chr(39) * 2}"
                          f" --smollm2-depth {a.smollm2_depth} --tg-depth {a.tg_depth}"}
    for r in results:
        md += [f"### {r['section']}", "", f"    python scripts/bench_all.py --threads {a.threads} --reps {a.reps} "
               f"--sections {r['section']}{own_flags.get(r['section'], '')}", "", r["markdown"]]
    (a.out / "summary.md").write_text("\n".join(md))
    (a.out / "summary.json").write_text(json.dumps({"command": command, "sections": results}, indent=2,
                                                   default=str) + "\n")
    plot(results, a.out / "summary.png")
    print()
    print("\n".join(md))
    print(f"raw results, summary.md, summary.json and summary.png in {a.out}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
