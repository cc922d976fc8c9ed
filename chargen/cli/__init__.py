"""The `chargen` command: each command parses its options, makes one library call and prints.
Torch is imported inside the commands, so `chargen --help` stays instant; render.py holds the
terminal plumbing (errors, progress, tables).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from chargen import __version__
from chargen.cli.render import (
    CompareProgress,
    DownloadBar,
    OneLineErrors,
    TrainProgress,
    fan_out,
    from_command_line,
    print_comparison,
    print_eval,
    print_gradients,
    print_novelty,
    print_run_info,
    print_summary,
    process_rank,
    stop_on_signals,
    user_errors,
)
from chargen.config import (
    CELLS,
    UNKNOWN_POLICIES,
    ModelConfig,
    SampleConfig,
    TextConfig,
    TrainConfig,
    parse_duration,
)
from chargen.errors import ConfigError

app = typer.Typer(
    cls=OneLineErrors,
    help="Character-level RNN language models: train on a text, sample from it, evaluate it.",
    no_args_is_help=True,
    add_completion=True,  # --install-completion and --show-completion, as Typer offers them
    rich_markup_mode="markdown",
    context_settings={"help_option_names": ["-h", "--help"]},
)
DEFAULT_RUN = Path("runs/latest")

# Options `train` and `compare` share, declared once so that their help reads the same in both.
CorpusArg = Annotated[
    str | None,
    typer.Argument(
        help="Text file, or a named corpus (see `chargen corpora`). Default: the built-in corpus."
    ),
]
Size = Annotated[
    str,
    typer.Option(
        help="Model size: small (2x256), medium (2x384), large (2x512), or auto: the largest that the "
        "budget trains on enough characters (see docs/recipe.md)."
    ),
]
Layers = Annotated[int | None, typer.Option(help="Stacked recurrent layers, >= 1. Default: from --size.")]
Hidden = Annotated[int | None, typer.Option(help="Units per layer, >= 1. Default: from --size.")]
Embed = Annotated[int, typer.Option(help="Character embedding size, >= 1.")]
Dropout = Annotated[
    float | None,
    typer.Option(
        help="Dropout between layers and before the output, [0, 1). Default: more the more passes over "
        "the text the run will make and the bigger the model."
    ),
]
BatchSize = Annotated[int, typer.Option(help="Parallel streams through the text, >= 1.")]
Bptt = Annotated[int, typer.Option(help="Characters per backpropagation window, >= 1.")]
Lr = Annotated[
    float | None,
    typer.Option(
        help="Peak learning rate of AdamW, > 0. Default: 0.006 at 256 units, less for wider models."
    ),
]
Clip = Annotated[float, typer.Option(help="Gradient-norm clipping threshold; 0 disables.")]
Epochs = Annotated[float | None, typer.Option(help="Stop after this many passes over the text.")]
MaxSteps = Annotated[int | None, typer.Option(help="Stop after this many optimiser steps.")]
MaxTime = Annotated[
    str | None,
    typer.Option(
        help="Stop after this much training time: seconds or 90s, 3m, 1h. "
        f"With no limit at all: {TrainConfig().max_time:.0f}s."
    ),
]
EvalEvery = Annotated[int, typer.Option(help="Validate every this many steps, >= 1.")]
Seed = Annotated[int | None, typer.Option(help="Random seed, for a reproducible run.")]
Device = Annotated[str, typer.Option(help="auto, cpu, cuda or mps.")]
Precision = Annotated[
    str, typer.Option(help="fp32, or bf16 arithmetic on fp32 weights; auto: bf16 where the chip has it.")
]
Preset = Annotated[
    str | None, typer.Option(help="d2l: the d2l book's preprocessing (letters only, lowercase).")
]
Tokenizer = Annotated[str, typer.Option(help="chars (Unicode code points) or bytes (UTF-8 bytes).")]


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


@app.command()
def train(
    ctx: typer.Context,
    corpus: CorpusArg = None,
    out: Annotated[
        Path | None, typer.Option(help="Run directory to create. Default: runs/CORPUS-TIMESTAMP.")
    ] = None,
    resume: Annotated[
        Path | None,
        typer.Option(
            help="Continue this run from its checkpoint; only the limits, --patience and --device may change."
        ),
    ] = None,
    cell: Annotated[str, typer.Option(help="Recurrent cell: lstm, gru or rnn.")] = ModelConfig.cell,
    size: Size = ModelConfig.size,
    layers: Layers = ModelConfig.layers,
    hidden: Hidden = ModelConfig.hidden,
    embed: Embed = ModelConfig.embed,
    dropout: Dropout = ModelConfig.dropout,
    tie_weights: Annotated[
        bool, typer.Option(help="Share embedding and output weights (needs --embed = --hidden).")
    ] = ModelConfig.tie_weights,
    batch_size: BatchSize = TrainConfig.batch_size,
    bptt: Bptt = TrainConfig.bptt,
    lr: Lr = TrainConfig.lr,
    weight_decay: Annotated[float, typer.Option(help="AdamW weight decay on matrices, >= 0.")] = (
        TrainConfig.weight_decay
    ),
    warmup_steps: Annotated[int, typer.Option(help="Steps of linear learning-rate warm-up, >= 0.")] = (
        TrainConfig.warmup_steps
    ),
    clip: Clip = TrainConfig.clip,
    epochs: Epochs = None,
    max_steps: MaxSteps = None,
    max_time: MaxTime = None,
    eval_every: EvalEvery = TrainConfig.eval_every,
    patience: Annotated[
        int,
        typer.Option(help="Stop after this many validations in a row without a new best; 0: never."),
    ] = TrainConfig.patience,
    save_every: Annotated[int, typer.Option(help="Steps between resumable checkpoints, >= 1.")] = (
        TrainConfig.save_every
    ),
    val_fraction: Annotated[float, typer.Option(help="Last fraction of the text held out, (0, 1).")] = (
        TrainConfig.val_fraction
    ),
    eval_chars: Annotated[int, typer.Option(help="Validate on at most this many held-out characters.")] = (
        TrainConfig.eval_chars
    ),
    seed: Seed = None,
    device: Device = TrainConfig.device,
    precision: Precision = TrainConfig.precision,
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
    preset: Preset = None,
    tokenizer: Tokenizer = TextConfig.tokenizer,
    min_count: Annotated[
        int, typer.Option(help="Characters seen fewer times become the unknown symbol, >= 1.")
    ] = TextConfig.min_count,
    plot: Annotated[
        bool,
        typer.Option(
            "--plot", help="Redraw plot.png in the run directory at each validation (needs matplotlib)."
        ),
    ] = False,
) -> None:
    """Train a character-level language model on a text.

    Examples: `chargen train` (the built-in corpus, 2 minutes);
    `chargen train notes.txt --max-time 10m --hidden 512 --out runs/notes`;
    `chargen train --resume runs/notes --max-time 20m` (continue it);
    `torchrun --nproc_per_node 4 -m chargen train notes.txt` (4 processes, the batch shared out).
    """
    with user_errors():
        from chargen.corpus import load_corpus
        from chargen.plot import PlotEachEvaluation
        from chargen.train import resume as resume_training
        from chargen.train import train as run_training

        plotter = [PlotEachEvaluation()] if plot else []  # without matplotlib: an error, before training
        main = process_rank() == 0  # under torchrun, rank 0 speaks for all
        if resume is not None:
            given = {
                name: value
                for name, value in ctx.params.items()
                if name not in ("resume", "corpus", "plot") and from_command_line(ctx, name)
            }
            with stop_on_signals(announce=main) as stop, TrainProgress() as progress:
                summary = resume_training(resume, corpus, given, fan_out(progress, *plotter), stop)
            if main:
                print_summary(summary)
            return

        model_config = ModelConfig(
            cell=cell,
            size=size,
            layers=layers,
            hidden=hidden,
            embed=embed,
            dropout=dropout,
            tie_weights=tie_weights,
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
            patience=patience,
            save_every=save_every,
            val_fraction=val_fraction,
            eval_chars=eval_chars,
            seed=seed,
            device=device,
            precision=precision,
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
        with DownloadBar() as download:
            data = load_corpus(corpus, text_config, progress=download)
        with stop_on_signals(announce=main) as stop, TrainProgress() as progress:
            summary = run_training(
                data, model_config, train_config, out, fan_out(progress, *plotter), stop=stop
            )
        if main:
            print_summary(summary)


@app.command()
def compare(
    corpus: CorpusArg = None,
    cells: Annotated[
        str, typer.Option(help="Cells to train, one run each, separated by commas: lstm, gru, rnn.")
    ] = ",".join(CELLS),
    out: Annotated[
        Path | None,
        typer.Option(
            help="Directory for one run per cell and the comparison. Default: runs/compare-CORPUS-TIMESTAMP."
        ),
    ] = None,
    size: Size = ModelConfig.size,
    layers: Layers = ModelConfig.layers,
    hidden: Hidden = ModelConfig.hidden,
    embed: Embed = ModelConfig.embed,
    dropout: Dropout = ModelConfig.dropout,
    batch_size: BatchSize = TrainConfig.batch_size,
    bptt: Bptt = TrainConfig.bptt,
    lr: Lr = TrainConfig.lr,
    clip: Clip = TrainConfig.clip,
    epochs: Epochs = None,
    max_steps: MaxSteps = None,
    max_time: MaxTime = None,
    eval_every: EvalEvery = TrainConfig.eval_every,
    seed: Seed = None,
    device: Device = TrainConfig.device,
    precision: Precision = TrainConfig.precision,
    preset: Preset = None,
    tokenizer: Tokenizer = TextConfig.tokenizer,
    plot: Annotated[
        bool, typer.Option(help="Draw the runs overlaid into compare.png (needs matplotlib).")
    ] = True,
) -> None:
    """Train one model per cell with the same settings, seed and budget each, then compare them.

    Example: `chargen compare timemachine --cells lstm,gru,rnn --max-time 1m` (three minutes in all).
    """
    with user_errors():
        from chargen.compare import check_cells
        from chargen.compare import compare as run_comparison
        from chargen.corpus import load_corpus

        names = check_cells([name.strip() for name in cells.split(",") if name.strip()])
        model_config = ModelConfig(size=size, layers=layers, hidden=hidden, embed=embed, dropout=dropout)
        train_config = TrainConfig(
            batch_size=batch_size,
            bptt=bptt,
            lr=lr,
            clip=clip,
            epochs=epochs,
            max_steps=max_steps,
            max_time=parse_duration(max_time),
            eval_every=eval_every,
            seed=seed,
            device=device,
            precision=precision,
        )
        text_config = TextConfig(preset=preset, tokenizer=tokenizer)
        with DownloadBar() as download:
            data = load_corpus(corpus, text_config, progress=download)
        with stop_on_signals() as stop, CompareProgress() as progress:
            comparison = run_comparison(
                data, names, model_config, train_config, out, progress, plot, stop=stop
            )
        print_comparison(comparison)


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
    novelty: Annotated[
        bool,
        typer.Option(help="Report on stderr how much of the sample occurs verbatim in the training text."),
    ] = False,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or mps.")] = "auto",
) -> None:
    """Continue a prefix with a trained model; the text streams to stdout.

    Example: `chargen sample --prefix "time traveller" --length 300 --temperature 0.7 --seed 1`.
    """
    with user_errors():
        from chargen.checkpoint import load_model_weights, load_run
        from chargen.device import resolve_device
        from chargen.novelty import NgramIndex
        from chargen.sample import sample_batch, sample_stream
        from chargen.train import training_ids

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
        index = NgramIndex(training_ids(run)) if novelty else None
        if num_samples == 1:
            pieces = sample_stream(net, run.vocab, config, torch_device, run.text_config)  # checks the prefix
            sys.stdout.write(prefix)
            last_flush, texts = time.monotonic(), [""]
            for piece in pieces:
                sys.stdout.write(piece)
                texts[0] += piece
                if "\n" in piece or time.monotonic() - last_flush > 0.05:
                    sys.stdout.flush()
                    last_flush = time.monotonic()
            sys.stdout.write("\n")
        else:
            texts = sample_batch(net, run.vocab, config, torch_device, run.text_config)
            sys.stdout.write("\n\n".join(prefix + text for text in texts) + "\n")
        sys.stdout.flush()
        if index is not None:
            shares = [index.verbatim_fraction(run.vocab.encode(text, unknown="skip")) for text in texts]
            print_novelty([share for share in shares if share is not None], index.n)


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
    with user_errors():
        from chargen.evaluate import evaluate_run

        if unknown not in UNKNOWN_POLICIES:
            raise ConfigError(f"--unknown must be error, replace or skip, not {unknown!r}")
        stats = evaluate_run(model, text_file, device, unknown, encoding, errors)
        result: dict[str, Any] = stats.to_dict()
        if as_json:
            typer.echo(json.dumps(result))
            return
        print_eval(f"{model} on {text_file or 'its validation split'}", stats, unknown)


@app.command()
def info(
    model: Annotated[Path, typer.Argument(help="Run directory to describe.")] = DEFAULT_RUN,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object instead of tables.")] = False,
) -> None:
    """Describe a run: model, vocabulary, settings, progress, best figures and files.

    Example: `chargen info runs/latest`.
    """
    with user_errors():
        from chargen.checkpoint import describe, load_run

        facts = describe(load_run(model))
        if as_json:
            typer.echo(json.dumps(facts, ensure_ascii=False))
            return
        print_run_info(model, facts)


@app.command()
def gradients(
    model: Annotated[
        Path, typer.Argument(help="Trained run to measure (ignored with --cell).")
    ] = DEFAULT_RUN,
    cell: Annotated[
        str | None,
        typer.Option(help="Measure an untrained 2x256 model of this cell instead: lstm, gru or rnn."),
    ] = None,
    steps: Annotated[int, typer.Option(help="How many steps back to measure, >= 1.")] = 50,
    streams: Annotated[int, typer.Option(help="Windows averaged over, >= 1.")] = 16,
    seed: Annotated[int, typer.Option(help="Seed for an untrained model and its random input.")] = 0,
) -> None:
    """How the loss at a window's end depends on the hidden state k steps back, k = 1..steps:
    vanishing gradients made visible.

    Example: `chargen gradients --cell rnn`, then `chargen gradients --cell lstm`.
    """
    with user_errors():
        import torch

        from chargen.checkpoint import load_model_weights, load_run
        from chargen.gradients import gradient_decay, random_window, text_windows
        from chargen.model import CharRNN

        if steps < 1 or streams < 1:
            raise ConfigError("--steps and --streams must be at least 1")
        if cell is not None:
            torch.manual_seed(seed)
            net = CharRNN(ModelConfig(cell=cell, vocab_size=64, layers=2, hidden=256, dropout=0.0))
            window, label = random_window(64, steps, streams, seed), f"untrained 2x256 {cell}"
        else:
            run = load_run(model)
            net = load_model_weights(run)
            try:
                window = text_windows(run.validation_ids(), steps, streams)
            except ValueError as error:
                raise ConfigError(f"--steps {steps}: {error}") from None
            label = f"{model} ({run.model_config.cell})"
        print_gradients(label, gradient_decay(net, window))


@app.command()
def plot(
    runs: Annotated[list[Path] | None, typer.Argument(help="Run directories to draw, overlaid.")] = None,
    out: Annotated[
        Path | None, typer.Option(help="PNG file to write. Default: plot.png in the first run.")
    ] = None,
) -> None:
    """Draw training and validation bpc, the pre-clip gradient norm and the learning rate into a PNG.

    Example: `chargen plot runs/lstm runs/gru --out compare.png`. Needs the plot extra (matplotlib).
    """
    with user_errors():
        from chargen.plot import plot_runs

        run_dirs = runs or [DEFAULT_RUN]
        written = plot_runs(run_dirs, out or run_dirs[0] / "plot.png")
        typer.echo(str(written))


@app.command()
def corpora() -> None:
    """List the named corpora `chargen train NAME` accepts, and where each would come from.

    Example: `chargen corpora`, then `chargen train tinyshakespeare`. Set CHARGEN_CORPORA to a
    directory holding the files to work offline.
    """
    with user_errors():
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
