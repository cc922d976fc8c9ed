"""Several processes training one model, launched by torchrun: which process this is, and the few
collective operations training needs. Knows nothing about models beyond wrapping one in DDP.

torchrun starts one process per device and tells each its place through the environment (RANK,
WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT). In a single process, which is what a plain
`chargen train` is, no process group is made and every method of `World` returns at once.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import TypeVar

import torch
import torch.distributed as dist
from torch import nn

from chargen.errors import ConfigError, TrainingError, TrainingInterrupted

T = TypeVar("T")
CPU = torch.device("cpu")


@dataclass(frozen=True)
class World:
    """This process's place among those training together, and collectives that are no-ops alone."""

    rank: int = 0  # 0 .. size - 1; rank 0 writes the run directory and reports
    size: int = 1  # processes in all, on every machine
    local_rank: int = 0  # this process's number on its own machine: which GPU it drives
    device: torch.device = CPU  # where collectives run: the CPU (gloo) or this GPU (nccl)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def share(self, n: int) -> slice:
        """This process's contiguous share of n items (streams), in rank order; when n does not
        divide evenly, the first n % size processes take one more."""
        base, extra = divmod(n, self.size)
        start = self.rank * base + min(self.rank, extra)
        return slice(start, start + base + (self.rank < extra))

    def sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """The element-wise sum of `tensor` over all processes (every process gets the same bits)."""
        if self.size == 1:
            return tensor
        total = tensor.to(self.device, copy=True)
        dist.all_reduce(total)
        return total.to(tensor.device)

    def gather(self, tensor: torch.Tensor, dim: int) -> torch.Tensor:
        """Every process's `tensor` (all the same shape) joined along `dim` in rank order."""
        if self.size == 1:
            return tensor
        mine = tensor.to(self.device).contiguous()
        parts = [torch.empty_like(mine) for _ in range(self.size)]
        dist.all_gather(parts, mine)
        return torch.cat(parts, dim).to(tensor.device)

    def from_main(self, value: T) -> T:
        """Rank 0's `value` (a seed, a path), on every process."""
        if self.size == 1:
            return value
        box = [value]
        dist.broadcast_object_list(box, src=0, device=self.device)
        return box[0]

    def wrap(self, model: nn.Module) -> nn.Module:
        """What training runs: the model itself, or DistributedDataParallel around it, which
        averages the gradients over processes during backward()."""
        if self.size == 1:
            return model
        device_ids = [self.device] if self.device.type == "cuda" else None
        return nn.parallel.DistributedDataParallel(model, device_ids=device_ids)


def world_from_env() -> World:
    """This process's place as torchrun set it in the environment; a single process without it."""
    try:
        rank, size, local_rank = (int(os.environ.get(k, "0")) for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK"))
    except ValueError:
        raise ConfigError("RANK, WORLD_SIZE and LOCAL_RANK must be integers (torchrun sets them)") from None
    if size <= 1:
        return World()
    if not 0 <= rank < size:
        raise ConfigError(f"RANK {rank} is outside 0..{size - 1} (WORLD_SIZE {size})")
    return World(rank=rank, size=size, local_rank=local_rank)


def require_divisible(batch_size: int, world: World) -> None:
    """Each process takes an equal share of the streams, so the global batch must split evenly."""
    if batch_size % world.size:
        raise ConfigError(
            f"--batch-size {batch_size} does not split evenly over {world.size} processes; "
            f"use a multiple of {world.size} (the batch is global: each process takes an equal share)"
        )


@contextmanager
def process_group(world: World, device: torch.device) -> Iterator[World]:
    """For several processes, join the others for the duration (gloo for the CPU, nccl for CUDA) and
    yield the world with the device its collectives use; for one, yield it untouched."""
    if world.size == 1:
        yield world
        return
    if device.type not in ("cpu", "cuda"):
        raise ConfigError(f"--device {device.type} cannot train with several processes; use cpu or cuda")
    if device.type == "cuda":
        dist.init_process_group("nccl", device_id=device)
    else:
        dist.init_process_group("gloo")
    try:
        yield replace(world, device=device)
        _leave_together()
    except (TrainingError, TrainingInterrupted):  # decided by all processes alike, so all are here
        _leave_together()
        raise
    finally:
        dist.destroy_process_group()


def _leave_together() -> None:
    """Wait at a barrier for every process before leaving. Without it, a process that finished first
    sometimes died of SIGABRT while Python shut down (about one run in three here): gloo's worker
    thread releases the tensors of the last collective a moment after it completes, which needs the
    interpreter. Waiting at the barrier gives that thread its moment."""
    dist.barrier()
