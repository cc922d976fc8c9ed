"""What the commands do with a finished run and a text: its loss on a file or on its own validation
split, and the training text it read, for the novelty check. Knows nothing about training.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np

from chargen.checkpoint import Run, load_model_weights, load_run
from chargen.corpus import load_corpus
from chargen.data import split_ids
from chargen.device import resolve_device, resolve_precision
from chargen.errors import ChargenError, RunError
from chargen.evaluate import LossStats, evaluate_ids


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
    stats = evaluate_ids(load_model_weights(run, torch_device), ids, torch_device, autocast=autocast)
    return replace(stats, unknown=n_unknown)


def training_ids(run: Run) -> np.ndarray:
    """The ids of a run's training split, read again from the corpus file it records (cached)."""
    path = run.info.corpus.path
    try:
        data = load_corpus(path, run.text_config, vocab=run.vocab, unknown="replace")
    except ChargenError as err:
        raise RunError(f"the training text of {run.path} is not available ({err})") from err
    return split_ids(data.ids, run.train_config.val_fraction)[0]
