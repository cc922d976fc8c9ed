"""Flat, self-validating configuration for the model, training and sampling. No torch here.

The CLI takes its defaults from these dataclasses, so each default is written once.
"""

from __future__ import annotations

import codecs
import dataclasses
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

from chargen.errors import ConfigError
from chargen.vocab import quoted

CELLS = ("lstm", "gru", "rnn")
NORMALIZATIONS = ("nfc", "nfkc", "none")
NEWLINES = ("lf", "keep")
TOKENIZERS = ("chars", "bytes")
PRESETS = ("d2l",)
ERROR_POLICIES = ("strict", "replace")
UNKNOWN_POLICIES = ("error", "replace", "skip")
DEVICES = ("auto", "cpu", "cuda", "mps")
PRECISIONS = ("auto", "fp32", "bf16")
# Model sizes for --size, smallest first: (layers, units per layer). `auto` chooses among them.
SIZES = {"small": (2, 256), "medium": (2, 384), "large": (2, 512)}
# Sampling temperatures above this are refused: at 1000 a character model's choices are already as
# good as uniform, and far beyond it the noise times the temperature overflows float32 (1e39: inf).
MAX_TEMPERATURE = 1000.0
DEFAULT_TIME_BUDGET = 120.0  # seconds of training when no limit at all is given
# Sampling a run trained on a list, unless asked otherwise (`chargen sample --items` and the server's
# generate alike): this many items, each cut off after this many characters, its prefix counted. A
# line is short; a file or a paragraph may be a page.
ITEM_COUNT = 10
LINE_LENGTH, DOCUMENT_LENGTH = 200, 4000


def _require(condition: bool, field: str, message: str) -> None:
    if not condition:
        raise ConfigError(f"`{field}` {message}", field)


def require_characters(text: str, field: str) -> None:
    """Refuse a `text` holding a lone surrogate (U+D800-U+DFFF), which is half of a UTF-16 pair and
    no character: Python makes one of each byte of a command line that is not UTF-8, and JSON of a
    \\ud83d escape without its other half. No model has seen one, and none can be written as UTF-8."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as err:
        raise ConfigError(
            f"`{field}` holds U+{ord(text[err.start]):04X}, half of a surrogate pair and no character "
            "(bytes that are not UTF-8, or a \\u escape without its other half); give it as UTF-8",
            field,
        ) from None


# Seeds torch, numpy and Python all take: non-negative and under 2**63 (numpy refuses -1, torch 2**64).
MAX_SEED = 2**63 - 1


def _require_finite_numbers(config: object) -> None:
    """Every number of a config is finite: inf and nan are never a setting (an inf learning rate
    trained to NaN before anything said so), and each field's own check below may assume it."""
    for field in dataclasses.fields(config):  # type: ignore[arg-type]
        value = getattr(config, field.name)
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"`{field.name}` must be a finite number, not {value}", field.name)


def _require_seed(seed: int | None) -> None:
    _require(seed is None or 0 <= seed <= MAX_SEED, "seed", f"must be in 0-{MAX_SEED}, not {seed}")


def parse_duration(value: str | float | int | None, field: str = "max_time") -> float | None:
    """Seconds from `90`, `90s`, `3m`, `1.5h` or `1h30m`; None stays None. Errors name `field`."""
    if value is None or isinstance(value, int | float):
        seconds = value
    else:
        text = value.strip().lower()
        parts = re.fullmatch(r"(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m)?(?:(\d+(?:\.\d+)?)s?)?", text)
        if not text or parts is None:
            raise ConfigError(
                f"`{field}` must be a duration such as 90, 90s, 3m or 1h30m, not {value!r}", field
            )
        hours, minutes, secs = (float(p) if p else 0.0 for p in parts.groups())
        seconds = hours * 3600 + minutes * 60 + secs
    if seconds is not None and seconds <= 0:
        raise ConfigError(f"`{field}` must be a positive duration, not {value!r}", field)
    return seconds


def differing(name: str, given: Any, recorded: Any, whose: str) -> str:
    """A setting given that differs from a run's, as a message names it: the setting with the value
    given (errors.py), then what `whose` ("the parent", "the run") has in plain words, such as
    "`items='lines'` (the parent has none)" or "`lowercase` (the run has it off)"."""
    shown = quoted(given) if isinstance(given, str) else repr(given)
    setting = f"`{name}`" if given is True else f"`{name}={shown}`"  # a switch given is its flag alone
    if recorded is None:
        had = "none"
    elif isinstance(recorded, bool):
        had = "it on" if recorded else "it off"
    elif isinstance(recorded, str) and not (recorded.isprintable() and recorded == recorded.strip()):
        had = quoted(recorded)  # a separator such as '\n\n': escaped and quoted, not a line break
    else:
        had = str(recorded)
    return f"{setting} ({whose} has {had})"


T = TypeVar("T")


def known_fields(cls: type, data: dict[str, Any]) -> dict[str, Any]:
    """Only the keys `cls` has fields for, so a run written by a newer version with extra keys still loads."""
    names = {f.name for f in dataclasses.fields(cls)}
    return {k: v for k, v in data.items() if k in names}


class _Stored:
    """A config as run.json stores it: one JSON object, its keys the fields."""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)  # type: ignore[call-overload]

    @classmethod
    def from_dict(cls: type[T], data: dict[str, Any]) -> T:
        return cls(**known_fields(cls, data))


@dataclass
class TextConfig(_Stored):
    """How a file becomes the text a vocabulary sees; stored in the run and applied again to every
    prefix and evaluation text."""

    encoding: str = "utf-8"  # the file's encoding (a UTF-8 byte-order mark is always dropped)
    errors: str = "strict"  # strict: a bad byte is an error; replace: it becomes U+FFFD
    normalize: str = "nfc"  # Unicode normalisation: nfc, nfkc or none
    # lf: a Windows line break (CR LF) is read as LF, as Python reads text, so that one text's
    # model reads the other kind; keep: as in the file (every run made before this setting existed).
    newlines: str = "lf"
    lowercase: bool = False  # Python's lowercasing, which is not Turkish-aware ('I' -> 'i', not 'ı')
    preset: str | None = None  # d2l: letters only, lowercased, every other run of characters one space
    tokenizer: str = "chars"  # chars: Unicode code points; bytes: UTF-8 bytes (256 symbols)
    min_count: int = 1  # characters seen fewer times than this become the unknown symbol, >= 1
    items: str | None = None  # a list: lines, files, paragraphs or a separator string; None: one text

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TextConfig:
        """A stored run's; one stored before `newlines` existed read its text as it was, CR LF kept."""
        return cls(**known_fields(cls, {"newlines": "keep", **data}))

    def __post_init__(self) -> None:
        _require_finite_numbers(self)
        try:
            codecs.lookup(self.encoding)
            "".encode(self.encoding)  # a text encoding (str to bytes and back): not rot13 or base64
        except LookupError:
            raise ConfigError(
                f"`encoding` {self.encoding!r} is not a text encoding Python knows", "encoding"
            ) from None
        _require(self.errors in ERROR_POLICIES, "errors", f"must be strict or replace, not {self.errors!r}")
        _require(
            self.normalize in NORMALIZATIONS,
            "normalize",
            f"must be one of {', '.join(NORMALIZATIONS)}, not {self.normalize!r}",
        )
        _require(self.newlines in NEWLINES, "newlines", f"must be lf or keep, not {self.newlines!r}")
        _require(self.preset in (None, *PRESETS), "preset", f"must be d2l, not {self.preset!r}")
        _require(self.tokenizer in TOKENIZERS, "tokenizer", f"must be chars or bytes, not {self.tokenizer!r}")
        _require(self.min_count >= 1, "min_count", f"must be at least 1, not {self.min_count}")
        _require(
            self.items is None or (self.items != "" and "\x00" not in self.items),
            "items",
            "must be lines, files, paragraphs or a separator string (not empty)",
        )
        if self.items is not None:  # a separator is searched for in the text, as `stop` is in a sample
            require_characters(self.items, "items")
        if self.tokenizer == "bytes" and (self.min_count != 1 or self.preset is not None):
            raise ConfigError(
                "`tokenizer='bytes'` has no unknown symbol: "
                "it cannot be combined with `min_count` or `preset`",
                "tokenizer",
            )


@dataclass
class ModelConfig(_Stored):
    cell: str = "lstm"  # recurrent cell: lstm, gru or rnn (tanh)
    vocab_size: int = 0  # number of distinct characters; set from the corpus
    size: str = "auto"  # a name in SIZES, or auto: chosen from the corpus and the budget (recipe.py)
    embed: int = 64  # size of the character embedding, >= 1
    hidden: int | None = None  # units per recurrent layer, >= 1; None: from the size
    layers: int | None = None  # stacked recurrent layers, >= 1; None: from the size
    dropout: float | None = None  # between layers and before the output layer, in [0, 1); None: planned
    tie_weights: bool = False  # share the embedding and output matrices (needs embed == hidden)
    # DropConnect on the recurrent matrices in training, in [0, 1); None: the same as dropout
    weight_drop: float | None = None

    def __post_init__(self) -> None:
        _require_finite_numbers(self)
        _require(self.cell in CELLS, "cell", f"must be one of {', '.join(CELLS)}, not {self.cell!r}")
        sizes = ", ".join(("auto", *SIZES))
        _require(self.size in ("auto", *SIZES), "size", f"must be one of {sizes}, not {self.size!r}")
        _require(self.vocab_size >= 0, "vocab_size", "must not be negative")
        for field, value in (("embed", self.embed), ("hidden", self.hidden), ("layers", self.layers)):
            _require(value is None or value >= 1, field, f"must be at least 1, not {value}")
        dropout = self.dropout
        _require(dropout is None or 0 <= dropout < 1, "dropout", f"must be in [0, 1), not {dropout}")
        drop = self.weight_drop
        _require(drop is None or 0 <= drop < 1, "weight_drop", f"must be in [0, 1), not {drop}")
        _require(
            not self.tie_weights or self.hidden is None or self.embed == self.hidden,
            "tie_weights",
            f"needs `embed` equal to `hidden` (they are {self.embed} and {self.hidden})",
        )

    @property
    def is_resolved(self) -> bool:
        """Whether layers, width and dropout are all decided, as a model needs them."""
        return self.layers is not None and self.hidden is not None and self.dropout is not None

    @property
    def recurrent_drop(self) -> float:
        """The DropConnect rate on the recurrent matrices: `weight_drop`, or else the dropout."""
        assert self.dropout is not None, "the dropout is not decided yet"
        return self.dropout if self.weight_drop is None else self.weight_drop

    @property
    def label(self) -> str:
        """A resolved model in a few characters, for tables: 2x384 d0.25, and w0.1 where a weight
        drop of its own was given."""
        own = f" w{self.weight_drop:g}" if self.weight_drop is not None else ""
        return f"{self.layers}x{self.hidden} d{self.dropout:g}{own}"

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        if data.get("dropout") is not None and "weight_drop" not in data:
            # a run stored before weight_drop existed trained without it, and resumes so
            data = {**data, "weight_drop": 0.0}
        return super().from_dict(data)


@dataclass
class TrainConfig(_Stored):
    batch_size: int | None = None  # parallel streams (or items) per step, >= 1; None: planned (recipe.py)
    bptt: int = 64  # characters per window of truncated backpropagation through time, >= 1
    lr: float | None = None  # peak learning rate of AdamW, > 0; None: planned from the width (recipe.py)
    weight_decay: float = 0.1  # AdamW decoupled weight decay on matrices, >= 0 (docs/recipe.md)
    warmup_steps: int = 50  # linear warm-up of the learning rate, then cosine decay, >= 0
    min_lr_ratio: float = 0.0  # the learning rate decays to lr * this by the end, in [0, 1]
    clip: float = 1.0  # gradient-norm clipping threshold; 0 disables clipping
    epochs: float | None = None  # stop after this many passes over the training split
    max_steps: int | None = None  # stop after this many optimiser steps
    max_time: float | None = None  # stop after this many seconds of training (evaluation excluded)
    eval_every: int = 200  # validate every this many steps (and at the end), >= 1
    patience: int = 10  # stop after this many evaluations in a row without a new best; 0: never
    save_every: int = 200  # write a resumable checkpoint every this many steps (and at each evaluation), >= 1
    log_every: int = 10  # report training loss every this many steps, >= 1
    val_fraction: float = 0.1  # the last fraction of the text held out for validation, in (0, 1)
    eval_chars: int = 250_000  # validate on at most this many held-out characters, >= 2
    state_reset: float = 0.01  # chance per window that a stream's state is zeroed, in [0, 1]
    seed: int | None = None  # random seed; None picks one and records it
    device: str = "auto"  # auto, cpu, cuda or mps
    precision: str = "auto"  # fp32, or bf16 arithmetic on fp32 weights; auto: bf16 on a CPU that has it

    def __post_init__(self) -> None:
        _require_finite_numbers(self)
        _require_seed(self.seed)
        for field in ("batch_size", "bptt", "eval_every", "save_every", "log_every"):
            value = getattr(self, field)
            _require(value is None or value >= 1, field, f"must be at least 1, not {value}")
        _require(
            self.patience >= 0,
            "patience",
            f"must not be negative (0: never stop early), not {self.patience}",
        )
        _require(self.lr is None or self.lr > 0, "lr", f"must be positive, not {self.lr}")
        _require(self.weight_decay >= 0, "weight_decay", f"must not be negative, not {self.weight_decay}")
        _require(self.warmup_steps >= 0, "warmup_steps", f"must not be negative, not {self.warmup_steps}")
        _require(0 <= self.min_lr_ratio <= 1, "min_lr_ratio", f"must be in [0, 1], not {self.min_lr_ratio}")
        _require(self.clip >= 0, "clip", f"must not be negative (0 disables clipping), not {self.clip}")
        _require(self.epochs is None or self.epochs > 0, "epochs", f"must be positive, not {self.epochs}")
        _require(
            self.max_steps is None or self.max_steps >= 1,
            "max_steps",
            f"must be at least 1, not {self.max_steps}",
        )
        self.max_time = parse_duration(self.max_time)
        _require(
            0 < self.val_fraction < 1, "val_fraction", f"must be between 0 and 1, not {self.val_fraction}"
        )
        _require(self.eval_chars >= 2, "eval_chars", f"must be at least 2, not {self.eval_chars}")
        _require(0 <= self.state_reset <= 1, "state_reset", f"must be in [0, 1], not {self.state_reset}")
        _require(
            self.device in DEVICES, "device", f"must be one of {', '.join(DEVICES)}, not {self.device!r}"
        )
        _require(
            self.precision in PRECISIONS,
            "precision",
            f"must be one of {', '.join(PRECISIONS)}, not {self.precision!r}",
        )
        if self.epochs is None and self.max_steps is None and self.max_time is None:
            self.max_time = DEFAULT_TIME_BUDGET

    def limits(self) -> str:
        """Where the run stops, as the commands print it: `steps 40, seconds 60`."""
        given = (("steps", self.max_steps), ("seconds", self.max_time), ("epochs", self.epochs))
        return ", ".join(f"{name} {value:g}" for name, value in given if value is not None)

    def clip_threshold(self) -> float:
        """The gradient norm above which a step is scaled down: `clip`, or for 0 infinity, with
        which clipping only measures the norm."""
        return self.clip if self.clip > 0 else math.inf

    def effective_warmup(self) -> int:
        """The warm-up steps the run takes: `warmup_steps`, but at most a fifth of `max_steps`, so
        that a short run does not spend itself warming up."""
        if self.max_steps:
            return min(self.warmup_steps, max(1, self.max_steps // 5))
        return self.warmup_steps

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        # Runs written before --precision existed computed in fp32, and those written before --patience
        # never stopped early; resuming them must not change that.
        return cls(**{"precision": "fp32", "patience": 0, **known_fields(cls, data)})


def default_max_length(mode: str | None) -> int:
    """The characters a sampled item of a list read in `mode` (TextConfig.items) may have, unless
    asked otherwise."""
    return LINE_LENGTH if mode in (None, "lines") else DOCUMENT_LENGTH


@dataclass
class SampleConfig:
    prefix: str = ""  # text the model continues; it is printed first
    length: int = 500  # characters to generate after the prefix, >= 0
    temperature: float = 0.8  # divides the logits; 0 is greedy (always the likeliest character)
    top_k: int | None = None  # sample only among the k likeliest characters, >= 1
    top_p: float = 1.0  # sample only from the smallest set with this much probability, in (0, 1]
    seed: int | None = None  # the same seed gives the same text
    num_samples: int = 1  # independent samples, generated together as one batch, >= 1
    unknown: str = "error"  # a prefix character the model never saw: error, replace or skip
    max_length: int = LINE_LENGTH  # a list's items are cut off after this many characters, >= 1
    stop: str | None = None  # end each sample just before this text first appears in it; not empty

    def __post_init__(self) -> None:
        _require_finite_numbers(self)
        _require_seed(self.seed)
        for field in ("prefix", "stop"):  # printed, encoded and searched for as text
            if (text := getattr(self, field)) is not None:
                require_characters(text, field)
        _require(self.length >= 0, "length", f"must not be negative, not {self.length}")
        _require(self.max_length >= 1, "max_length", f"must be at least 1, not {self.max_length}")
        _require(
            self.stop is None or self.stop != "",
            "stop",
            "must not be empty; leave it out to generate `length` characters",
        )
        _require(
            0 <= self.temperature <= MAX_TEMPERATURE,
            "temperature",
            f"must be in [0, {MAX_TEMPERATURE:g}] (0 is greedy), not {self.temperature}",
        )
        _require(self.top_k is None or self.top_k >= 1, "top_k", f"must be at least 1, not {self.top_k}")
        _require(0 < self.top_p <= 1, "top_p", f"must be in (0, 1], not {self.top_p}")
        _require(self.num_samples >= 1, "num_samples", f"must be at least 1, not {self.num_samples}")
        _require(
            self.unknown in UNKNOWN_POLICIES,
            "unknown",
            f"must be error, replace or skip, not {self.unknown!r}",
        )


def require_run_kind(
    given: Iterable[str], listed: bool, list_only: Iterable[str], text_only: Iterable[str]
) -> None:
    """Refuse a setting `given` that applies only to the other kind of run, naming it, rather than
    ignore it: one of `list_only` for a run trained on one text, one of `text_only` for a run
    trained on a list (`listed`). Each caller says which of its settings are which."""
    given = set(given)
    for name in text_only if listed else list_only:
        if name in given:
            kinds = ("a text", "a list") if listed else ("a list", "a text")
            raise ConfigError(
                f"`{name}` applies to a run trained on {kinds[0]}, and this one was trained on {kinds[1]}",
                name,
            )


@dataclass
class AdaptConfig:
    """Dynamic evaluation (Krause et al., 2018, "Dynamic Evaluation of Neural Sequence Models"):
    after scoring each segment of a text, one gradient step on it, normalised per parameter by the
    gradients' root mean square on the training text and decaying back towards the trained weights.
    The defaults were tuned on The Time Machine's validation split with a 3-minute model (and then
    reported on tinyshakespeare's: docs/benchmarks.md); `python -m chargen.bench adapt` prints a grid."""

    lr: float = 1e-4  # step size eta, in units of each parameter's training RMS gradient, >= 0; 0: static
    decay: float = 0.003  # pull lambda back to the trained weights per segment, in [0, 1]; 0: none
    segment: int = 50  # characters scored between two updates, >= 1
    epsilon: float = 2e-5  # added to the RMS gradient before dividing by it, > 0
    scale_chars: int = 100_000  # training characters the RMS gradient is measured on, >= 1

    def __post_init__(self) -> None:
        _require_finite_numbers(self)
        _require(self.lr >= 0, "lr", f"must not be negative (0 scores without adapting), not {self.lr}")
        _require(0 <= self.decay <= 1, "decay", f"must be in [0, 1], not {self.decay}")
        _require(self.segment >= 1, "segment", f"must be at least 1, not {self.segment}")
        _require(self.epsilon > 0, "epsilon", f"must be positive, not {self.epsilon}")
        _require(self.scale_chars >= 1, "scale_chars", f"must be at least 1, not {self.scale_chars}")
