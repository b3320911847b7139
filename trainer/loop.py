"""The ProSparse training run: one flat loop, nanoGPT style.

Phases per optimizer step t (1-based):
  1. lr = lr_at(t), lambda = lambda_at(t)          (pure functions, schedule.py)
  2. micro-batches: forward, loss = (1-w)*lm + w*kd + lambda*reg, backward
  3. clip, AdamW step
  4. log one JSONL object; evaluate / checkpoint when due
At the end: held-out perplexity and sparsity, FATReLU threshold shifting
(before/after), and the final Hugging Face checkpoint in ProSparse format.

Exact resume: a checkpoint holds model, optimizer, step (which is also the LR
schedule state and the data position) and every process's RNG states; the log
is cut back to the checkpoint's step, so a run killed with SIGKILL and resumed
writes the same curve as one that was never interrupted.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import random
import shutil
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from . import distributed as D
from .config import Config, ConfigError
from .data import load_tokenizer, pack, tokenize_files
from .modeling import load_model, read_hf_config, save_prosparse
from .schedule import lambda_at, lr_at
from .sparsify import Recorder, attach, check_architecture, reg_loss, sparse_mlps, sparsify


# ---------------------------------------------------------------- helpers

def autocast_ctx(precision: str, device: torch.device):
    if precision == "auto":
        precision = "bf16" if device.type == "cuda" and torch.cuda.is_bf16_supported() else "fp32"
    if precision == "bf16":
        return lambda: torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext


def kd_loss(student_logits, teacher_logits, temperature: float) -> torch.Tensor:
    """T^2 * KL(teacher || student) on softened logits, mean over next-token positions."""
    s = F.log_softmax(student_logits[:, :-1].float() / temperature, dim=-1)
    t = F.log_softmax(teacher_logits[:, :-1].float() / temperature, dim=-1)
    kl = F.kl_div(s, t, log_target=True, reduction="none").sum(-1)
    return kl.mean() * temperature ** 2


@torch.no_grad()
def evaluate(model, seqs: torch.Tensor, micro_batch: int, device, amp=contextlib.nullcontext) -> dict:
    """Held-out perplexity (next-token CE over all positions) and activation sparsity."""
    was_training = model.training
    model.eval()
    n_layers = len(sparse_mlps(model))
    rec = Recorder(n_layers, want_reg=False) if n_layers else None
    attach(model, rec)
    nll, count = 0.0, 0
    for i in range(0, seqs.shape[0], micro_batch):
        x = seqs[i:i + micro_batch].to(device)
        with amp():
            logits = model(input_ids=x).logits
        ce = F.cross_entropy(logits[:, :-1].float().reshape(-1, logits.shape[-1]), x[:, 1:].reshape(-1),
                             reduction="sum")
        nll += ce.item()
        count += x[:, 1:].numel()
    attach(model, None)
    model.train(was_training)
    layer = rec.sparsity() if rec else []
    return {"ppl": math.exp(nll / count), "sparsity": float(np.mean(layer)) if layer else 0.0,
            "layer_sparsity": layer}


def param_groups(model, weight_decay: float):
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (decay if p.dim() >= 2 else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


# ---------------------------------------------------------------- checkpoints

def ckpt_root(cfg: Config) -> Path:
    return Path(cfg.train.out_dir) / "checkpoints"


def latest_checkpoint(cfg: Config) -> Path | None:
    f = ckpt_root(cfg) / "latest"
    if not f.is_file():
        return None
    p = ckpt_root(cfg) / f.read_text().strip()
    return p if (p / "state.pt").is_file() else None


def rng_state() -> dict:
    s = {"torch": torch.get_rng_state(), "python": random.getstate(), "numpy": np.random.get_state()}
    if torch.cuda.is_available():
        s["cuda"] = torch.cuda.get_rng_state()
    return s


def set_rng_state(s: dict):
    torch.set_rng_state(s["torch"])
    random.setstate(s["python"])
    np.random.set_state(s["numpy"])
    if "cuda" in s and torch.cuda.is_available():
        torch.cuda.set_rng_state(s["cuda"])


def save_checkpoint(cfg: Config, d: D.Dist, model, opt, step: int, global_batch: int):
    """state.pt (model+optimizer, full, written by rank 0) + rng-{rank}.pt; then `latest` moves."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict

    msd, osd = get_state_dict(model, opt, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    root = ckpt_root(cfg)
    name = f"step-{step:07d}"
    tmp = root / (name + ".tmp")
    if d.main:
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
    D.barrier(d)
    torch.save(rng_state(), tmp / f"rng-{d.rank}.pt")
    if d.main:
        torch.save({"model": msd, "optim": osd, "step": step, "global_batch": global_batch,
                    "world": d.world, "config": cfg.to_dict()}, tmp / "state.pt")
    D.barrier(d)
    if d.main:
        final = root / name
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        (root / "latest.tmp").write_text(name)
        os.replace(root / "latest.tmp", root / "latest")
        old = sorted(p for p in root.glob("step-*") if p.is_dir() and not p.name.endswith(".tmp"))
        for p in old[:-cfg.train.keep_checkpoints] if cfg.train.keep_checkpoints > 0 else []:
            shutil.rmtree(p, ignore_errors=True)
    D.barrier(d)


def load_checkpoint(path: Path, d: D.Dist, model, opt, global_batch: int) -> int:
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_state_dict

    state = torch.load(path / "state.pt", weights_only=False)
    if state["global_batch"] != global_batch:
        raise ConfigError(f"checkpoint {path} was written with global batch {state['global_batch']}, "
                          f"this run has {global_batch}: exact resume needs the same global batch")
    set_state_dict(model, opt, model_state_dict=state["model"], optim_state_dict=state["optim"],
                   options=StateDictOptions(full_state_dict=True))
    rng = path / f"rng-{d.rank}.pt"
    if rng.is_file():
        set_rng_state(torch.load(rng, weights_only=False))
    return int(state["step"])


def cut_log(log_path: Path, step: int):
    """Keep only the log lines of steps <= step (a resumed run rewrites the rest)."""
    if not log_path.is_file():
        return
    keep = [ln for ln in log_path.read_text().splitlines() if ln.strip() and json.loads(ln).get("step", 0) <= step]
    tmp = log_path.with_suffix(".tmp")
    tmp.write_text("".join(ln + "\n" for ln in keep))
    os.replace(tmp, log_path)


# ---------------------------------------------------------------- the run

def check_inputs(cfg: Config):
    """Everything that can be checked without loading weights: raises ConfigError."""
    if not cfg.model.path:
        raise ConfigError("model.path is not set")
    check_architecture(read_hf_config(cfg.model.path))
    if not cfg.data.train:
        raise ConfigError("data.train is empty: give files or folders of text / JSONL")


def train(cfg: Config, resume: bool = False) -> dict:
    check_inputs(cfg)
    d = D.setup(cfg.train.strategy)
    out = Path(cfg.train.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.train.seed)
    random.seed(cfg.train.seed)
    np.random.seed(cfg.train.seed)
    o = cfg.optim
    global_batch = o.micro_batch * o.grad_accum * d.world
    total = cfg.total_steps

    # Data first: a too-short corpus must fail before any weights are loaded.
    tok = load_tokenizer(cfg.model.path)
    cache = Path(cfg.data.cache_dir) if cfg.data.cache_dir else out / "cache"
    if d.main:  # rank 0 tokenizes and fills the cache; the others then read it
        stream = tokenize_files(cfg.data.train, tok, cfg.data.add_eos, cfg.data.max_tokens, cache_dir=cache)
    D.barrier(d)
    if not d.main:
        stream = tokenize_files(cfg.data.train, tok, cfg.data.add_eos, cfg.data.max_tokens, cache_dir=cache)
    data = pack(stream, cfg.data.seq_len, cfg.data.heldout_fraction, cfg.data.heldout_max_seqs,
                min_train=global_batch, seed=cfg.train.seed)

    model, _, _ = load_model(cfg.model.path, cfg.model.dtype)
    teacher = None
    if cfg.kd.weight > 0:  # the frozen original, before the activation is swapped
        teacher = load_model(cfg.model.path, cfg.model.dtype)[0].to(d.device).eval().requires_grad_(False)
    t_act = cfg.fatrelu.threshold if cfg.model.activation == "fatrelu" else 0.0
    eval_original = None
    if not resume or latest_checkpoint(cfg) is None:  # the model as given, before the swap
        eval_original = evaluate(model.to(d.device), data.heldout, o.micro_batch, d.device, autocast_ctx(
            cfg.train.precision, d.device))
    sparsify(model, cfg.model.activation, t_act)
    model.config.use_cache = False
    if cfg.model.gradient_checkpointing:
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    model.to(d.device).train()
    n_layers, n_ff = model.config.num_hidden_layers, model.config.intermediate_size
    base = model
    model = D.wrap(model, d)
    opt = torch.optim.AdamW(param_groups(model, o.weight_decay), lr=o.lr, betas=(o.beta1, o.beta2), eps=o.eps)
    amp = autocast_ctx(cfg.train.precision, d.device)

    log_path = out / "log.jsonl"
    start = 0
    ck = latest_checkpoint(cfg) if resume else None
    if resume and ck is None and d.main:
        print(f"prosparse-train: no checkpoint in {ckpt_root(cfg)}; starting from step 0")
    if ck is not None:
        start = load_checkpoint(ck, d, model, opt, global_batch)
    if d.main:
        if start > 0:
            cut_log(log_path, start)
        elif log_path.exists():
            log_path.unlink()
        (out / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2))
    summary = {"start_step": start, "total_steps": total, "global_batch": global_batch,
               "seq_len": cfg.data.seq_len, "world": d.world, "strategy": d.strategy, "reg_norm": cfg.sparsity.norm,
               "activation": cfg.model.activation}
    summary_path = out / "summary.json"
    if start == 0:
        summary["eval_original"] = eval_original
        summary["eval_start"] = evaluate(base, data.heldout, o.micro_batch, d.device, amp)
        if d.main:  # on disk now, so a resumed run still reports the start
            summary_path.write_text(json.dumps(summary, indent=2))
    elif summary_path.is_file():
        before = json.loads(summary_path.read_text())
        summary["eval_original"], summary["eval_start"] = before.get("eval_original"), before.get("eval_start")

    rec = Recorder(n_layers, want_reg=True)
    attach(base, rec)
    bar = None
    if d.main and cfg.train.progress:
        from tqdm import tqdm

        bar = tqdm(total=total, initial=start, desc="prosparse-train", dynamic_ncols=True)
    log = open(log_path, "a") if d.main else None
    tokens_per_step = global_batch * cfg.data.seq_len
    for step in range(start + 1, total + 1):
        t0 = time.perf_counter()
        # 1. schedules
        lr = lr_at(step, o.lr, o.min_lr, o.warmup_steps, total)
        lam = lambda_at(step, cfg.sparsity.stages)
        for g in opt.param_groups:
            g["lr"] = lr
        # 2. micro-batches: this process's disjoint slices of the global batch
        rec.reset()
        sums = torch.zeros(4, dtype=torch.float64)  # loss, lm, reg, kd (sum over micro-batches)
        first = (step - 1) * global_batch
        for m in range(o.grad_accum):
            x = data.batch(first + (m * d.world + d.rank) * o.micro_batch, o.micro_batch).to(d.device)
            rec.new_micro_batch()
            with D.no_sync(model, m == o.grad_accum - 1), amp():
                outp = model(input_ids=x, labels=x)
                lm = outp.loss
                reg = reg_loss(rec, cfg.sparsity.norm, n_ff)
                kd = torch.zeros((), device=d.device)
                if teacher is not None:
                    with torch.no_grad():
                        t_logits = teacher(input_ids=x).logits
                    kd = kd_loss(outp.logits, t_logits, cfg.kd.temperature)
                loss = (1 - cfg.kd.weight) * lm + cfg.kd.weight * kd + lam * reg
                (loss / o.grad_accum).backward()
            sums += torch.tensor([loss.item(), lm.item(), reg.item(), kd.item()], dtype=torch.float64)
        # 3. clip and step
        gnorm = torch.nn.utils.clip_grad_norm_(model.parameters(), o.grad_clip if o.grad_clip > 0 else float("inf"))
        opt.step()
        opt.zero_grad(set_to_none=True)
        # 4. log (means over the global batch)
        stats = torch.cat([sums, torch.tensor([float(z) for z in rec.zeros], dtype=torch.float64),
                           torch.tensor(rec.numel, dtype=torch.float64)])
        stats = D.all_reduce_sum(stats, d)
        n_micro = o.grad_accum * d.world
        layer_sp = (stats[4:4 + n_layers] / stats[4 + n_layers:]).tolist()
        dt = time.perf_counter() - t0
        row = {"step": step, "lambda": lam, "lr": lr, "loss": stats[0].item() / n_micro,
               "lm_loss": stats[1].item() / n_micro, "reg_loss": stats[2].item() / n_micro,
               "kd_loss": stats[3].item() / n_micro, "sparsity": float(np.mean(layer_sp)),
               "layer_sparsity": layer_sp, "grad_norm": float(gnorm), "tokens": step * tokens_per_step,
               "tokens_per_s": tokens_per_step / dt}
        if cfg.train.eval_every and step % cfg.train.eval_every == 0 and step != total:
            attach(base, None)
            ev = evaluate(base, data.heldout, o.micro_batch, d.device, amp)
            attach(base, rec)
            row.update(heldout_ppl=ev["ppl"], heldout_sparsity=ev["sparsity"])
        if d.main:
            log.write(json.dumps(row) + "\n")
            log.flush()
            if bar:
                bar.update(1)
                bar.set_postfix(loss=f"{row['loss']:.3f}", lam=f"{lam:.2g}", sp=f"{row['sparsity']:.3f}")
        if (cfg.train.checkpoint_every and step % cfg.train.checkpoint_every == 0) or step == total:
            save_checkpoint(cfg, d, model, opt, step, global_batch)
    if bar:
        bar.close()
    if log:
        log.close()
    attach(base, None)

    # End: held-out metrics, FATReLU shift, final checkpoint (rank 0, unsharded copy).
    final_model = base
    if d.strategy == "fsdp":
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        full = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        if d.main:
            final_model = load_model(cfg.model.path, cfg.model.dtype)[0]
            sparsify(final_model, cfg.model.activation, t_act)
            final_model.load_state_dict(full)
    if d.main:
        if cfg.model.gradient_checkpointing:
            final_model.activation_checkpointing_disable()
        summary["eval_end"] = evaluate(final_model, data.heldout, o.micro_batch, d.device, amp)
        kind, t = cfg.model.activation, t_act
        if cfg.fatrelu.threshold > 0 and kind == "relu":
            for mlp in sparse_mlps(final_model):
                mlp.set_activation("fatrelu", cfg.fatrelu.threshold)
            summary["eval_fatrelu"] = evaluate(final_model, data.heldout, o.micro_batch, d.device, amp)
            summary["fatrelu_threshold"] = cfg.fatrelu.threshold
            kind, t = "fatrelu", cfg.fatrelu.threshold
        final_model.config.use_cache = True
        save_prosparse(final_model, tok, str(out / "final"), kind, t,
                       extra={"reg_norm": cfg.sparsity.norm, "stages": cfg.sparsity.stages,
                              "steps": total, "tokens": total * tokens_per_step})
        summary_path.write_text(json.dumps(summary, indent=2))
    D.barrier(d)
    D.teardown(d)
    return summary if d.main else None
