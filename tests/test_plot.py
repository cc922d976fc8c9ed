"""chargen plot and train --plot: one PNG with three panels; without matplotlib, one line saying
how to get it."""

import re
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from chargen.checkpoint import read_metrics
from chargen.cli import app
from chargen.cli.render import fan_out
from chargen.config import TextConfig, TrainConfig
from chargen.plot import FORMATS, PLOT, PlotEachEvaluation
from chargen.records import EvalRow, TrainRow
from chargen.reports import EvalReport, Report
from chargen.training import train
from tests.conftest import TINY_MODEL, corpus_from_text, words

runner = CliRunner()
PNG = b"\x89PNG\r\n\x1a\n"


def test_plot_writes_a_png_for_several_runs(tiny_run, tmp_path: Path) -> None:
    out = tmp_path / "both.png"
    result = runner.invoke(app, ["plot", str(tiny_run.run_dir), str(tiny_run.run_dir), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 20_000
    evals = [r for r in read_metrics(tiny_run.run_dir) if isinstance(r, EvalRow)]
    assert evals and all(r.seen for r in evals)  # what the validation points are placed by


# How each format's file begins: what matplotlib wrote is that format, not a PNG under another name.
MAGIC = {
    "png": PNG,
    "jpg": b"\xff\xd8\xff",
    "jpeg": b"\xff\xd8\xff",
    "webp": b"RIFF",
    "tif": b"II*\x00",
    "tiff": b"II*\x00",
    "svg": b"<?xml",
    "svgz": b"\x1f\x8b",
    "pdf": b"%PDF",
    "eps": b"%!PS-Adobe-3.0 EPSF",
    "ps": b"%!PS-Adobe-3.0",
}


def test_every_format_listed_is_written_and_any_other_refused_before_reading(
    tiny_run, tmp_path: Path
) -> None:
    assert set(MAGIC) == set(FORMATS)
    for name in FORMATS:
        out = tmp_path / f"figure.{name.upper() if name == 'png' else name}"  # the suffix's case is no matter
        result = runner.invoke(app, ["plot", str(tiny_run.run_dir), "--out", str(out)])
        assert result.exit_code == 0, (name, result.output)
        assert out.read_bytes().startswith(MAGIC[name]), (name, out.read_bytes()[:20])
    listed = ", ".join("." + name for name in FORMATS)
    for suffix in ("gif", "avif", "txt", "pgf"):  # gif and avif: only recent matplotlib writes them
        out = tmp_path / f"figure.{suffix}"
        for run in (str(tiny_run.run_dir), str(tmp_path / "missing-run")):  # refused before reading the run
            result = runner.invoke(app, ["plot", run, "--out", str(out)])
            assert result.exit_code == 2 and result.stdout == "", result.output
            assert result.stderr.strip() == (
                f"Error: --out names a .{suffix} file, and a figure is written as {listed}; "
                "give --out one of those suffixes"
            )
            assert not out.exists()
    # The docs list the formats as FORMATS has them.
    section = (Path(__file__).parents[1] / "docs" / "commands.md").read_text(encoding="utf-8")
    assert ", ".join(f"`.{name}`" for name in FORMATS[:-1]) + f" or `.{FORMATS[-1]}`" in words(section)


def _svg_text(out: Path) -> set[str]:
    """The texts of an SVG figure: matplotlib draws each as paths and writes it beside them as a comment."""
    return set(re.findall(r"<!-- (.+?) -->", out.read_text(encoding="utf-8")))


def test_a_byte_runs_figures_are_labelled_per_byte(tiny_run, lamp_text: str, tmp_path: Path) -> None:
    corpus = corpus_from_text(tmp_path, lamp_text[:20_000], "lamp", TextConfig(tokenizer="bytes"))
    config = TrainConfig(batch_size=4, bptt=16, max_steps=2, eval_every=2, log_every=1, seed=0)
    byte_run, char_run = train(corpus, TINY_MODEL, config, out=tmp_path / "bytes").run_dir, tiny_run.run_dir

    def drawn(*runs: Path) -> set[str]:
        out = tmp_path / "figure.svg"
        result = runner.invoke(app, ["plot", *map(str, runs), "--out", str(out)])
        assert result.exit_code == 0, result.output
        return _svg_text(out)

    alone = drawn(byte_run)
    assert {"bits per byte", "bytes seen", "bytes training"} <= alone
    assert not any("character" in text for text in alone)
    assert {"bits per character", "characters seen", "tiny training"} <= drawn(char_run)
    # Together, the axes name both units and each run's legend entries say its own.
    both = drawn(char_run, byte_run)
    assert {"bits per character or byte (see legend)", "characters or bytes seen (see legend)"} <= both
    assert {"tiny (characters) training", "bytes (bytes) validation"} <= both


def test_a_run_with_no_training_figures_is_refused_not_drawn_empty(tiny_run, tmp_path: Path) -> None:
    import shutil

    empty = tmp_path / "empty-run"
    shutil.copytree(tiny_run.run_dir, empty)
    (empty / "metrics.jsonl").write_text("garbage{\n", encoding="utf-8")  # or gone, or killed before step 10
    out = tmp_path / "x.png"
    result = runner.invoke(app, ["plot", str(tiny_run.run_dir), str(empty), "--out", str(out)])
    assert result.exit_code == 1 and "has no figures to plot" in result.stderr, result.output
    assert len(result.stderr.strip().splitlines()) == 1 and not out.exists()
    assert "at step 10," in result.stderr and "`" not in result.stderr, result.stderr  # no library name


def test_without_matplotlib_the_plot_command_says_how_to_install_it(
    tiny_run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as if it were not installed
    result = runner.invoke(app, ["plot", str(tiny_run.run_dir), "--out", str(tmp_path / "x.png")])
    assert result.exit_code == 1
    message = result.stderr.strip()
    assert "pip install 'chargen[plot]'" in message and "\n" not in message
    assert not (tmp_path / "x.png").exists()


def test_a_torn_last_metrics_line_is_skipped(tmp_path: Path) -> None:
    (tmp_path / "metrics.jsonl").write_text('{"kind": "train", "step": 1}\n{"kind": "tr', encoding="utf-8")
    assert read_metrics(tmp_path) == [TrainRow(step=1)]


def _tiny_train(corpus: Path, out: Path, *extra: str) -> list[str]:
    tiny = ["--hidden", "16", "--embed", "8", "--layers", "1", "--batch-size", "4", "--bptt", "16"]
    return ["train", str(corpus), *tiny, "--eval-every", "2", "--out", str(out), *extra]


def test_train_plot_redraws_the_figure_at_each_evaluation(lamp_text: str, tmp_path: Path) -> None:
    corpus = corpus_from_text(tmp_path, lamp_text[:20_000])
    drawn: list[bytes] = []

    def look(report: Report) -> None:
        if isinstance(report, EvalReport):  # after the plotter has drawn this evaluation
            drawn.append((tmp_path / "run" / PLOT).read_bytes())

    config = TrainConfig(batch_size=4, bptt=16, max_steps=4, eval_every=2, log_every=1, seed=0)
    train(corpus, TINY_MODEL, config, out=tmp_path / "run", report=fan_out(PlotEachEvaluation(), look))
    assert len(drawn) == 2 and drawn[0] != drawn[1]  # one fresh figure per evaluation
    assert drawn[1][:8] == PNG and not list((tmp_path / "run").glob(".*.tmp"))


def test_train_plot_from_the_command_line_also_when_resuming(lamp_text: str, tmp_path: Path) -> None:
    corpus = tmp_path / "lamp.txt"
    corpus.write_text(lamp_text[:20_000], encoding="utf-8")
    result = runner.invoke(app, _tiny_train(corpus, tmp_path / "run", "--max-steps", "2", "--plot"))
    assert result.exit_code == 0, result.output
    assert (tmp_path / "run" / PLOT).read_bytes()[:8] == PNG
    (tmp_path / "run" / PLOT).unlink()
    result = runner.invoke(app, ["train", "--resume", str(tmp_path / "run"), "--max-steps", "4", "--plot"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "run" / PLOT).read_bytes()[:8] == PNG


def test_train_plot_without_matplotlib_fails_before_training(
    lamp_text: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    corpus = tmp_path / "lamp.txt"
    corpus.write_text(lamp_text[:20_000], encoding="utf-8")
    result = runner.invoke(app, _tiny_train(corpus, tmp_path / "run", "--max-steps", "2", "--plot"))
    assert result.exit_code == 1
    message = result.stderr.strip()
    assert "pip install 'chargen[plot]'" in message and "\n" not in message
    assert not (tmp_path / "run").exists()
