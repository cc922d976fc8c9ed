"""Shared fixtures: small real texts and one tiny trained run, made once per test session."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

# Caches and downloads go to a private folder, never the user's own cache.
os.environ["CHARGEN_HOME"] = tempfile.mkdtemp(prefix="chargen-home-")

from chargen.config import ModelConfig, TextConfig, TrainConfig
from chargen.corpus import Corpus, load_corpus
from chargen.loop import TrainSummary
from chargen.train import train

SHARED_CORPORA = Path(__file__).resolve().parents[2] / "shared" / "corpora"

# A tiny model that trains in a second or two; big enough to learn something.
TINY_MODEL = ModelConfig(hidden=48, embed=16, layers=2, dropout=0.0)
TINY_TRAIN = TrainConfig(batch_size=8, bptt=32, max_steps=60, eval_every=30, log_every=10, seed=0)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests marked after_all_runs go last, so that they see every run the other tests made."""
    items.sort(key=lambda item: item.get_closest_marker("after_all_runs") is not None)


def corpus_from_text(
    folder: Path, text: str, name: str = "small", config: TextConfig | None = None
) -> Corpus:
    """A corpus read from a file holding `text`, as a user's would be."""
    path = folder / f"{name}.txt"
    path.write_text(text, encoding="utf-8")
    return load_corpus(path, config)


@pytest.fixture(scope="session")
def timemachine_text() -> str:
    path = SHARED_CORPORA / "timemachine.txt"
    assert path.exists(), f"the shared corpora are expected at {SHARED_CORPORA} (../shared beside the repo)"
    return path.read_text(encoding="utf-8")


@pytest.fixture(scope="session")
def tiny_run(timemachine_text: str, tmp_path_factory: pytest.TempPathFactory) -> TrainSummary:
    """A tiny model trained for 60 steps on the first 40,000 characters of The Time Machine."""
    folder = tmp_path_factory.mktemp("runs")
    small = corpus_from_text(folder, timemachine_text[:40_000], "tm-small")
    return train(small, TINY_MODEL, TINY_TRAIN, out=folder / "tiny")
