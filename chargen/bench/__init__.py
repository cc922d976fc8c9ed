"""Benchmarks: not tests, never run in CI; each prints a table for people and can write JSON.

`python -m chargen.bench --help` lists them; `python -m chargen.bench NAME --help` shows what one
measures, its options with their units and defaults, and an example. Each is a module here with a
`main(argv)`, its help made by `parser` from the module's docstring.
"""

from __future__ import annotations

import argparse
from pathlib import Path

# Each benchmark and what it measures, as `python -m chargen.bench --help` lists them.
BENCHMARKS = {
    "speed": "training, evaluation and sampling speed in characters/s, against the machine's "
    "matrix-multiply ceiling and a d2l-style reference (the default)",
    "quality": "validation loss in nats/char after each training-time budget, against a plain "
    "PyTorch reference trained as long",
    "items": "test loss in nats/char on makemore's split of a list of names, and the share of new samples",
    "adapt": "a trained run's loss with dynamic evaluation over a grid of step sizes, decays and segments",
    "serve": "`chargen serve` under load: characters/s of many clients against one, and the time to "
    "the first character in ms",
    "gpu": "the GPU check: the tests, training and sampling speed, and agreement with the CPU",
}


def parser(name: str, doc: str) -> argparse.ArgumentParser:
    """The argparse parser of benchmark `name`, its help made from its module's docstring `doc`: the
    first paragraph says what it measures and prints, the second (indented) is the example, shown
    after the options. Line breaks are kept as written."""
    what, example = doc.split("\n\n")[:2]
    return argparse.ArgumentParser(
        prog=f"python -m chargen.bench {name}",
        description=what,
        epilog=f"example:\n{example}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def run_name(budget: float, seed: int) -> str:
    """The folder of one budget's and seed's run (in --keep DIR, or a temporary one): 60s-seed0."""
    return f"{int(budget)}s-seed{seed}"


def refuse_kept_runs(
    parser: argparse.ArgumentParser, keep: str | None, budgets: list[float], seeds: list[int]
) -> None:
    """Refuse --keep DIR, before the first run rather than after it, where DIR already holds a run
    this benchmark would write: the runs of two benchmarks would be mixed, or one overwritten."""
    if keep is None:
        return
    names = [run_name(budget, seed) for budget in budgets for seed in seeds]
    taken = [name for name in names if (Path(keep) / name).exists()]
    if taken:
        parser.error(f"--keep {keep} already holds {', '.join(taken)}; choose another directory")
