"""CPU settings for generation's small steps, chosen by timing them on this machine, once.

One character for a few streams is a few hundred microseconds of work, and whether it runs faster
on one thread or on all of them, with oneDNN or without, depends on the chip: on one AMD EPYC of
ours one thread without oneDNN was 3.6 times faster than the defaults, on an Intel Xeon two threads
with oneDNN were 1.6 times faster than that. So the first generation with a model shape and batch
size on a machine times each candidate for a fraction of a second and remembers the fastest in
chargen_home(); later ones read it back. Knows nothing about sampling or text.
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from chargen.device import cpu_model
from chargen.errors import StorageError
from chargen.files import write_json
from chargen.model import CharRNN
from chargen.paths import chargen_home

CACHE_NAME = "step-settings.json"
ROUNDS = 5  # timed rounds per candidate, taken in turn so that a busy moment hurts all alike
# Several threads must beat one by this much to be chosen: on a machine that another program makes
# busy, a small step on several threads waits for the one that is not running, and we measured it
# 5 times slower than on one thread, while it never gained more than 1.6 times on a quiet machine.
THREADS_MARGIN = 1.25


@dataclass(frozen=True)
class StepSettings:
    threads: int  # torch's intra-op threads
    onednn: bool  # whether torch may hand matrix products to oneDNN (mkldnn)


def candidates() -> list[StepSettings]:
    """One thread or all of them, oneDNN on or off: each the fastest on some machine we measured."""
    every = torch.get_num_threads()
    options = [
        StepSettings(1, False),
        StepSettings(1, True),
        StepSettings(every, True),
        StepSettings(every, False),
    ]
    return list(dict.fromkeys(options))  # one thread in all: two candidates, not four


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
    a GPU's steps need no such choice), measured the first time and remembered."""
    if torch.device(device).type != "cpu":
        return None
    path = chargen_home() / CACHE_NAME
    key = cache_key(model, batch_size)
    known = _read(path)
    if key in known:
        try:
            return StepSettings(**known[key]["settings"])
        except (TypeError, KeyError):
            pass  # an entry of another shape: measure again
    rates = measure(model, batch_size)
    best = max(rates, key=lambda s: rates[s] / (THREADS_MARGIN if s.threads > 1 else 1.0))
    known[key] = {
        "settings": asdict(best),
        "steps_per_sec": {
            f"{s.threads} threads, onednn {'on' if s.onednn else 'off'}": r for s, r in rates.items()
        },
    }
    _write(path, known)
    return best


@contextmanager
def applied(settings: StepSettings | None) -> Iterator[None]:
    """Run the block with `settings`, then put torch's own back."""
    if settings is None:
        yield
        return
    threads, onednn = torch.get_num_threads(), torch.backends.mkldnn.enabled
    torch.set_num_threads(settings.threads)
    torch.backends.mkldnn.enabled = settings.onednn
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        torch.backends.mkldnn.enabled = onednn


@torch.inference_mode()
def measure(model: CharRNN, batch_size: int) -> dict[StepSettings, float]:
    """Steps per second of `model.step` for `batch_size` streams under each candidate: the median
    of ROUNDS short rounds, after one untimed round each. The random generators are not touched."""
    was_training = model.training
    model.eval()
    x = torch.zeros(batch_size, dtype=torch.long)
    steps = 32 if batch_size <= 8 else 8  # about 10 ms a round either way
    options = candidates()
    seconds: dict[StepSettings, list[float]] = {s: [] for s in options}
    for round_ in range(ROUNDS + 1):
        for settings in options:
            with applied(settings):
                state = model.init_state(batch_size)
                began = time.perf_counter()
                for _ in range(steps):
                    _, state = model.step(x, state)
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
