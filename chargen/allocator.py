"""How this process's C library hands memory back: kept for reuse. Imports no torch.

A training step on a CPU allocates and frees tens of megabytes of activations and gradients. glibc's
malloc (Linux) serves blocks of 128 KiB and more from fresh pages or trims them from the top of
its heap when they are freed, so every step touches its memory anew and the kernel zeroes each
page on first touch: about 5,700 page faults a step, a fifth of a 2x256 LSTM's step time at
batch 32 and window 35 (AMD EPYC, fp32, two threads: 44 ms a step, 35 with the faults gone). Raising both
thresholds (mallopt(3): M_MMAP_THRESHOLD to its 64-bit maximum, M_TRIM_THRESHOLD to 1 GiB) keeps
freed blocks in the heap, where the next step reuses them. The usual advice for PyTorch on a CPU is
another allocator (jemalloc or tcmalloc, through LD_PRELOAD: PyTorch's performance tuning guide);
this reaches most of the same end from inside the process, with the C library already there. The
cost: the process keeps its peak memory until it exits.
"""

from __future__ import annotations

import ctypes
import sys

_M_TRIM_THRESHOLD = -1  # glibc's malloc.h
_M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 << 20  # the largest glibc accepts on 64-bit (4 * 1024 * 1024 * sizeof(long))
TRIM_THRESHOLD = 1 << 30

_done = False


def keep_freed_memory() -> bool:
    """Ask glibc's malloc to keep freed memory for reuse (see the module's docstring). Returns
    whether it took both settings; elsewhere (macOS, Windows, other C libraries) it does nothing.
    Both are needed: either alone turns off glibc's own adaptation of the other."""
    global _done
    if _done:
        return True
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the C library this process already runs on
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    _done = (
        mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1 and mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
    )
    return _done
