"""How the CLI talks to the terminal: one-line errors in the command's own terms, progress bars,
signal handling, streamed text. With the commands in __init__.py and the tables in tables.py, the
only code that imports typer, rich or tqdm.
"""

from __future__ import annotations

import io
import os
import re
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TextIO, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from typer.core import TyperGroup

from chargen.errors import NAMED_SETTING, ChargenError, StoppedBeforeTraining, TrainingInterrupted

if TYPE_CHECKING:
    from tqdm import tqdm

    from chargen.compare import CellStart
    from chargen.launch import Place
    from chargen.reports import Report

err = Console(stderr=True, highlight=False)
R = TypeVar("R")  # what a reporter is given: a training report, or compare's too


def literal(value: object) -> str:
    """`value` (a path, a file's or corpus's name) as rich markup that prints it exactly: brackets
    in it (`runs/a[b]`, `notes[red].txt`) are text, not a style to apply or a tag to fail on."""
    return escape(str(value))


@dataclass(frozen=True)
class Units:
    """The names of a run's figures, from what they are per: its tokenizer's `symbol` (vocab.py).
    A character run's are bits per character (bpc), nats/char and characters/s (char/s); a byte
    run's bits per byte (bpb), nats/byte and bytes/s (byte/s)."""

    symbol: str = "character"

    @property
    def short(self) -> str:
        return self.symbol[:4]  # char, byte: nats/char, char/s

    @property
    def bits(self) -> str:
        return f"bp{self.symbol[0]}"  # bpc, bpb


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
    """This process's rank when torchrun started several; 0 otherwise. Only rank 0 shows progress
    and results."""
    return _place().rank


def _place() -> Place:
    """This process's place among those torchrun started; a single process's where none (or its
    settings are wrong: the command itself then says so)."""
    from chargen.launch import Place, place_from_env

    try:
        return place_from_env()
    except ChargenError:
        return Place()


@contextmanager
def user_errors(ctx: typer.Context, names: dict[str, str] | None = None) -> Iterator[None]:
    """Turn the library's errors into one line on stderr, in the command's own terms, and a
    non-zero exit code (`names` says a setting other than by its own flag, see in_flags). Under
    torchrun another rank's line names it, since it may be the only one that failed; a stop that
    all ranks agreed on is announced by rank 0 alone."""
    try:
        yield
    except ChargenError as error:
        rank = process_rank()
        if rank == 0 or not isinstance(error, TrainingInterrupted):
            where = f"rank {rank}: " if rank else ""
            message = escape(in_flags(ctx, error, names))
            # A stop the user asked for is no error: it says where the run is, and exits 130.
            label = "Stopped:" if isinstance(error, TrainingInterrupted) else "[bold red]Error:[/]"
            err.print(f"{label} {where}{message}", markup=True, soft_wrap=True)
        raise typer.Exit(error.exit_code) from None
    except KeyboardInterrupt as interrupt:
        err.print("Interrupted.")
        raise typer.Exit(interrupt.exit_code if isinstance(interrupt, QuitNow) else 130) from None
    except (MemoryError, RuntimeError) as error:
        # torch's allocators say so in a RuntimeError (OutOfMemoryError on a GPU); anything else
        # a RuntimeError means is a bug, and keeps its traceback.
        said = str(error)
        if not isinstance(error, MemoryError) and not re.search("out of memory|can't allocate", said):
            raise
        size = re.search(r"[Tt]ried to allocate ([\d.]+) ?(bytes|\w?iB)", said)
        asked = ""
        if size:
            amount = float(size[1]) / (2**30 if size[2] == "bytes" else 1)
            asked = f" ({amount:.1f} {'GiB' if size[2] == 'bytes' else size[2]} at once)"
        err.print(
            f"[bold red]Error:[/] not enough memory for what was asked{asked}; ask for less: fewer "
            "samples, or a smaller model, batch or window",
            markup=True,
            soft_wrap=True,
        )
        raise typer.Exit(1) from None


def in_flags(ctx: typer.Context, error: ChargenError, names: dict[str, str] | None = None) -> str:
    """The library's message as the command line says it: each setting it names (`max_time`,
    `encoding='utf-16'`) as this command's flag (--max-time, --encoding utf-16), or as `names` says
    it where the value came in by another flag (`prefix` read with --prefix-file). A switch with
    an off form is named as the user types it: `lowercase=False` as --no-lowercase. A name the
    command has no option for stays as it is."""
    if isinstance(error, TrainingInterrupted) and error.run_dir is not None:
        return (
            f"training stopped at step {error.step} and a checkpoint is saved; "
            f"resume with: chargen train --resume {error.run_dir}"
        )
    options = [p for p in ctx.command.params if p.param_type_name == "option" and p.name]
    flags = {p.name: p.opts[0] for p in options}
    switches = {
        (p.name, str(on)): typed[0]
        for p in options
        if getattr(p, "is_flag", False) and p.secondary_opts and p.name not in (names or {})
        for on, typed in ((True, p.opts), (False, p.secondary_opts))
    }
    flags.update(names or {})

    def flag(match: re.Match[str]) -> str:
        name, value = match[1], match[2]
        if name not in flags:
            return match[0]
        if (name, value) in switches:
            return switches[name, value]
        return flags[name] if value is None else flags[name] + " " + _as_typed(value)

    return NAMED_SETTING.sub(flag, str(error))


def _as_typed(value: str) -> str:
    """A setting's value as a message gives it (`'utf-16'`, `' END '`, `64`) as it reads after its
    flag: a quoted string without its quotes where they hold one plain word (--encoding utf-16),
    with them where they hold nothing, white space, a quote or a backquote (--items ' END ')."""
    quoted = len(value) >= 2 and value[0] == value[-1] and value[0] in "'\""
    if not quoted:
        return value
    inner = value[1:-1]
    return inner if inner and not re.search(r"[\s'\"`]", inner) else value


class TrainProgress:
    """Renders the training loop's reports: a tqdm bar on stderr, evaluations above it."""

    def __init__(self, note: str | None = None) -> None:
        self.bar: tqdm | None = None
        self.units = Units()  # the run's, once it has started
        self.note = note  # a line to print below the run's header, once it has started

    def __call__(self, report: Report) -> None:
        from tqdm import tqdm

        from chargen.reports import EvalReport, StartReport, StepReport

        if isinstance(report, StartReport):
            self.units = Units(report.symbol)
            resumed = ""
            if report.resumed_at:
                resumed = f" | resumed at step {report.resumed_at}, limits now: {report.limits}"
            processes = f" | {report.processes} processes" if report.processes > 1 else ""
            err.print(
                f"run [bold]{literal(report.run_dir)}[/]{resumed} | {report.model} | "
                f"{report.parameters:,} parameters | vocabulary "
                f"{report.vocab_size} | {report.train_chars:,} training and {report.val_chars:,} "
                f"validation {self.units.symbol}s | {report.device}{processes} | seed {report.seed}"
            )
            if self.note:
                err.print(self.note, soft_wrap=True)
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
                f"step {report.step} | loss {report.loss:.3f} | {self.units.bits} {report.bpc:.3f} | "
                f"{report.chars_per_sec:,.0f} {self.units.short}/s | lr {report.lr:.2e} | "
                f"|g| {report.grad_norm:.2f} | ETA {eta}"
            )
        elif isinstance(report, EvalReport) and self.bar is not None:
            val = report.val
            best = " (best)" if report.is_best else ""
            self.bar.write(
                f"step {report.step}: validation loss {val.loss:.4f} nats/{self.units.short}, perplexity "
                f"{val.perplexity:.2f}, {val.bpc:.4f} {self.units.bits}{best}\n  sample: {report.sample!r}",
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


def fan_out(*reporters: Callable[[R], None]) -> Callable[[R], None]:
    """One reporter that hands each report to all of `reporters`, in order."""

    def report(item: R) -> None:
        for reporter in reporters:
            reporter(item)

    return report


class QuitNow(KeyboardInterrupt):
    """A second stop signal: quit at once, with that signal's exit status."""

    def __init__(self, signum: int) -> None:
        super().__init__()
        self.exit_code = 128 + signum


class StopRequest(threading.Event):
    """The event a run's loop watches for a stop, which also follows the run's reports (`watch`):
    until its set-up is over (ReadyReport), a stop cannot wait for a step, and need not; once its
    steps are done (FinishingReport), there is no step left to stop after."""

    def __init__(self) -> None:
        super().__init__()
        self.set_up = True  # until the run's ReadyReport: nothing of it written, no step to finish
        self.finishing = False  # from the run's FinishingReport: its steps are done, its end follows

    def watch(self, report: object) -> None:
        """A reporter: pass the run's reports (and compare's) through it."""
        from chargen.compare import CellStart
        from chargen.reports import FinishingReport, ReadyReport

        if isinstance(report, ReadyReport):
            self.set_up = False
        elif isinstance(report, FinishingReport):
            self.finishing = True
        elif isinstance(report, CellStart):  # the next cell's run is set up
            self.set_up, self.finishing = True, False


@contextmanager
def stop_on_signals(announce: bool = True) -> Iterator[StopRequest]:
    """The first Ctrl-C or SIGTERM asks training to stop after its current step and save a
    checkpoint; a second one quits at once (every file is written atomically, so nothing tears).
    During a run's set-up (timing the machine for `--size auto`, say), before anything of it is
    written, the first one stops it at once: there is no step to finish and nothing to save
    (StoppedBeforeTraining). Either way the exit status is the shell's for that signal, 128 + its
    number: 130 for Ctrl-C (SIGINT), 143 for SIGTERM. Under torchrun, Ctrl-C reaches torchrun,
    which passes the signal it got on to each process (SIGINT: 130; a SIGTERM sent to torchrun
    reaches them as SIGTERM: 143); they stop together after the same step, set-up or not. Once the
    run's steps are done, the first one only says so: the run's last evaluation and summary follow
    (on a long validation text, seconds or minutes), and it ends as a finished run does, status 0.

    Pass the run's reports through the StopRequest's `watch`, which tells set-up and end from
    training."""
    stop = StopRequest()
    asked: list[int] = []  # the signals received, in order
    alone = _place().size == 1

    def handler(signum: int, frame: object) -> None:
        asked.append(signum)
        if stop.is_set():
            raise QuitNow(signum)
        stop.set()
        if stop.set_up and alone:
            # The library reports ReadyReport after its own check of `stop` and before it writes
            # anything, so this leaves nothing half-written, and no stop unseen.
            raise StoppedBeforeTraining()
        if announce and stop.finishing:
            err.print("\nthe run's steps are done: finishing its last evaluation (Ctrl-C again quits now)")
        elif announce:
            err.print("\nstopping after this step and saving a checkpoint (press Ctrl-C again to quit now)")

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    except TrainingInterrupted as error:
        if asked:  # not so where another process asked for the stop (torchrun): 130, the default
            error.exit_code = 128 + asked[0]
        raise
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


def stream_out(prefix: str, pieces: Iterator[str]) -> str:
    """Write the prefix and then the text as it comes to stdout, flushed at each line and at least
    every 50 ms; returns the text without the prefix."""
    sys.stdout.write(prefix)
    last_flush, text = time.monotonic(), ""
    for piece in pieces:
        sys.stdout.write(piece)
        text += piece
        if "\n" in piece or time.monotonic() - last_flush > 0.05:
            sys.stdout.flush()
            last_flush = time.monotonic()
    sys.stdout.write("\n")
    sys.stdout.flush()
    return text


class ReaderGone(OSError):
    """What reads stdout or stderr stopped reading (`chargen sample | head`, `chargen train 2>&1 |
    head`). Raised for a BrokenPipeError on either, which typer and rich would each end with exit
    status 1 on their own, so that the entry point alone decides (exit_quietly_when_the_reader_goes).
    An OSError still, as a broken pipe's is: what bears a failing stream on purpose (logging, and
    so `chargen serve`'s log; warnings) still does."""


class _Guarded(io.TextIOWrapper):
    """sys.stdout or sys.stderr, raising ReaderGone where its pipe has been closed."""

    def write(self, text: str) -> int:
        try:
            return super().write(text)
        except BrokenPipeError:
            raise ReaderGone from None

    def flush(self) -> None:
        try:
            super().flush()
        except BrokenPipeError:
            raise ReaderGone from None


def _guarded(stream: TextIO | None) -> TextIO | None:
    """`stream` as a _Guarded one, writing to the same file from here on."""
    if not isinstance(stream, io.TextIOWrapper):
        return stream
    stream.flush()
    return _Guarded(
        stream.buffer,
        encoding=stream.encoding,
        errors=stream.errors,
        line_buffering=stream.line_buffering,
        write_through=stream.write_through,
    )


@contextmanager
def exit_quietly_when_the_reader_goes() -> Iterator[None]:
    """Output cut short by its reader (`chargen sample --length 100000 | head`) ends as `cat` ends
    there: nothing on stderr, and exit status 141, 128 + SIGPIPE, the shell's for a process that
    SIGPIPE stopped. So does a command whose stderr's reader goes, as a C or Go program does: what
    it would say can no longer be read. chargen keeps SIGPIPE ignored, as Python sets it, rather
    than dying of it: a client that hangs up would otherwise take `chargen serve` down. Started
    with stdout or stderr closed (`>&-`, `2>&-`), a command runs as it would with that stream going
    to /dev/null, as Python's own print() does then."""
    sys.stdout, sys.stderr = _guarded(sys.stdout), _guarded(sys.stderr)
    for name in ("stdout", "stderr"):
        if getattr(sys, name) is None:  # closed: Python's None, on which printing and progress bars fail
            setattr(sys, name, open(os.devnull, "w", encoding="utf-8"))  # noqa: SIM115 (open until exit)
    try:
        try:
            yield
        finally:
            sys.stdout.flush()  # what is still buffered, while a closed pipe can still be told apart
    except ReaderGone:
        # What is left goes nowhere, rather than to a second BrokenPipeError when Python flushes
        # stdout and stderr at exit (as the Python docs do it: the signal module's note on SIGPIPE).
        # Whichever pipe was closed, the other has nothing left to write: stdout was flushed above.
        nowhere = os.open(os.devnull, os.O_WRONLY)
        for fd in (1, 2):
            os.dup2(nowhere, fd)
        sys.exit(141)


def write_samples(prefix: str, texts: list[str]) -> None:
    """Several samples to stdout, each after the prefix, a blank line between them."""
    sys.stdout.write("\n\n".join(prefix + text for text in texts) + "\n")
    sys.stdout.flush()
