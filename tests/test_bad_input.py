"""Every bad input of every command: one line on stderr, a non-zero exit, nothing half-written."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from chargen.cli import app

runner = CliRunner()
TINY = ["--hidden", "16", "--embed", "8", "--layers", "1", "--batch-size", "4", "--bptt", "16"]

# (command line, exit code, a phrase the message must contain)
CASES: list[tuple[list[str], int, str]] = [
    # train: the corpus
    (["train", "missing.txt"], 1, "not found"),
    (["train", "folder"], 1, "has no files"),
    (["train", "empty.txt"], 1, "is empty"),
    (["train", "binary.bin"], 1, "NUL bytes"),
    (["train", "utf16.txt"], 1, "pass --encoding utf-16"),
    (["train", "blank.txt"], 1, "only white space"),
    (["train", "latin1.txt"], 1, "not valid utf-8 at line 1, column 4"),
    (["train", "short.txt", *TINY], 1, "lower --batch-size or --bptt"),
    # train: sizes and settings
    (["train", "good.txt", "--batch-size", "0"], 2, "--batch-size must be at least 1"),
    (["train", "good.txt", "--bptt", "-1"], 2, "--bptt must be at least 1"),
    (["train", "good.txt", "--hidden", "0"], 2, "--hidden must be at least 1"),
    (["train", "good.txt", "--layers", "0"], 2, "--layers must be at least 1"),
    (["train", "good.txt", "--size", "huge"], 2, "--size must be one of auto, small, medium, large"),
    (["train", "good.txt", "--tie-weights", "--max-steps", "2"], 2, "--tie-weights needs --embed equal"),
    (["train", "good.txt", "--patience", "-1"], 2, "--patience must not be negative"),
    (["train", "good.txt", "--embed", "-3"], 2, "--embed must be at least 1"),
    (["train", "good.txt", "--val-fraction", "0"], 2, "--val-fraction must be between 0 and 1"),
    (["train", "good.txt", "--val-fraction", "1"], 2, "--val-fraction must be between 0 and 1"),
    (["train", "good.txt", "--dropout", "1"], 2, "--dropout must be in [0, 1)"),
    (["train", "good.txt", "--weight-drop", "1"], 2, "--weight-drop must be in [0, 1)"),
    (["train", "good.txt", "--lr", "0"], 2, "--lr must be positive"),
    (["train", "good.txt", "--lr", "fast"], 2, "Invalid value for '--lr'"),
    (["train", "good.txt", "--clip", "-1"], 2, "--clip must not be negative"),
    (["train", "good.txt", "--epochs", "0"], 2, "--epochs must be positive"),
    (["train", "good.txt", "--max-steps", "0"], 2, "--max-steps must be at least 1"),
    (["train", "good.txt", "--max-time", "soon"], 2, "--max-time must be a duration"),
    (["train", "good.txt", "--cell", "transformer"], 2, "--cell must be one of lstm, gru, rnn"),
    (["train", "good.txt", "--device", "tpu"], 2, "--device must be one of"),
    (["train", "good.txt", "--normalize", "nfd"], 2, "--normalize must be one of"),
    (["train", "good.txt", "--encoding", "klingon"], 2, "--encoding 'klingon' is not a text encoding"),
    (["train", "good.txt", "--encoding", "rot13"], 2, "--encoding 'rot13' is not a text encoding"),
    (["train", "good.txt", "--seed", "-1"], 2, "--seed must be in 0-9223372036854775807"),
    (["train", "good.txt", "--lr", "inf"], 2, "--lr must be a finite number"),
    (["train", "good.txt", "--tokenizer", "bytes", "--min-count", "2"], 2, "--tokenizer bytes"),
    (  # every character rarer than that: the vocabulary would be the unknown symbol alone
        ["train", "good.txt", *TINY, "--min-count", "1000000", "--max-steps", "2", "--out", "mc"],
        1,
        "--min-count 1000000 leaves no character",
    ),
    (["train", "good.txt", "--tie-weights", "--embed", "8", "--hidden", "16"], 2, "--tie-weights needs"),
    (["train", "good.txt", "--out", "a-file/run"], 1, "cannot create run directory"),
    (["train", "good.txt", "--out", "not-a-run"], 1, "already exists and is not empty"),
    (["train", "good.txt", "--out", "a-file"], 1, "already exists and is a file, not a directory"),
    (["train", "good.txt", "--out", "run"], 1, "already exists and is a chargen run"),
    (["train", "--resume", "missing-run"], 1, "run directory not found"),
    (["train", "--resume", "run", "--max-steps", "99", "--hidden", "64"], 2, "--hidden 64 (the run has 16)"),
    (
        ["train", "--resume", "run", "--max-steps", "99", "--items", "lines"],
        2,
        "--items lines (the run has none)",
    ),
    (["train", "--resume", "run", "--max-steps", "99", "--lowercase"], 2, "--lowercase (the run has it off)"),
    # sample
    (["sample", "--model", "missing-run"], 1, "run directory not found"),
    (["sample", "--model", "not-a-run"], 1, "run.json is missing"),
    (["sample", "--model", "run", "--temperature", "-1"], 2, "--temperature must be in [0, 1000]"),
    (["sample", "--model", "run", "--temperature", "nan"], 2, "--temperature must be a finite number"),
    (["sample", "--model", "run", "--seed", str(2**64)], 2, "--seed must be in 0-"),
    (["sample", "--model", "run", "--top-p", "0"], 2, "--top-p must be in (0, 1]"),
    (["sample", "--model", "run", "--top-p", "1.5"], 2, "--top-p must be in (0, 1]"),
    (["sample", "--model", "run", "--top-k", "0"], 2, "--top-k must be at least 1"),
    (["sample", "--model", "run", "--length", "-5"], 2, "--length must not be negative"),
    (["sample", "--model", "run", "--num-samples", "0"], 2, "--num-samples must be at least 1"),
    (["sample", "--model", "run", "--unknown", "ignore"], 2, "--unknown must be error, replace or skip"),
    (["sample", "--model", "run", "--prefix", "snow ☃"], 1, "'☃' (U+2603)"),
    # eval
    (["eval", "--model", "missing-run"], 1, "run directory not found"),
    (["eval", "missing.txt", "--model", "run"], 1, "text file not found"),
    (["eval", "empty.txt", "--model", "run"], 1, "is empty"),
    (["eval", "binary.bin", "--model", "run"], 1, "NUL bytes"),
    (["eval", "odd.txt", "--model", "run"], 1, "'☃' (U+2603)"),
    (["eval", "good.txt", "--model", "run", "--unknown", "ignore"], 2, "--unknown must be error"),
    # a text of 2 characters that the unseen one, left out, leaves too short: the message says so
    (["eval", "snow.txt", "--model", "run", "--unknown", "skip"], 1, "has 1 character(s) left once the 1"),
    (
        ["eval", "snow.txt", "--model", "run", "--unknown", "replace"],
        1,
        "the model has never seen are left out",
    ),
    (["eval", "snow.txt", "--model", "run", "--unknown", "skip", "--adapt"], 1, "1 character(s) left once"),
    # compare
    (["compare", "good.txt", "--cells", "lstm,transformer"], 2, "--cells: 'transformer' is not a cell"),
    (["compare", "good.txt", "--cells", "gru,lstm,gru"], 2, "--cells names gru more than once"),
    (["compare", "good.txt", "--cells", ""], 2, "--cells needs at least one cell"),
    (["compare", "good.txt", "--cells", " , "], 2, "--cells needs at least one cell"),
    (["compare", "missing.txt"], 1, "not found"),
    (["compare", "empty.txt"], 1, "is empty"),
    (["compare", "short.txt", *TINY, "--max-steps", "2"], 1, "lower --batch-size or --bptt"),
    (["compare", "good.txt", "--out", "not-a-run"], 1, "already exists and is not an empty directory"),
    (["compare", "good.txt", "--out", "a-file"], 1, "a-file is a file; --out names the directory"),
    (["compare", "good.txt", "--hidden", "0"], 2, "--hidden must be at least 1"),
    (["compare", "good.txt", "--max-steps", "0"], 2, "--max-steps must be at least 1"),
    (["compare", "good.txt", "--max-time", "soon"], 2, "--max-time must be a duration"),
    (["compare", "good.txt", "--device", "tpu"], 2, "--device must be one of"),
    (["compare", "good.txt", "--precision", "fp8"], 2, "--precision must be one of"),
    (["compare", "good.txt", "--tokenizer", "words"], 2, "--tokenizer must be chars or bytes"),
]


@pytest.fixture(scope="module")
def workspace(lamp_text: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("bad-input")
    (folder / "good.txt").write_text(lamp_text[:20_000], encoding="utf-8")
    (folder / "short.txt").write_text("short " * 8, encoding="utf-8")
    (folder / "empty.txt").write_bytes(b"")
    (folder / "blank.txt").write_text(" \n\t \n", encoding="utf-8")
    (folder / "binary.bin").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR")
    (folder / "utf16.txt").write_text("şapka ve çay", encoding="utf-16")
    (folder / "latin1.txt").write_bytes("caf\xe9 au lait".encode("latin-1"))
    (folder / "odd.txt").write_text("The Time Traveller saw snow ☃\n", encoding="utf-8")
    (folder / "snow.txt").write_text("a☃", encoding="utf-8")
    (folder / "folder").mkdir()
    (folder / "a-file").write_text("not a directory")
    (folder / "not-a-run").mkdir()
    (folder / "not-a-run" / "notes.txt").write_text("mine")
    result = runner.invoke(
        app,
        [
            "train",
            str(folder / "good.txt"),
            *TINY,
            "--max-steps",
            "2",
            "--eval-every",
            "2",
            "--out",
            str(folder / "run"),
        ],
    )
    assert result.exit_code == 0, result.output
    return folder


@pytest.mark.parametrize(("args", "code", "phrase"), CASES, ids=[" ".join(c[0]) for c in CASES])
def test_bad_input(
    args: list[str], code: int, phrase: str, workspace: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(workspace)
    before = sorted(p.relative_to(workspace) for p in workspace.rglob("*"))
    result = runner.invoke(app, args)
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output and result.stdout == ""
    message = result.stderr.strip()
    assert message.startswith("Error:") and "\n" not in message, message
    assert phrase in message, message
    after = sorted(p.relative_to(workspace) for p in workspace.rglob("*"))
    assert after == before  # nothing written, nothing half-written


def test_the_table_is_large() -> None:
    assert len(CASES) >= 25
    assert {c[0][0] for c in CASES} == {"train", "sample", "eval", "compare"}


def test_bf16_asked_for_on_a_cpu_that_cannot_compute_it_is_one_line(
    workspace: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On an AVX2-only CPU torch's LSTM cannot run in bf16: `--precision bf16` is refused before
    anything is written (it was a traceback from inside the first step, with the run half-made).
    Where the CPU can compute bf16, the same command trains."""
    from chargen.device import cpu_computes_bf16

    monkeypatch.chdir(workspace)
    before = sorted(p.relative_to(workspace) for p in workspace.rglob("*"))
    args = ["train", "good.txt", *TINY, "--max-steps", "2", "--precision", "bf16", "--out", "bf16-run"]
    result = runner.invoke(app, args)
    if cpu_computes_bf16():
        assert result.exit_code == 0, result.output
        return
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output  # a bad setting
    message = result.stderr.strip()
    assert message.startswith("Error:") and "\n" not in message and "--precision fp32" in message, message
    assert sorted(p.relative_to(workspace) for p in workspace.rglob("*")) == before


def test_bf16_asked_for_prints_no_torch_warning(workspace: Path, tmp_path: Path) -> None:
    """`--precision bf16` tries an LSTM in bf16 first (device.cpu_computes_bf16). The try once went
    through torch.backends.mkldnn.flags(), which sets oneDNN's TF32 settings too, and torch 2.13 then
    printed a UserWarning of its own ahead of chargen's one line. Torch warns once per process and
    the try is made once per process, so this runs the command in a fresh one."""
    out = tmp_path / "bf16-run"
    args = ["train", str(workspace / "good.txt"), *TINY, "--max-steps", "1", "--eval-every", "1"]
    command = [sys.executable, "-m", "chargen", *args, "--precision", "bf16", "--out", str(out)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode in (0, 2), result.stderr  # trained, or refused as a bad setting
    assert "Warning" not in result.stderr + result.stdout, result.stderr
    if result.returncode == 2:
        message = result.stderr.strip()
        assert message.startswith("Error:") and "\n" not in message, message
