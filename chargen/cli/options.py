"""The options of the commands, declared once so that their help reads the same in every command
that has them, and the configs built from them: each option is named after the config field it
sets, so a command's options become configs, and a resumed run's changes, without naming any of
them again.

Each value's placeholder (metavar) says what to type, in capitals as in docs/commands.md: a path
by what it must be (RUN_DIR, FILE, TEXT_FILE, DIR, CORPUS), N for a whole number, X for any other
number, CHOICE for one of the words the help lists, TEXT for text taken as it is, and a noun for
the rest (DURATION, ENCODING, MODE, LIST, ADDRESS, TOKEN). The help says the unit or range; a flag
shows none.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from typer.core import TyperArgument, TyperCommand

from chargen.cli.render import OneLineErrors
from chargen.config import (
    DOCUMENT_LENGTH,
    ITEM_COUNT,
    LINE_LENGTH,
    AdaptConfig,
    ModelConfig,
    TextConfig,
    TrainConfig,
)
from chargen.errors import ConfigError

T = TypeVar("T")


class _PlaceholdersOnly:
    """Typer's help gives every value a column for its type, where an option shows its placeholder:
    `<bool>` for a flag reads as if the flag took a value (`--json <bool>`), and `<path>` or
    `<list[str]>` for an argument repeats in Typer's words what the argument's name, its placeholder
    (RUN_DIR, CORPUS), already says. Both columns are left empty, --help's included; the usage line
    shows an argument that may be repeated (`[CORPUS]...`)."""

    def format_help(self, ctx: typer.Context, formatter: Any) -> None:
        for param in self.get_params(ctx):  # type: ignore[attr-defined]
            if getattr(param, "is_flag", False) and param.metavar is None:
                param.metavar = ""
            elif isinstance(param, TyperArgument):
                param.display_type_rich = _no_type  # type: ignore[method-assign]
        super().format_help(ctx, formatter)  # type: ignore[misc]


def _no_type(ctx: typer.Context) -> None:
    return None


class Command(_PlaceholdersOnly, TyperCommand):
    """A chargen command: `@app.command(cls=Command)`."""


class Group(_PlaceholdersOnly, OneLineErrors):
    """The chargen command itself: one-line usage errors, and flags shown as flags."""


CorpusArg = Annotated[
    list[str] | None,
    typer.Argument(
        metavar="CORPUS",
        help="Text file, several files or a directory (read as one text, files joined by a line break, "
        "unless --items says otherwise), or a named corpus (see `chargen corpora`). "
        "Default: the built-in corpus.",
        show_default=False,
    ),
]
Out = Annotated[
    Path | None,
    typer.Option(metavar="RUN_DIR", help="Run directory to create. Default: runs/CORPUS-TIMESTAMP."),
]
Resume = Annotated[
    Path | None,
    typer.Option(
        metavar="RUN_DIR",
        help="Continue this run from its checkpoint; only the limits, --patience and --device may change.",
    ),
]
Init = Annotated[
    Path | None,
    typer.Option(
        metavar="RUN_DIR",
        help="Fine-tune: start a new run from this run's best weights, with its text settings, shape "
        "and vocabulary (grown by the new text's characters), a fresh optimiser and schedule.",
    ),
]
InitUnknown = Annotated[
    str,
    typer.Option(
        metavar="CHOICE",
        help="With --init: characters the parent never saw: extend (new vocabulary rows), replace "
        "(the unknown symbol) or skip.",
    ),
]
Cell = Annotated[str, typer.Option(metavar="CHOICE", help="Recurrent cell: lstm, gru or rnn.")]
Size = Annotated[
    str,
    typer.Option(
        metavar="CHOICE",
        help="Model size: small (2x256), medium (2x384), large (2x512), or auto: the largest that the "
        "budget trains on enough characters (see docs/recipe.md).",
    ),
]
Layers = Annotated[
    int | None, typer.Option(metavar="N", help="Stacked recurrent layers, >= 1. Default: from --size.")
]
Hidden = Annotated[int | None, typer.Option(metavar="N", help="Units per layer, >= 1. Default: from --size.")]
Embed = Annotated[int, typer.Option(metavar="N", help="Character embedding size, >= 1.")]
Dropout = Annotated[
    float | None,
    typer.Option(
        metavar="X",
        help="Dropout between layers and before the output, [0, 1). Default: more the more passes over "
        "the text the run will make and the bigger the model.",
    ),
]
WeightDrop = Annotated[
    float | None,
    typer.Option(
        metavar="X",
        help="DropConnect on the recurrent weights in training, [0, 1): a fresh mask per window. "
        "Default: the same as --dropout.",
    ),
]
TieWeights = Annotated[
    bool, typer.Option(help="Share embedding and output weights (needs --embed = --hidden).")
]
BatchSize = Annotated[
    int | None,
    typer.Option(
        metavar="N", help="Parallel streams through the text per step, >= 1. Default: 16 (a list: 32 items)."
    ),
]
Bptt = Annotated[int, typer.Option(metavar="N", help="Characters per backpropagation window, >= 1.")]
Lr = Annotated[
    float | None,
    typer.Option(
        metavar="X",
        help="Peak learning rate of AdamW, > 0. Default: 0.006 at 256 units, less when wider, "
        "up to a third more with dropout.",
    ),
]
WeightDecay = Annotated[float, typer.Option(metavar="X", help="AdamW weight decay on matrices, >= 0.")]
WarmupSteps = Annotated[int, typer.Option(metavar="N", help="Steps of linear learning-rate warm-up, >= 0.")]
Clip = Annotated[float, typer.Option(metavar="X", help="Gradient-norm clipping threshold, >= 0; 0 disables.")]
Epochs = Annotated[
    float | None, typer.Option(metavar="X", help="Stop after this many passes over the text, > 0.")
]
MaxSteps = Annotated[
    int | None, typer.Option(metavar="N", help="Stop after this many optimiser steps, >= 1.")
]
MaxTime = Annotated[
    str | None,
    typer.Option(
        metavar="DURATION",
        help="Stop after this much training time: seconds or 90s, 3m, 1h. "
        f"With no limit at all: {TrainConfig().max_time:.0f}s.",
    ),
]
EvalEvery = Annotated[int, typer.Option(metavar="N", help="Validate every this many steps, >= 1.")]
Patience = Annotated[
    int,
    typer.Option(metavar="N", help="Stop after this many validations in a row without a new best; 0: never."),
]
SaveEvery = Annotated[int, typer.Option(metavar="N", help="Steps between resumable checkpoints, >= 1.")]
ValFraction = Annotated[float, typer.Option(metavar="X", help="Last fraction of the text held out, (0, 1).")]
EvalChars = Annotated[
    int, typer.Option(metavar="N", help="Validate on at most this many held-out characters, >= 2.")
]
Seed = Annotated[
    int | None,
    typer.Option(
        metavar="N", help="Random seed, for a reproducible run, >= 0. Default: a random one, recorded."
    ),
]
Device = Annotated[str, typer.Option(metavar="CHOICE", help="auto, cpu, cuda or mps.")]
Precision = Annotated[
    str,
    typer.Option(
        metavar="CHOICE",
        help="fp32, or bf16 arithmetic on fp32 weights; auto: bf16 on a CPU that has it, else fp32.",
    ),
]
Encoding = Annotated[
    str,
    typer.Option(
        metavar="ENCODING",
        help="The corpus file's encoding: a Python codec name (utf-8, latin-1, cp1252, utf-16...).",
    ),
]
Errors = Annotated[
    str,
    typer.Option(
        metavar="CHOICE", help="strict: an undecodable byte is an error; replace: it becomes U+FFFD."
    ),
]
Normalize = Annotated[str, typer.Option(metavar="CHOICE", help="Unicode normalisation: nfc, nfkc or none.")]
Newlines = Annotated[
    str,
    typer.Option(metavar="CHOICE", help="lf: read a Windows line break (CR LF) as LF; keep: as in the file."),
]
Lowercase = Annotated[
    bool, typer.Option(help="Lowercase the text (Python's rules: not Turkish-aware, I -> i).")
]
Preset = Annotated[
    str | None,
    typer.Option(metavar="CHOICE", help="d2l: the d2l book's preprocessing (letters only, lowercase)."),
]
Tokenizer = Annotated[
    str, typer.Option(metavar="CHOICE", help="chars (Unicode code points) or bytes (UTF-8 bytes).")
]
MinCount = Annotated[
    int, typer.Option(metavar="N", help="Characters seen fewer times become the unknown symbol, >= 1.")
]


def _separator(value: str | None) -> str | None:
    """`\\n` and `\\t` typed on a command line stand for a line break and a tab."""
    return None if value is None else value.replace("\\n", "\n").replace("\\t", "\t")


Items = Annotated[
    str | None,
    typer.Option(
        metavar="MODE",
        help="Train on a list: `lines` (each non-empty line an item), `files` (each file of a directory "
        "or of several files an item), `paragraphs` (items between blank lines), or any other "
        "separator string (\\\\n for a line break), such as `<|endoftext|>`. Each item is read "
        "from a fresh state and ends with an end-of-item symbol; 10% of the items, at random, "
        "are held out.",
        callback=_separator,
    ),
]


# sample and eval
RunToSample = Annotated[
    Path, typer.Option("--model", metavar="RUN_DIR", help="Run directory to sample from.")
]
Prefix = Annotated[
    str,
    typer.Option(
        metavar="TEXT", help="Text to continue; printed first. - reads it from standard input (UTF-8)."
    ),
]
PrefixFile = Annotated[
    Path | None,
    typer.Option(
        metavar="FILE",
        help="Read the prefix from this UTF-8 text file instead, exactly (a final line break included).",
    ),
]
Length = Annotated[
    int, typer.Option(metavar="N", help="Characters to generate (bytes, for a byte run), >= 0.")
]
Temperature = Annotated[
    float, typer.Option(metavar="X", help="Randomness, 0-1000; 0 is greedy, 1 the model's own.")
]
TopK = Annotated[int | None, typer.Option(metavar="N", help="Sample among the k likeliest characters, >= 1.")]
TopP = Annotated[
    float, typer.Option(metavar="X", help="Sample from the smallest set holding this probability, (0, 1].")
]
SampleSeed = Annotated[
    int | None, typer.Option(metavar="N", help="Random seed, >= 0; the same seed gives the same text.")
]
NumSamples = Annotated[
    int, typer.Option(metavar="N", help="Independent samples, generated as one batch, >= 1.")
]
PrefixUnknown = Annotated[
    str,
    typer.Option(
        metavar="CHOICE",
        help="A character of the prefix (or --adapt-on text) the model never saw: error, replace or skip.",
    ),
]
ItemCount = Annotated[
    int | None,
    typer.Option(
        "--items",
        metavar="N",
        help="For a run trained on a list: generate this many whole items, one per line (items with line "
        f"breaks inside: a blank line between them), >= 1. Default for such a run: {ITEM_COUNT}.",
        show_default=False,
    ),
]
NewItems = Annotated[
    bool,
    typer.Option(
        "--new",
        help="With --items: only items the training list does not have, none twice; generates more "
        "until there are enough, and reports on stderr the share of generated items that were new.",
    ),
]
MaxLength = Annotated[
    int,
    typer.Option(
        metavar="N",
        help=f"With --items: cut an item off after this many characters, >= 1. Default: {LINE_LENGTH:,} for "
        f"a list of lines, {DOCUMENT_LENGTH:,} for files, paragraphs or separated items.",
        show_default=False,
    ),
]
ItemsJson = Annotated[
    bool,
    typer.Option(
        "--json",
        help="With --items: one JSON object per item: text, logprob (nats), chars, bpc, ended (false: "
        "cut off at --max-length).",
    ),
]
Stop = Annotated[
    str | None,
    typer.Option(
        metavar="TEXT",
        help="End each sample just before this text first appears in what is generated (the prefix "
        "is not searched); the stop text itself is not printed. Default: none, --length characters.",
    ),
]
Novelty = Annotated[
    bool, typer.Option(help="Report on stderr how much of the sample occurs verbatim in the training text.")
]
TextFile = Annotated[
    Path | None,
    typer.Argument(
        metavar="TEXT_FILE",
        help="Text file, or a directory (its files read as one text, joined by a line break), or a named "
        "corpus; a list's run reads it as its list. Default: the run's validation split.",
    ),
]
RunToEvaluate = Annotated[Path, typer.Option("--model", metavar="RUN_DIR", help="Run directory to evaluate.")]
RunToScore = Annotated[Path, typer.Option("--model", metavar="RUN_DIR", help="Run directory to score with.")]
FileToScore = Annotated[
    Path,
    typer.Argument(
        metavar="TEXT_FILE",
        help="Text file, or a directory (its files read as one text, joined by a line break), or a named "
        "corpus, as `chargen eval` reads it; scored line by line (a list's run: item by item).",
    ),
]
AsJson = Annotated[bool, typer.Option("--json", help="Print one JSON object instead of a table.")]
TextUnknown = Annotated[
    str,
    typer.Option(metavar="CHOICE", help="Characters the model never saw: error, replace (counted) or skip."),
]
TextEncoding = Annotated[
    str | None, typer.Option(metavar="ENCODING", help="The text file's encoding. Default: the run's.")
]
TextErrors = Annotated[
    str | None, typer.Option(metavar="CHOICE", help="strict or replace. Default: the run's.")
]
AdaptOnEncoding = Annotated[
    str | None,
    typer.Option(metavar="ENCODING", help="With --adapt-on: that file's encoding. Default: the run's."),
]
AdaptOnErrors = Annotated[
    str | None, typer.Option(metavar="CHOICE", help="With --adapt-on: strict or replace. Default: the run's.")
]


# dynamic evaluation (eval --adapt, sample --adapt-on); each option named after its AdaptConfig field
Adapt = Annotated[
    bool,
    typer.Option(
        "--adapt",
        help="Also score the text with dynamic evaluation (Krause et al., 2018): the model takes a "
        "gradient step on each segment once it is scored, adapting to the text as it reads. "
        "Reports both figures and their times.",
    ),
]
AdaptOn = Annotated[
    Path | None,
    typer.Option(
        metavar="FILE",
        help="Read this text file with dynamic evaluation first, then continue from its end with the "
        "adapted model; reports on stderr the loss on its last 10% before and after adapting on the rest.",
    ),
]
AdaptLr = Annotated[
    float,
    typer.Option(
        "--adapt-lr",
        metavar="X",
        help="Dynamic evaluation's step size, in units of each weight's training RMS gradient, >= 0 "
        "(0: no adapting).",
    ),
]
AdaptDecay = Annotated[
    float,
    typer.Option(
        "--adapt-decay", metavar="X", help="Pull back towards the trained weights at each step, [0, 1]."
    ),
]
AdaptSegment = Annotated[
    int,
    typer.Option(
        "--adapt-segment", metavar="N", help="Characters scored between two steps of adapting, >= 1."
    ),
]
ADAPT_FIELDS = ("lr", "decay", "segment")


def adapt_config(ctx: typer.Context, switch: str, on: bool, also: tuple[str, ...] = ()) -> AdaptConfig:
    """The AdaptConfig the options describe; refused where one is given without the option (`switch`)
    that turns dynamic evaluation on, as are the options `also` names (how its file is read, say)."""
    config = build(AdaptConfig, ctx.params)
    if not on:
        typed = [name for name in (*ADAPT_FIELDS, *also) if _from_command_line(ctx, name)]
        if typed:
            raise ConfigError(f"`{typed[0]}` works only with `{switch}`", typed[0])
    return config


def build(cls: type[T], options: dict[str, Any]) -> T:
    """A config from the options named after its fields; a field with no option keeps its default."""
    names = {field.name for field in dataclasses.fields(cls)}  # type: ignore[arg-type]
    return cls(**{name: value for name, value in options.items() if name in names})


def configs(options: dict[str, Any]) -> tuple[ModelConfig, TrainConfig, TextConfig]:
    """The model, training and text configs a command's options describe."""
    return build(ModelConfig, options), build(TrainConfig, options), build(TextConfig, options)


def given(ctx: typer.Context, leave_out: tuple[str, ...]) -> dict[str, Any]:
    """The options typed on the command line (not defaults), by field name."""
    return {
        name: value
        for name, value in ctx.params.items()
        if name not in leave_out and _from_command_line(ctx, name)
    }


def _from_command_line(ctx: typer.Context, name: str) -> bool:
    source = ctx.get_parameter_source(name)
    return source is not None and source.name == "COMMANDLINE"
