"""chargen plot: one PNG with three panels; without matplotlib, one line saying how to get it."""

import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from chargen.cli import app
from chargen.plot import read_metrics

runner = CliRunner()


def test_plot_writes_a_png_for_several_runs(tiny_run, tmp_path: Path) -> None:
    out = tmp_path / "both.png"
    result = runner.invoke(app, ["plot", str(tiny_run.run_dir), str(tiny_run.run_dir), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 20_000
    evals = [r for r in read_metrics(tiny_run.run_dir) if r["kind"] == "eval"]
    assert evals and all("seen" in r for r in evals)  # what the validation points are placed by


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
    assert read_metrics(tmp_path) == [{"kind": "train", "step": 1}]
