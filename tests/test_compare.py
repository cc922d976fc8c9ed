"""chargen compare: one run per cell with equal settings and budgets, a table, a JSON and a plot."""

from __future__ import annotations

import json
import sys
import threading
from pathlib import Path

import pytest
from typer.testing import CliRunner

from chargen import checkpoint as ckpt
from chargen.cli import app
from chargen.compare import COMPARE_JSON, COMPARE_PNG, CellStart, compare
from chargen.config import ModelConfig, TrainConfig
from chargen.errors import ConfigError, StoppedBeforeTraining
from chargen.reports import StartReport
from tests.conftest import corpus_from_text

runner = CliRunner()
TINY = ["--hidden", "16", "--embed", "8", "--layers", "1", "--batch-size", "4", "--bptt", "16"]


@pytest.fixture
def corpus_file(lamp_text: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "lamp.txt"
    path.write_text(lamp_text[:20_000], encoding="utf-8")
    return path


def test_compare_trains_each_cell_with_the_same_settings_and_budget(corpus_file: Path) -> None:
    args = ["compare", "lamp.txt", "--cells", "gru,lstm,rnn", *TINY, "--max-steps", "6", "--eval-every", "3"]
    result = runner.invoke(app, [*args, "--seed", "3", "--out", "cmp"])
    assert result.exit_code == 0, result.output
    table_rows = [line for line in result.stdout.splitlines() if line.startswith("│")]
    assert [row.split("│")[1].strip() for row in table_rows] == ["gru", "lstm", "rnn"]
    assert "training gru (1 of 3)" in result.stderr

    figures = json.loads((Path("cmp") / COMPARE_JSON).read_text(encoding="utf-8"))
    assert [row["cell"] for row in figures["rows"]] == ["gru", "lstm", "rnn"]
    runs = [json.loads((Path("cmp") / cell / ckpt.RUN_JSON).read_text()) for cell in ("gru", "lstm", "rnn")]
    assert [run["model"]["cell"] for run in runs] == ["gru", "lstm", "rnn"]
    # Equal budgets and settings: everything but the cell is the same in every run.
    assert all(run["train"] == runs[0]["train"] for run in runs)
    assert runs[0]["train"]["max_steps"] == 6 and runs[0]["train"]["seed"] == 3 == figures["seed"]
    assert all({**run["model"], "cell": None} == {**runs[0]["model"], "cell": None} for run in runs)
    for row in figures["rows"]:
        summary = json.loads((Path(row["run_dir"]) / ckpt.SUMMARY).read_text())
        assert row["steps"] == summary["steps"] == 6
        assert row["best_bpc"] == summary["best"]["bpc"] and row["parameters"] == summary["parameters"]
    # The cells differ in size as their gates say: an LSTM has four, a GRU three, a plain RNN one.
    sizes = {row["cell"]: row["parameters"] for row in figures["rows"]}
    assert sizes["lstm"] > sizes["gru"] > sizes["rnn"]
    assert (Path("cmp") / COMPARE_PNG).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not Path("runs/latest").exists()  # the comparison's runs do not replace the newest run


def test_compare_with_a_time_budget_gives_each_cell_the_same_one(lamp_text: str, tmp_path: Path) -> None:
    corpus = corpus_from_text(tmp_path, lamp_text[:20_000])
    reports: list[object] = []
    config = TrainConfig(batch_size=4, bptt=16, max_time=0.3, eval_every=1000, seed=0)
    model = ModelConfig(hidden=16, embed=8, layers=1)
    comparison = compare(corpus, ["rnn", "gru"], model, config, tmp_path / "cmp", reports.append, plot=False)
    assert [row.cell for row in comparison.rows] == ["rnn", "gru"] and comparison.plot is None
    assert all(row.summary.stopped_by == "max_time" for row in comparison.rows)
    for cell in ("rnn", "gru"):
        recorded = json.loads((tmp_path / "cmp" / cell / ckpt.RUN_JSON).read_text())["train"]
        assert recorded["max_time"] == 0.3 and recorded["max_steps"] is None
    # Each run's own reports follow the line naming its cell.
    kinds = [
        (type(r).__name__, getattr(r, "cell", None))
        for r in reports
        if isinstance(r, CellStart | StartReport)
    ]
    assert kinds == [("CellStart", "rnn"), ("StartReport", None), ("CellStart", "gru"), ("StartReport", None)]
    assert not (tmp_path / "cmp" / COMPARE_PNG).exists()


@pytest.mark.parametrize(
    ("stop_at", "said"),
    [
        (1, "stopped before training began; nothing was written"),
        (2, "stopped before training gru began; the finished run (rnn) is kept in {out}/rnn"),
        (3, "stopped before training lstm began; the finished runs (rnn, gru) are kept in {out}/<cell>"),
    ],
)
def test_a_stop_asked_for_while_a_cell_is_set_up_keeps_the_finished_cells_and_makes_no_other(
    stop_at: int, said: str, lamp_text: str, tmp_path: Path
) -> None:
    """Ctrl-C while a later cell was set up said 'stopped before training began; nothing was
    written', though the cells before it had their runs written; now it names what is kept. The
    cell being set up is not made, and compare.json is not written."""
    corpus = corpus_from_text(tmp_path, lamp_text[:20_000])
    config = TrainConfig(batch_size=4, bptt=16, max_steps=4, eval_every=2, seed=0)
    stop = threading.Event()

    def stop_when_set_up(report: object) -> None:
        if isinstance(report, CellStart) and report.index == stop_at:
            stop.set()  # as the first Ctrl-C sets it, before this cell's run reaches its first step

    out = tmp_path / "cmp"
    model = ModelConfig(hidden=16, embed=8, layers=1)
    with pytest.raises(StoppedBeforeTraining) as stopped:
        compare(corpus, ["rnn", "gru", "lstm"], model, config, out, stop_when_set_up, plot=False, stop=stop)
    if stop_at > 1:
        said += "; compare.json was not written"
    assert str(stopped.value) == said.format(out=out)
    finished = ["rnn", "gru"][: stop_at - 1]  # the cells trained before the stop
    if finished:  # each whole; the cell being set up not made, and no compare.json
        assert sorted(path.name for path in out.iterdir()) == sorted(finished)
    else:
        assert not out.exists()
    for cell in finished:
        assert json.loads((out / cell / ckpt.SUMMARY).read_text())["steps"] == 4


@pytest.mark.parametrize(
    ("cells", "phrase"),
    [
        ([], "at least one"),
        (["lstm", "gpt"], "'gpt' is not a cell"),
        (["gru", "lstm", "gru"], "gru more than once"),
    ],
)
def test_bad_cells_are_refused_before_anything_is_written(
    cells: list[str], phrase: str, lamp_text: str, tmp_path: Path
) -> None:
    corpus = corpus_from_text(tmp_path, lamp_text[:5_000])
    with pytest.raises(ConfigError, match=phrase):
        compare(corpus, cells, ModelConfig(), TrainConfig(max_steps=1), tmp_path / "cmp", plot=False)
    assert not (tmp_path / "cmp").exists()


def test_compare_without_matplotlib_fails_before_training(
    corpus_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    result = runner.invoke(app, ["compare", "lamp.txt", *TINY, "--max-steps", "2", "--out", "cmp"])
    assert result.exit_code == 1
    assert "pip install 'chargen[plot]'" in result.stderr and not Path("cmp").exists()
    result = runner.invoke(
        app, ["compare", "lamp.txt", "--cells", "rnn", *TINY, "--max-steps", "2", "--no-plot"]
    )
    assert result.exit_code == 0, result.output
    assert len(list(Path("runs").glob("compare-lamp-*/rnn/run.json"))) == 1


def test_compare_reads_the_text_as_train_does(lamp_text: str, tmp_path: Path) -> None:
    """A UTF-16 text, lowercased: compare takes train's text options, and names them as flags."""
    path = tmp_path / "lamp16.txt"
    path.write_bytes(lamp_text[:8_000].encode("utf-16"))
    args = ["compare", str(path), "--cells", "gru,rnn", *TINY, "--max-steps", "2", "--no-plot"]
    refused = runner.invoke(app, [*args, "--out", str(tmp_path / "no")])
    assert refused.exit_code == 1 and "--encoding utf-16" in refused.stderr, refused.output
    result = runner.invoke(
        app, [*args, "--encoding", "utf-16", "--lowercase", "--out", str(tmp_path / "cmp")]
    )
    assert result.exit_code == 0, result.output
    run = json.loads((tmp_path / "cmp" / "gru" / ckpt.RUN_JSON).read_text())
    assert run["text"]["encoding"] == "utf-16" and run["text"]["lowercase"] is True
