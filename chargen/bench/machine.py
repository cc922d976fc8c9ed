"""What machine a benchmark ran on, what its matrix units reach, and the settings that make one
machine stand in for another.

Every figure a benchmark prints starts with this line, so that a table pasted into the docs always
says which CPU (and whether it has bf16 units), how many threads and which torch made it.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from torch import nn

from chargen.device import cpu_has_native_bf16, cpu_model

# The /proc/cpuinfo flags that say the CPU computes bf16 itself (AVX-512 BF16, Intel AMX).
BF16_FLAGS = ("avx512_bf16", "amx_bf16")


def cpu_bf16_flags() -> list[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return [flag for flag in BF16_FLAGS if flag in line.split()]
    except OSError:
        pass
    return []


def describe() -> str:
    """One line: CPU model, its bf16 flags, threads torch uses, torch's version."""
    flags = cpu_bf16_flags()
    bf16 = f"bf16 flags: {' '.join(flags)}" if flags else "no bf16 flags (fp32 only)"
    native = "yes" if cpu_has_native_bf16() else "no"
    return (
        f"machine: {cpu_model()}; {bf16}; torch sees native bf16: {native}; "
        f"{torch.get_num_threads()} threads; torch {torch.__version__}"
    )


def add_options(parser: argparse.ArgumentParser, precision_help: str) -> None:
    """--precision and --threads, with which one machine stands in for another."""
    parser.add_argument(
        "--precision",
        choices=["auto", "fp32", "bf16"],
        default="auto",
        help=f"{precision_help} (fp32 stands in for a chip without bf16; default: %(default)s)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        metavar="N",
        help="CPU threads torch computes with, >= 1 (default: torch's own, all cores); 1 stands in for "
        "a slower laptop",
    )


def set_threads(threads: int | None) -> None:
    """Use `threads` CPU threads for everything that follows (one stands in for a slower laptop)."""
    if threads is not None:
        if threads < 1:
            raise SystemExit(f"error: --threads must be at least 1, not {threads}")
        torch.set_num_threads(threads)


def matmul_ceiling(dtype: torch.dtype, rows: int = 2048, inputs: int = 256, outputs: int = 1024) -> float:
    """GFLOP/s of nn.Linear (oneDNN on a CPU) in `dtype` at an input-projection shape: the best of
    several timings, since a ceiling is what the machine can reach and noise only lowers it."""
    layer = nn.Linear(inputs, outputs).to(dtype)
    x = torch.randn(rows, inputs).to(dtype)
    best = 0.0
    with torch.no_grad():
        for _ in range(10):  # warm-up
            layer(x)
        for _ in range(9):
            start = time.perf_counter()
            for _ in range(20):
                layer(x)
            best = max(best, 20 * 2 * rows * inputs * outputs / (time.perf_counter() - start))
    return best / 1e9
