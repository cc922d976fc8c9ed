"""Choosing the device and seeding the random number generators: the one place for both."""

from __future__ import annotations

import random

import torch

from chargen.errors import ConfigError


def resolve_device(name: str = "auto") -> torch.device:
    """`auto` picks CUDA, then Apple's MPS, then the CPU; an explicit choice must be available."""
    cuda, mps = torch.cuda.is_available(), torch.backends.mps.is_available()
    if name == "auto":
        name = "cuda" if cuda else "mps" if mps else "cpu"
    if (name == "cuda" and not cuda) or (name == "mps" and not mps):
        raise ConfigError(f"--device {name} is not available on this machine; use --device cpu or auto")
    if name == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed window shapes: let cuDNN pick its fastest kernels
    return torch.device(name)


def seed_everything(seed: int | None) -> int:
    """Seed Python and torch (all devices); a None seed is drawn at random. Returns the seed used."""
    if seed is None:
        seed = random.SystemRandom().randrange(2**31)
    random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device
    return seed
