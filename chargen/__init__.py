"""chargen: character-level RNN language models you train, sample and evaluate from the command line.

The library API, importable without the CLI:

    from chargen import load_corpus, ModelConfig, TrainConfig, train
    summary = train(load_corpus("corpus.txt"), ModelConfig(), TrainConfig(max_time=60))

Modules that need torch are imported on first use, so `import chargen` stays light.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "ChargenError": "chargen.errors",
    "ModelConfig": "chargen.config",
    "TrainConfig": "chargen.config",
    "SampleConfig": "chargen.config",
    "Vocab": "chargen.vocab",
    "load_corpus": "chargen.corpus",
    "CharRNN": "chargen.model",
    "train": "chargen.train",
    "evaluate_ids": "chargen.evaluate",
    "sample_batch": "chargen.sample",
    "sample_stream": "chargen.sample",
    "load_run": "chargen.checkpoint",
    "load_model_weights": "chargen.checkpoint",
}
__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'chargen' has no attribute {name!r}")
