"""What the commands do with a finished run and a text: its loss on a file or on its own validation
split, and how much of a sample it recites from the training text it read. Knows nothing about
training.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np

from chargen.checkpoint import Run, load_model_weights, load_run
from chargen.config import UNKNOWN_POLICIES
from chargen.corpus import end_id, load_corpus
from chargen.data import split_ids
from chargen.device import resolve_device, resolve_precision
from chargen.errors import ChargenError, ConfigError, RunError
from chargen.evaluate import LossStats, evaluate_text
from chargen.gradients import gradient_decay, require_positive, text_windows
from chargen.items import ItemSpans, split_items
from chargen.novelty import NgramIndex
from chargen.vocab import Tokenizer


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
    if unknown not in UNKNOWN_POLICIES:
        raise ConfigError(f"`unknown` must be error, replace or skip, not {unknown!r}", "unknown")
    run = load_run(run_dir)
    torch_device = resolve_device(device)
    n_unknown = 0
    if text_file is None:
        ids = run.validation_ids()
    else:
        config = replace(
            run.text_config,
            encoding=encoding or run.text_config.encoding,
            errors=errors or run.text_config.errors,
        )
        corpus = load_corpus(text_file, config, vocab=run.vocab, unknown=unknown, cache=False, what="text")
        ids, n_unknown = corpus.ids, corpus.unknown
    # The precision the run validated in, so this figure matches the one it recorded.
    autocast = resolve_precision(run.train_config.precision, torch_device)
    model = load_model_weights(run, torch_device)
    stats = evaluate_text(model, ids, end_id(run.vocab, run.text_config), torch_device, autocast)
    return replace(stats, unknown=n_unknown)


def _corpus_ids(run: Run) -> np.ndarray:
    """The ids of the whole text a run read, from the corpus file it records (cached)."""
    path = run.info.corpus.source()
    try:
        return load_corpus(path, run.text_config, vocab=run.vocab, unknown="replace").ids
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
    spans = ItemSpans.of(ids, end)
    return {
        run.vocab.decode(ids[s:e]) for s, e in zip(spans.starts.tolist(), spans.ends.tolist(), strict=True)
    }


def novelty_index(run: Run) -> NgramIndex:
    """The n-grams of the run's training text, to tell text the model recites from text it makes."""
    return NgramIndex(training_ids(run))


def verbatim_shares(index: NgramIndex, vocab: Tokenizer, texts: list[str]) -> list[float]:
    """For each text long enough to hold an n-gram, the share of its n-grams the training text has."""
    shares = (index.verbatim_fraction(vocab.encode(text, unknown="skip")) for text in texts)
    return [share for share in shares if share is not None]


def run_gradient_decay(run_dir: Path | str, steps: int, streams: int) -> tuple[Run, np.ndarray]:
    """gradient_decay of a run's best model on windows of its validation text; the run too."""
    require_positive(steps, streams)
    run = load_run(run_dir)
    model = load_model_weights(run)
    try:
        window = text_windows(run.validation_ids(), steps, streams)
    except ValueError as error:
        raise ConfigError(f"`steps={steps}`: {error}", "steps") from None
    return run, gradient_decay(model, window)
