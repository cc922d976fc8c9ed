"""The `chargen` command: parses options, calls the library, prints. The only module that imports
typer, rich or tqdm; torch is imported inside the commands so `chargen --help` stays instant.
"""

from __future__ import annotations

import json
import signal
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from typer.core import TyperGroup

from chargen import __version__
from chargen.config import (
    UNKNOWN_POLICIES,
    ModelConfig,
    SampleConfig,
    TextConfig,
    TrainConfig,
    parse_duration,
)
from chargen.errors import ChargenError, ConfigError

if TYPE_CHECKING:
    from tqdm import tqdm

    from chargen.loop import Report, TrainSummary


class _OneLineErrors(TyperGroup):
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


app = typer.Typer(
    cls=_OneLineErrors,
    help="Character-level RNN language models: train on a text, sample from it, evaluate it.",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode="markdown",
    context_settings={"help_option_names": ["-h", "--help"]},
)
err = Console(stderr=True, highlight=False)
DEFAULT_RUN = Path("runs/latest")


@contextmanager
def _user_errors() -> Iterator[None]:
    """Turn the library's errors into one line on stderr and a non-zero exit code."""
    try:
        yield
    except ChargenError as error:
        err.print(f"[bold red]Error:[/] {escape(str(error))}", markup=True, soft_wrap=True)
        raise typer.Exit(error.exit_code) from None
    except KeyboardInterrupt:
        err.print("Interrupted.")
        raise typer.Exit(130) from None


def _version(value: bool) -> None:
    if value:
        typer.echo(f"chargen {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version and exit.")
    ] = False,
) -> None:
    """Character-level RNN language models: train on a text, sample from it, evaluate it."""


class _TrainProgress:
    """Renders the training loop's reports: a tqdm bar on stderr, evaluations above it."""

    def __init__(self) -> None:
        self.bar: tqdm | None = None

    def __call__(self, report: Report) -> None:
        from tqdm import tqdm

        from chargen.loop import EvalReport, StartReport, StepReport

        if isinstance(report, StartReport):
            resumed = f" | resumed at step {report.resumed_at}" if report.resumed_at else ""
            err.print(
                f"run [bold]{report.run_dir}[/]{resumed} | {report.parameters:,} parameters | vocabulary "
                f"{report.vocab_size} | {report.train_chars:,} training and {report.val_chars:,} "
                f"validation characters | {report.device} | seed {report.seed}"
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

    def __enter__(self) -> _TrainProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.close()


def _from_command_line(ctx: typer.Context, name: str) -> bool:
    source = ctx.get_parameter_source(name)
    return source is not None and source.name == "COMMANDLINE"


@contextmanager
def _stop_on_signals() -> Iterator[threading.Event]:
    """The first Ctrl-C or SIGTERM asks training to stop after its current step and save a
    checkpoint; a second one quits at once (every file is written atomically, so nothing tears)."""
    stop = threading.Event()

    def handler(signum: int, frame: object) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()
        err.print("\nstopping after this step and saving a checkpoint (press Ctrl-C again to quit now)")

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    finally:
        for sig, old_handler in previous.items():
            signal.signal(sig, old_handler)


class _DownloadBar:
    """A byte progress bar for a named corpus being downloaded; silent when nothing is."""

    def __init__(self) -> None:
        self.bar: tqdm | None = None

    def __call__(self, done: int, total: int) -> None:
        from tqdm import tqdm

        if self.bar is None:
            self.bar = tqdm(total=total, unit="B", unit_scale=True, desc="downloading", file=sys.stderr)
        self.bar.update(done - self.bar.n)

    def __enter__(self) -> _DownloadBar:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.close()


def _print_summary(summary: TrainSummary) -> None:
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


@app.command()
def train(
    ctx: typer.Context,
    corpus: Annotated[
        str | None,
        typer.Argument(
            help="Text file, or a named corpus (see `chargen corpora`). Default: the built-in corpus."
        ),
    ] = None,
    out: Annotated[
        Path | None, typer.Option(help="Run directory to create. Default: runs/CORPUS-TIMESTAMP.")
    ] = None,
    resume: Annotated[
        Path | None,
        typer.Option(help="Continue this run from its checkpoint; only the limits and --device may change."),
    ] = None,
    cell: Annotated[str, typer.Option(help="Recurrent cell: lstm, gru or rnn.")] = ModelConfig.cell,
    layers: Annotated[int, typer.Option(help="Stacked recurrent layers, >= 1.")] = ModelConfig.layers,
    hidden: Annotated[int, typer.Option(help="Units per layer, >= 1.")] = ModelConfig.hidden,
    embed: Annotated[int, typer.Option(help="Character embedding size, >= 1.")] = ModelConfig.embed,
    dropout: Annotated[float, typer.Option(help="Dropout between layers and before the output, [0, 1).")] = (
        ModelConfig.dropout
    ),
    tie_weights: Annotated[
        bool, typer.Option(help="Share embedding and output weights (needs --embed = --hidden).")
    ] = ModelConfig.tie_weights,
    batch_size: Annotated[int, typer.Option(help="Parallel streams through the text, >= 1.")] = (
        TrainConfig.batch_size
    ),
    bptt: Annotated[
        int, typer.Option(help="Characters per backpropagation window, >= 1.")
    ] = TrainConfig.bptt,
    lr: Annotated[float, typer.Option(help="Peak learning rate of AdamW, > 0.")] = TrainConfig.lr,
    weight_decay: Annotated[float, typer.Option(help="AdamW weight decay on matrices, >= 0.")] = (
        TrainConfig.weight_decay
    ),
    warmup_steps: Annotated[int, typer.Option(help="Steps of linear learning-rate warm-up, >= 0.")] = (
        TrainConfig.warmup_steps
    ),
    clip: Annotated[
        float, typer.Option(help="Gradient-norm clipping threshold; 0 disables.")
    ] = TrainConfig.clip,
    epochs: Annotated[float | None, typer.Option(help="Stop after this many passes over the text.")] = None,
    max_steps: Annotated[int | None, typer.Option(help="Stop after this many optimiser steps.")] = None,
    max_time: Annotated[
        str | None,
        typer.Option(
            help="Stop after this much training time: seconds or 90s, 3m, 1h. "
            f"With no limit at all: {TrainConfig().max_time:.0f}s."
        ),
    ] = None,
    eval_every: Annotated[
        int, typer.Option(help="Validate every this many steps, >= 1.")
    ] = TrainConfig.eval_every,
    save_every: Annotated[int, typer.Option(help="Steps between resumable checkpoints, >= 1.")] = (
        TrainConfig.save_every
    ),
    val_fraction: Annotated[float, typer.Option(help="Last fraction of the text held out, (0, 1).")] = (
        TrainConfig.val_fraction
    ),
    eval_chars: Annotated[int, typer.Option(help="Validate on at most this many held-out characters.")] = (
        TrainConfig.eval_chars
    ),
    seed: Annotated[int | None, typer.Option(help="Random seed, for a reproducible run.")] = None,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or mps.")] = TrainConfig.device,
    encoding: Annotated[str, typer.Option(help="The corpus file's encoding.")] = TextConfig.encoding,
    errors: Annotated[
        str, typer.Option(help="strict: an undecodable byte is an error; replace: it becomes U+FFFD.")
    ] = TextConfig.errors,
    normalize: Annotated[str, typer.Option(help="Unicode normalisation: nfc, nfkc or none.")] = (
        TextConfig.normalize
    ),
    lowercase: Annotated[
        bool, typer.Option(help="Lowercase the text (Python's rules: not Turkish-aware, I -> i).")
    ] = TextConfig.lowercase,
    preset: Annotated[
        str | None, typer.Option(help="d2l: the d2l book's preprocessing (letters only, lowercase).")
    ] = None,
    tokenizer: Annotated[str, typer.Option(help="chars (Unicode code points) or bytes (UTF-8 bytes).")] = (
        TextConfig.tokenizer
    ),
    min_count: Annotated[
        int, typer.Option(help="Characters seen fewer times become the unknown symbol, >= 1.")
    ] = TextConfig.min_count,
) -> None:
    """Train a character-level language model on a text.

    Examples: `chargen train` (the built-in corpus, 2 minutes);
    `chargen train notes.txt --max-time 10m --hidden 512 --out runs/notes`;
    `chargen train --resume runs/notes --max-time 20m` (continue it).
    """
    with _user_errors():
        from chargen.corpus import load_corpus
        from chargen.train import resume as resume_training
        from chargen.train import train as run_training

        if resume is not None:
            given = {
                name: value
                for name, value in ctx.params.items()
                if name not in ("resume", "corpus") and _from_command_line(ctx, name)
            }
            with _stop_on_signals() as stop, _TrainProgress() as progress:
                summary = resume_training(resume, corpus, given, progress, stop)
            _print_summary(summary)
            return

        model_config = ModelConfig(
            cell=cell, layers=layers, hidden=hidden, embed=embed, dropout=dropout, tie_weights=tie_weights
        )
        train_config = TrainConfig(
            batch_size=batch_size,
            bptt=bptt,
            lr=lr,
            weight_decay=weight_decay,
            warmup_steps=warmup_steps,
            clip=clip,
            epochs=epochs,
            max_steps=max_steps,
            max_time=parse_duration(max_time),
            eval_every=eval_every,
            save_every=save_every,
            val_fraction=val_fraction,
            eval_chars=eval_chars,
            seed=seed,
            device=device,
        )
        text_config = TextConfig(
            encoding=encoding,
            errors=errors,
            normalize=normalize,
            lowercase=lowercase,
            preset=preset,
            tokenizer=tokenizer,
            min_count=min_count,
        )
        with _DownloadBar() as download:
            data = load_corpus(corpus, text_config, progress=download)
        with _stop_on_signals() as stop, _TrainProgress() as progress:
            summary = run_training(data, model_config, train_config, out, progress, stop=stop)
        _print_summary(summary)


@app.command()
def sample(
    model: Annotated[Path, typer.Option(help="Run directory to sample from.")] = DEFAULT_RUN,
    prefix: Annotated[str, typer.Option(help="Text to continue; printed first.")] = SampleConfig.prefix,
    length: Annotated[int, typer.Option(help="Characters to generate, >= 0.")] = SampleConfig.length,
    temperature: Annotated[float, typer.Option(help="Randomness, >= 0; 0 is greedy, 1 the model's own.")] = (
        SampleConfig.temperature
    ),
    top_k: Annotated[int | None, typer.Option(help="Sample among the k likeliest characters, >= 1.")] = None,
    top_p: Annotated[
        float, typer.Option(help="Sample from the smallest set holding this probability, (0, 1].")
    ] = (SampleConfig.top_p),
    seed: Annotated[int | None, typer.Option(help="Random seed; the same seed gives the same text.")] = None,
    num_samples: Annotated[int, typer.Option(help="Independent samples, generated as one batch, >= 1.")] = (
        SampleConfig.num_samples
    ),
    unknown: Annotated[
        str, typer.Option(help="A prefix character the model never saw: error, replace or skip.")
    ] = SampleConfig.unknown,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or mps.")] = "auto",
) -> None:
    """Continue a prefix with a trained model; the text streams to stdout.

    Example: `chargen sample --prefix "time traveller" --length 300 --temperature 0.7 --seed 1`.
    """
    with _user_errors():
        from chargen.checkpoint import load_model_weights, load_run
        from chargen.device import resolve_device
        from chargen.sample import sample_batch, sample_stream

        config = SampleConfig(
            prefix=prefix,
            length=length,
            temperature=temperature,
            top_k=top_k,
            top_p=top_p,
            seed=seed,
            num_samples=num_samples,
            unknown=unknown,
        )
        run = load_run(model)
        torch_device = resolve_device(device)
        net = load_model_weights(run, torch_device)
        if num_samples == 1:
            pieces = sample_stream(net, run.vocab, config, torch_device, run.text_config)  # checks the prefix
            sys.stdout.write(prefix)
            last_flush = time.monotonic()
            for piece in pieces:
                sys.stdout.write(piece)
                if "\n" in piece or time.monotonic() - last_flush > 0.05:
                    sys.stdout.flush()
                    last_flush = time.monotonic()
            sys.stdout.write("\n")
        else:
            texts = sample_batch(net, run.vocab, config, torch_device, run.text_config)
            sys.stdout.write("\n\n".join(prefix + text for text in texts) + "\n")
        sys.stdout.flush()


@app.command("eval")
def evaluate(
    text_file: Annotated[
        Path | None, typer.Argument(help="Text to evaluate on. Default: the run's validation split.")
    ] = None,
    model: Annotated[Path, typer.Option(help="Run directory to evaluate.")] = DEFAULT_RUN,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print one JSON object instead of a table.")
    ] = False,
    unknown: Annotated[
        str, typer.Option(help="Characters the model never saw: error, replace (counted) or skip.")
    ] = SampleConfig.unknown,
    encoding: Annotated[
        str | None, typer.Option(help="The text file's encoding. Default: the run's.")
    ] = None,
    errors: Annotated[str | None, typer.Option(help="strict or replace. Default: the run's.")] = None,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or mps.")] = "auto",
) -> None:
    """Loss, perplexity and bits per character of a model on a text.

    Example: `chargen eval --model runs/tm --json` or `chargen eval other.txt`.
    """
    with _user_errors():
        from chargen.evaluate import evaluate_run

        if unknown not in UNKNOWN_POLICIES:
            raise ConfigError(f"--unknown must be error, replace or skip, not {unknown!r}")
        stats = evaluate_run(model, text_file, device, unknown, encoding, errors)
        result: dict[str, Any] = stats.to_dict()
        if as_json:
            typer.echo(json.dumps(result))
            return
        table = Table(show_header=False, title=f"{model} on {text_file or 'its validation split'}")
        table.add_row("characters", f"{stats.chars:,}")
        table.add_row("loss", f"{stats.loss:.4f} nats/char")
        table.add_row("perplexity", f"{stats.perplexity:.3f}")
        table.add_row("bits per character", f"{stats.bpc:.4f}")
        table.add_row("speed", f"{stats.chars_per_sec:,.0f} characters/s")
        if stats.unknown:
            done = {"replace": "replaced", "skip": "skipped"}[unknown]
            table.add_row("unknown characters", f"{stats.unknown:,} ({done})")
        Console().print(table)


@app.command()
def info(
    model: Annotated[Path, typer.Argument(help="Run directory to describe.")] = DEFAULT_RUN,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object instead of tables.")] = False,
) -> None:
    """Describe a run: model, vocabulary, settings, progress, best figures and files.

    Example: `chargen info runs/latest`.
    """
    with _user_errors():
        from chargen.checkpoint import describe, load_run

        facts = describe(load_run(model))
        if as_json:
            typer.echo(json.dumps(facts, ensure_ascii=False))
            return
        out = Console()
        m, corpus, summary = facts["model"], facts["corpus"], facts["summary"]
        table = Table(show_header=False, title=str(model), title_justify="left")
        table.add_row(
            "model",
            f"{m['layers']}x{m['hidden']} {m['cell']}, embedding {m['embed']}, "
            f"dropout {m['dropout']}, {facts['parameters']:,} parameters",
        )
        vocab = facts["vocab"]
        shown = "".join(vocab["chars"] or [])
        table.add_row("vocabulary", f"{vocab['size']} {vocab['kind']}" + (f": {shown!r}" if shown else ""))
        text = facts["text"]
        table.add_row("text", ", ".join(f"{k} {v}" for k, v in text.items() if v not in (None, False)))
        table.add_row(
            "corpus",
            f"{corpus.get('name')} ({corpus.get('tokens', 0):,} symbols, "
            f"{corpus.get('unknown', 0):,} unknown) {corpus.get('path', '')}",
        )
        t = facts["train"]
        table.add_row(
            "training",
            f"batch {t['batch_size']}, bptt {t['bptt']}, lr {t['lr']:g}, clip {t['clip']}, "
            f"seed {t['seed']}; limits: steps {t['max_steps']}, time {t['max_time']}, epochs {t['epochs']}",
        )
        table.add_row(
            "progress", f"{facts['steps']} steps" if facts["steps"] is not None else "no checkpoint"
        )
        if summary:
            best = summary["best"]
            table.add_row(
                "best validation",
                f"{best['bpc']:.4f} bpc, perplexity {best['perplexity']:.2f} "
                f"(step {summary['best_step']}); {summary['chars_per_sec']:,.0f} characters/s",
            )
        for name, size in facts["files"].items():
            table.add_row("file", f"{name}  {size:,} bytes")
        out.print(table)


@app.command()
def corpora() -> None:
    """List the named corpora `chargen train NAME` accepts, and where each would come from.

    Example: `chargen corpora`, then `chargen train tinyshakespeare`. Set CHARGEN_CORPORA to a
    directory holding the files to work offline.
    """
    with _user_errors():
        from chargen import catalogue

        table = Table("name", "what", "size", "licence", "source now")
        for entry in catalogue.entries().values():
            table.add_row(
                entry.name, entry.title, f"{entry.bytes / 1e6:.1f} MB", entry.licence, catalogue.where(entry)
            )
        Console().print(table)


def main() -> None:
    if sys.stdout.encoding and sys.stdout.encoding.lower().replace("-", "") != "utf8":
        sys.stdout.reconfigure(encoding="utf-8")  # type: ignore[union-attr]  # samples are any Unicode
    app()
