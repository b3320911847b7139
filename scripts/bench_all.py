"""`make bench`: the README's speed tables, measured on this machine.

For SmolLM2-135M-Instruct (the PyPI Q4_1 file) and its Q8_0 / Q4_0 variants
(written once with scripts/make_quant_variants.py, next to the source), run
`prosparse bench`'s measurement (llama.cpp vs ours, pp and tg, interleaved,
same threads) and print one summary table of the ratios. Raw results go to
OUT/bench_<file>.json, the summary to OUT/summary.md and OUT/summary.json.

    python scripts/bench_all.py --threads 2 [--reps 3] [--types q4_1,q8_0,q4_0] [--out out/bench]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

from prosparse_cpu import ProSparseError
from prosparse_cpu.bench import print_table, run_bench, write_json

HERE = Path(__file__).resolve().parent
DEFAULT_MODEL = Path.home() / ".cache" / "prosparse-cpu" / "SmolLM2-135M-Instruct.Q4_1.gguf"


def variants(src: Path, types: list[str]) -> list[Path]:
    """The source file for its own type, quantized siblings (made once) for the others."""
    own = src.name.split(".")[1].lower() if src.name.count(".") >= 2 else None
    others = [t for t in types if t != own]
    if others:
        subprocess.run([sys.executable, str(HERE / "make_quant_variants.py"), str(src), "--types", ",".join(others)],
                       check=True, stdout=subprocess.DEVNULL)
    stem = src.name.split(".")[0]
    return [src if t == own else src.parent / f"{stem}.{t.upper()}.gguf" for t in types]


def summary_rows(results: list[dict]) -> list[dict]:
    rows = []
    for res in results:
        for e in res["engines"]:
            if e["kind"] == "llama.cpp":
                continue
            row = {"file": os.path.basename(res["config"]["model"]), "engine": e["name"]}
            for t, s in e["tests"].items():
                kind = "pp" if t.startswith("pp") else "tg"
                row[f"{kind}_tps"] = s.get("median")
                row[f"{kind}_ratio"] = s.get("ratio_vs_llama_cpp")
                ref = next((x for x in res["engines"] if x["kind"] == "llama.cpp"), None)
                row[f"{kind}_llama_tps"] = ref["tests"][t].get("median") if ref else None
            rows.append(row)
    return rows


def markdown(rows: list[dict], threads: int, reps: int) -> str:
    def f(x, fmt):
        return "-" if x is None else format(x, fmt)

    out = [f"{threads} threads, median of {reps} repetitions, engines interleaved (llama-bench convention).", "",
           "| file | engine | pp t/s (llama.cpp) | pp ratio | tg t/s (llama.cpp) | tg ratio |",
           "|---|---|---:|---:|---:|---:|"]
    for r in rows:
        out.append(f"| {r['file']} | {r['engine']} | {f(r.get('pp_tps'), '.1f')} ({f(r.get('pp_llama_tps'), '.1f')}) "
                   f"| {f(r.get('pp_ratio'), '.2f')}x | {f(r.get('tg_tps'), '.1f')} ({f(r.get('tg_llama_tps'), '.1f')}) "
                   f"| {f(r.get('tg_ratio'), '.2f')}x |")
    return "\n".join(out) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", type=Path, default=Path(os.environ.get("PROSPARSE_SMOLLM2") or DEFAULT_MODEL))
    ap.add_argument("--types", default="q4_1,q8_0,q4_0", help="weight types to measure (variants are made once)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--pp", type=int, default=512)
    ap.add_argument("--tg", type=int, default=128)
    ap.add_argument("--out", type=Path, default=Path("out/bench"))
    args = ap.parse_args()
    if not args.model.is_file():
        print(f"error: {args.model}: no such file (run `make model`)", file=sys.stderr)
        return 1
    if args.threads < 1 or args.reps < 1:
        print("error: --threads and --reps must be >= 1", file=sys.stderr)
        return 1
    args.out.mkdir(parents=True, exist_ok=True)
    types = [t.strip().lower() for t in args.types.split(",") if t.strip()]
    results = []
    try:
        for path in variants(args.model, types):
            print(f"== {path.name}", flush=True)
            res = run_bench(str(path), threads=args.threads, reps=args.reps, n_pp=args.pp, n_tg=args.tg)
            print_table(res)
            write_json(res, str(args.out / f"bench_{path.stem}.json"))
            results.append(res)
    except (ProSparseError, subprocess.CalledProcessError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    rows = summary_rows(results)
    md = markdown(rows, args.threads, args.reps)
    (args.out / "summary.md").write_text(md)
    (args.out / "summary.json").write_text(json.dumps(rows, indent=2) + "\n")
    print()
    print(md)
    print(f"raw results in {args.out}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
