"""Training configuration: dataclasses with commented defaults, loaded from TOML.

Loading is strict. Every mistake a user can make in the file -- an unknown
section or key, stage ends that do not increase, a negative lambda, an unknown
activation or normalisation -- raises ConfigError with one clear line *before*
anything is loaded or trained. Checks that need the model or the data (unknown
architecture, empty or too-short data) run in `loop.prepare()`, still before
the first step.

A config file looks like this (every key optional except model.path,
data.train and sparsity.stages):

    [model]
    path = "models/smollm2"          # HF folder, or a .gguf file
    activation = "relu"              # relu | relu2 | drelu | fatrelu | silu

    [data]
    train = ["corpus/"]              # files or folders (.txt .md .rst .jsonl)
    seq_len = 256

    [sparsity]
    stages = [[0.0, 100], [1e-3, 150], [1e-2, 300]]   # (lambda_i, end step T_i)
    norm = "mean"

Steps are optimizer steps, counted from 1. Stage i covers T_{i-1} < t <= T_i.
"""
from __future__ import annotations

import dataclasses
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

ACTIVATIONS = ("relu", "relu2", "drelu", "fatrelu", "silu")
# How ||x1||_1 is normalised before it is multiplied by lambda (summed over layers):
#   mean      -- mean of |x1| over tokens and neurons (per-element mean; the default)
#   token_l1  -- sum over neurons, mean over tokens
#   layer_mean-- like mean, then averaged (not summed) over layers
REG_NORMS = ("mean", "token_l1", "layer_mean")
PRECISIONS = ("auto", "fp32", "bf16")
STRATEGIES = ("auto", "ddp", "fsdp")


class ConfigError(ValueError):
    """A mistake in the user's configuration or inputs; the CLI prints it as one line."""


@dataclass
class ModelConfig:
    path: str = ""                 # HF model folder or a .gguf file (transformers' GGUF loader)
    activation: str = "relu"       # gate activation the model is trained with
    dtype: str = "float32"         # weights in memory: float32 | bfloat16
    gradient_checkpointing: bool = False


@dataclass
class DataConfig:
    train: list = field(default_factory=list)  # files or folders; .jsonl = {"text"} or {"messages"}
    seq_len: int = 256             # tokens per packed sequence
    heldout_fraction: float = 0.05  # the last fraction of packed sequences, never trained on
    heldout_max_seqs: int = 64     # cap, so evaluation stays cheap
    add_eos: bool = True           # an EOS token between documents
    max_tokens: int = 0            # 0 = no limit; else stop reading data after this many tokens
    cache_dir: str = ""            # tokenized-stream cache; "" = <out_dir>/cache


@dataclass
class SparsityConfig:
    stages: list = field(default_factory=list)  # [[lambda_0 (=0), T_0], [lambda_1, T_1], ...]
    norm: str = "mean"             # one of REG_NORMS


@dataclass
class OptimConfig:
    lr: float = 3e-5               # peak learning rate
    min_lr: float = 0.0            # cosine floor
    warmup_steps: int = 0          # linear warm-up of the LR (not of lambda)
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    eps: float = 1e-8
    grad_clip: float = 1.0         # 0 = no clipping
    micro_batch: int = 4           # sequences per forward, per process
    grad_accum: int = 1            # micro-batches per optimizer step, per process
    max_steps: int = 0             # 0 = the last stage end


@dataclass
class KDConfig:
    weight: float = 0.0            # 0 = off; loss = (1-w)*lm + w*kd + lambda*reg
    temperature: float = 1.0


@dataclass
class FatreluConfig:
    threshold: float = 0.0         # t > 0: shift ReLU to FATReLU_t at the end (no training)


@dataclass
class TrainConfig:
    out_dir: str = "runs/prosparse"
    seed: int = 1234
    precision: str = "auto"        # auto = bf16 autocast on CUDA with bf16, fp32 elsewhere
    checkpoint_every: int = 0      # 0 = only at the end
    eval_every: int = 0            # 0 = only at the start and the end
    keep_checkpoints: int = 2
    strategy: str = "auto"         # multi-process: ddp | fsdp (auto: fsdp if accelerate says so)
    progress: bool = True          # tqdm bar


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    sparsity: SparsityConfig = field(default_factory=SparsityConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    kd: KDConfig = field(default_factory=KDConfig)
    fatrelu: FatreluConfig = field(default_factory=FatreluConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    @property
    def total_steps(self) -> int:
        return self.optim.max_steps or int(self.sparsity.stages[-1][1])

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


SECTIONS = {f.name: f.type for f in dataclasses.fields(Config)}


def _fill(section: str, cls, raw: dict):
    if not isinstance(raw, dict):
        raise ConfigError(f"[{section}] must be a table")
    obj = cls()
    known = {f.name: f for f in dataclasses.fields(cls)}
    for key, value in raw.items():
        if key not in known:
            raise ConfigError(f"unknown config key '{section}.{key}' (known: {', '.join(known)})")
        default = getattr(obj, key)
        if isinstance(default, bool):
            if not isinstance(value, bool):
                raise ConfigError(f"'{section}.{key}' must be true or false")
        elif isinstance(default, (int, float)) and not isinstance(default, bool):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ConfigError(f"'{section}.{key}' must be a number, got {value!r}")
            if isinstance(default, int) and not isinstance(default, bool) and isinstance(value, float):
                if value != int(value):
                    raise ConfigError(f"'{section}.{key}' must be an integer, got {value!r}")
                value = int(value)
            if isinstance(default, float):
                value = float(value)
        elif isinstance(default, str) and not isinstance(value, str):
            raise ConfigError(f"'{section}.{key}' must be a string, got {value!r}")
        elif isinstance(default, list) and not isinstance(value, list):
            value = [value] if (section, key) == ("data", "train") and isinstance(value, str) else value
            if not isinstance(value, list):
                raise ConfigError(f"'{section}.{key}' must be a list")
        setattr(obj, key, value)
    return obj


def from_dict(raw: dict) -> Config:
    cfg = Config()
    for name, value in raw.items():
        if name not in SECTIONS:
            raise ConfigError(f"unknown config section '[{name}]' (known: {', '.join(SECTIONS)})")
        cls = type(getattr(cfg, name))
        setattr(cfg, name, _fill(name, cls, value))
    cfg.model.path = os.path.expanduser(cfg.model.path)
    cfg.data.train = [os.path.expanduser(str(p)) for p in cfg.data.train]
    cfg.train.out_dir = os.path.expanduser(cfg.train.out_dir)
    validate(cfg)
    return cfg


CONFIG_DIR = Path(__file__).parent / "configs"


def resolve(name: str) -> Path:
    """A path as given, or the name of a shipped config (with or without .toml)."""
    p = Path(name)
    if p.is_file():
        return p
    for cand in (CONFIG_DIR / name, CONFIG_DIR / f"{name}.toml"):
        if cand.is_file():
            return cand
    shipped = ", ".join(sorted(f.stem for f in CONFIG_DIR.glob("*.toml")))
    raise ConfigError(f"config not found: {name} (shipped configs: {shipped or 'none'})")


def load(path: str | Path, overrides: dict | None = None) -> Config:
    """Read a TOML config; `overrides` maps 'section.key' to a value (CLI flags)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        raw = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML: {e}") from None
    for dotted, value in (overrides or {}).items():
        section, key = dotted.split(".", 1)
        raw.setdefault(section, {})[key] = value
    return from_dict(raw)


def to_toml(raw: dict) -> str:
    """The TOML text of a config dict ({section: {key: value}}; values are
    booleans, numbers, strings or lists of them): what `load` reads back."""
    def fmt(v):
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, str):
            return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
        if isinstance(v, (list, tuple)):
            return "[" + ", ".join(fmt(x) for x in v) + "]"
        return repr(v)

    return "".join(f"[{name}]\n" + "".join(f"{k} = {fmt(v)}\n" for k, v in vals.items()) + "\n"
                   for name, vals in raw.items())


def validate(cfg: Config) -> None:
    m, d, s, o = cfg.model, cfg.data, cfg.sparsity, cfg.optim
    if m.activation not in ACTIVATIONS:
        raise ConfigError(f"unknown activation '{m.activation}' (choose from {', '.join(ACTIVATIONS)})")
    if m.dtype not in ("float32", "bfloat16"):
        raise ConfigError(f"model.dtype must be float32 or bfloat16, got '{m.dtype}'")
    if s.norm not in REG_NORMS:
        raise ConfigError(f"unknown sparsity.norm '{s.norm}' (choose from {', '.join(REG_NORMS)})")
    if cfg.train.precision not in PRECISIONS:
        raise ConfigError(f"unknown train.precision '{cfg.train.precision}'")
    if cfg.train.strategy not in STRATEGIES:
        raise ConfigError(f"unknown train.strategy '{cfg.train.strategy}'")
    validate_stages(s.stages)
    if m.activation == "silu" and any(lam > 0 for lam, _ in s.stages):
        raise ConfigError("a positive lambda needs a ReLU-family activation (silu is never exactly zero)")
    if d.seq_len < 2:
        raise ConfigError("data.seq_len must be at least 2")
    if not 0.0 < d.heldout_fraction < 1.0:
        raise ConfigError("data.heldout_fraction must be in (0, 1)")
    if o.lr <= 0 or o.min_lr < 0 or o.min_lr > o.lr:
        raise ConfigError("optim.lr must be > 0 and 0 <= optim.min_lr <= optim.lr")
    if o.micro_batch < 1 or o.grad_accum < 1:
        raise ConfigError("optim.micro_batch and optim.grad_accum must be >= 1")
    if o.warmup_steps < 0 or o.max_steps < 0 or o.grad_clip < 0:
        raise ConfigError("optim.warmup_steps, max_steps and grad_clip must be >= 0")
    if cfg.total_steps < 1:
        raise ConfigError("nothing to train: the last stage ends at step 0 and optim.max_steps is 0")
    if not 0.0 <= cfg.kd.weight <= 1.0 or cfg.kd.temperature <= 0:
        raise ConfigError("kd.weight must be in [0, 1] and kd.temperature > 0")
    if cfg.fatrelu.threshold < 0:
        raise ConfigError("fatrelu.threshold must be >= 0")
    if cfg.fatrelu.threshold > 0 and m.activation not in ("relu", "fatrelu"):
        raise ConfigError("fatrelu.threshold shifts a ReLU gate; it needs model.activation = relu")
    if cfg.train.checkpoint_every < 0 or cfg.train.eval_every < 0:
        raise ConfigError("train.checkpoint_every and train.eval_every must be >= 0")


def validate_stages(stages) -> None:
    """stages: [[lambda_0, T_0], [lambda_1, T_1], ...]; lambda_0 = 0; T strictly increasing."""
    if not isinstance(stages, list) or not stages:
        raise ConfigError("sparsity.stages is missing: a list of [lambda, end_step] pairs")
    prev_end = None
    for i, st in enumerate(stages):
        if (not isinstance(st, list) or len(st) != 2
                or any(isinstance(v, bool) or not isinstance(v, (int, float)) for v in st)):
            raise ConfigError(f"sparsity.stages[{i}] must be [lambda, end_step], got {st!r}")
        lam, end = st
        if lam < 0:
            raise ConfigError(f"sparsity.stages[{i}]: lambda must not be negative, got {lam}")
        if end != int(end) or end < 0:
            raise ConfigError(f"sparsity.stages[{i}]: end step must be a whole number >= 0, got {end}")
        if prev_end is not None and end <= prev_end:
            raise ConfigError(f"sparsity.stages: end steps must increase; stage {i} ends at {int(end)} "
                              f"after stage {i - 1} ended at {int(prev_end)}")
        prev_end = end
        stages[i] = [float(lam), int(end)]
    if stages[0][0] != 0.0:
        raise ConfigError("sparsity.stages[0] is stage 0 (activation substitution): its lambda must be 0; "
                          "use [0, 0] to skip it")
