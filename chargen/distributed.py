"""Several processes training one model, launched by torchrun: which process this is, and the few
collective operations training needs. Knows nothing about models beyond their parameters.

torchrun starts one process per device and tells each its place through the environment (RANK,
WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT). In a single process, which is what a plain
`chargen train` is, no process group is made and every method of `World` returns at once.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import TypeVar

import torch
import torch.distributed as dist
from torch import nn

from chargen.errors import ConfigError
from chargen.launch import place_from_env

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

    def average_gradients(self, parameters: Iterable[nn.Parameter], loss: torch.Tensor) -> torch.Tensor:
        """Replace every gradient by its mean over the processes and return the sum of their
        `loss`, in one all-reduce of one flat buffer, so that all of them take the same step."""
        grads = [p.grad for p in parameters if p.grad is not None]
        flat = torch.cat([g.reshape(-1) for g in grads] + [loss.detach().reshape(1).to(grads[0].dtype)])
        dist.all_reduce(flat)
        means = flat[:-1] / self.size
        start = 0
        for grad in grads:
            grad.copy_(means[start : start + grad.numel()].view_as(grad))
            start += grad.numel()
        return flat[-1].to(loss.dtype)

    def share_weights(self, model: nn.Module) -> None:
        """Give every process rank 0's weights. The same seed gives the same initial weights on the
        same kind of machine already, but random number kernels may differ between machines."""
        if self.size == 1:
            return
        for tensor in model.state_dict().values():
            dist.broadcast(tensor, src=0)


def world_from_env() -> World:
    """This process's place as torchrun set it in the environment; a single process without it."""
    place = place_from_env()
    return World(rank=place.rank, size=place.size, local_rank=place.local_rank)


def require_divisible(batch_size: int, world: World) -> None:
    """Each process takes an equal share of the streams, so the global batch must split evenly."""
    if batch_size % world.size:
        raise ConfigError(
            f"`batch_size={batch_size}` does not split evenly over {world.size} processes; "
            f"use a multiple of {world.size} (the batch is global: each process takes an equal share)",
            "batch_size",
        )


@contextmanager
def process_group(world: World, device: torch.device) -> Iterator[World]:
    """For several processes, join the others for the duration (gloo for the CPU, nccl for CUDA) and
    yield the world with the device its collectives use; for one, yield it untouched."""
    if world.size == 1:
        yield world
        return
    if device.type not in ("cpu", "cuda"):
        raise ConfigError(
            f"`device={device.type!r}` cannot train with several processes; use cpu or cuda", "device"
        )
    # torch.optim imports torch._dynamo when the first optimiser is made. Imported after the process
    # group exists, it keeps hold of it, so that destroy_process_group() cannot stop gloo's worker
    # threads; one of them then sometimes aborts the process as Python shuts down (SIGABRT, about
    # one run in seven here). Imported before, it does not.
    import torch._dynamo  # noqa: F401

    if device.type == "cuda":
        dist.init_process_group("nccl", device_id=device)
    else:
        dist.init_process_group("gloo")
    try:
        yield replace(world, device=device)
    finally:
        dist.destroy_process_group()
