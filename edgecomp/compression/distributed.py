"""Data-parallel training under torchrun (gloo on CPU, nccl on GPU).

`torchrun --nproc_per_node=N -m edgecomp compress --recipe FILE` runs the same
pipeline on every rank. Every rank prunes its own copy: the weights are equal
on all ranks (DDP averages gradients, and rank 0's buffers are broadcast after
each stage), the plan is deterministic, and a checksum of the pruned structure
is compared across ranks. Only rank 0 writes the run directory; the others get
what they must read from it (on resume) by broadcast, so nodes need no shared
disk.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from typing import Any, Optional, cast

import torch
import torch.distributed as dist
import torch.nn as nn

from ..core.errors import EdgecompError, RecipeError


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1

    def device(self) -> torch.device:
        if torch.cuda.is_available():
            return torch.device("cuda", self.local_rank)
        return torch.device("cpu")

    def wrap(self, model: nn.Module) -> nn.Module:
        """DDP around the (possibly just pruned) model; a fresh wrapper for every training stage."""
        if not self.active:
            return model
        device_ids = [self.local_rank] if torch.cuda.is_available() else None
        return nn.parallel.DistributedDataParallel(model, device_ids=device_ids)

    def broadcast_state(self, model: nn.Module) -> None:
        """Rank 0's parameters and buffers on every rank (BN statistics drift apart under DDP)."""
        if self.active:
            for tensor in model.state_dict().values():
                dist.broadcast(tensor, src=0)

    def broadcast_object(self, value: Any) -> Any:
        if not self.active:
            return value
        holder = [value if self.is_main else None]
        dist.broadcast_object_list(holder, src=0)
        return holder[0]

    def on_main(self, fn):
        """Run fn on rank 0 only; every rank gets its result, or raises the same error."""
        if not self.active:
            return fn()
        outcome = None
        if self.is_main:
            try:
                outcome = ("ok", fn())
            except Exception as error:  # noqa: BLE001 - the other ranks must not wait forever
                outcome = ("error", error)
        kind, value = self.broadcast_object(outcome)
        if kind == "error":
            raise value
        return value

    def check_same(self, what: str, value: Any) -> None:
        """Raise unless every rank holds the same value (compared by a checksum of its JSON)."""
        if not self.active:
            return
        digest = hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()
        gathered: list[Optional[str]] = [None] * self.world
        dist.all_gather_object(gathered, digest)  # fills every slot with a rank's digest
        if len(set(gathered)) != 1:
            raise EdgecompError(f"ranks disagree on the {what} (checksums {sorted(set(cast('list[str]', gathered)))})")

    def shard(self, order: torch.Tensor) -> torch.Tensor:
        """This rank's share; the order is padded by wrapping around (DistributedSampler's rule) so every
        rank gets the same number of samples, hence of batches: unequal counts would hang DDP."""
        if not self.active:
            return order
        padded = -(-len(order) // self.world) * self.world
        order = torch.cat([order, order[: padded - len(order)]]) if padded > len(order) else order
        return order[self.rank :: self.world]

    def local_batch(self, batch_size: int) -> int:
        if batch_size % self.world:
            raise RecipeError(f"data.batch_size: {batch_size} is not divisible by the {self.world} processes")
        return batch_size // self.world

    def barrier(self) -> None:
        if self.active:
            dist.barrier()


def init_from_env() -> Dist:
    """A Dist from torchrun's environment (WORLD_SIZE > 1), else the single-process one."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if torch.cuda.is_available() else "gloo")
    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    return Dist(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))
