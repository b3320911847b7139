"""Serving throughput: `prosparse serve` vs llama-cpp-python's OpenAI server.

For each number of concurrent clients (--clients, default 1,2,4) both servers
run on the same file with the same threads, each as its own process on
loopback. Every client sends --requests streamed chat requests one after the
other through the official openai client (greedy, --max-tokens each, a
different prompt every time so no answer comes from a cache), and the round's

    aggregate tokens/s   completion tokens of all requests / the round's wall time
    time to first token  request sent -> first chunk with text, per request

are taken; the engines take turns, round by round, after a warm-up, and the
table shows the median of --reps rounds. Our server gets min(clients, threads)
sessions (--parallel to fix it), the threads split among them, so neither
server uses more threads than the other; llama_cpp.server answers one
request at a time with all of them (queued: --interrupt_requests False, so
a new request does not cut the one streaming).

    python scripts/serve_throughput.py [--model F.gguf] [--threads 2] [--clients 1,2,4] [--reps 3]
        [--max-tokens 64] [--requests 2] [--out out/serve_throughput] [--plot]

Writes OUT/serve_throughput.json (config, machine, every request) and, with
--plot, OUT/serve_throughput.png. llama_cpp.server needs llama-cpp-python's
[server] extra (sse_starlette, starlette_context, pydantic_settings); without
it the script says so in one line and measures ours alone (--engines to pick).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from prosparse_cpu.bench.machine import busy_verdict, machine_info, sample_others

DEFAULT_MODEL = Path(os.environ.get("PROSPARSE_SMOLLM2")
                     or Path.home() / ".cache" / "prosparse-cpu" / "SmolLM2-135M-Instruct.Q4_1.gguf")
ENGINES = ("prosparse", "llama_cpp.server")
TOPICS = ["a lighthouse keeper", "a lost umbrella", "the first snow", "a robot gardener", "an old map",
          "a night train", "a talking cat", "a broken clock", "a desert well", "a paper boat"]


def say(msg: str) -> None:
    print(msg, flush=True)


def fail(msg: str) -> int:
    print(f"error: {msg}", file=sys.stderr, flush=True)
    return 2


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def llama_server_missing() -> str | None:
    """Why llama_cpp.server cannot start here (its import error), None when it can."""
    r = subprocess.run([sys.executable, "-c", "import llama_cpp.server.app"], capture_output=True, text=True,
                       timeout=120)
    if r.returncode == 0:
        return None
    last = (r.stderr.strip().splitlines() or ["import failed"])[-1]
    return f"{last} (install llama-cpp-python[server])"


# ---- a server process ------------------------------------------------------------------
class Server:
    def __init__(self, engine: str, model: Path, threads: int, parallel: int, n_ctx: int):
        self.engine, self.parallel = engine, parallel
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        if engine == "prosparse":
            self.cmd = [sys.executable, "-m", "prosparse_cpu.cli", "serve", str(model), "--port", str(self.port),
                        "--threads", str(threads), "--parallel", str(parallel), "--ctx", str(n_ctx)]
        else:
            self.cmd = [sys.executable, "-m", "llama_cpp.server", "--model", str(model), "--host", "127.0.0.1",
                        "--port", str(self.port), "--n_threads", str(threads), "--n_threads_batch", str(threads),
                        "--n_ctx", str(n_ctx), "--verbose", "False",
                        # its default stops a streaming answer when the next request comes; queue instead, as ours does
                        "--interrupt_requests", "False"]
        self.log = tempfile.NamedTemporaryFile(prefix=f"serve-throughput-{engine}-", suffix=".log", delete=False)
        self.proc = subprocess.Popen(self.cmd, stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     env=dict(os.environ, PYTHONUNBUFFERED="1"))
        self.model_id = self._wait_up(120.0)

    def _wait_up(self, seconds: float) -> str:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.engine} exited with {self.proc.returncode}; its log: {self.log.name}")
            try:
                with urllib.request.urlopen(self.url + "/v1/models", timeout=2) as r:
                    return json.load(r)["data"][0]["id"]
            except OSError:
                time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"{self.engine} not up after {seconds:.0f} s; its log: {self.log.name}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


# ---- requests ------------------------------------------------------------------------------
def one_request(client, model_id: str, prompt: str, max_tokens: int) -> dict:
    t0 = time.perf_counter()
    first, pieces, usage = None, 0, None
    stream = client.chat.completions.create(model=model_id, messages=[{"role": "user", "content": prompt}],
                                            max_tokens=max_tokens, temperature=0.0, stream=True,
                                            stream_options={"include_usage": True})
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            pieces += 1
            if first is None:
                first = time.perf_counter()
        if getattr(chunk, "usage", None):
            usage = chunk.usage
    end = time.perf_counter()
    return {"start": t0, "end": end, "ttft_s": None if first is None else first - t0,
            # the server's own count when it sends usage; else one token per text chunk
            "completion_tokens": usage.completion_tokens if usage else pieces,
            "prompt_tokens": usage.prompt_tokens if usage else None, "tokens_from": "usage" if usage else "chunks"}


def run_round(server: Server, clients: int, requests: int, max_tokens: int, first_k: int) -> dict:
    import openai

    client = openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=600)

    def client_loop(c: int) -> list[dict]:
        out = []
        for r in range(requests):
            k = first_k + c * requests + r
            prompt = f"Story {k}: write a long story about {TOPICS[k % len(TOPICS)]}."
            out.append(one_request(client, server.model_id, prompt, max_tokens))
        return out

    t0 = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        done = [x for xs in pool.map(client_loop, range(clients)) for x in xs]
    wall = time.perf_counter() - t0
    tokens = sum(d["completion_tokens"] for d in done)
    ttfts = [d["ttft_s"] for d in done if d["ttft_s"] is not None]
    return {"wall_s": wall, "completion_tokens": tokens, "tokens_per_s": tokens / wall,
            "ttft_median_s": statistics.median(ttfts) if ttfts else None,
            "ttft_max_s": max(ttfts) if ttfts else None, "requests": done}


# ---- the table -----------------------------------------------------------------------------------
def summarize(rounds: list[dict]) -> dict:
    tps = [r["tokens_per_s"] for r in rounds]
    ttft = [r["ttft_median_s"] for r in rounds if r["ttft_median_s"] is not None]
    ptoks = {d["prompt_tokens"] for r in rounds for d in r["requests"] if d["prompt_tokens"] is not None}
    return {"tokens_per_s": statistics.median(tps), "tokens_per_s_min": min(tps), "tokens_per_s_max": max(tps),
            "ttft_median_s": statistics.median(ttft) if ttft else None,
            "ttft_max_s": max((r["ttft_max_s"] for r in rounds if r["ttft_max_s"] is not None), default=None),
            "tokens_per_request": statistics.mean(d["completion_tokens"] for r in rounds for d in r["requests"]),
            "prompt_tokens": sorted(ptoks)}


def print_table(result: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    cfg, mach = result["config"], result["machine"]
    console = Console(width=140)
    if mach.get("busy"):
        console.print(f"[bold red]warning:[/] other processes used {100 * mach['others_cpu_share_before']:.0f}% of "
                      "the CPUs just before a measurement: the figures and the ratios are unreliable; measure "
                      "again on a quiet machine.", highlight=False)
    table = Table(title=f"{os.path.basename(cfg['model'])}: streamed chat, {cfg['threads']} threads per server, "
                        f"{cfg['max_tokens']} tokens per request, {cfg['requests']} request(s) per client",
                  caption=f"median of {cfg['reps']} rounds, engines taking turns, after a warm-up")
    for col, just in (("clients", "right"), ("engine", "left"), ("sessions", "right"), ("agg t/s", "right"),
                      ("min-max", "right"), ("vs llama.cpp", "right"), ("TTFT median", "right"),
                      ("TTFT max", "right"), ("tokens/req", "right"), ("prompt tokens", "right")):
        table.add_column(col, justify=just)
    for level in result["levels"]:
        base = level["engines"].get("llama_cpp.server", {}).get("summary")
        for name, e in level["engines"].items():
            s = e["summary"]
            ratio = f"{s['tokens_per_s'] / base['tokens_per_s']:.2f}x" if base and name != "llama_cpp.server" else ""
            ms = (lambda x: "-" if x is None else f"{1000 * x:.0f} ms")
            table.add_row(str(level["clients"]), name, str(e["sessions"]), f"{s['tokens_per_s']:.1f}",
                          f"{s['tokens_per_s_min']:.1f}-{s['tokens_per_s_max']:.1f}", ratio, ms(s["ttft_median_s"]),
                          ms(s["ttft_max_s"]), f"{s['tokens_per_request']:.1f}",
                          ",".join(map(str, s["prompt_tokens"])) or "-")
    console.print(table)


def write_plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    names = sorted({n for lv in result["levels"] for n in lv["engines"]})
    for name in names:
        xs = [lv["clients"] for lv in result["levels"] if name in lv["engines"]]
        ss = [lv["engines"][name]["summary"] for lv in result["levels"] if name in lv["engines"]]
        ax1.plot(xs, [s["tokens_per_s"] for s in ss], marker="o", label=name)
        ax2.plot(xs, [1000 * (s["ttft_median_s"] or 0) for s in ss], marker="o", label=name)
    ax1.set(xlabel="concurrent clients", ylabel="aggregate tokens/s", title="throughput")
    ax2.set(xlabel="concurrent clients", ylabel="median TTFT (ms)", title="time to first token")
    for ax in (ax1, ax2):
        ax.set_xticks([lv["clients"] for lv in result["levels"]])
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(f"{os.path.basename(result['config']['model'])}, {result['config']['threads']} threads")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# ---- main --------------------------------------------------------------------------------------
def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--clients", default="1,2,4", help="comma-separated numbers of concurrent clients")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--requests", type=int, default=2, help="requests each client sends, one after the other")
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--ctx", type=int, default=1024, help="context per session (both servers)")
    ap.add_argument("--parallel", type=int, default=None, help="our sessions (default: min(clients, threads))")
    ap.add_argument("--engines", default=",".join(ENGINES))
    ap.add_argument("--out", type=Path, default=Path("out/serve_throughput"))
    ap.add_argument("--plot", action="store_true", help="also write OUT/serve_throughput.png")
    a = ap.parse_args(argv)

    if not a.model.is_file():
        return fail(f"no model file at {a.model} (scripts/fetch_smollm2.py fetches SmolLM2, or pass --model)")
    try:
        levels = [int(x) for x in a.clients.split(",")]
        assert levels and all(x >= 1 for x in levels)
    except (ValueError, AssertionError):
        return fail(f"--clients must be positive integers separated by commas, got {a.clients!r}")
    engines = [e for e in a.engines.split(",") if e]
    unknown = [e for e in engines if e not in ENGINES]
    if unknown or not engines:
        return fail(f"--engines takes {', '.join(ENGINES)}; got {a.engines!r}")
    missing = llama_server_missing() if "llama_cpp.server" in engines else None
    if missing:
        say(f"llama_cpp.server cannot run here: {missing}; measuring prosparse alone")
        engines.remove("llama_cpp.server")
        if not engines:
            return 1

    result = {"config": {"model": str(a.model), "threads": a.threads, "clients": levels, "reps": a.reps,
                         "requests": a.requests, "max_tokens": a.max_tokens, "n_ctx": a.ctx, "engines": engines,
                         "llama_cpp_server_missing": missing},
              "machine": machine_info(), "levels": []}
    before = []
    for clients in levels:
        servers = {}
        try:
            for name in engines:
                sessions = (a.parallel or min(clients, a.threads)) if name == "prosparse" else 1
                say(f"{clients} client(s): starting {name} ({sessions} session(s))")
                servers[name] = Server(name, a.model, a.threads, sessions, a.ctx)
            for s in servers.values():  # warm-up: weights paged in, threads started
                run_round(s, clients, 1, 8, first_k=10_000)
            rounds = {name: [] for name in servers}
            for rep in range(a.reps):
                for name, s in servers.items():
                    before.append(sample_others(0.5))
                    r = run_round(s, clients, a.requests, a.max_tokens, first_k=rep * clients * a.requests)
                    rounds[name].append(r)
                    say(f"  rep {rep + 1}/{a.reps} {name}: {r['tokens_per_s']:.1f} t/s, "
                        f"TTFT median {1000 * (r['ttft_median_s'] or 0):.0f} ms")
        finally:
            for s in servers.values():
                s.stop()
        result["levels"].append({"clients": clients, "engines": {
            name: {"sessions": servers[name].parallel, "command": servers[name].cmd, "summary": summarize(rs),
                   "rounds": rs} for name, rs in rounds.items()}})

    shares = [x for x in before if x is not None]
    result["machine"] |= busy_verdict(max(shares) if shares else None, None)
    a.out.mkdir(parents=True, exist_ok=True)
    out_json = a.out / "serve_throughput.json"
    out_json.write_text(json.dumps(result, indent=1))
    print_table(result)
    say(f"wrote {out_json}")
    if a.plot:
        write_plot(result, a.out / "serve_throughput.png")
        say(f"wrote {a.out / 'serve_throughput.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
