"""Shared fixtures: small real texts and one tiny trained run, made once per test session."""

from __future__ import annotations

from pathlib import Path

import pytest

from chargen.config import ModelConfig, TrainConfig
from chargen.corpus import Corpus, load_corpus
from chargen.train import TrainSummary, train

SHARED_CORPORA = Path(__file__).resolve().parents[2] / "shared" / "corpora"

# A tiny model that trains in a second or two; big enough to learn something.
TINY_MODEL = ModelConfig(hidden=48, embed=16, layers=2, dropout=0.0)
TINY_TRAIN = TrainConfig(batch_size=8, bptt=32, max_steps=60, eval_every=30, log_every=10, seed=0)


@pytest.fixture(scope="session")
def timemachine() -> Corpus:
    path = SHARED_CORPORA / "timemachine.txt"
    assert path.exists(), f"the shared corpora are expected at {SHARED_CORPORA} (../shared beside the repo)"
    return load_corpus(path)


@pytest.fixture(scope="session")
def tiny_run(timemachine: Corpus, tmp_path_factory: pytest.TempPathFactory) -> TrainSummary:
    """A tiny model trained for 60 steps on the first 40,000 characters of The Time Machine."""
    small = Corpus(name="tm-small", path=timemachine.path, text=timemachine.text[:40_000], sha256="-")
    out = tmp_path_factory.mktemp("runs") / "tiny"
    return train(small, TINY_MODEL, TINY_TRAIN, out=out)
