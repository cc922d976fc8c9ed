"""What the commands do with a finished run and a text: its loss on a file or on its own validation
split, with or without dynamic evaluation, a model adapted to a file to sample from, and how much
of a sample it recites from the training text it read. Knows nothing about training.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from chargen.adapt import DynamicEvaluator, GradientScale, gradient_scale, score_ids
from chargen.checkpoint import Run, load_model_weights, load_run
from chargen.config import UNKNOWN_POLICIES, AdaptConfig, TextConfig
from chargen.corpus import end_id, load_corpus
from chargen.data import split_ids
from chargen.device import resolve_device, resolve_precision
from chargen.errors import ChargenError, ConfigError, CorpusError, RunError
from chargen.evaluate import LossStats, evaluate_text, has_left, scored_chars
from chargen.gradients import gradient_decay, require_positive, text_windows
from chargen.items import ItemSpans, split_items
from chargen.model import CharRNN
from chargen.novelty import NgramIndex
from chargen.sample import Continuation
from chargen.vocab import Tokenizer, drops_unknown


def evaluate_run(
    run_dir: Path | str,
    text_file: Path | str | None = None,
    device: str = "auto",
    unknown: str = "error",
    encoding: str | None = None,
    errors: str | None = None,
) -> LossStats:
    """A run's best model on `text_file`, or on the run's own validation split when it is None.

    The file is read and prepared as the training text was (`encoding` and `errors` may differ);
    characters outside the vocabulary follow `unknown` and are counted in the result.
    """
    run = load_run(run_dir)
    torch_device = resolve_device(device)
    ids, n_unknown = text_ids(run, text_file, unknown, encoding, errors, too_short_to="evaluate")
    # The precision the run validated in, so this figure matches the one it recorded.
    autocast = resolve_precision(run.train_config.precision, torch_device, recorded=True)
    model = load_model_weights(run, torch_device)
    stats = evaluate_text(model, ids, end_id(run.vocab, run.text_config), torch_device, autocast)
    return replace(stats, unknown=n_unknown)


def text_ids(
    run: Run,
    text_file: Path | str | None,
    unknown: str,
    encoding: str | None = None,
    errors: str | None = None,
    too_short_to: str | None = None,
) -> tuple[np.ndarray, int]:
    """The ids of `text_file` read as the run read its training text (`encoding` and `errors` may
    differ), or of the run's validation split when it is None; and how many characters were unknown.
    `too_short_to` ("evaluate", "score"): refused, saying so, when too few are left for that (see
    scored_chars)."""
    if unknown not in UNKNOWN_POLICIES:
        raise ConfigError(f"`unknown` must be error, replace or skip, not {unknown!r}", "unknown")
    if text_file is None:
        return run.validation_ids(), 0
    config = reading_config(run, encoding, errors)
    corpus = load_corpus(text_file, config, vocab=run.vocab, unknown=unknown, cache=False, what="text")
    if too_short_to is not None:
        left_out = corpus.unknown if drops_unknown(run.vocab, unknown) else 0
        listed = config.items is not None
        scored_chars(corpus.ids, too_short_to, f"text {text_file}", left_out, listed)
    return corpus.ids, corpus.unknown


def reading_config(run: Run, encoding: str | None, errors: str | None) -> TextConfig:
    """How a text the run is asked about is read: as its training text was, with `encoding` and
    `errors` in place of its own where given."""
    return replace(
        run.text_config,
        encoding=encoding or run.text_config.encoding,
        errors=errors or run.text_config.errors,
    )


# --- dynamic evaluation (adapt.py) ---------------------------------------------------------------


def require_one_text(run: Run) -> None:
    if run.text_config.items is not None:
        raise RunError(
            f"{run.path} was trained on a list of items; dynamic evaluation reads one text with the "
            "state carried, so it needs a run trained on a text"
        )


def run_gradient_scale(
    run: Run,
    model: CharRNN,
    config: AdaptConfig,
    device: torch.device,
    autocast: torch.dtype | None,
    validation_free: bool = True,
) -> tuple[GradientScale, str]:
    """The gradient scale dynamic evaluation steps in, and the text it was measured on: the run's
    training text, read again from its corpus file, as Krause et al. measure it. Where that file is
    gone, the run's validation split stands in, unless that split is the text being evaluated
    (`validation_free` false), since a score must not draw on the text it scores."""
    try:
        ids, source = training_ids(run), "training text"
    except RunError as err:
        if not validation_free:
            raise RunError(
                f"{err}; dynamic evaluation measures its gradient scale on it, so without it give "
                "a text file to evaluate on"
            ) from err
        ids, source = run.validation_ids(), "validation split"
    return gradient_scale(model, ids, config, device, autocast), source


@dataclass
class AdaptedEvaluation:
    """A text's loss read statically and with dynamic evaluation, both as one sequential stream."""

    static: LossStats
    adapted: LossStats
    config: AdaptConfig
    scale_source: str  # the text the gradient scale was measured on
    scale_seconds: float

    def to_dict(self) -> dict[str, Any]:
        a = self.adapted
        return {
            **self.static.to_dict(),
            "seconds": self.static.seconds,
            "adapted_loss": a.loss,
            "adapted_perplexity": a.json_perplexity,
            "adapted_bpc": a.bpc,
            "adapt_seconds": a.seconds,
            "scale_seconds": self.scale_seconds,
            "scale_from": self.scale_source,
            "adapt_lr": self.config.lr,
            "adapt_decay": self.config.decay,
            "adapt_segment": self.config.segment,
        }


def evaluate_run_adapted(
    run_dir: Path | str,
    text_file: Path | str | None,
    config: AdaptConfig,
    device: str = "auto",
    unknown: str = "error",
    encoding: str | None = None,
    errors: str | None = None,
) -> AdaptedEvaluation:
    """evaluate_run's text read twice as one sequential stream: with the run's best model as it
    is, then with dynamic evaluation (adapt.py)."""
    run = load_run(run_dir)
    require_one_text(run)
    torch_device = resolve_device(device)
    # Too short a text is refused here, before the gradient scale is measured, not after.
    ids, n_unknown = text_ids(run, text_file, unknown, encoding, errors, too_short_to="evaluate")
    require_adaptable(len(ids) - 1, config, f"text {text_file}" if text_file else "the validation split")
    autocast = resolve_precision(run.train_config.precision, torch_device, recorded=True)
    model = load_model_weights(run, torch_device)
    scale, source = run_gradient_scale(run, model, config, torch_device, autocast, text_file is not None)
    # The static reading takes the segments as its windows: the arithmetic dynamic evaluation
    # does before its first step, so the two differ by the adaptation alone.
    static = score_ids(model, ids, torch_device, autocast, window=config.segment).stats()
    adapted = DynamicEvaluator(model, scale, config, torch_device, autocast).read(ids).stats()
    return AdaptedEvaluation(
        replace(static, unknown=n_unknown), replace(adapted, unknown=n_unknown), config, source, scale.seconds
    )


def require_adaptable(scored: int, config: AdaptConfig, what: str) -> None:
    """Refuses a text with no more characters to score than one segment: dynamic evaluation steps
    only once a segment is scored, so its one step would come after the last character and the
    adapted figures would be the static ones, after measuring a gradient scale for nothing."""
    if scored <= config.segment:
        fix = (
            f"lower `segment` below {scored:,} or give a longer text" if scored > 1 else "give a longer text"
        )
        raise ConfigError(
            f"{what} has {scored:,} character(s) to score, no more than one `segment` ({config.segment:,}), "
            f"so the model would adapt only after the text ends and the adapted figures would be the "
            f"static ones; {fix}",
            "segment",
        )


HELD_OUT = 0.1  # the last part of a text to adapt on that measures whether adapting helped


@dataclass
class FileAdaptation:
    """A model adapted to a text, where it left off, and what adapting did on the text's held-out end."""

    model: CharRNN  # adapted on the whole text
    after: Continuation  # the state at the text's end, to sample on from
    chars: int  # characters of the text
    static: LossStats  # the run's model on the held-out end, the state carried from the start
    adapted: LossStats  # the model adapted on the rest, frozen, on the same characters
    scale_source: str
    seconds: float  # reading, adapting and measuring, the gradient scale included


def adapt_run_on(
    run: Run,
    model: CharRNN,
    text_file: Path | str,
    config: AdaptConfig,
    device: torch.device,
    unknown: str,
    encoding: str | None = None,
    errors: str | None = None,
) -> FileAdaptation:
    """`model` (the run's) adapted by reading `text_file` with dynamic evaluation. To show whether
    it helped, the text's last HELD_OUT is scored twice with the state carried from the start: by
    the model as trained, and by the model adapted on the text before it, frozen. Then adapting
    goes on over that end too, so sampling continues from the whole text's end."""
    require_one_text(run)
    ids, unseen = text_ids(run, text_file, unknown, encoding, errors)
    if len(ids) < 20:
        left_out = unseen if drops_unknown(run.vocab, unknown) else 0
        raise CorpusError(
            f"text {text_file} {has_left(f'{len(ids):,} character(s)', left_out)}; adapting on it needs "
            "at least 20, so that its last tenth can show whether adapting helped"
        )
    autocast = resolve_precision(run.train_config.precision, device, recorded=True)
    scale, source = run_gradient_scale(run, model, config, device, autocast)
    cut = len(ids) - max(2, round(len(ids) * HELD_OUT))  # the held-out end: targets cut..N-1
    head, tail = ids[:cut], ids[cut - 1 :]  # tail starts with the input that predicts ids[cut]
    parent = score_ids(model, head, device, autocast, window=config.segment)
    static = score_ids(model, tail, device, autocast, parent.state, config.segment)
    evaluator = DynamicEvaluator(model, scale, config, device, autocast)
    read = evaluator.read(head)
    adapted = evaluator.score(tail, read.state)
    rest = evaluator.read(tail, read.state)  # learning from the held-out end too, now that it is scored
    seconds = scale.seconds + parent.seconds + static.seconds + read.seconds + adapted.seconds + rest.seconds
    after = Continuation(rest.state, int(ids[-1]))
    return FileAdaptation(evaluator.model, after, len(ids), static.stats(), adapted.stats(), source, seconds)


def _corpus_ids(run: Run) -> np.ndarray:
    """The ids of the whole text a run read, from the corpus file it records (cached), as long as
    that file still holds what the run read: an edited one would hand its held-out part, or
    another text, to what asks for the training text."""
    record = run.info.corpus
    try:
        return load_corpus(
            record.source(), run.text_config, vocab=run.vocab, unknown="replace", sha256=record.sha256
        ).ids
    except ChargenError as err:
        raise RunError(f"the training text of {run.path} is not available ({err})") from err


def training_ids(run: Run) -> np.ndarray:
    """The ids of a run's training split, read again from the corpus file it records (cached)."""
    ids = _corpus_ids(run)
    end = end_id(run.vocab, run.text_config)
    if end is not None:
        return split_items(ids, end, run.train_config.val_fraction)[0]
    return split_ids(ids, run.train_config.val_fraction)[0]


def listed_items(run: Run) -> set[str]:
    """Every item of the list a run was trained on, held-out ones included."""
    end = end_id(run.vocab, run.text_config)
    if end is None:
        raise RunError(f"{run.path} was trained on one text, not on a list of items")
    ids = _corpus_ids(run)
    return set(ItemSpans.of(ids, end).texts(ids, run.vocab.decode))


def novelty_index(run: Run) -> NgramIndex:
    """The n-grams of the run's training text, to tell text the model recites from text it makes."""
    return NgramIndex(training_ids(run))


def verbatim_shares(index: NgramIndex, vocab: Tokenizer, texts: list[str]) -> list[float]:
    """For each text long enough to hold an n-gram, the share of its n-grams the training text has."""
    shares = (index.verbatim_fraction(vocab.encode(text, unknown="skip")) for text in texts)
    return [share for share in shares if share is not None]


def run_gradient_decay(run_dir: Path | str, steps: int, streams: int) -> tuple[Run, np.ndarray]:
    """gradient_decay of a run's best model on windows of its validation text; the run too."""
    require_positive(steps, streams)  # before the run is read
    run = load_run(run_dir)
    model = load_model_weights(run)
    window = text_windows(run.validation_ids(), steps, streams, "its validation text")
    return run, gradient_decay(model, window)
