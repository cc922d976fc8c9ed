"""chargen info on every kind of run, and on every run the rest of the suite made."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from chargen import checkpoint as ckpt
from chargen.cli import app
from chargen.errors import RunError

runner = CliRunner()
TINY = ["--hidden", "16", "--embed", "8", "--layers", "1", "--batch-size", "4", "--bptt", "16"]
UNKNOWN = "\ufffd"

# The kinds of run no other test trains from the command line, and what info must say of each.
KINDS: dict[str, tuple[list[str], Callable[[dict[str, Any]], bool]]] = {
    "gru": (["--cell", "gru"], lambda facts: facts["model"]["cell"] == "gru"),
    "rnn": (["--cell", "rnn"], lambda facts: facts["model"]["cell"] == "rnn"),
    "bytes": (
        ["--tokenizer", "bytes"],
        lambda facts: facts["vocab"] == {"kind": "bytes", "size": 256, "chars": None},
    ),
    "d2l": (
        ["--preset", "d2l"],
        lambda facts: (
            facts["text"]["preset"] == "d2l"
            and set(facts["vocab"]["chars"]) <= set(" abcdefghijklmnopqrstuvwxyz" + UNKNOWN)
        ),
    ),
    "min-count": (["--min-count", "50"], lambda facts: UNKNOWN in facts["vocab"]["chars"]),
}


@pytest.mark.parametrize("kind", list(KINDS))
def test_info_describes_every_kind_of_run(
    kind: str, lamp_text: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    Path("lamp.txt").write_text(lamp_text[:20_000], encoding="utf-8")
    options, says_so = KINDS[kind]
    args = ["train", "lamp.txt", *TINY, *options, "--max-steps", "2", "--eval-every", "2", "--out", "run"]
    trained = runner.invoke(app, args)
    assert trained.exit_code == 0, trained.output
    result = runner.invoke(app, ["info", "run", "--json"])
    assert result.exit_code == 0, result.output
    facts = json.loads(result.stdout)
    assert says_so(facts), facts
    assert facts["steps"] == 2 and facts["summary"]["steps"] == 2


@pytest.mark.after_all_runs
def test_info_reads_every_run_the_suite_made(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Every test keeps its runs under pytest's base temporary directory, so this finds them all:
    the fixtures', the command-line tests', interrupted, killed, resumed and compared ones."""
    run_dirs = sorted({path.parent.resolve() for path in tmp_path_factory.getbasetemp().rglob(ckpt.RUN_JSON)})
    if not run_dirs:
        pytest.skip("no other test made a run in this session")
    for run_dir in run_dirs:
        result = runner.invoke(app, ["info", str(run_dir), "--json"])
        assert result.exception is None or isinstance(result.exception, SystemExit), (
            run_dir,
            result.exception,
        )
        try:
            ckpt.load_run(run_dir)
        except RunError:
            # A run a test damaged on purpose: info refuses it, as every command does, in one line.
            message = result.stderr.strip()
            assert result.exit_code == 1 and message.startswith("Error:") and "\n" not in message, message
            continue
        assert result.exit_code == 0, (run_dir, result.output)
        facts = json.loads(result.stdout)
        recorded = json.loads((run_dir / ckpt.RUN_JSON).read_text(encoding="utf-8"))
        assert facts["model"] == recorded["model"] and facts["train"] == recorded["train"], run_dir


def test_info_lists_a_damaged_checkpoint_as_a_problem(tiny_run, tmp_path: Path) -> None:
    run_dir = tmp_path / "damaged"
    shutil.copytree(tiny_run.run_dir, run_dir)
    (run_dir / ckpt.CHECKPOINT).write_bytes(b"\x00" * 100)
    (run_dir / ckpt.SUMMARY).write_text("{cut short", encoding="utf-8")
    best = (run_dir / ckpt.BEST).read_bytes()
    (run_dir / ckpt.BEST).write_bytes(best[:1000])  # cut short, as a full disk might leave it
    result = runner.invoke(app, ["info", str(run_dir), "--json"])
    assert result.exit_code == 0, result.output
    facts = json.loads(result.stdout)
    assert facts["steps"] is None and facts["summary"] is None
    assert [p.split()[0] for p in facts["problems"]] == [ckpt.SUMMARY, ckpt.CHECKPOINT, ckpt.BEST]
    table = runner.invoke(app, ["info", str(run_dir)])
    assert table.exit_code == 0 and "problem" in table.stdout


def test_info_shows_a_list_separator_escaped_and_quoted(tmp_path: Path) -> None:
    """A separator with a line break (typed \\n) and markup-like brackets: shown as typed, quoted,
    not as a line break that breaks the table, nor read as a style."""
    text = tmp_path / "names.txt"
    text.write_text(
        "\n[b]\n".join(["emma", "olivia", "ava", "mia", "ben", "liam", "noah"] * 4), encoding="utf-8"
    )
    run = tmp_path / "run"
    args = ["train", str(text), "--items", "\\n[b]\\n", *TINY, "--max-steps", "2", "--out", str(run)]
    trained = runner.invoke(app, args)
    assert trained.exit_code == 0, trained.output
    result = runner.invoke(app, ["info", str(run)])
    assert result.exit_code == 0, result.output
    assert "│ items           │ 28 (separator '\\n[b]\\n'), 3 held out at random (seed 0)" in result.stdout
    assert "items separator '\\n[b]\\n'" in result.stdout, result.stdout
    assert all(line[0] in "┌│└ /" for line in result.stdout.splitlines()), result.stdout
    facts = json.loads(runner.invoke(app, ["info", str(run), "--json"]).stdout)
    assert facts["text"]["items"] == "\n[b]\n"  # JSON gives it exactly


def test_paths_and_names_with_brackets_print_exactly(
    lamp_text: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run directory and a corpus file named with brackets, which rich would read as markup (a
    style to apply, or a closing tag with nothing open to fail on): every command prints them as
    they are."""
    monkeypatch.chdir(tmp_path)
    Path("notes[red].txt").write_text(lamp_text[:20_000], encoding="utf-8")
    run, wide = "a[b]/r[/x]", {"COLUMNS": "300"}  # wide: a table's long path on one line
    trained = runner.invoke(app, ["train", "notes[red].txt", *TINY, "--max-steps", "2", "--out", run])
    assert trained.exit_code == 0, trained.output
    assert f"run {run} |" in trained.stderr and f"│ {run} " in trained.stderr, trained.stderr
    assert f"next: chargen sample --model {run} --prefix" in trained.stderr, trained.stderr

    info = runner.invoke(app, ["info", run], env=wide)
    assert info.exit_code == 0, info.output
    assert info.stdout.splitlines()[0].strip() == run, info.stdout
    assert "│ notes[red] (" in info.stdout and str(tmp_path / "notes[red].txt") in info.stdout, info.stdout

    child = "c[i]"
    fine_tune = ["train", "notes[red].txt", "--init", run, "--max-steps", "2", "--out", child]
    assert runner.invoke(app, fine_tune).exit_code == 0
    info = runner.invoke(app, ["info", child], env=wide)
    assert f"│ started from    │ {(tmp_path / run).resolve()} (" in info.stdout, info.stdout

    evaluated = runner.invoke(app, ["eval", "--model", run, "notes[red].txt"], env=wide)
    assert evaluated.exit_code == 0 and f"{run} on notes[red].txt" in evaluated.stdout, evaluated.output
    measured = runner.invoke(app, ["gradients", run, "--steps", "3"], env=wide)
    assert measured.exit_code == 0 and f"{run} (lstm)" in measured.stdout, measured.output
    compare = ["compare", "notes[red].txt", "--cells", "gru", *TINY, "--max-steps", "2", "--no-plot"]
    compared = runner.invoke(app, [*compare, "--out", "k[b]"], env=wide)
    assert compared.exit_code == 0 and "k[b] (seed" in compared.stdout, compared.output
    assert "wrote k[b]/compare.json; each run is in k[b]/<cell>" in compared.stderr, compared.stderr


def test_info_shows_the_best_validation_of_a_run_that_has_not_finished(tiny_run, tmp_path: Path) -> None:
    """A run stopped by Ctrl-C or killed has no summary.json (it is written at the end), but its
    checkpoint knows the best validation so far, the figures of what best.safetensors holds."""
    run_dir = tmp_path / "stopped"
    shutil.copytree(tiny_run.run_dir, run_dir)
    (run_dir / ckpt.SUMMARY).unlink()  # as a stopped or killed run leaves it
    result = runner.invoke(app, ["info", str(run_dir), "--json"])
    assert result.exit_code == 0, result.output
    facts = json.loads(result.stdout)
    assert facts["summary"] is None and facts["problems"] == []
    assert facts["best"]["step"] == tiny_run.best_step
    assert facts["best"]["bpc"] == pytest.approx(tiny_run.best.bpc)
    table = runner.invoke(app, ["info", str(run_dir)], env={"COLUMNS": "200"})
    assert table.exit_code == 0, table.output
    assert f"{tiny_run.best.bpc:.4f} bpc" in table.stdout, table.stdout
    assert f"(step {tiny_run.best_step}) so far" in table.stdout, table.stdout
