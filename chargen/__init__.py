"""chargen: character-level RNN language models you train, sample and evaluate from the command line.

The library API, importable without the CLI:

    from chargen import load_corpus, ModelConfig, TrainConfig, train
    summary = train(load_corpus("notes.txt"), ModelConfig(), TrainConfig(max_steps=100))
    print(summary.run_dir, summary.best.bpc)

Modules that need torch are imported on first use, so `import chargen` stays light.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# No export shares its name with a submodule: importing the submodule would set the package's
# attribute of that name and hide the export (chargen.train is the function; training.py its module).
_EXPORTS = {
    "ChargenError": "chargen.errors",
    "ModelConfig": "chargen.config",
    "TrainConfig": "chargen.config",
    "SampleConfig": "chargen.config",
    "AdaptConfig": "chargen.config",
    "Vocab": "chargen.vocab",
    "load_corpus": "chargen.corpus",
    "CharRNN": "chargen.model",
    "train": "chargen.training",
    "resume": "chargen.training",
    "evaluate_ids": "chargen.evaluate",
    "gradient_scale": "chargen.adapt",
    "dynamic_evaluate": "chargen.adapt",
    "adapt_on": "chargen.adapt",
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
