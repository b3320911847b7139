"""prosparse-convert: Hugging Face folders and llama GGUF files -> sparse-ready GGUF.

    prosparse-convert SRC -o OUT.gguf [--outtype auto|f32|f16|bf16|q8_0|q4_0|q4_1|q5_0|q5_1|
                                                 q2_k|q3_k_m|q4_k_s|q4_k_m|q5_k_s|q5_k_m|q6_k]
                      [--predictor DIR] [--stats DIR] [--llama-compat] [--prosparse]

Which architecture is written:
- --llama-compat: plain `llama`, no extra tensors (stock llama.cpp loads it);
  a ReLU-family model then runs as SiLU there, so it is a speed baseline only.
- otherwise `prosparse` for ReLU-family activations, MiniCPM scalings,
  predictors or stats, or when --prosparse is given; a plain SiLU
  llama/Mistral model stays `llama`.
Errors are one line on stderr with exit status 1; nothing is left behind.
"""
from __future__ import annotations

import signal
import sys
import time
from pathlib import Path

import click
import gguf
import numpy as np

from .calibrate import calibrate_cutoffs, read_text, text_tokens
from .errors import ConvertError
from .gguf_source import GGUFSource
from .hf_source import HFSource
from .plan import OUTTYPES, build_plan
from .predictor import load_stats, open_predictors
from .spec import check_tensor_table
from .tokenizer_meta import add_hf_tokenizer
from .writer import STOP, temp_path_for, write_plan


def open_source(src: Path):
    if src.is_dir():
        return HFSource(src)
    if src.is_file():
        return GGUFSource(src)
    raise ConvertError(f"{src}: no such file or folder")


def convert(src: Path, out: Path, outtype: str = "auto", predictor: Path | None = None,
            stats: Path | None = None, llama_compat: bool = False, prosparse: bool = False,
            predictor_threshold: float | None = None, predictor_input: str | None = None,
            predictor_hidden_act: str | None = None, stats_tokens: int | None = None,
            calibrate: Path | None = None, target_sparsity: float | None = None, calibrate_tokens: int = 1024,
            progress: bool = True, warn=lambda msg: None) -> dict:
    """Convert SRC into OUT; returns a small summary. Raises ConvertError."""
    src, out = Path(src), Path(out)
    if out.is_dir():
        raise ConvertError(f"cannot write {out}: it is a directory")
    if src.is_file() and out.exists() and out.resolve() == src.resolve():
        raise ConvertError("the output would overwrite the input")
    if llama_compat and (predictor or stats or prosparse or calibrate):
        raise ConvertError("--llama-compat writes a plain llama file: --predictor, --stats, --calibrate "
                           "and --prosparse do not apply")
    if (calibrate is None) != (target_sparsity is None):
        raise ConvertError("--calibrate TEXT and --target-sparsity S go together")
    text = read_text(calibrate) if calibrate else None
    source = open_source(src)
    try:
        spec = source.spec
        check_tensor_table(spec, source.shapes, str(src))
        preds = open_predictors(predictor, spec, predictor_threshold, predictor_input,
                                predictor_hidden_act) if predictor else getattr(source, "predictors", None)
        if preds is not None and preds.kind == "gguf":   # a PowerInfer file's own predictor
            if predictor_threshold is not None:
                preds.threshold = float(np.nextafter(np.float32(predictor_threshold), np.float32(-np.inf)))
            preds.input = predictor_input or preds.input
            preds.hidden_act = predictor_hidden_act or preds.hidden_act
            if llama_compat:
                preds = None
        st = load_stats(stats, spec, stats_tokens) if stats else None
        if llama_compat:
            arch = spec.layout
            if spec.activation != "silu":
                warn(f"--llama-compat: this {spec.activation} model will run as SiLU in llama.cpp; "
                     "its tokens are wrong there (a speed baseline only)")
        elif spec.activation not in ("silu", "gelu_tanh") or spec.has_scalings or preds or st or prosparse or calibrate:
            arch = "prosparse"
        else:
            arch = spec.layout
        plan = build_plan(source, arch, outtype, llama_compat, preds, st,
                          threshold_only=bool(calibrate) and preds is None)
        if calibrate:
            ids = text_tokens(source, text)[:calibrate_tokens]
            plan.cutoffs = calibrate_cutoffs(source, spec, ids, target_sparsity)
            plan.cutoff_sparsity = float(target_sparsity)

        gw = gguf.GGUFWriter(temp_path_for(out), arch)
        if isinstance(source, GGUFSource):
            source.copy_metadata(gw)
        else:
            gw.add_name(spec.name or src.resolve().name)
            add_hf_tokenizer(gw, source.folder, spec.n_vocab, plan.notes)
        for kv in plan.kv:
            kv(gw)
        for note in plan.notes:
            warn(note)
        t0 = time.time()
        write_plan(plan, gw, out, progress=progress)
        return {"arch": arch, "tensors": len(plan.tensors), "type": plan.outtype.name,
                "bytes": out.stat().st_size, "seconds": time.time() - t0}
    finally:
        source.close()


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("src", type=click.Path(path_type=Path))
@click.option("-o", "--outfile", "out", required=True, type=click.Path(path_type=Path), help="output .gguf")
@click.option("--outtype", type=click.Choice(["auto", *OUTTYPES]), default="auto", show_default=True,
              help="weight type (q2_k..q6_k, _s/_m: llama.cpp's mixes); auto: f16 for HF folders, "
                   "the source's types for GGUF files")
@click.option("--predictor", type=click.Path(path_type=Path), help="per-layer predictors (PowerInfer or prosparse-train)")
@click.option("--predictor-threshold", type=float, help="logit cut (default: the predictor's own, else 0)")
@click.option("--predictor-input", type=click.Choice(["residual", "ffn_norm"]), help="what the predictor reads")
@click.option("--predictor-hidden-act", type=click.Choice(["none", "relu"]), help="between the predictor's layers")
@click.option("--stats", type=click.Path(path_type=Path), help="per-neuron activation counts: reorder hot-first")
@click.option("--stats-tokens", type=click.IntRange(min=1), help="tokens the counts were measured over")
@click.option("--calibrate", type=click.Path(path_type=Path), help="text file: per-layer cut-offs for threshold mode (SiLU)")
@click.option("--target-sparsity", type=click.FloatRange(0, 1, min_open=True, max_open=True),
              help="share of neurons threshold mode skips (with --calibrate)")
@click.option("--calibrate-tokens", type=click.IntRange(min=16), default=1024, show_default=True,
              help="calibration text tokens used")
@click.option("--llama-compat", is_flag=True, help="plain llama file for stock llama.cpp (speed baseline)")
@click.option("--prosparse", "force_prosparse", is_flag=True, help="write `prosparse` even for a SiLU model")
@click.option("--no-progress", is_flag=True, help="no progress bar")
def main(src, out, outtype, predictor, predictor_threshold, predictor_input, predictor_hidden_act,
         stats, stats_tokens, calibrate, target_sparsity, calibrate_tokens, llama_compat, force_prosparse,
         no_progress):
    """Convert a Hugging Face model folder or a llama GGUF file into a (sparse-ready) GGUF file."""
    def warn(msg):
        click.echo(f"prosparse-convert: note: {msg}", err=True)

    def interrupted(signum, frame):   # Ctrl-C and `kill`: no partial file, status 130
        STOP.set()
        raise KeyboardInterrupt
    previous = {sig: signal.signal(sig, interrupted) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        r = convert(src, out, outtype, predictor, stats, llama_compat, force_prosparse,
                    predictor_threshold, predictor_input, predictor_hidden_act, stats_tokens,
                    calibrate, target_sparsity, calibrate_tokens, progress=not no_progress, warn=warn)
    except ConvertError as e:
        if STOP.is_set():   # an interrupt inside a reader can come back as a read error
            click.echo("prosparse-convert: interrupted; no output written", err=True)
            sys.exit(130)
        click.echo(f"prosparse-convert: error: {e}", err=True)
        sys.exit(1)
    except KeyboardInterrupt:
        click.echo("prosparse-convert: interrupted; no output written", err=True)
        sys.exit(130)
    except (OSError, MemoryError) as e:
        if STOP.is_set():
            click.echo("prosparse-convert: interrupted; no output written", err=True)
            sys.exit(130)
        click.echo(f"prosparse-convert: error: {type(e).__name__}: {e}", err=True)
        sys.exit(1)
    except Exception:
        if STOP.is_set():   # the interrupt surfaced as another error inside a library
            click.echo("prosparse-convert: interrupted; no output written", err=True)
            sys.exit(130)
        raise
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    click.echo(f"wrote {out}: {r['arch']}, {r['tensors']} tensors, {r['type']}, "
               f"{r['bytes'] / 2**20:.1f} MiB in {r['seconds']:.1f} s")


if __name__ == "__main__":
    main()
