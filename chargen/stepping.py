"""CPU settings for generation's small steps, chosen by timing them on this machine, once.

One character for a few streams is a few hundred microseconds of work, and whether it runs faster
on one thread or on all of them, with oneDNN or without, depends on the chip: on one AMD EPYC of
ours one thread without oneDNN was 3.6 times faster than the defaults, on an Intel Xeon two threads
with oneDNN were 1.6 times faster than that. Which stepper does the work is chosen alike (for an
LSTM, GemmStepper or NumpyStepper, else torch's cell functions: steppers.py). So the first
generations with a model shape and batch size on a machine time each candidate for a fraction of a
second and remember the fastest in chargen_home(); later ones read it back. Knows nothing about
sampling or text.
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from chargen.device import cpu_model
from chargen.errors import StorageError
from chargen.files import write_json
from chargen.model import CharRNN
from chargen.paths import chargen_home
from chargen.steppers import CELLS_KERNEL, GEMM_KERNEL, GEMM_ROWS_KERNEL, NUMPY_KERNEL, make_stepper

if TYPE_CHECKING:
    from threadpoolctl import ThreadpoolController

CACHE_NAME = "step-settings.json"
ROUNDS = 5  # timed rounds per candidate, taken in turn so that a busy moment hurts all alike
# Several threads must beat one by this much to be chosen: on a machine that another program makes
# busy, a small step on several threads waits for the one that is not running, and we measured it
# 5 times slower than on one thread, while it never gained more than 1.6 times on a quiet machine.
THREADS_MARGIN = 1.25
# Where several threads pay, a neighbour on a shared machine can still take a core away for a few
# seconds (on ours about one second in seven, for 1 to 3 seconds at a time): a measurement that
# falls in such a moment would pick one thread for good. So a choice is measured at its first three
# uses and each candidate keeps its best rate: what it does when the machine is its own.
MEASUREMENTS = 3


@dataclass(frozen=True)
class StepSettings:
    threads: int  # torch's intra-op threads, and for "numpy" its BLAS's too (always 1 there)
    onednn: bool  # whether torch may hand matrix products to oneDNN (mkldnn); off for "numpy"
    kernel: str  # the stepper: "gemm" or "gemm-rows" (GemmStepper), "numpy" (NumpyStepper), "cells"


def candidates(model: CharRNN) -> list[StepSettings]:
    """One thread or all of them, oneDNN on or off, and for an LSTM each of its steppers (GemmStepper
    in both layouts; NumPy's on one thread, where its BLAS's threads can be set): each the fastest
    on some machine we measured."""
    every = torch.get_num_threads()
    kernels = [GEMM_KERNEL, GEMM_ROWS_KERNEL, CELLS_KERNEL] if model.config.cell == "lstm" else [CELLS_KERNEL]
    options = [
        StepSettings(threads, onednn, kernel)
        for kernel in kernels
        for threads, onednn in ((1, False), (1, True), (every, True), (every, False))
    ]
    if model.config.cell == "lstm" and _blas() is not None:
        # On one BLAS thread only: NumPy's step is for a few streams, too little work to share, and
        # OpenBLAS's idle threads spin for a while after each product. On the 2-core AMD EPYC with
        # AVX2, two gave one stream 6,868 steps/s against one thread's 9,896, and their spinning
        # made the torch candidates timed after them read up to half their speed.
        options.append(StepSettings(1, False, NUMPY_KERNEL))
    return list(dict.fromkeys(options))  # one thread in all: half as many


@cache
def _blas() -> ThreadpoolController | None:
    """What sets the threads of NumPy's BLAS (threadpoolctl, which finds OpenBLAS, MKL or BLIS in
    whatever build of NumPy is loaded), or None where it is missing or finds none: then NumpyStepper
    is not a candidate, because a BLAS left on all cores spins and waits as torch's threads do."""
    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:
        return None
    controller = ThreadpoolController()  # made after NumPy is imported (above), so that it sees its BLAS
    return controller if controller.select(user_api="blas").lib_controllers else None


def cache_key(model: CharRNN, batch_size: int) -> str:
    """Where a measurement applies: this CPU, torch and thread count, this shape and batch size
    (rounded up to a power of two: neighbouring sizes do the same work per step)."""
    c = model.config
    batch = 1 << max(0, batch_size - 1).bit_length()
    return (
        f"{cpu_model()} | torch {torch.__version__} | {torch.get_num_threads()} threads | "
        f"{c.cell} {c.layers}x{c.hidden} embed {c.embed} vocab {c.vocab_size} | batch {batch}"
    )


def choose(model: CharRNN, batch_size: int, device: torch.device | str) -> StepSettings | None:
    """The fastest settings for `model` stepping `batch_size` streams on this CPU (None elsewhere:
    a GPU's steps need no such choice): measured at the first MEASUREMENTS uses, each candidate's
    best rate kept, then remembered."""
    if torch.device(device).type != "cpu":
        return None
    path = chargen_home() / CACHE_NAME
    key = cache_key(model, batch_size)
    known = _read(path)
    entry = known.get(key, {})
    options = candidates(model)
    try:
        settings = StepSettings(**entry["settings"])
        if set(entry["steps_per_sec"]) != {label(s) for s in options}:
            raise KeyError("measured over other candidates")  # by an older chargen, say: not all
        if int(entry.get("measurements", 0)) >= MEASUREMENTS:
            return settings
        best_seen = {s: float(entry["steps_per_sec"][label(s)]) for s in options}
    except (TypeError, KeyError, ValueError):
        entry, best_seen = {}, {}  # none yet, an entry of another shape or candidates: measure afresh
    rates = measure(model, batch_size)
    rates = {s: max(rate, best_seen.get(s, 0.0)) for s, rate in rates.items()}
    best = max(rates, key=lambda s: rates[s] / (THREADS_MARGIN if s.threads > 1 else 1.0))
    known[key] = {
        "settings": asdict(best),
        "measurements": entry.get("measurements", 0) + 1,
        "steps_per_sec": {label(s): r for s, r in rates.items()},
    }
    _write(path, known)
    return best


def label(settings: StepSettings) -> str:
    """How the cache names a candidate's rate."""
    if settings.kernel == NUMPY_KERNEL:
        return f"numpy, {settings.threads} threads"
    onednn = "on" if settings.onednn else "off"
    return f"{settings.kernel}, {settings.threads} threads, onednn {onednn}"


def kernel(settings: StepSettings | None) -> str:
    """The stepper `settings` name; torch's cell functions where there was no choice (a GPU)."""
    return settings.kernel if settings is not None else "cells"


@contextmanager
def applied(settings: StepSettings | None) -> Iterator[None]:
    """Run the block with `settings`, then put torch's own back (and NumPy's BLAS's threads)."""
    if settings is None:
        yield
        return
    threads, onednn = torch.get_num_threads(), torch.backends.mkldnn.enabled
    torch.set_num_threads(settings.threads)
    torch.backends.mkldnn.enabled = settings.onednn
    blas = _blas() if settings.kernel == NUMPY_KERNEL else None
    try:
        with ExitStack() as stack:
            if blas is not None:
                stack.enter_context(blas.limit(limits=settings.threads, user_api="blas"))
            # A diverged model's inf and NaN go on to the Picker, which cleans them; NumPy, which
            # steps and picks on a CPU, would warn on the way.
            stack.enter_context(np.errstate(all="ignore"))
            yield
    finally:
        torch.set_num_threads(threads)
        torch.backends.mkldnn.enabled = onednn


@torch.inference_mode()
def measure(model: CharRNN, batch_size: int) -> dict[StepSettings, float]:
    """Steps per second of each candidate's stepper for `batch_size` streams: the median of ROUNDS
    short rounds, after one untimed round each. The random generators are not touched."""
    was_training = model.training
    model.eval()
    x = torch.zeros(batch_size, dtype=torch.long)
    steps = 32 if batch_size <= 8 else 8  # about 10 ms a round either way
    options = candidates(model)
    kinds = {s.kernel for s in options}
    steppers = {kind: make_stepper(model, model.init_state(batch_size), kind) for kind in kinds}
    seconds: dict[StepSettings, list[float]] = {s: [] for s in options}
    for round_ in range(ROUNDS + 1):
        for settings in options:
            step = steppers[settings.kernel]
            with applied(settings):
                step(x)  # untimed: the first step after a change of threads pays for the change
                began = time.perf_counter()
                for _ in range(steps):
                    step(x)
                if round_ > 0:  # the first builds kernels and warms caches
                    seconds[settings].append(time.perf_counter() - began)
    model.train(was_training)
    return {s: steps / statistics.median(t) for s, t in seconds.items()}


def _read(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}  # none yet, or unreadable: measure again
    return data if isinstance(data, dict) else {}


def _write(path: Path, data: dict) -> None:
    """Replace the file in one rename; a home that cannot be written only means measuring again."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json(path, data)
    except (OSError, StorageError):
        pass
