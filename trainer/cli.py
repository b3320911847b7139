"""`prosparse-train`: train | profile | predictors | plot | stages.

User mistakes print one line on stderr and exit with status 2; no traceback.
"""
from __future__ import annotations

import json
import sys
import tomllib

import click

from .config import ConfigError


def _overrides(model, data, out, sets) -> dict:
    ov = {}
    if model:
        ov["model.path"] = model
    if data:
        ov["data.train"] = list(data)
    if out:
        ov["train.out_dir"] = out
    for s in sets:
        if "=" not in s or "." not in s.split("=", 1)[0]:
            raise ConfigError(f"--set expects section.key=value, got '{s}'")
        key, value = s.split("=", 1)
        try:
            ov[key.strip()] = tomllib.loads(f"v = {value}")["v"]
        except tomllib.TOMLDecodeError:
            ov[key.strip()] = value  # a bare string
    return ov


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def cli():
    """ProSparse training, activation profiling and predictor training."""


@cli.command()
@click.argument("config_file")
@click.option("--model", help="override model.path (HF folder or .gguf)")
@click.option("--data", multiple=True, help="override data.train (repeatable)")
@click.option("--out", help="override train.out_dir")
@click.option("--set", "sets", multiple=True, help="override any key: section.key=value (TOML value)")
@click.option("--resume", is_flag=True, help="continue from the latest checkpoint in out_dir")
def train(config_file, model, data, out, sets, resume):
    """Train with the TOML CONFIG_FILE (a path, or the name of a shipped config)."""
    from . import config as C
    from .loop import train as run

    cfg = C.load(C.resolve(config_file), _overrides(model, data, out, sets))
    summary = run(cfg, resume=resume)
    if summary:
        click.echo(json.dumps({k: v for k, v in summary.items() if not isinstance(v, dict)} |
                              {k: {kk: vv for kk, vv in v.items() if kk != "layer_sparsity"}
                               for k, v in summary.items() if isinstance(v, dict)}, indent=2))


@cli.command()
@click.argument("config_file")
def stages(config_file):
    """Print the lambda stage table of a config."""
    from . import config as C
    from .schedule import stage_table

    cfg = C.load(C.resolve(config_file))
    for r in stage_table(cfg.sparsity.stages):
        click.echo(f"stage {r['stage']}: steps {r['first_step']:>6}-{r['last_step']:<6} "
                   f"lambda {r['lambda_from']:g} -> {r['lambda_to']:g}  ({r['kind']})")


@cli.command()
@click.argument("model")
@click.option("--data", multiple=True, required=True, help="text / JSONL files or folders")
@click.option("-o", "--out", required=True, help="output folder (stats.safetensors, activation_{L}.pt, profile.json)")
@click.option("--seq-len", default=256, show_default=True)
@click.option("--max-tokens", default=32768, show_default=True, help="tokens profiled")
@click.option("--batch", default=4, show_default=True)
@click.option("--ppl-p", default=1.0, show_default=True, help="PPL-p%% sparsity: allowed perplexity rise in %%")
@click.option("--cett-tokens", default=256, show_default=True, help="tokens used to calibrate CETT thresholds")
@click.option("--search-tokens", default=2048, show_default=True, help="tokens the PPL-p%% search evaluates on")
@click.option("--no-cett", is_flag=True, help="skip the PPL-p%% search")
def profile(model, data, out, seq_len, max_tokens, batch, ppl_p, cett_tokens, search_tokens, no_cett):
    """Per-layer sparsity, per-neuron activation counts, perplexity, PPL-p% sparsity."""
    from .profile import run_profile

    res = run_profile(model, list(data), out, seq_len=seq_len, max_tokens=max_tokens, batch=batch,
                      ppl_p=None if no_cett else ppl_p, cett_tokens=cett_tokens,
                      search_tokens=search_tokens)
    click.echo(json.dumps({k: v for k, v in res.items() if k not in ("layer_sparsity", "cett")}, indent=2))


@cli.command()
@click.argument("model")
@click.option("--data", multiple=True, required=True, help="text / JSONL files or folders")
@click.option("-o", "--out", required=True, help="output folder (model_{L}.pt, predictors.safetensors)")
@click.option("--rank", default=64, show_default=True)
@click.option("--tokens", default=8192, show_default=True, help="(input, label) pairs recorded per layer")
@click.option("--seq-len", default=256, show_default=True)
@click.option("--epochs", default=20, show_default=True)
@click.option("--batch", default=256, show_default=True, help="pairs per predictor training step")
@click.option("--lr", default=1e-3, show_default=True)
@click.option("--threshold", default=0.0, show_default=True, help="logit cut (0 = probability 0.5)")
@click.option("--input", "input_kind", type=click.Choice(["residual", "ffn_norm"]), default="residual",
              show_default=True)
@click.option("--hidden-act", type=click.Choice(["relu", "none"]), default="relu", show_default=True)
@click.option("--layers", default="", help="comma list of layers (default: all)")
def predictors(model, data, out, rank, tokens, seq_len, epochs, batch, lr, threshold, input_kind, hidden_act, layers):
    """Train per-layer activation predictors (weighted BCE, best-recall checkpoint)."""
    from .predictors import run_predictors

    only = [int(s) for s in layers.split(",") if s.strip()] if layers else None
    res = run_predictors(model, list(data), out, rank=rank, tokens=tokens, seq_len=seq_len, epochs=epochs,
                         lr=lr, threshold=threshold, input_kind=input_kind, hidden_act=hidden_act, layers=only,
                         batch=batch)
    click.echo(json.dumps({k: v for k, v in res.items() if k != "layers"}, indent=2))


@cli.command()
@click.argument("log")
@click.option("-o", "--out", required=True, help="PNG file")
def plot(log, out):
    """Draw loss, lambda and sparsity curves from a training log (JSONL)."""
    from .plot import plot_log

    plot_log(log, out)
    click.echo(out)


def main(argv=None):
    if not (sys.argv[1:] if argv is None else argv):
        click.echo(cli.get_help(click.Context(cli, info_name="prosparse-train")), err=True)
        return 2
    try:
        return cli.main(args=argv, prog_name="prosparse-train", standalone_mode=False) or 0
    except click.exceptions.Abort:
        print("prosparse-train: aborted", file=sys.stderr)
        return 130
    except click.ClickException as e:
        print(f"prosparse-train: {e.format_message()}", file=sys.stderr)
        return 2
    except ConfigError as e:
        print(f"prosparse-train: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
