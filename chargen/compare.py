"""Comparing recurrent cells: one run per cell on the same text, with the same settings, seed and
budget, one after the other, then a table of what each achieved and a plot of them overlaid.

This is the d2l book's exercise "replace the LSTM by a GRU and compare accuracy and training
speed", measured on held-out text. Knows nothing about the terminal: progress goes through a
callback, as in training.py.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from chargen.config import CELLS, ModelConfig, TrainConfig
from chargen.corpus import Corpus
from chargen.distributed import World
from chargen.errors import ConfigError, RunError, StoppedBeforeTraining
from chargen.files import write_json
from chargen.plot import plot_runs, require_matplotlib
from chargen.records import TrainSummary
from chargen.reports import Report
from chargen.settings import choose_device, prepare, with_batch
from chargen.training import train

COMPARE_JSON, COMPARE_PNG = "compare.json", "compare.png"


@dataclass
class CellStart:
    """Reported before each cell's run starts; that run's own reports follow."""

    cell: str
    index: int  # 1 for the first cell
    total: int


CompareReporter = Callable[[CellStart | Report], None]


@dataclass
class CompareRow:
    """A cell, and what its run achieved."""

    cell: str
    summary: TrainSummary

    def to_dict(self) -> dict[str, Any]:
        """A row of compare.json: the figures of the run's summary that tell the cells apart."""
        s = self.summary
        figures = ("parameters", "chars_per_sec", "best_step", "clipped_fraction", "steps", "train_seconds")
        return {
            "cell": self.cell,
            "run_dir": str(s.run_dir),
            **{name: getattr(s, name) for name in figures[:2]},
            "best_bpc": s.best.bpc,  # the lowest validation bits per character
            **{name: getattr(s, name) for name in figures[2:]},
            "stopped_by": s.stopped_by,
        }


@dataclass
class Comparison:
    out: Path  # the directory holding one run per cell, compare.json and compare.png
    seed: int  # the one seed every run used
    rows: list[CompareRow]
    plot: Path | None  # None when no plot was asked for


def check_cells(cells: list[str]) -> list[str]:
    """The cells to compare, in the order given: known names, each once, at least one."""
    known = ", ".join(CELLS)
    if not cells:
        raise ConfigError(f"`cells` needs at least one cell, from {known}", "cells")
    for cell in cells:
        if cell not in CELLS:
            raise ConfigError(
                f"`cells`: {cell!r} is not a cell; choose from {known}, separated by commas", "cells"
            )
    repeated = sorted({cell for cell in cells if cells.count(cell) > 1})
    if repeated:
        raise ConfigError(f"`cells` names {', '.join(repeated)} more than once; give each cell once", "cells")
    return cells


def compare(
    corpus: Corpus,
    cells: list[str],
    model_config: ModelConfig,
    config: TrainConfig,
    out: Path | None = None,
    report: CompareReporter | None = None,
    plot: bool = True,
    runs_root: Path = Path("runs"),
    stop: threading.Event | None = None,
) -> Comparison:
    """Train one model per cell into out/<cell> and write out/compare.json (and out/compare.png).

    Every run gets `model_config` with its own cell, and `config` unchanged: the same seed, data
    order and limit (steps, time or epochs). A time limit counts training only, as in `train`, so
    the budgets stay equal however long each cell's evaluations take. Setting `stop` stops the cell
    in training as `train` stops (TrainingInterrupted), or one still being set up before its run is
    made (StoppedBeforeTraining, naming the finished cells, whose runs are kept whole); either way
    compare.json is not written.
    """
    report = report or (lambda _: None)
    # Everything that can fail on bad input is checked before anything is written.
    check_cells(cells)
    if plot:
        require_matplotlib()
    out = out or _default_out(runs_root, corpus.name)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        what = "is a file" if not out.is_dir() else "already exists and is not an empty directory"
        raise RunError(f"{out} {what}; `out` names the directory the runs go in: choose another or remove it")
    # Decided once, for the first cell, as a run's settings are: one seed for every run, and the
    # size and dropout size auto gives, so that every cell gets the same model shape (otherwise a
    # slower cell would get a smaller model in the same time). A text too short for the batch is
    # refused here, before anything is written.
    world = World()
    config = with_batch(config, corpus)
    first = replace(model_config, cell=cells[0])
    decided, _ = prepare(corpus, first, config, world, choose_device(config, world))  # may time steps
    config, model_config = decided.train, decided.model
    models = {cell: replace(model_config, cell=cell) for cell in cells}

    rows = []
    for index, (cell, cell_model) in enumerate(models.items(), start=1):
        report(CellStart(cell, index, len(models)))
        try:
            summary = train(corpus, cell_model, config, out=out / cell, report=report, stop=stop)
        except StoppedBeforeTraining:
            if not rows:
                raise  # nothing was written
            raise StoppedBeforeTraining(_stopped_before(cell, [row.cell for row in rows], out)) from None
        rows.append(CompareRow(cell, summary))

    write_json(
        out / COMPARE_JSON,
        {
            "corpus": {"name": corpus.name, "path": str(corpus.path.resolve()), "sha256": corpus.sha256},
            "seed": config.seed,
            "model": {k: v for k, v in model_config.to_dict().items() if k not in ("cell", "vocab_size")},
            "train": config.to_dict(),
            "rows": [row.to_dict() for row in rows],
        },
    )
    figure = plot_runs([row.summary.run_dir for row in rows], out / COMPARE_PNG) if plot else None
    return Comparison(out, config.seed or 0, rows, figure)


def _stopped_before(cell: str, finished: list[str], out: Path) -> str:
    """What a stop asked for while `cell` was being set up leaves: the runs of the cells before it,
    each whole, and no comparison of them."""
    kept = f"run ({finished[0]}) is kept in {out / finished[0]}"
    if len(finished) > 1:
        kept = f"runs ({', '.join(finished)}) are kept in {out}/<cell>"
    return f"stopped before training {cell} began; the finished {kept}; {COMPARE_JSON} was not written"


def _default_out(runs_root: Path, corpus_name: str) -> Path:
    stem = runs_root / f"compare-{corpus_name}-{time.strftime('%Y%m%d-%H%M%S')}"
    out, suffix = stem, 2
    while out.exists():  # two comparisons started in the same second
        out, suffix = stem.with_name(f"{stem.name}-{suffix}"), suffix + 1
    return out
