"""Shared fixtures: small real texts and one tiny trained run, made once per test session.

The texts are the repository's own corpus and texts the tests write, so a clone passes alone. A
test that needs a named public corpus asks `public_corpus` for it and is skipped, saying why, where
it cannot be had.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest

from chargen import catalogue
from chargen.config import ModelConfig, TextConfig, TrainConfig
from chargen.corpus import DEFAULT_CORPUS, Corpus, load_corpus
from chargen.errors import CorpusError
from chargen.paths import chargen_home
from chargen.records import TrainSummary
from chargen.training import train

# cuBLAS is deterministic only with a fixed workspace, and torch refuses its matrix products under
# torch.use_deterministic_algorithms(True) on a GPU without one (the exact-resume test). cuBLAS and
# torch read this once, at the first product of the process: so here, before any test runs.
os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")

# Caches and downloads go to a private folder; the user's own cache of named corpora is only ever
# read. chargen looks CHARGEN_HOME up when it needs it, never on import, so this is in time.
USER_CORPORA = chargen_home() / "corpora"
os.environ["CHARGEN_HOME"] = TEST_HOME = tempfile.mkdtemp(prefix="chargen-home-")

# A tiny model that trains in a second or two; big enough to learn something.
TINY_MODEL = ModelConfig(hidden=48, embed=16, layers=2, dropout=0.0)
TINY_TRAIN = TrainConfig(batch_size=8, bptt=32, max_steps=60, eval_every=30, log_every=10, seed=0)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """The private CHARGEN_HOME goes with the session (it held only what the tests wrote)."""
    shutil.rmtree(TEST_HOME, ignore_errors=True)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests marked after_all_runs go last, so that they see every run the other tests made."""
    items.sort(key=lambda item: item.get_closest_marker("after_all_runs") is not None)


def words(text: str) -> str:
    """The text with every run of white space one space, so that a line Rich wrapped (a long
    temporary path in a table or a message, say) reads whole."""
    return " ".join(text.split())


def corpus_from_text(
    folder: Path, text: str, name: str = "small", config: TextConfig | None = None
) -> Corpus:
    """A corpus read from a file holding `text`, as a user's would be."""
    path = folder / f"{name}.txt"
    path.write_text(text, encoding="utf-8")
    return load_corpus(path, config)


@pytest.fixture(scope="session")
def lamp_text() -> str:
    """The Lamp at Pellow Point, the repository's own corpus (about 100,000 characters of prose)."""
    return DEFAULT_CORPUS.read_text(encoding="utf-8")


@pytest.fixture(scope="session")
def public_corpus() -> Callable[[str], Path]:
    """A named corpus of the catalogue, had the way a user has it: from $CHARGEN_CORPORA (which
    .ci/run points at ../shared/corpora), the user's cache (copied, never written), or a download
    checked against its sha256. Where none works, the test is skipped with the reason."""
    cannot: dict[str, str] = {}

    def get(name: str) -> Path:
        if name not in cannot:
            entry = catalogue.entries()[name]
            cached = USER_CORPORA / entry.file
            if catalogue.where(entry) == "download" and cached.is_file():
                (chargen_home() / "corpora").mkdir(parents=True, exist_ok=True)
                shutil.copyfile(cached, chargen_home() / "corpora" / entry.file)
            try:
                return catalogue.resolve(name)
            except CorpusError as error:  # remembered: a session tries each name once
                cannot[name] = f"the named corpus {name} cannot be had here: {error}"
        pytest.skip(cannot[name])

    return get


@pytest.fixture(scope="session")
def tiny_run(lamp_text: str, tmp_path_factory: pytest.TempPathFactory) -> TrainSummary:
    """A tiny model trained for 60 steps on the first 40,000 characters of The Lamp at Pellow Point."""
    folder = tmp_path_factory.mktemp("runs")
    small = corpus_from_text(folder, lamp_text[:40_000], "lamp-small")
    return train(small, TINY_MODEL, TINY_TRAIN, out=folder / "tiny")
