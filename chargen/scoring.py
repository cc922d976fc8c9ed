"""Scoring a text unit by unit (line by line): how well a model predicts each unit, reading the
whole text with its state carried across it, as `evaluate_ids` does; and a list item by item, each
from a fresh state, as `evaluate_items` does. Knows nothing about the terminal.

A unit is a piece of the text with its separator (a line and its line break), so the units' symbols
add up to the text's. The text's first symbol has nothing before it to be predicted from and is
not scored, as in evaluate_ids: the first unit counts one symbol fewer. So the units' summed
log-probability over their summed symbols is the mean loss evaluate_ids reports, computed with the
same streams and warm-up.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from chargen.checkpoint import load_model_weights, load_run
from chargen.config import UNKNOWN_POLICIES, TextConfig
from chargen.corpus import Source, end_id, resolve_paths
from chargen.device import autocast_to, resolve_device, resolve_precision
from chargen.errors import ConfigError
from chargen.evaluate import LossStats, _stream_layout, item_losses, scored_chars
from chargen.items import ItemSpans, text_pieces
from chargen.model import CharRNN
from chargen.runs import reading_config, text_ids
from chargen.text import Preparer
from chargen.vocab import Tokenizer, drops_unknown


@dataclass
class UnitScore:
    text: str  # the unit as read, without its line break
    chars: int  # symbols scored: its characters (bytes in a bytes run) and line break; 0 or more
    logprob: float  # natural log-probability the model gave those symbols, summed; <= 0

    @property
    def bpc(self) -> float | None:
        """Bits per character; None where nothing was scored."""
        return -self.logprob / self.chars / math.log(2) if self.chars else None

    def to_dict(self) -> dict[str, str | int | float | None]:
        return {"text": self.text, "chars": self.chars, "logprob": self.logprob, "bpc": self.bpc}


@dataclass
class Scores:
    units: Sequence[str]  # the units as given, separators included
    chars: np.ndarray  # (U,) symbols scored in each unit
    logprobs: np.ndarray  # (U,) summed natural log-probability of each unit, float64
    unknown: int = 0  # characters outside the vocabulary (replaced or skipped before scoring)
    seconds: float = 0.0  # time taken to compute them
    unit: str = "line"  # what a unit is: a line of a text, or an item of a list
    # A text's (score_units): the ids scored, in order (all but the first), and the log-probability
    # of each; a list's leave them out (see score_items).
    symbols: np.ndarray | None = None  # (N,) ids
    symbol_logprobs: np.ndarray | None = None  # (N,) float32

    def __len__(self) -> int:
        return len(self.units)

    def __iter__(self) -> Iterator[UnitScore]:
        """Each unit's score, made as it is asked for (a long text's are never all built at once)."""
        for unit, chars, logprob in zip(self.units, self.chars.tolist(), self.logprobs.tolist(), strict=True):
            yield UnitScore(_without_line_break(unit), chars, logprob)

    @property
    def stats(self) -> LossStats:
        """The whole text's figures, as evaluate_ids gives them."""
        chars = int(self.chars.sum())
        loss = -float(self.logprobs.sum()) / chars
        return LossStats(chars=chars, loss=loss, seconds=self.seconds, unknown=self.unknown)


def _without_line_break(unit: str) -> str:
    return unit[:-1].removesuffix("\r") if unit.endswith("\n") else unit


@torch.inference_mode()
def position_logprobs(
    model: CharRNN,
    ids: np.ndarray,
    device: torch.device | str = "cpu",
    autocast: torch.dtype | None = None,
    max_streams: int = 64,
    warmup: int = 256,
    window: int = 512,
) -> np.ndarray:
    """The log-probability of ids[t + 1] given ids[: t + 1], for every t: (len(ids) - 1,) float32.

    The text is read in evaluate_ids' streams, each warmed on the characters before its part, so
    that the mean of these is evaluate_ids' loss (negated) to within rounding.
    """
    n = scored_chars(ids, "score")
    streams = max(1, min(max_streams, n // (8 * warmup)))  # as evaluate_ids chooses them
    pos, scored = _stream_layout(n, streams, warmup)  # (L, S) each
    ids64 = ids.astype(np.int64, copy=False)
    inputs = torch.from_numpy(ids64[np.minimum(pos, n - 1)]).to(device)  # (L, S)
    targets = torch.from_numpy(ids64[np.minimum(pos + 1, n)]).to(device)  # (L, S)
    read = np.empty(pos.shape, dtype=np.float32)  # (L, S)
    was_training = model.training
    model.eval()
    state = None
    for t in range(0, inputs.shape[0], window):
        with autocast_to(autocast, torch.device(device).type):
            logits, state = model(inputs[t : t + window], state)  # (T, S, V)
        logp = logits.float().log_softmax(dim=-1)  # (T, S, V)
        read[t : t + window] = logp.gather(-1, targets[t : t + window, :, None]).squeeze(-1).cpu().numpy()
    model.train(was_training)
    logprobs = np.empty(n, dtype=np.float32)
    logprobs[pos[scored]] = read[scored]  # the scored parts tile [0, n) exactly once
    return logprobs


def _per_unit(logprobs: np.ndarray, ends: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Symbols scored and summed log-probability per unit, for units ending at `ends` (exclusive id
    positions). Id j >= 1 is scored by logprobs[j - 1]; id 0 by nothing."""
    starts = np.concatenate([[0], ends[:-1]])
    first = np.maximum(starts, 1)  # (U,) the first scored id of each unit
    end = np.maximum(ends, first)  # (U,) an empty unit scores nothing
    summed = np.concatenate([[0.0], np.cumsum(logprobs, dtype=np.float64)])  # summed[k]: logprobs[:k]
    return end - first, summed[end - 1] - summed[first - 1]


def score_units(
    model: CharRNN,
    vocab: Tokenizer,
    units: Sequence[str],
    text_config: TextConfig | None = None,
    unknown: str = "error",
    device: torch.device | str = "cpu",
    autocast: torch.dtype | None = None,
    what: str = "unit",
) -> Scores:
    """How well `model` predicts each of `units` (lines with their line breaks, say) in the text
    they make one after another: prepared in order as the training text was (each must end where
    a line break would, see text.Preparer), encoded, read with the state carried, and each
    position's log-probability summed per unit. Characters outside the vocabulary follow `unknown`;
    an error names the unit as `what` and its number from 1."""
    start = time.perf_counter()
    prepare, encoded, n_unknown = Preparer(text_config or TextConfig()), [], 0
    for number, unit in enumerate(units, 1):
        ids, missing = vocab.encode_counting(prepare(unit), what=f"{what} {number}", unknown=unknown)
        encoded.append(ids)
        n_unknown += missing
    ends = np.cumsum([len(ids) for ids in encoded], dtype=np.int64)  # (U,)
    ids = np.concatenate(encoded) if encoded else np.zeros(0, dtype=vocab.dtype)
    scored_chars(ids, "score", left_out=n_unknown if drops_unknown(vocab, unknown) else 0)
    each = position_logprobs(model, ids, device, autocast)  # (N,): ids[1:]'s
    chars, logprobs = _per_unit(each, ends)
    seconds = time.perf_counter() - start
    return Scores(units, chars, logprobs, n_unknown, seconds, symbols=ids[1:], symbol_logprobs=each)


def score_items(
    model: CharRNN,
    vocab: Tokenizer,
    ids: np.ndarray,
    end_id: int,
    device: torch.device | str = "cpu",
    autocast: torch.dtype | None = None,
    unknown: int = 0,
) -> Scores:
    """How well `model` predicts each item of a list (END-delimited ids), each read from a zero
    state as training reads it; an item's symbols count its end, as evaluate_items does."""
    start = time.perf_counter()
    spans = ItemSpans.of(ids, end_id)
    losses = item_losses(model, ids, end_id, device, autocast)
    units = spans.texts(ids, vocab.decode)
    return Scores(units, spans.steps, -losses, unknown, time.perf_counter() - start, unit="item")


def split_lines(text: str) -> list[str]:
    """The units `chargen score` scores in a text: its lines, each with its line break (the last may
    have none). Only "\\n" ends a line, as read_chunks cuts a file (str.splitlines would also cut at
    "\\r", form feeds, U+2028 and others)."""
    parts = text.split("\n")
    return [part + "\n" for part in parts[:-1]] + ([parts[-1]] if parts[-1] else [])


def read_lines(source: Source, config: TextConfig | None = None, what: str = "text") -> list[str]:
    """The lines of the text `source` names, as split_lines gives them, decoded as `config` says but
    not prepared. The text is the one load_corpus reads: a file, a directory's files or several
    files joined by a line break, or a named corpus; its errors for a missing, empty or undecodable
    file."""
    paths, _, _ = resolve_paths(source, what=what)
    lines: list[str] = []
    for piece in text_pieces(paths, config or TextConfig(), what):
        if lines and not lines[-1].endswith("\n"):
            piece = lines.pop() + piece  # a line a chunk cut short goes on in the next
        lines.extend(split_lines(piece))
    return lines


def score_run(
    run_dir: Path | str,
    text_file: Path | str,
    device: str = "auto",
    unknown: str = "error",
    encoding: str | None = None,
    errors: str | None = None,
) -> Scores:
    """A run's best model on each line of `text_file`, read and prepared as the training text was
    (`encoding` and `errors` may differ), with `unknown` as evaluate_run takes it. `text_file` is
    what evaluate_run reads: a file, a directory (its files joined by a line break, lines numbered
    through them in order) or a named corpus; a list's run reads it as its list."""
    if unknown not in UNKNOWN_POLICIES:
        raise ConfigError(f"`unknown` must be error, replace or skip, not {unknown!r}", "unknown")
    run = load_run(run_dir)
    config = reading_config(run, encoding, errors)
    torch_device = resolve_device(device)
    # The precision the run validated in, as `chargen eval` uses, so that the two agree.
    autocast = resolve_precision(run.train_config.precision, torch_device, recorded=True)
    model = load_model_weights(run, torch_device)
    if config.items is not None:  # a list: item by item, as the run was trained
        ids, n_unknown = text_ids(run, text_file, unknown, encoding, errors, too_short_to="score")
        end = end_id(run.vocab, config)
        assert end is not None
        return score_items(model, run.vocab, ids, end, torch_device, autocast, n_unknown)
    lines = read_lines(text_file, config)
    return score_units(
        model, run.vocab, lines, config, unknown, torch_device, autocast, what=f"text {text_file}: line"
    )
