"""The command line end to end, on a tiny model: train -> sample -> eval, and bad input."""

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from chargen import checkpoint as ckpt
from chargen.cli import app

runner = CliRunner()
TINY = ["--hidden", "32", "--embed", "16", "--layers", "1", "--batch-size", "4", "--bptt", "16"]


@pytest.fixture
def corpus_file(timemachine_text: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)  # runs/ is made in the working directory
    path = tmp_path / "small.txt"
    path.write_text(timemachine_text[:30_000], encoding="utf-8")
    return path


def test_train_sample_eval(corpus_file: Path) -> None:
    result = runner.invoke(
        app, ["train", str(corpus_file), *TINY, "--max-steps", "20", "--eval-every", "10", "--seed", "0"]
    )
    assert result.exit_code == 0, result.output
    assert (Path("runs/latest") / ckpt.BEST).is_file()
    assert "best validation" in result.stderr

    result = runner.invoke(app, ["sample", "--prefix", "The Time", "--length", "50", "--seed", "1"])
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("The Time") and len(result.stdout) == len("The Time") + 50 + 1
    again = runner.invoke(app, ["sample", "--prefix", "The Time", "--length", "50", "--seed", "1"])
    assert again.stdout == result.stdout

    result = runner.invoke(app, ["sample", "--length", "20", "--num-samples", "3", "--seed", "1"])
    assert result.exit_code == 0, result.output
    assert len(result.stdout.split("\n\n")) == 3

    result = runner.invoke(app, ["eval", "--json"])
    assert result.exit_code == 0, result.output
    figures = json.loads(result.stdout)
    assert {"chars", "loss", "perplexity", "bpc", "chars_per_sec"} <= set(figures)
    summary = json.loads((Path("runs/latest") / ckpt.SUMMARY).read_text())
    assert abs(figures["bpc"] - summary["best"]["bpc"]) < 1e-4

    result = runner.invoke(app, ["eval", str(corpus_file), "--model", "runs/latest"])
    assert result.exit_code == 0, result.output
    assert "bits per character" in result.stdout


def _one_line_error(result, code: int = 1) -> str:
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    message = result.stderr.strip()
    assert message.startswith("Error:") and "\n" not in message, message
    assert result.stdout == ""
    return message


def test_bad_input_gets_one_clear_line(corpus_file: Path, tmp_path: Path) -> None:
    (tmp_path / "empty.txt").write_text("")
    assert "not found" in _one_line_error(runner.invoke(app, ["train", "missing.txt"]))
    assert "empty" in _one_line_error(runner.invoke(app, ["train", "empty.txt"]))
    assert not Path("runs").exists()  # nothing half-written
    assert "not found" in _one_line_error(runner.invoke(app, ["sample", "--model", "nope"]))
    assert "not found" in _one_line_error(runner.invoke(app, ["eval", "--model", "nope"]))
    assert "--temperature" in _one_line_error(runner.invoke(app, ["sample", "--temperature", "-1"]), code=2)
    assert "--max-time" in _one_line_error(runner.invoke(app, ["train", "--max-time", "soon"]), code=2)

    trained = runner.invoke(app, ["train", str(corpus_file), *TINY, "--max-steps", "2", "--eval-every", "2"])
    assert trained.exit_code == 0, trained.output
    message = _one_line_error(runner.invoke(app, ["sample", "--prefix", "Zoë ☃"]))
    assert "'☃' (U+2603)" in message and "--prefix" in message


def test_help_has_examples() -> None:
    for command in ("train", "sample", "eval"):
        result = runner.invoke(app, [command, "--help"])
        assert result.exit_code == 0 and "Example" in result.output
