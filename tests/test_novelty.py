"""Memorisation check: a model that recites is caught; one that never saw the text is not."""

from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from chargen.cli import app
from chargen.novelty import NgramIndex, ngram_hashes

runner = CliRunner()
SMALL = [
    "--hidden",
    "128",
    "--embed",
    "32",
    "--layers",
    "1",
    "--dropout",
    "0",
    "--batch-size",
    "4",
    "--bptt",
    "32",
]


def test_ngram_index_finds_copies_and_not_new_text() -> None:
    rng = np.random.default_rng(0)
    training = rng.integers(0, 50, 5000)
    index = NgramIndex(training, n=20)
    assert index.verbatim_fraction(training[1000:1300]) == 1.0
    assert index.verbatim_fraction(rng.integers(0, 50, 300)) == 0.0
    half = np.concatenate([training[:200], rng.integers(0, 50, 200)])
    assert 0.4 < index.verbatim_fraction(half) < 0.55
    assert index.verbatim_fraction(training[:10]) is None
    assert len(ngram_hashes(training, 20)) == 5000 - 19


def _novelty(result) -> float:
    assert result.exit_code == 0, result.output
    line = result.stderr.strip()
    assert line.startswith("novelty:")
    return float(line.split()[1].rstrip("%")) / 100


def test_sample_novelty_is_high_for_a_memorised_text_and_low_for_a_fresh_model(
    lamp_text: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    passage = lamp_text[5000:5400]
    Path("tiny.txt").write_text(passage * 30, encoding="utf-8")
    memorise = ["--lr", "0.01", "--max-steps", "300", "--eval-every", "300", "--seed", "0"]
    assert runner.invoke(app, ["train", "tiny.txt", *SMALL, *memorise, "--out", "memorised"]).exit_code == 0
    fresh = ["--lr", "1e-9", "--max-steps", "1", "--seed", "0"]
    assert runner.invoke(app, ["train", "tiny.txt", *SMALL, *fresh, "--out", "fresh"]).exit_code == 0

    sample = ["sample", "--prefix", passage[:30], "--length", "300", "--seed", "0", "--novelty"]
    recited = _novelty(runner.invoke(app, [*sample, "--model", "memorised", "--temperature", "0.2"]))
    made_up = _novelty(runner.invoke(app, [*sample, "--model", "fresh"]))
    assert recited > 0.8 and made_up < 0.05
