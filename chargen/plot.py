"""Pictures of training: bits per character (per byte, for a run of the byte tokenizer), the gradient
norm before clipping, and the learning rate, against characters (or bytes) seen, for one run or
several overlaid. Needs matplotlib (the `plot` extra), imported only here and only when a plot is
drawn.
"""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Any

from chargen.checkpoint import METRICS, load_run, read_metrics
from chargen.errors import ChargenError, ConfigError, RunError
from chargen.files import write_bytes_atomic, writing
from chargen.records import EvalRow, TrainRow
from chargen.reports import EvalReport, Report, StartReport

PLOT = "plot.png"  # the figure `chargen plot RUN` and `chargen train --plot` write into a run
# The formats a figure's file name may ask for by its suffix: those matplotlib writes with Agg and its
# vector backends from 3.7, the plot extra's oldest, with any Pillow. Not gif or avif, which only
# recent matplotlib writes (gif again from 3.10; avif only with a Pillow built with it), nor raw and
# rgba (pixels without a header) or pgf (LaTeX code, not an image).
FORMATS = ("png", "jpg", "jpeg", "webp", "tif", "tiff", "svg", "svgz", "pdf", "eps", "ps")


def require_matplotlib() -> None:
    """Fail now, with the install hint, rather than after a training run that wants a plot."""
    _pyplot()


def _pyplot() -> Any:
    try:
        import matplotlib

        matplotlib.use("Agg")  # files only: no display needed
        import matplotlib.pyplot as plt
    except ImportError:
        raise ChargenError(
            "plotting needs matplotlib: pip install 'chargen[plot]' (or pip install matplotlib)"
        ) from None
    return plt


class PlotEachEvaluation:
    """A training reporter that redraws plot.png in the run directory after every evaluation.

    It draws from the report callback rather than inside the loop, so training never imports
    matplotlib, and the drawing falls inside the evaluation, whose time is not training time.
    """

    def __init__(self) -> None:
        require_matplotlib()
        self.run_dir: Path | None = None

    def __call__(self, report: Report) -> None:
        if isinstance(report, StartReport):
            self.run_dir = report.run_dir
        elif isinstance(report, EvalReport) and self.run_dir is not None:
            plot_runs([self.run_dir], self.run_dir / PLOT)  # metrics.jsonl already has this evaluation


def image_format(out: Path) -> str:
    """The format `out`'s suffix names, one of FORMATS (png where it has none); a ConfigError naming
    `out` for any other."""
    suffix = out.suffix.lstrip(".").lower()
    if suffix and suffix not in FORMATS:
        raise ConfigError(
            f"`out` names a .{suffix} file, and a figure is written as "
            f"{', '.join('.' + name for name in FORMATS)}; give `out` one of those suffixes",
            "out",
        )
    return suffix or "png"


def plot_runs(run_dirs: list[Path], out: Path) -> Path:
    """Draw the runs' training curves into one figure with three panels, in the format `out`'s suffix
    names (image_format); returns its path."""
    image = image_format(out)  # before a run is read or matplotlib imported
    plt = _pyplot()
    runs = []  # (run, its training rows, its validations placed by symbols seen)
    for run in map(load_run, run_dirs):
        rows = read_metrics(run.path)
        train = [r for r in rows if isinstance(r, TrainRow)]
        evals = [r for r in rows if isinstance(r, EvalRow) and r.seen is not None]
        if not train and not evals:  # axes with nothing on them say nothing
            raise RunError(
                f"{run.path} has no figures to plot yet: its {METRICS} is missing, empty or unreadable "
                f"(it logs its first at step {run.train_config.log_every}, or at its first validation)"
            )
        runs.append((run, train, evals))
    # Constrained layout makes room for the legends, which sit outside the panels so they never
    # hide a curve.
    fig, (loss_ax, grad_ax, lr_ax) = plt.subplots(3, 1, figsize=(11, 10), sharex=True, layout="constrained")
    clips: dict[float, list[str]] = {}  # threshold -> the runs that used it
    # What the figures are per: a character, or a byte for a run of the byte tokenizer. Runs of both
    # kinds are drawn together (on English text the two are close), with axes that name both
    # units and legend entries that say each run's own.
    symbols = {run.vocab.symbol for run, _, _ in runs}
    mixed = len(symbols) > 1
    for run, train, evals in runs:
        name = f"{run.path.name} ({run.vocab.symbol}s)" if mixed else run.path.name
        chars = [r.chars for r in train]
        dot = "o" if len(train) == 1 else None  # a line through one point would not show
        (line,) = loss_ax.plot(chars, [r.bpc for r in train], marker=dot, label=f"{name} training")
        color = line.get_color()
        loss_ax.plot(
            [r.seen for r in evals],
            [r.val.bpc for r in evals],
            "o--",
            color=color,
            label=f"{name} validation",
        )
        grad_ax.plot(chars, [r.grad_norm for r in train], color=color, marker=dot, label=name)
        threshold = run.train_config.clip_threshold()
        if math.isfinite(threshold):  # no line where clipping only measured
            clips.setdefault(threshold, []).append(color)
        lr_ax.plot(chars, [r.lr for r in train], color=color, marker=dot, label=name)
    # One threshold line per value: runs that share it would otherwise hide each other's.
    for clip, colors in clips.items():
        color = colors[0] if len(colors) == 1 and len(run_dirs) > 1 else "black"
        grad_ax.axhline(clip, color=color, linestyle=":", label=f"clip threshold {clip:g}")

    if mixed:
        per, seen = "bits per character or byte (see legend)", "characters or bytes seen (see legend)"
    else:
        (symbol,) = symbols
        per, seen = f"bits per {symbol}", f"{symbol}s seen"
    loss_ax.set_ylabel(per)
    loss_ax.set_title("loss: training (lines) and validation (points)")
    grad_ax.set_ylabel("gradient norm before clipping")
    grad_ax.set_yscale("log")
    grad_ax.set_title("gradient norm")
    lr_ax.set_ylabel("learning rate")
    lr_ax.set_title("learning rate")
    lr_ax.set_xlabel(seen)
    for ax in (loss_ax, grad_ax, lr_ax):
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)
    # Drawn in memory, then written atomically: the figure is redrawn while people may be looking.
    drawn = io.BytesIO()
    try:
        fig.savefig(drawn, format=image, dpi=110)
    finally:
        plt.close(fig)
    with writing(out.parent):
        out.parent.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(out, drawn.getvalue())
    return out
