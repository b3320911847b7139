"""The `prosparse` command line: generate, chat, inspect, bench (DESIGN.md contract).

User mistakes (missing file, bad GGUF, unknown mode, bad option) end with one
line on stderr, `error: ...`, and a non-zero exit status; never a traceback.
"""

from __future__ import annotations

import os
import sys
import warnings

import click

from ._lib import CACHE_TYPES, MODES, ProSparseError

MODE_CHOICES = list(MODES)


def _model_path(ctx, param, value):
    if value is not None and not os.path.isfile(value):
        what = "is a directory" if os.path.isdir(value) else "no such file"
        raise click.UsageError(f"{value}: {what}", ctx=ctx)
    return value


model_arg = click.argument("model", callback=_model_path, metavar="MODEL.gguf")
threads_opt = click.option("--threads", "-t", type=click.IntRange(min=1), default=2, show_default=True,
                           help="Worker threads (the caller included).")
mode_opt = click.option("--mode", "-m", type=click.Choice(MODE_CHOICES), default="dense", show_default=True,
                        help="Engine mode.")
ctx_opt = click.option("--ctx", "n_ctx", type=click.IntRange(min=16), default=2048, show_default=True,
                       help="KV cache length in tokens.")
cache_opt = click.option("--cache-type", type=click.Choice(list(CACHE_TYPES)), default="f16", show_default=True,
                         help="KV cache element type (f32: exact, twice f16's memory; q8_0: ~half of f16).")
thr_opt = click.option("--activation-threshold", "act_thr", type=click.FloatRange(min=0.0), default=0.0,
                       metavar="T", help="Run a ReLU model as FATReLU T: gate values below T count as zero "
                                         "(every mode; 0 keeps the file's activation).")
map_opt = click.option("--map-only", is_flag=True,
                       help="Run from the file's mapping, without the load-time weight copies "
                            "(less memory the OS cannot reclaim; slower).")


def _sampling(temp_default: float, top_p_default: float):
    def wrap(f):
        f = click.option("--seed", "-s", type=int, default=None, help="Sampling seed (default: random).")(f)
        f = click.option("--top-p", type=click.FloatRange(0.0, 1.0), default=top_p_default, show_default=True)(f)
        f = click.option("--top-k", type=click.IntRange(min=0), default=40, show_default=True,
                         help="0 turns top-k off.")(f)
        f = click.option("--temp", type=click.FloatRange(min=0.0), default=temp_default, show_default=True,
                         help="Temperature; 0 is greedy.")(f)
        return f
    return wrap


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="prosparse-cpu")
def cli():
    """Activation-sparse LLM inference on plain CPUs."""


# ---- generate -----------------------------------------------------------------
@cli.command()
@model_arg
@click.option("--prompt", "-p", required=True, help="Text to continue.")
@click.option("-n", "--n-predict", "n", type=click.IntRange(min=1), default=128, show_default=True,
              help="Tokens to generate at most.")
@mode_opt
@threads_opt
@ctx_opt
@cache_opt
@map_opt
@thr_opt
@_sampling(0.8, 0.95)
def generate(model, prompt, n, mode, threads, n_ctx, cache_type, map_only, act_thr, temp, top_k, top_p, seed):
    """Continue a prompt, streaming the text to stdout (speed on stderr)."""
    from .model import Model

    _gpu_split_note(model)
    with Model(model, threads=threads, n_ctx=n_ctx, mode=mode, copy_weights=not map_only,
               cache_type=cache_type, activation_threshold=act_thr) as m:
        out = sys.stdout
        out.write(prompt)
        out.flush()
        for piece in m.generate(prompt, max_tokens=n, temperature=temp, top_k=top_k, top_p=top_p, seed=seed):
            out.write(piece)
            out.flush()
        out.write("\n")
        out.flush()
        _print_speed(m.last_generation)


def _gpu_split_note(model: str) -> None:
    from .pwri import gpu_split_files

    for p in gpu_split_files(model):
        click.echo(f"note: {os.path.basename(p)} (PowerInfer's GPU neuron split) is not used on a CPU; ignored",
                   err=True)


def _print_speed(g) -> None:
    pp = g.n_prompt / g.prompt_s if g.prompt_s > 0 else 0.0
    click.echo(f"prompt: {g.n_prompt} tokens in {g.prompt_s:.2f} s ({pp:.1f} t/s); "
               f"generated: {g.n_generated} tokens in {g.generate_s:.2f} s ({g.tokens_per_s:.1f} t/s); "
               f"stop: {g.stop_reason}", err=True)


# ---- chat ---------------------------------------------------------------------
@cli.command()
@model_arg
@click.option("--prompt", "-p", "question", default=None, help="Answer this one question and exit.")
@click.option("--system", default=None, help="System prompt (default: the template's own, if any).")
@click.option("-n", "--n-predict", "n", type=click.IntRange(min=1), default=512, show_default=True,
              help="Tokens per answer at most.")
@click.option("--verbose", "-v", is_flag=True, help="Print the speed of each answer to stderr.")
@mode_opt
@threads_opt
@ctx_opt
@cache_opt
@map_opt
@thr_opt
@_sampling(0.2, 0.9)
def chat(model, question, system, n, verbose, mode, threads, n_ctx, cache_type, map_only, act_thr, temp, top_k,
         top_p, seed):
    """Chat with a model (its chat template); /reset clears, /quit or EOF exits."""
    from .model import Model

    _gpu_split_note(model)
    with Model(model, threads=threads, n_ctx=n_ctx, mode=mode, copy_weights=not map_only,
               cache_type=cache_type, activation_threshold=act_thr) as m:
        session = _ChatSession(m, system, dict(max_tokens=n, temperature=temp, top_k=top_k, top_p=top_p,
                                               seed=seed))
        if question is not None:
            session.answer(question)
            _print_speed(m.last_generation)
            return
        interactive = sys.stdin.isatty()
        if interactive:
            try:
                import readline  # noqa: F401  (line editing and history for input())
            except ImportError:
                pass
            click.echo("Chatting with {} ({} mode, {} threads). /reset clears the conversation, /quit exits."
                       .format(os.path.basename(model), mode, threads), err=True)
        while True:
            try:
                line = input("> " if interactive else "")
            except EOFError:
                break
            text = line.strip()
            if not text:
                continue
            if text in ("/quit", "/exit"):
                break
            if text == "/reset":
                session.reset()
                click.echo("(conversation cleared)", err=True)
                continue
            try:
                session.answer(text)
            except KeyboardInterrupt:
                if not interactive:
                    raise
                click.echo("\n(interrupted)", err=True)
                continue
            except ProSparseError as e:
                if not interactive:
                    raise
                click.echo(f"error: {e}", err=True)  # e.g. a message longer than the context; go on
                continue
            if verbose:
                _print_speed(m.last_generation)


class _ChatSession:
    """A conversation: the message history, trimmed oldest-first when the context is full."""

    def __init__(self, model, system: str | None, gen: dict):
        self.model, self.system, self.gen = model, system, gen
        self.reset()

    def reset(self) -> None:
        self.messages = [{"role": "system", "content": self.system}] if self.system else []

    def _fit(self) -> None:
        from .chat import render_chat

        budget = self.model.n_ctx - self.gen["max_tokens"]
        while True:
            n = len(self.model.tokenize_prompt(render_chat(self.model, self.messages)))
            turns = [i for i, msg in enumerate(self.messages) if msg["role"] != "system"]
            if n <= budget or len(turns) <= 1:
                break
            # drop the oldest user turn and the answer that followed it
            first = turns[0]
            end = turns[1] + 1 if len(turns) > 1 and self.messages[turns[1]]["role"] == "assistant" else first + 1
            del self.messages[first:end]
            click.echo("(context full: dropped the oldest turn)", err=True)
        if n >= self.model.n_ctx:
            raise ProSparseError(f"the message needs {n} tokens; the context holds {self.model.n_ctx} (--ctx)")

    def answer(self, text: str) -> str:
        self.messages.append({"role": "user", "content": text})
        try:
            self._fit()
        except ProSparseError:
            self.messages.pop()
            raise
        pieces = []
        try:
            for piece in self.model.chat(self.messages, stream=True, **self.gen):
                pieces.append(piece)
                sys.stdout.write(piece)
                sys.stdout.flush()
        finally:  # an interrupted answer stays in the history as far as it got
            self.messages.append({"role": "assistant", "content": "".join(pieces)})
        sys.stdout.write("\n")
        sys.stdout.flush()
        return self.messages[-1]["content"]


# ---- inspect ------------------------------------------------------------------
@cli.command()
@model_arg
@click.option("--no-engine", is_flag=True, help="Only read the file with gguf-py; do not ask the engine to load it.")
@click.option("--n-ctx", "kv_ctx", type=click.IntRange(1), default=4096, show_default=True,
              help="Context length the session KV allocation line is stated for.")
def inspect(model, no_engine, kv_ctx):
    """Show a GGUF file's architecture, hyper-parameters, tensors, keys and tokenizer."""
    from .gguf_info import describe

    _gpu_split_note(model)
    report = describe(model)
    engine_line = None
    if not no_engine:
        from .model import Model

        with Model(model, threads=1, n_ctx=16) as m:  # validates every tensor's type, shape and bounds
            i = m.info
            params = f"{i.n_params / 1e6:.1f} M" if i.n_params >= 1e6 else f"{i.n_params / 1e3:.1f} K"
            engine_line = (("  PowerInfer file (PWRI), read as it is\n" if i.powerinfer else "")
                           + f"  loads: yes; {params} parameters, bulk type {i.weight_type_name}, "
                           f"activation {i.activation}"
                           + (f" (threshold {i.activation_threshold:g})" if i.activation == "fatrelu" else "")
                           + (f", predictor rank {i.predictor_rank} (logit cut {i.predictor_threshold:g})"
                              if i.has_predictor else "")
                           + (", tied output" if i.tied_output else ""))
            kv = ", ".join(f"{t} {i.kv_bytes_per_token(t)}" for t in CACHE_TYPES
                           if t != "q8_0" or i.head_dim % 32 == 0)
            alloc = ", ".join(f"{t} {i.kv_bytes_per_token(t) * kv_ctx} ({i.kv_bytes_per_token(t) * kv_ctx / 2**20:.1f} MiB)"
                              for t in CACHE_TYPES if t != "q8_0" or i.head_dim % 32 == 0)
            engine_line += (f"\n  KV cache bytes per token: {kv}"
                            f"\n  session KV allocation at n_ctx {kv_ctx}: {alloc}")
    for section, lines in report.items():
        click.echo(f"{section}:")
        click.echo("\n".join(lines))
    if engine_line:
        click.echo("engine:")
        click.echo(engine_line)


# ---- perplexity -----------------------------------------------------------------
@cli.command()
@model_arg
@click.argument("text_file", metavar="TEXT", type=click.Path(exists=True, dir_okay=False))
@mode_opt
@threads_opt
@click.option("--ctx", "n_ctx", type=click.IntRange(min=4), default=512, show_default=True,
              help="Window length in tokens (the second half of each window is scored).")
@click.option("--chunks", type=click.IntRange(min=1), default=None, help="Score at most this many windows.")
@click.option("--json", "json_out", type=click.Path(dir_okay=False, writable=True), default=None,
              help="Write the result here.")
@cache_opt
@thr_opt
def perplexity(model, text_file, mode, threads, n_ctx, chunks, json_out, cache_type, act_thr):
    """Perplexity of a text file (llama-perplexity's convention: non-overlapping windows)."""
    import dataclasses
    import json

    from rich.progress import Progress

    from .model import Model
    from .perplexity import perplexity as run_ppl

    try:
        with open(text_file, encoding="utf-8") as f:
            text = f.read()
    except UnicodeDecodeError as e:
        raise ProSparseError(f"{text_file}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    if json_out and not os.path.isdir(os.path.dirname(os.path.abspath(json_out))):
        raise click.BadParameter(f"{json_out}: its folder does not exist", param_hint="--json")
    with Model(model, threads=threads, n_ctx=n_ctx, mode=mode, n_batch=min(n_ctx, 512), cache_type=cache_type,
               activation_threshold=act_thr) as m:
        with Progress(transient=True, disable=not sys.stderr.isatty()) as bar:
            task = bar.add_task("perplexity", total=None)
            res = run_ppl(m, text, n_ctx=n_ctx, max_windows=chunks,
                          progress=lambda i, n: bar.update(task, completed=i, total=n))
        click.echo(f"PPL = {res.ppl:.4f} +/- {res.ppl_stderr:.4f} over {res.n_tokens_scored} tokens "
                   f"({res.n_windows} windows of {res.n_ctx}, mode {mode}, cache {cache_type})")
        click.echo("per window: " + " ".join(f"{x:.2f}" for x in res.chunk_ppl))
        if json_out:
            # the per-token losses stay out: a summary, not a dump
            summary = {k: v for k, v in dataclasses.asdict(res).items() if k != "nll"}
            record = summary | {"model": os.path.abspath(model), "text": os.path.abspath(text_file),
                                                "mode": mode, "threads": threads, "cache_type": cache_type}
            tmp = f"{json_out}.tmp{os.getpid()}"
            with open(tmp, "w") as f:
                json.dump(record, f, indent=2)
            os.replace(tmp, json_out)


# ---- bench ----------------------------------------------------------------------
@cli.command()
@model_arg
@click.option("--baseline", type=click.Path(exists=True, dir_okay=False), default=None,
              help="File llama.cpp runs (default: MODEL itself), e.g. a --llama-compat twin.")
@threads_opt
@click.option("--reps", type=click.IntRange(min=1), default=5, show_default=True, help="Repetitions.")
@click.option("--pp", type=click.IntRange(min=0), default=512, show_default=True, help="Prompt tokens (0: skip).")
@click.option("--tg", type=click.IntRange(min=0), default=128, show_default=True, help="Generated tokens (0: skip).")
@click.option("--modes", default=None, help="Our modes, comma-separated (default: dense plus every mode the file supports).")
@click.option("--no-llama", is_flag=True, help="Skip llama.cpp.")
@click.option("--json", "json_out", type=click.Path(dir_okay=False, writable=True), default=None,
              help="Write every raw timing and the machine's description here.")
@click.option("--plot", "plot_out", type=click.Path(dir_okay=False, writable=True), default=None,
              help="Write a PNG plot here.")
@click.option("--depth", "-d", "depth", default="0", show_default=True,
              help="KV cache depths, comma-separated: pp/tg measured after a prompt of D tokens (llama-bench -d).")
@cache_opt
@click.option("--llama-fa/--no-llama-fa", "llama_fa", default=True, show_default=True,
              help="llama.cpp's flash attention.")
@thr_opt
def bench(model, baseline, threads, reps, pp, tg, modes, no_llama, json_out, plot_out, depth, cache_type, llama_fa,
          act_thr):
    """llama-bench style pp/tg throughput: our modes vs llama.cpp, interleaved."""
    from . import bench as b

    if pp == 0 and tg == 0:
        raise click.BadParameter("--pp and --tg are both 0: nothing to measure")
    mode_list = None
    if modes:
        mode_list = [x.strip() for x in modes.split(",") if x.strip()]
        bad = [x for x in mode_list if x not in MODES]
        if bad:
            raise click.BadParameter(f"unknown mode {bad[0]!r}; choose from {', '.join(MODES)}",
                                     param_hint="--modes")
    try:
        depths = [int(x) for x in depth.split(",") if x.strip()]
    except ValueError:
        raise click.BadParameter(f"{depth!r}: expected comma-separated token counts", param_hint="--depth") from None
    if not depths or min(depths) < 0:
        raise click.BadParameter(f"{depth!r}: depths are token counts >= 0", param_hint="--depth")
    for out in (json_out, plot_out):
        if out and not os.path.isdir(os.path.dirname(os.path.abspath(out))):
            raise click.BadParameter(f"{out}: its folder does not exist")
    result = b.run_bench(model, baseline=baseline, threads=threads, reps=reps, n_pp=pp, n_tg=tg,
                         modes=mode_list, llama=not no_llama, depths=depths, cache_type=cache_type,
                         llama_flash_attn=llama_fa, activation_threshold=act_thr)
    b.print_table(result)
    if json_out:
        b.write_json(result, json_out)
        click.echo(f"wrote {json_out}", err=True)
    if plot_out:
        b.write_plot(result, plot_out)
        click.echo(f"wrote {plot_out}", err=True)


# ---- serve ------------------------------------------------------------------------
@cli.command()
@model_arg
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind (loopback by default).")
@click.option("--port", type=click.IntRange(0, 65535), default=8080, show_default=True)
@mode_opt
@click.option("--threads", "-t", type=click.IntRange(min=1), default=2, show_default=True,
              help="Worker threads in all, split among the sessions.")
@click.option("--parallel", "-np", type=click.IntRange(min=1, max=64), default=1, show_default=True,
              help="Sessions (requests answered at once) sharing the loaded model.")
@click.option("--ctx", "n_ctx", type=click.IntRange(min=16), default=2048, show_default=True,
              help="KV cache length in tokens, per session.")
@click.option("--api-key", default=None, envvar="PROSPARSE_API_KEY",
              help="Require `Authorization: Bearer KEY` on /v1/* (env PROSPARSE_API_KEY).")
@click.option("--max-body", type=click.IntRange(min=1024), default=1 << 20, show_default=True,
              help="Largest request body in bytes.")
@cache_opt
@map_opt
@thr_opt
def serve(model, host, port, mode, threads, parallel, n_ctx, api_key, max_body, cache_type, map_only, act_thr):
    """OpenAI-compatible server: /v1/chat/completions, /v1/completions, /v1/models, /health, a chat page at /."""
    try:
        from .server import serve as run_server
        import fastapi  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as e:
        raise click.ClickException(f"`prosparse serve` needs the server extra ({e.name} is missing): "
                                   "pip install 'prosparse-cpu[server]'") from None
    per = max(1, threads // parallel)
    _gpu_split_note(model)
    click.echo(f"prosparse serve: {os.path.basename(model)}, {parallel} session(s) x {per} thread(s), "
               f"context {n_ctx}, mode {mode}, http://{host}:{port}", err=True)
    run_server(model, host=host, port=port, mode=mode, threads=threads, parallel=parallel, n_ctx=n_ctx,
               api_key=api_key, copy_weights=not map_only, max_body=max_body, cache_type=cache_type,
               activation_threshold=act_thr)


# ---- entry point ------------------------------------------------------------------
def _warning_line(message, category, filename, lineno, line=None):
    return f"warning: {message}\n"


_NO_ARGS_IS_HELP = getattr(click.exceptions, "NoArgsIsHelpError", ())


def main(argv=None) -> int:
    """Console-script entry: click without its multi-line error output."""
    warnings.formatwarning = _warning_line
    try:
        cli.main(args=argv, prog_name="prosparse", standalone_mode=False)
        sys.stdout.flush()  # a closed pipe shows up here, inside the handlers below
    except _NO_ARGS_IS_HELP as e:  # `prosparse` alone (click >= 8.2): show help
        click.echo(e.ctx.get_help() if e.ctx else str(e))
        return 0
    except click.exceptions.Exit as e:
        return e.exit_code
    except click.ClickException as e:
        click.echo(f"error: {e.format_message()}", err=True)
        return e.exit_code or 2
    except ProSparseError as e:
        click.echo(f"error: {e}", err=True)
        return 1
    except (click.exceptions.Abort, KeyboardInterrupt):
        click.echo("", err=True)
        return 130
    except BrokenPipeError:  # e.g. `prosparse inspect X | head`: the reader left, not an error
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # so the flush at exit does not fail again
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
