"""Choosing the device and seeding the random number generators: the one place for both."""

from __future__ import annotations

import functools
import platform
import random
from pathlib import Path

import torch

from chargen.errors import ConfigError


def resolve_device(name: str = "auto", gpu: int | None = None) -> torch.device:
    """`auto` picks CUDA, then Apple's MPS, then the CPU; an explicit choice must be available.

    `gpu` is the GPU of one of several processes (its LOCAL_RANK under torchrun): cuda:`gpu`.
    """
    cuda, mps = torch.cuda.is_available(), torch.backends.mps.is_available()
    if name == "auto":
        name = "cuda" if cuda else "mps" if mps else "cpu"
    if (name == "cuda" and not cuda) or (name == "mps" and not mps):
        raise ConfigError(
            f"`device={name!r}` is not available on this machine; use `device='cpu'` or `device='auto'`",
            "device",
        )
    if name == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed window shapes: let cuDNN pick its fastest kernels
        if gpu is not None:
            if gpu >= torch.cuda.device_count():
                raise ConfigError(
                    f"LOCAL_RANK {gpu} has no GPU of its own: this machine has {torch.cuda.device_count()}; "
                    "start at most one process per GPU (torchrun --nproc_per_node)"
                )
            torch.cuda.set_device(gpu)  # so NCCL and every default-device call use this process's GPU
            return torch.device("cuda", gpu)
    return torch.device(name)


def resolve_precision(name: str, device: torch.device, recorded: bool = False) -> torch.dtype | None:
    """The dtype to autocast the network's arithmetic to, or None for plain fp32.

    `auto` picks bfloat16 on a CPU with AVX-512 BF16 or AMX, where oneDNN's bf16 kernels run
    several times faster than fp32 ones, and fp32 everywhere else: on an H200, bf16 trained 7 to
    18% slower than fp32 and no better (docs/benchmarks.md, the GPU check); at chargen's batch
    sizes a GPU step seems bound by per-step overhead, which autocast's casts add to. Weights,
    optimiser moments and the loss stay fp32 either way.

    `bf16` on a CPU that cannot compute it at all (below, cpu_computes_bf16) is refused, unless the
    name is a run's `recorded` precision: a run trained in bf16 on one machine and read on such a
    CPU computes in fp32 there, its weights being fp32 in any case.
    """
    if name == "fp32":
        return None
    if name == "bf16":
        if device.type != "cpu" or cpu_computes_bf16():
            return torch.bfloat16
        if recorded:
            return None
        raise ConfigError(
            "`precision='bf16'` needs a CPU that torch can compute an LSTM in bf16 on (oneDNN's bf16 "
            "kernels need AVX-512), and this one cannot; use `precision='fp32'` or `precision='auto'`",
            "precision",
        )
    if device.type == "cpu":
        return torch.bfloat16 if cpu_has_native_bf16() else None
    return None


def autocast_to(dtype: torch.dtype | None, device_type: str) -> torch.autocast:
    """A context computing in `dtype` (from resolve_precision); None leaves everything fp32."""
    return torch.autocast(device_type, dtype=dtype or torch.float32, enabled=dtype is not None)


def precision_name(autocast: torch.dtype | None) -> str:
    return "bf16" if autocast == torch.bfloat16 else "fp32"


def cpu_has_native_bf16() -> bool:
    # torch exposes these checks only privately; without them, assume the chip has no bf16 units.
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, check, lambda: False)() for check in checks)


@functools.cache
def cpu_computes_bf16() -> bool:
    """Whether torch's LSTM runs under bf16 autocast on this CPU at all, native units or not: tried
    once, on a one-unit LSTM. On a chip without AVX-512 (AMD EPYC with AVX2 only, say) oneDNN has no
    bf16 LSTM kernel and torch raises "could not create a primitive descriptor" mid-forward.

    oneDNN is switched on for the try (a sampler's measured settings may have it off) by setting
    the one flag and putting it back, not with torch.backends.mkldnn.flags(), which also sets
    oneDNN's TF32 switch: torch 2.13 answers that with a UserWarning ("TF32 acceleration on top of
    oneDNN is available for Intel GPUs"), printed ahead of chargen's own output."""
    lstm = torch.nn.LSTM(1, 1)
    onednn = torch.backends.mkldnn.enabled
    torch.backends.mkldnn.enabled = True
    try:
        with torch.no_grad(), autocast_to(torch.bfloat16, "cpu"):
            lstm(torch.zeros(1, 1, 1))
    except RuntimeError:
        return False
    finally:
        torch.backends.mkldnn.enabled = onednn
    return True


def cpu_model() -> str:
    """The CPU's model name as lscpu shows it, or the platform's guess where /proc is not there."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def random_seed() -> int:
    return random.SystemRandom().randrange(2**31)


def seed_everything(seed: int | None) -> int:
    """Seed Python and torch (all devices); a None seed is drawn at random. Returns the seed used."""
    if seed is None:
        seed = random_seed()
    random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device
    return seed
