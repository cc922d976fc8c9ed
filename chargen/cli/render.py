"""How the CLI talks to the terminal: one-line errors, progress bars, signal handling, tables.
With the commands in __init__.py, the only code that imports typer, rich or tqdm.
"""

from __future__ import annotations

import os
import re
import signal
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from typer.core import TyperGroup

from chargen.errors import ChargenError, TrainingInterrupted

if TYPE_CHECKING:
    from tqdm import tqdm

    from chargen.compare import CellStart, Comparison
    from chargen.evaluate import LossStats
    from chargen.records import RunDescription, TrainSummary
    from chargen.reports import Report, Reporter

err = Console(stderr=True, highlight=False)


class OneLineErrors(TyperGroup):
    """Usage mistakes (a bad value, an unknown option) as one line on stderr, like every other error."""

    def main(self, *args: Any, standalone_mode: bool = True, **kwargs: Any) -> Any:
        if not standalone_mode:
            return super().main(*args, standalone_mode=False, **kwargs)
        try:
            code = super().main(*args, standalone_mode=False, **kwargs)
        except typer.TyperException as error:  # typer's (vendored click's) usage errors
            message = error.format_message() if hasattr(error, "format_message") else str(error)
            if not message and getattr(error, "ctx", None):  # no arguments at all: show the help
                typer.echo(error.ctx.get_help())
                sys.exit(0)
            hint = f" (see '{error.ctx.command_path} --help')" if getattr(error, "ctx", None) else ""
            err.print(f"Error: {message}{hint}", markup=False, highlight=False, soft_wrap=True)
            sys.exit(getattr(error, "exit_code", 2))
        except typer.Abort:
            err.print("Aborted.")
            sys.exit(130)
        sys.exit(code if isinstance(code, int) else 0)


def process_rank() -> int:
    """This process's rank when torchrun started several (it sets RANK); 0 otherwise. Only rank 0
    shows progress and results."""
    try:
        return int(os.environ.get("RANK", "0"))
    except ValueError:
        return 0


@contextmanager
def user_errors(ctx: typer.Context) -> Iterator[None]:
    """Turn the library's errors into one line on stderr, in the command's own terms, and a
    non-zero exit code. Under torchrun another rank's line names it, since it may be the only one
    that failed; a stop that all ranks agreed on is announced by rank 0 alone."""
    try:
        yield
    except ChargenError as error:
        rank = process_rank()
        if rank == 0 or not isinstance(error, TrainingInterrupted):
            where = f"rank {rank}: " if rank else ""
            message = escape(in_flags(ctx, error))
            err.print(f"[bold red]Error:[/] {where}{message}", markup=True, soft_wrap=True)
        raise typer.Exit(error.exit_code) from None
    except KeyboardInterrupt:
        err.print("Interrupted.")
        raise typer.Exit(130) from None


_FIELD = re.compile(r"`(\w+)(?:=([^`]*))?`")  # `lr` or `encoding='utf-16'`, as library messages name them


def in_flags(ctx: typer.Context, error: ChargenError) -> str:
    """The library's message as the command line says it: each setting it names (`max_time`,
    `encoding='utf-16'`) as this command's flag (--max-time, --encoding utf-16). A name the command
    has no option for stays as it is."""
    if isinstance(error, TrainingInterrupted):
        return (
            f"training stopped at step {error.step} and a checkpoint is saved; "
            f"resume with: chargen train --resume {error.run_dir}"
        )
    flags = {p.name: p.opts[0] for p in ctx.command.params if p.param_type_name == "option" and p.name}

    def flag(match: re.Match[str]) -> str:
        name, value = match[1], match[2]
        if name not in flags:
            return match[0]
        return flags[name] if value is None else flags[name] + " " + value.strip("'")

    return _FIELD.sub(flag, str(error))


class TrainProgress:
    """Renders the training loop's reports: a tqdm bar on stderr, evaluations above it."""

    def __init__(self) -> None:
        self.bar: tqdm | None = None

    def __call__(self, report: Report) -> None:
        from tqdm import tqdm

        from chargen.reports import EvalReport, StartReport, StepReport

        if isinstance(report, StartReport):
            resumed = f" | resumed at step {report.resumed_at}" if report.resumed_at else ""
            processes = f" | {report.processes} processes" if report.processes > 1 else ""
            err.print(
                f"run [bold]{report.run_dir}[/]{resumed} | {report.model} | "
                f"{report.parameters:,} parameters | vocabulary "
                f"{report.vocab_size} | {report.train_chars:,} training and {report.val_chars:,} "
                f"validation characters | {report.device}{processes} | seed {report.seed}"
            )
            self.bar = tqdm(
                total=1000,
                file=sys.stderr,
                bar_format="{percentage:3.0f}%|{bar:20}| {desc}",
                mininterval=0.1 if sys.stderr.isatty() else 10.0,  # a log file gets a line now and then
            )
        elif isinstance(report, StepReport) and self.bar is not None:
            self.bar.n = int(report.fraction * 1000)
            eta = time.strftime("%M:%S", time.gmtime(report.eta)) if report.eta < 86400 else "?"
            self.bar.set_description_str(
                f"step {report.step} | loss {report.loss:.3f} | bpc {report.bpc:.3f} | "
                f"{report.chars_per_sec:,.0f} char/s | lr {report.lr:.2e} | "
                f"|g| {report.grad_norm:.2f} | ETA {eta}"
            )
        elif isinstance(report, EvalReport) and self.bar is not None:
            val = report.val
            best = " (best)" if report.is_best else ""
            self.bar.write(
                f"step {report.step}: validation loss {val.loss:.4f} nats/char, perplexity "
                f"{val.perplexity:.2f}, {val.bpc:.4f} bpc{best}\n  sample: {report.sample!r}",
                file=sys.stderr,
            )

    def __enter__(self) -> TrainProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.close()


class CompareProgress:
    """Renders a comparison's reports: a line naming the cell, then that run's own TrainProgress."""

    def __init__(self) -> None:
        self.cell: CellStart | None = None
        self.current: TrainProgress | None = None

    def __call__(self, report: CellStart | Report) -> None:
        from chargen.compare import CellStart
        from chargen.reports import StartReport

        if isinstance(report, CellStart):
            self.__exit__()
            self.cell, self.current = report, TrainProgress()
            return
        if isinstance(report, StartReport) and self.cell is not None:
            # Said once the run has started, so that a setting the run refuses is the only line.
            err.print(f"training [bold]{self.cell.cell}[/] ({self.cell.index} of {self.cell.total})")
        if self.current is not None:
            self.current(report)

    def __enter__(self) -> CompareProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.current is not None:
            self.current.__exit__()
            self.current = None


def fan_out(*reporters: Reporter) -> Reporter:
    """One reporter that hands each report to all of `reporters`, in order."""

    def report(item: Report) -> None:
        for reporter in reporters:
            reporter(item)

    return report


def from_command_line(ctx: typer.Context, name: str) -> bool:
    source = ctx.get_parameter_source(name)
    return source is not None and source.name == "COMMANDLINE"


@contextmanager
def stop_on_signals(announce: bool = True) -> Iterator[threading.Event]:
    """The first Ctrl-C or SIGTERM asks training to stop after its current step and save a
    checkpoint; a second one quits at once (every file is written atomically, so nothing tears).
    Under torchrun, Ctrl-C reaches torchrun, which sends each process one SIGTERM; they stop
    together after the same step."""
    stop = threading.Event()

    def handler(signum: int, frame: object) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()
        if announce:
            err.print("\nstopping after this step and saving a checkpoint (press Ctrl-C again to quit now)")

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    finally:
        for sig, old_handler in previous.items():
            signal.signal(sig, old_handler)


class DownloadBar:
    """A byte progress bar for a named corpus being downloaded; silent when nothing is."""

    def __init__(self) -> None:
        self.bar: tqdm | None = None

    def __call__(self, done: int, total: int) -> None:
        from tqdm import tqdm

        if self.bar is None:
            self.bar = tqdm(total=total, unit="B", unit_scale=True, desc="downloading", file=sys.stderr)
        self.bar.update(done - self.bar.n)

    def __enter__(self) -> DownloadBar:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.close()


def print_summary(summary: TrainSummary) -> None:
    table = Table(title="training finished", show_header=False, title_justify="left")
    table.add_row("run", str(summary.run_dir))
    table.add_row(
        "best validation",
        f"{summary.best.bpc:.4f} bpc, {summary.best.loss:.4f} nats/char, "
        f"perplexity {summary.best.perplexity:.2f} (step {summary.best_step})",
    )
    table.add_row("final validation", f"{summary.final.bpc:.4f} bpc")
    table.add_row(
        "steps", f"{summary.steps:,} ({summary.epochs:.2f} epochs, stopped by {summary.stopped_by})"
    )
    table.add_row("speed", f"{summary.chars_per_sec:,.0f} characters/s over {summary.train_seconds:.0f} s")
    table.add_row("clipped steps", f"{summary.clipped_fraction:.1%}")
    table.add_row("parameters", f"{summary.parameters:,}")
    err.print(table)
    err.print(f'next: chargen sample --model {summary.run_dir} --prefix "..."')


def print_comparison(comparison: Comparison) -> None:
    """The comparison's table on stdout (it is the command's result), then where its files are."""
    table = Table(
        "cell",
        "parameters",
        "characters/s",
        "best validation bpc",
        "clipped",
        "steps",
        title=f"{comparison.out} (seed {comparison.seed})",
        title_justify="left",
    )
    for row in comparison.rows:
        s = row.summary
        table.add_row(
            row.cell,
            f"{s.parameters:,}",
            f"{s.chars_per_sec:,.0f}",
            f"{s.best.bpc:.4f}",
            f"{s.clipped_fraction:.1%}",
            f"{s.steps:,}",
        )
    Console().print(table)
    written = [str(comparison.out / "compare.json"), *([str(comparison.plot)] if comparison.plot else [])]
    err.print(f"wrote {' and '.join(written)}; each run is in {comparison.out}/<cell>")


def print_run_info(model: Path, facts: RunDescription) -> None:
    """The facts of checkpoint.describe as a table."""
    out = Console()
    m, corpus, summary, plan = facts.info.model, facts.info.corpus, facts.summary, facts.info.plan
    table = Table(show_header=False, title=str(model), title_justify="left")
    table.add_row(
        "model",
        f"{m.layers}x{m.hidden} {m.cell}, embedding {m.embed}, "
        f"dropout {m.dropout}, {facts.parameters:,} parameters",
    )
    if plan:
        speed = f" at {plan.chars_per_sec:,.0f} characters/s measured" if plan.chars_per_sec else ""
        table.add_row(
            "size",
            f"{m.size}: {plan.size}, planned for {plan.chars / 1e6:.1f}M characters "
            f"({plan.epochs:.1f} passes){speed}",
        )
    vocab = facts.vocab
    shown = "".join(vocab["chars"] or [])
    table.add_row("vocabulary", f"{vocab['size']} {vocab['kind']}" + (f": {shown!r}" if shown else ""))
    text = facts.info.text.to_dict()
    table.add_row("text", ", ".join(f"{k} {v}" for k, v in text.items() if v not in (None, False)))
    table.add_row(
        "corpus", f"{corpus.name} ({corpus.tokens:,} symbols, {corpus.unknown:,} unknown) {corpus.path}"
    )
    t = facts.info.train
    table.add_row(
        "training",
        f"batch {t.batch_size}, bptt {t.bptt}, lr {t.lr:g}, clip {t.clip}, "
        f"seed {t.seed}; limits: steps {t.max_steps}, time {t.max_time}, epochs {t.epochs}",
    )
    table.add_row("progress", f"{facts.steps} steps" if facts.steps is not None else "no checkpoint")
    if summary:
        table.add_row(
            "best validation",
            f"{summary.best.bpc:.4f} bpc, perplexity {summary.best.perplexity:.2f} "
            f"(step {summary.best_step}); {summary.chars_per_sec:,.0f} characters/s",
        )
    for name, size in facts.files.items():
        table.add_row("file", f"{name}  {size:,} bytes")
    for problem in facts.problems:
        table.add_row("[bold red]problem[/]", escape(problem))
    out.print(table)


def print_eval(label: str, stats: LossStats, unknown: str) -> None:
    table = Table(show_header=False, title=label)
    table.add_row("characters", f"{stats.chars:,}")
    table.add_row("loss", f"{stats.loss:.4f} nats/char")
    table.add_row("perplexity", f"{stats.perplexity:.3f}")
    table.add_row("bits per character", f"{stats.bpc:.4f}")
    table.add_row("speed", f"{stats.chars_per_sec:,.0f} characters/s")
    if stats.unknown:
        done = {"replace": "replaced", "skip": "skipped"}[unknown]
        table.add_row("unknown characters", f"{stats.unknown:,} ({done})")
    Console().print(table)


def print_novelty(shares: list[float], n: int) -> None:
    """On stderr, so stdout stays the generated text alone."""
    if not shares:
        err.print(f"novelty: the sample is shorter than {n} characters; nothing to compare")
        return
    mean = sum(shares) / len(shares)
    err.print(
        f"novelty: {mean:.1%} of the sample's {n}-character sequences occur verbatim in the training "
        "text" + (f" (mean of {len(shares)} samples)" if len(shares) > 1 else "")
    )


def print_gradients(label: str, norms: Any) -> None:
    """The gradient norm k steps back, and how many orders of magnitude it fell since k = 1."""
    import math

    table = Table("k steps back", "gradient norm", "orders of magnitude below k = 1", title=label)
    for k in (1, 2, 3, 5, 10, 20, 30, 40, 50, 75, 100, 150, 200):
        if k <= len(norms):
            fall = math.log10(norms[0] / norms[k - 1]) if norms[k - 1] > 0 else math.inf
            table.add_row(str(k), f"{norms[k - 1]:.3e}", f"{fall:.1f}")
    Console().print(table)
