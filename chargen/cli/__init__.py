"""The `chargen` command: each command turns its options into configs, makes one library call and
prints. Torch is imported inside the commands, so `chargen --help` stays instant; options.py holds
the shared options, render.py the terminal plumbing (errors, progress, streaming), tables.py the
tables.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from chargen import __version__
from chargen.allocator import keep_freed_memory
from chargen.cli import options as opt
from chargen.cli.render import (
    CompareProgress,
    DownloadBar,
    TrainProgress,
    Units,
    err,
    exit_quietly_when_the_reader_goes,
    fan_out,
    literal,
    process_rank,
    stop_on_signals,
    stream_out,
    user_errors,
    write_samples,
)
from chargen.cli.tables import (
    print_adaptation,
    print_adapted_eval,
    print_comparison,
    print_corpora,
    print_eval,
    print_gradients,
    print_novelty,
    print_run_info,
    print_scores,
    print_summary,
    start_from_note,
)
from chargen.config import (
    CELLS,
    ITEM_COUNT,
    AdaptConfig,
    ModelConfig,
    SampleConfig,
    TextConfig,
    TrainConfig,
    default_max_length,
    require_run_kind,
)
from chargen.errors import ConfigError
from chargen.serve.requests import Limits

if TYPE_CHECKING:
    import torch

    from chargen.checkpoint import Run
    from chargen.model import CharRNN

app = typer.Typer(
    cls=opt.Group,
    no_args_is_help=True,
    add_completion=True,  # --install-completion and --show-completion, as Typer offers them
    rich_markup_mode="markdown",
    context_settings={"help_option_names": ["-h", "--help"]},
)
DEFAULT_RUN = Path("runs/latest")


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
    """Character-level RNN language models: train on a text, sample from it, evaluate it.

    Example: `chargen train notes.txt --max-time 5m`, then `chargen sample --prefix "Dear"`;
    `chargen COMMAND --help` shows a command's options.
    """
    keep_freed_memory()  # every command computes with torch on the CPU at some point


@app.command(cls=opt.Command)
def train(
    ctx: typer.Context,
    corpus: opt.CorpusArg = None,
    out: opt.Out = None,
    resume: opt.Resume = None,
    init: opt.Init = None,
    unknown: opt.InitUnknown = "extend",
    cell: opt.Cell = ModelConfig.cell,
    size: opt.Size = ModelConfig.size,
    layers: opt.Layers = ModelConfig.layers,
    hidden: opt.Hidden = ModelConfig.hidden,
    embed: opt.Embed = ModelConfig.embed,
    dropout: opt.Dropout = ModelConfig.dropout,
    weight_drop: opt.WeightDrop = ModelConfig.weight_drop,
    tie_weights: opt.TieWeights = ModelConfig.tie_weights,
    batch_size: opt.BatchSize = TrainConfig.batch_size,
    bptt: opt.Bptt = TrainConfig.bptt,
    lr: opt.Lr = TrainConfig.lr,
    weight_decay: opt.WeightDecay = TrainConfig.weight_decay,
    warmup_steps: opt.WarmupSteps = TrainConfig.warmup_steps,
    clip: opt.Clip = TrainConfig.clip,
    epochs: opt.Epochs = None,
    max_steps: opt.MaxSteps = None,
    max_time: opt.MaxTime = None,
    eval_every: opt.EvalEvery = TrainConfig.eval_every,
    patience: opt.Patience = TrainConfig.patience,
    save_every: opt.SaveEvery = TrainConfig.save_every,
    val_fraction: opt.ValFraction = TrainConfig.val_fraction,
    eval_chars: opt.EvalChars = TrainConfig.eval_chars,
    seed: opt.Seed = None,
    device: opt.Device = TrainConfig.device,
    precision: opt.Precision = TrainConfig.precision,
    encoding: opt.Encoding = TextConfig.encoding,
    errors: opt.Errors = TextConfig.errors,
    normalize: opt.Normalize = TextConfig.normalize,
    newlines: opt.Newlines = TextConfig.newlines,
    lowercase: opt.Lowercase = TextConfig.lowercase,
    preset: opt.Preset = None,
    tokenizer: opt.Tokenizer = TextConfig.tokenizer,
    min_count: opt.MinCount = TextConfig.min_count,
    items: opt.Items = None,
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
    `chargen train names.txt --items lines` (a list: then `chargen sample --items 20 --new`);
    `chargen train poems/ --items files` (each file one item);
    `chargen train --resume runs/notes --max-time 20m` (continue it);
    `chargen train my-letters.txt --init runs/notes --max-time 1m` (adapt that model to a small text);
    `torchrun --nproc_per_node 4 -m chargen train notes.txt` (4 processes, the batch shared out).
    """
    with user_errors(ctx):
        from chargen.corpus import load_corpus
        from chargen.plot import PlotEachEvaluation
        from chargen.training import resume as resume_training
        from chargen.training import train as run_training

        plotter = [PlotEachEvaluation()] if plot else []  # without matplotlib: an error, before training
        main = process_rank() == 0  # under torchrun, rank 0 speaks for all
        start = None
        if resume is not None and init is not None:
            raise ConfigError(
                "`resume` continues a run and `init` starts a new one: give one of them", "init"
            )
        unknown_given = "unknown" in opt.given(ctx, leave_out=())
        if init is None and resume is None and unknown_given:
            raise ConfigError(
                "`unknown` says what becomes of characters the `init` run never saw; give `init`", "unknown"
            )
        if init is not None:
            from chargen.finetune import start_from

            given = opt.given(ctx, leave_out=())
            text_given = {k: v for k, v in given.items() if k in TextConfig.__dataclass_fields__}
            model_given = {k: v for k, v in given.items() if k in ModelConfig.__dataclass_fields__}
            start = start_from(init, corpus, text_given, unknown, given_model=model_given)
            data, model_config = start.corpus, start.model
            train_config = opt.build(TrainConfig, ctx.params)
        elif resume is None:
            model_config, train_config, text_config = opt.configs(ctx.params)
            with DownloadBar() as download:
                data = load_corpus(corpus, text_config, progress=download)
        note = start_from_note(init, start) if start is not None and init is not None and main else None
        with stop_on_signals(announce=main) as stop, TrainProgress(note) as progress:
            report = fan_out(stop.watch, progress, *plotter)
            if resume is None:
                summary = run_training(data, model_config, train_config, out, report, stop=stop, start=start)
            else:
                changes = opt.given(ctx, leave_out=("resume", "corpus", "plot", "unknown"))
                again = unknown if unknown_given else None  # must be the policy the run began with
                summary = resume_training(resume, corpus, changes, report, stop, again)
        if main:
            print_summary(summary, progress.units)


@app.command(cls=opt.Command)
def compare(
    ctx: typer.Context,
    corpus: opt.CorpusArg = None,
    cells: Annotated[
        str,
        typer.Option(
            metavar="LIST", help="Cells to train, one run each, separated by commas: lstm, gru, rnn."
        ),
    ] = ",".join(CELLS),
    out: Annotated[
        Path | None,
        typer.Option(
            metavar="DIR",
            help="Directory for one run per cell and the comparison. Default: runs/compare-CORPUS-TIMESTAMP.",
        ),
    ] = None,
    size: opt.Size = ModelConfig.size,
    layers: opt.Layers = ModelConfig.layers,
    hidden: opt.Hidden = ModelConfig.hidden,
    embed: opt.Embed = ModelConfig.embed,
    dropout: opt.Dropout = ModelConfig.dropout,
    batch_size: opt.BatchSize = TrainConfig.batch_size,
    bptt: opt.Bptt = TrainConfig.bptt,
    lr: opt.Lr = TrainConfig.lr,
    clip: opt.Clip = TrainConfig.clip,
    epochs: opt.Epochs = None,
    max_steps: opt.MaxSteps = None,
    max_time: opt.MaxTime = None,
    eval_every: opt.EvalEvery = TrainConfig.eval_every,
    seed: opt.Seed = None,
    device: opt.Device = TrainConfig.device,
    precision: opt.Precision = TrainConfig.precision,
    encoding: opt.Encoding = TextConfig.encoding,
    errors: opt.Errors = TextConfig.errors,
    normalize: opt.Normalize = TextConfig.normalize,
    newlines: opt.Newlines = TextConfig.newlines,
    lowercase: opt.Lowercase = TextConfig.lowercase,
    preset: opt.Preset = None,
    tokenizer: opt.Tokenizer = TextConfig.tokenizer,
    min_count: opt.MinCount = TextConfig.min_count,
    items: opt.Items = None,
    plot: Annotated[
        bool, typer.Option(help="Draw the runs overlaid into compare.png (needs matplotlib).")
    ] = True,
) -> None:
    """Train one model per cell with the same settings, seed and budget each, then compare them.

    Example: `chargen compare timemachine --cells lstm,gru,rnn --max-time 1m` (three minutes in all).
    """
    with user_errors(ctx):
        from chargen.compare import check_cells
        from chargen.compare import compare as run_comparison
        from chargen.corpus import load_corpus

        names = check_cells([name.strip() for name in cells.split(",") if name.strip()])
        model_config, train_config, text_config = opt.configs(ctx.params)
        with DownloadBar() as download:
            data = load_corpus(corpus, text_config, progress=download)
        with stop_on_signals() as stop, CompareProgress() as progress:
            comparison = run_comparison(
                data, names, model_config, train_config, out, fan_out(stop.watch, progress), plot, stop=stop
            )
        print_comparison(comparison, Units(data.vocab.symbol))


# `sample`'s options that apply to one kind of run only: refused on the other, not ignored.
SAMPLE_LIST_ONLY = ("items", "new", "as_json", "max_length")
SAMPLE_TEXT_ONLY = ("length", "stop", "num_samples", "novelty", "adapt_on")


@app.command(cls=opt.Command)
def sample(
    ctx: typer.Context,
    model: opt.RunToSample = DEFAULT_RUN,
    prefix: opt.Prefix = SampleConfig.prefix,
    prefix_file: opt.PrefixFile = None,
    length: opt.Length = SampleConfig.length,
    temperature: opt.Temperature = SampleConfig.temperature,
    top_k: opt.TopK = SampleConfig.top_k,
    top_p: opt.TopP = SampleConfig.top_p,
    seed: opt.SampleSeed = SampleConfig.seed,
    num_samples: opt.NumSamples = SampleConfig.num_samples,
    unknown: opt.PrefixUnknown = SampleConfig.unknown,
    stop: opt.Stop = SampleConfig.stop,
    novelty: opt.Novelty = False,
    items: opt.ItemCount = None,
    new: opt.NewItems = False,
    max_length: opt.MaxLength = SampleConfig.max_length,
    as_json: opt.ItemsJson = False,
    adapt_on: opt.AdaptOn = None,
    encoding: opt.AdaptOnEncoding = None,
    errors: opt.AdaptOnErrors = None,
    lr: opt.AdaptLr = AdaptConfig.lr,
    decay: opt.AdaptDecay = AdaptConfig.decay,
    segment: opt.AdaptSegment = AdaptConfig.segment,
    device: opt.Device = "auto",
) -> None:
    """Continue a prefix with a trained model; the text streams to stdout.

    Examples: `chargen sample --prefix "time traveller" --length 300 --temperature 0.7 --seed 1`;
    for a run trained on a list, `chargen sample --items 50 --new --prefix ja` (50 new items);
    `chargen sample --adapt-on chapter1.txt` (adapt to a text, then continue it).
    """
    both = prefix_file is not None and "prefix" in opt.given(ctx, leave_out=())
    # A prefix read from a file is the file's flag's to name, in an error about its characters.
    with user_errors(ctx, {"prefix": "--prefix-file"} if prefix_file and not both else None):
        from chargen.checkpoint import load_model_weights, load_run
        from chargen.device import resolve_device
        from chargen.runs import adapt_run_on, novelty_index, verbatim_shares
        from chargen.sample import decode_prefix, encode_prefix, read_prefix, sample_batch, sample_stream

        if both:
            raise ConfigError("`prefix` and `prefix_file` were both given; give one of them", "prefix")
        if prefix_file is not None:
            prefix = read_prefix(prefix_file)
        elif prefix == "-":
            prefix = decode_prefix(sys.stdin.buffer.read(), "standard input")
        config = opt.build(SampleConfig, {**ctx.params, "prefix": prefix})
        adapt_config = opt.adapt_config(ctx, "adapt_on", adapt_on is not None, also=("encoding", "errors"))
        run = load_run(model)
        listed = run.text_config.items is not None
        given = opt.given(ctx, leave_out=())
        require_run_kind(given, listed, SAMPLE_LIST_ONLY, SAMPLE_TEXT_ONLY)
        torch_device = resolve_device(device)
        net = load_model_weights(run, torch_device)
        if listed:
            if "max_length" not in given:  # a document is longer than a line
                config = dataclasses.replace(config, max_length=default_max_length(run.text_config.items))
            _sample_items(
                run, net, config, ITEM_COUNT if items is None else items, new, as_json, torch_device
            )
            return
        index = novelty_index(run) if novelty else None  # a missing training text fails before sampling
        after = None
        if adapt_on is not None:
            encode_prefix(run.vocab, config.prefix, run.text_config, config.unknown)  # fails before adapting
            adapted = adapt_run_on(
                run, net, adapt_on, adapt_config, torch_device, config.unknown, encoding, errors
            )
            print_adaptation(adapt_on, adapted, Units(run.vocab.symbol))
            net, after = adapted.model, adapted.after
        if num_samples == 1:
            # sample_stream checks the prefix before it returns, so a bad one fails before any output
            pieces = sample_stream(net, run.vocab, config, torch_device, run.text_config, after)
            texts = [stream_out(prefix, pieces)]
        else:
            texts = sample_batch(net, run.vocab, config, torch_device, run.text_config, after)
            write_samples(prefix, texts)
        if index is not None:
            print_novelty(verbatim_shares(index, run.vocab, texts), index.n, Units(run.vocab.symbol))


def _sample_items(
    run: Run, net: CharRNN, config: SampleConfig, count: int, new: bool, as_json: bool, device: torch.device
) -> None:
    """`chargen sample` for a run trained on a list: whole items, one per line (or as JSON)."""
    from chargen.item_sample import sample_items
    from chargen.runs import listed_items

    known = (lambda: listed_items(run)) if new else None
    found, generated, fresh = sample_items(net, run.vocab, config, count, device, run.text_config, known)
    if as_json:
        for item in found:
            typer.echo(json.dumps(item.to_dict(), ensure_ascii=False))
    else:
        between = "\n" if all("\n" not in item.text for item in found) else "\n\n"
        sys.stdout.write(between.join(item.text for item in found) + "\n")
        sys.stdout.flush()
    if new:
        err.print(
            f"{len(found):,} new items kept; of the {generated:,} generated, {fresh / generated:.1%} "
            "were not in the training list",
            soft_wrap=True,
        )


@app.command("eval", cls=opt.Command)
def evaluate(
    ctx: typer.Context,
    text_file: opt.TextFile = None,
    model: opt.RunToEvaluate = DEFAULT_RUN,
    as_json: opt.AsJson = False,
    unknown: opt.TextUnknown = SampleConfig.unknown,
    encoding: opt.TextEncoding = None,
    errors: opt.TextErrors = None,
    adapt: opt.Adapt = False,
    lr: opt.AdaptLr = AdaptConfig.lr,
    decay: opt.AdaptDecay = AdaptConfig.decay,
    segment: opt.AdaptSegment = AdaptConfig.segment,
    device: opt.Device = "auto",
) -> None:
    """Loss, perplexity and bits per character of a model on a text.

    Example: `chargen eval --model runs/tm --json`, `chargen eval other.txt` or
    `chargen eval --adapt other.txt` (with dynamic evaluation too).
    """
    with user_errors(ctx, {"items": "the run's --items"}):
        from chargen.checkpoint import load_run
        from chargen.runs import evaluate_run, evaluate_run_adapted

        adapt_config = opt.adapt_config(ctx, "adapt", adapt)
        if adapt:  # eval's one option for a text's run only: the run is read for it alone
            listed = load_run(model).text_config.items is not None
            require_run_kind(opt.given(ctx, leave_out=()), listed, (), ("adapt",))  # one text, state carried
        label = f"{model} on {text_file or 'its validation split'}"
        if adapt:
            result = evaluate_run_adapted(model, text_file, adapt_config, device, unknown, encoding, errors)
            if as_json:
                typer.echo(json.dumps(result.to_dict()))
                return
            print_adapted_eval(label, result, unknown, _units(model))
            return
        stats = evaluate_run(model, text_file, device, unknown, encoding, errors)
        if as_json:
            typer.echo(json.dumps(stats.to_dict()))
            return
        print_eval(label, stats, unknown, _units(model))


@app.command(cls=opt.Command)
def score(
    ctx: typer.Context,
    text_file: opt.FileToScore,
    model: opt.RunToScore = DEFAULT_RUN,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print one JSON object per line (or item) of the text instead.")
    ] = False,
    unknown: opt.TextUnknown = SampleConfig.unknown,
    encoding: opt.TextEncoding = None,
    errors: opt.TextErrors = None,
    device: opt.Device = "auto",
) -> None:
    """Score a text line by line (item by item for a run trained on a list): each one's characters,
    log-probability and bits per character.

    Example: `chargen score --model runs/tm notes.txt --json`.
    """
    with user_errors(ctx, {"items": "the run's --items"}):
        from chargen.scoring import score_run

        scores = score_run(model, text_file, device, unknown, encoding, errors)
        print_scores(scores, as_json, unknown, _units(model))


def _units(model: Path) -> Units:
    """How the figures of the run in `model` are named: per character, or per byte for a byte run."""
    from chargen.checkpoint import load_run

    return Units(load_run(model).vocab.symbol)


@app.command(cls=opt.Command)
def info(
    ctx: typer.Context,
    model: Annotated[
        Path, typer.Argument(metavar="RUN_DIR", help="Run directory to describe.")
    ] = DEFAULT_RUN,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object instead of tables.")] = False,
) -> None:
    """Describe a run: model, vocabulary, settings, progress, best figures and files.

    Example: `chargen info runs/latest`.
    """
    with user_errors(ctx):
        from chargen.checkpoint import describe, load_run

        facts = describe(load_run(model))
        if as_json:
            typer.echo(json.dumps(facts.to_dict(), ensure_ascii=False))
            return
        print_run_info(model, facts)


@app.command(cls=opt.Command)
def gradients(
    ctx: typer.Context,
    model: Annotated[
        Path, typer.Argument(metavar="RUN_DIR", help="Trained run to measure; not with --cell.")
    ] = DEFAULT_RUN,
    cell: Annotated[
        str | None,
        typer.Option(
            metavar="CHOICE",
            help="Measure an untrained 2x256 model of this cell instead of a run: lstm, gru or rnn.",
        ),
    ] = None,
    steps: Annotated[int, typer.Option(metavar="N", help="How many steps back to measure, >= 1.")] = 50,
    streams: Annotated[int, typer.Option(metavar="N", help="Windows averaged over, >= 1.")] = 16,
    seed: Annotated[
        int, typer.Option(metavar="N", help="Seed for an untrained model and its random input.")
    ] = 0,
) -> None:
    """How the loss at a window's end depends on the hidden state k steps back, k = 1..steps:
    vanishing gradients made visible.

    Example: `chargen gradients --cell rnn`, then `chargen gradients --cell lstm`.
    """
    with user_errors(ctx, {"model": "RUN_DIR"}):
        from chargen.gradients import untrained_decay
        from chargen.runs import run_gradient_decay

        if cell is not None and "model" in opt.given(ctx, leave_out=()):
            raise ConfigError(
                "`model` and `cell` were both given; give a run, or `cell` for an untrained model", "cell"
            )
        if cell is not None:
            print_gradients(f"untrained 2x256 {cell}", untrained_decay(cell, steps, streams, seed))
            return
        if "seed" in opt.given(ctx, leave_out=()):  # a run's windows are its own text: nothing is drawn
            raise ConfigError("`seed` draws an untrained model and its text; give it with `cell`", "seed")
        run, norms = run_gradient_decay(model, steps, streams)
        print_gradients(f"{model} ({run.model_config.cell})", norms)


@app.command(cls=opt.Command)
def plot(
    ctx: typer.Context,
    runs: Annotated[
        list[Path] | None, typer.Argument(metavar="RUN_DIR", help="Run directories to draw, overlaid.")
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(
            metavar="FILE",
            help="Image file to write, in the format its suffix names (.png, .svg, .pdf and more). "
            "Default: plot.png in the first run.",
        ),
    ] = None,
) -> None:
    """Draw training and validation bpc, the pre-clip gradient norm and the learning rate into an image.

    Example: `chargen plot runs/lstm runs/gru --out compare.png`. Needs the plot extra (matplotlib).
    """
    with user_errors(ctx):
        from chargen.plot import plot_runs

        run_dirs = runs or [DEFAULT_RUN]
        written = plot_runs(run_dirs, out or run_dirs[0] / "plot.png")
        typer.echo(str(written))


@app.command(cls=opt.Command)
def serve(
    ctx: typer.Context,
    model: Annotated[
        Path, typer.Option("--model", metavar="RUN_DIR", help="Run directory to serve.")
    ] = DEFAULT_RUN,
    host: Annotated[
        str,
        typer.Option(metavar="ADDRESS", help="Address to listen on; one beyond this machine needs --token."),
    ] = "127.0.0.1",
    port: Annotated[
        int, typer.Option(metavar="N", help="Port to listen on, 0-65535 (0: any free one).")
    ] = 8000,
    token: Annotated[
        str | None,
        typer.Option(
            metavar="TOKEN", help="Secret every API call must send as 'Authorization: Bearer TOKEN'."
        ),
    ] = None,
    insecure_no_token: Annotated[
        bool, typer.Option("--insecure-no-token", help="Listen beyond this machine without a token.")
    ] = False,
    max_body: Annotated[
        int, typer.Option(metavar="N", help="Largest request body, in bytes, >= 1.")
    ] = Limits.max_body,
    max_length: Annotated[
        int,
        typer.Option(
            metavar="N",
            help="Most characters one sample (or item) may ask for (bytes, for a byte run), >= 1.",
        ),
    ] = Limits.max_length,
    max_n: Annotated[
        int, typer.Option(metavar="N", help="Most samples one request may ask for, >= 1.")
    ] = Limits.max_n,
    max_items: Annotated[
        int, typer.Option(metavar="N", help="Most items one request may ask for (a list's run), >= 1.")
    ] = Limits.max_items,
    max_queue: Annotated[
        int,
        typer.Option(
            metavar="N", help="Requests generating or waiting at once, >= 1; more are told to retry (503)."
        ),
    ] = Limits.max_queue,
) -> None:
    """Serve a model over HTTP: a JSON API (generate, stream, score) and a playground page at /.

    Example: `chargen serve --model runs/tm`, then open http://127.0.0.1:8000/ (docs/serve.md).
    """
    with user_errors(ctx):
        from chargen.serve.requests import check_binding

        check_binding(host, token, insecure_no_token)  # before anything heavy is imported
        limits = Limits(max_body, max_length, max_n, max_items, max_queue)
        try:
            from chargen.serve.app import run_server
        except ImportError as error:
            raise ConfigError(
                f"chargen serve needs the serve extra ({error}): pip install 'chargen[serve]'"
            ) from None

        def started(url: str) -> None:
            err.print(f"serving {literal(model)} at {literal(url)} (Ctrl-C stops)", soft_wrap=True)

        run_server(str(model), host, port, token, insecure_no_token, limits, started)


@app.command(cls=opt.Command)
def corpora(ctx: typer.Context) -> None:
    """List the named corpora `chargen train NAME` accepts, and where each would come from.

    Example: `chargen corpora`, then `chargen train tinyshakespeare`. Set CHARGEN_CORPORA to a
    directory holding the files to work offline.
    """
    with user_errors(ctx):
        from chargen import catalogue

        print_corpora(catalogue.entries().values(), catalogue.find)


def main() -> None:
    with exit_quietly_when_the_reader_goes():  # first: it gives a closed stdout a stream
        if sys.stdout.encoding and sys.stdout.encoding.lower().replace("-", "") != "utf8":
            sys.stdout.reconfigure(encoding="utf-8")  # type: ignore[union-attr]  # samples are any Unicode
        app()
