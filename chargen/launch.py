"""Where this process stands among those torchrun started, as it says in the environment (RANK,
WORLD_SIZE, LOCAL_RANK). No torch here, so that the command line can ask before importing it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from chargen.errors import ConfigError


@dataclass(frozen=True)
class Place:
    rank: int = 0  # 0 .. size - 1; rank 0 writes the run directory and reports
    size: int = 1  # processes in all, on every machine
    local_rank: int = 0  # this process's number on its own machine: which GPU it drives


def place_from_env() -> Place:
    """This process's place as torchrun set it; a single process without it."""
    try:
        rank, size, local_rank = (int(os.environ.get(k, "0")) for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK"))
    except ValueError:
        raise ConfigError("RANK, WORLD_SIZE and LOCAL_RANK must be integers (torchrun sets them)") from None
    if size <= 1:
        return Place()
    if not 0 <= rank < size:
        raise ConfigError(f"RANK {rank} is outside 0..{size - 1} (WORLD_SIZE {size})")
    return Place(rank, size, local_rank)
