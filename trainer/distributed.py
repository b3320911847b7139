"""Scale-out on torch.distributed: one process per device, launched by torchrun or accelerate.

  * 1 process: nothing is initialised; the model is used as is.
  * N processes (RANK / WORLD_SIZE / MASTER_ADDR in the environment, as set by
    `torchrun` or `accelerate launch`): gloo on CPU, nccl on CUDA; the model is
    wrapped in DDP, or sharded per decoder layer with FSDP2 (`fully_shard`)
    when train.strategy = "fsdp" or accelerate's FSDP config is in use
    (ACCELERATE_USE_FSDP=true, see configs/accelerate_fsdp.yaml).

Every process sees the same global batch split into disjoint micro-batches
(see loop.py), so N processes give the loss curve of one process that
accumulates N times as many micro-batches.
"""
from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    strategy: str = "none"  # none | ddp | fsdp

    @property
    def main(self) -> bool:
        return self.rank == 0


def setup(strategy: str = "auto") -> Dist:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available():
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    if world == 1:
        return Dist(device=device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    if strategy == "auto":
        strategy = "fsdp" if os.environ.get("ACCELERATE_USE_FSDP", "").lower() == "true" else "ddp"
    return Dist(rank=dist.get_rank(), world=dist.get_world_size(), local_rank=local, device=device,
                strategy=strategy)


def wrap(model, d: Dist):
    """DDP or FSDP2 around `model` (moved to d.device); returns the model to call."""
    if d.strategy == "ddp":
        from torch.nn.parallel import DistributedDataParallel as DDP

        return DDP(model, device_ids=[d.device.index] if d.device.type == "cuda" else None)
    if d.strategy == "fsdp":
        from torch.distributed.fsdp import fully_shard

        for layer in model.model.layers:
            fully_shard(layer)
        fully_shard(model)
        return model
    return model


def unwrap(model):
    return getattr(model, "module", model)


def no_sync(model, last_micro: bool):
    """Skip DDP's gradient all-reduce on all but the last micro-batch of a step."""
    if not last_micro and hasattr(model, "no_sync"):
        return model.no_sync()
    return contextlib.nullcontext()


def all_reduce_sum(t: torch.Tensor, d: Dist) -> torch.Tensor:
    if d.world > 1:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def barrier(d: Dist):
    if d.world > 1:
        dist.barrier()


def teardown(d: Dist):
    if d.world > 1 and dist.is_initialized():
        dist.destroy_process_group()
