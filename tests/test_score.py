"""Scoring a text line by line: the lines' figures add up to `chargen eval`'s, each position is the
model's own log-probability, and the command streams rows or JSON and fails in one line."""

from __future__ import annotations

import json
import math
import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from chargen.checkpoint import load_model_weights, load_run
from chargen.cli import app
from chargen.config import TextConfig
from chargen.errors import CorpusError, VocabError
from chargen.evaluate import evaluate_ids
from chargen.records import TrainSummary
from chargen.scoring import position_logprobs, read_lines, score_run, score_units, split_lines
from chargen.training import train
from tests.conftest import TINY_MODEL, TINY_TRAIN, corpus_from_text

runner = CliRunner()


@pytest.fixture(scope="module")
def loaded(tiny_run: TrainSummary):
    run = load_run(tiny_run.run_dir)
    return load_model_weights(run), run.vocab


def test_each_position_is_the_models_log_probability_of_the_next_character(loaded) -> None:
    model, vocab = loaded
    ids = vocab.encode("The lamp at Pellow Point\nwas lit.\n")
    with torch.no_grad():
        logits, _ = model(torch.from_numpy(ids.astype(np.int64)).view(-1, 1))  # (T, 1, V)
    expected = logits[:-1, 0].log_softmax(-1).gather(-1, torch.from_numpy(ids[1:].astype(np.int64))[:, None])
    got = position_logprobs(model, ids)
    assert got.dtype == np.float32 and got.shape == (len(ids) - 1,)
    assert np.allclose(got, expected.squeeze(-1).numpy(), atol=1e-5)
    with pytest.raises(CorpusError, match="at least 2"):
        position_logprobs(model, ids[:1])


def test_the_lines_add_up_to_the_whole_text_as_eval_measures_it(loaded, lamp_text: str) -> None:
    model, vocab = loaded
    text = lamp_text[40_000:52_000]  # long enough to be read in several streams
    units = text.splitlines(keepends=True)
    scores = score_units(model, vocab, units)
    ids = vocab.encode(text)
    stats = evaluate_ids(model, ids)
    assert int(scores.chars.sum()) == stats.chars == len(text) - 1
    assert scores.stats.loss == pytest.approx(stats.loss, rel=1e-5)
    # Each line's characters are its own and its line break; the text's first is not predicted.
    assert scores.chars.tolist() == [len(units[0]) - 1] + [len(unit) for unit in units[1:]]
    rows = list(scores)
    assert [row.text for row in rows] == text.splitlines()
    assert all(row.logprob <= 0 for row in rows)
    row = rows[2]
    assert row.bpc == pytest.approx(-row.logprob / row.chars / math.log(2))
    assert rows[2].to_dict() == {"text": row.text, "chars": row.chars, "logprob": row.logprob, "bpc": row.bpc}


def test_lines_without_a_final_break_with_crlf_and_with_nothing_scored(loaded) -> None:
    model, vocab = loaded
    units = ["\n", "The lamp\r\n", "", "was lit"]  # the lamp text has no '\r': skipped, not scored
    scores = list(score_units(model, vocab, units, unknown="skip"))
    assert [(s.text, s.chars) for s in scores] == [("", 0), ("The lamp", 9), ("", 0), ("was lit", 7)]
    assert scores[0].bpc is None and scores[0].logprob == 0 and scores[2].bpc is None


def test_unknown_characters_are_refused_naming_the_line_or_replaced_or_skipped(loaded) -> None:
    model, vocab = loaded
    units = ["The lamp\n", "snow ☃ fell\n", "was lit\n"]
    with pytest.raises(VocabError, match=r"^line 2 has 1 character") as error:
        score_units(model, vocab, units, what="line")
    assert "`unknown='replace'`" in str(error.value)
    skipped = score_units(model, vocab, units, unknown="skip")
    assert skipped.chars.tolist() == [8, len("snow  fell\n"), 8] and skipped.unknown == 1


def test_lines_are_prepared_as_the_training_text_was(loaded) -> None:
    model, vocab = loaded
    config = TextConfig(preset="d2l")  # every run of non-letters one space, across lines too
    scores = score_units(model, vocab, ["The lamp, \n", "\n", "... was lit\n"], config)
    assert scores.chars.tolist() == [len("the lamp ") - 1, 0, len("was lit ")]


def test_a_bytes_run_scores_bytes(lamp_text: str, tmp_path: Path) -> None:
    corpus = corpus_from_text(
        tmp_path, lamp_text[:6_000] + "çay şöyle\n" * 20, config=TextConfig(tokenizer="bytes")
    )
    summary = train(corpus, TINY_MODEL, replace(TINY_TRAIN, max_steps=2, eval_every=2), out=tmp_path / "run")
    (tmp_path / "tea.txt").write_text("çay\nşöyle\n", encoding="utf-8")
    scores = list(score_run(summary.run_dir, tmp_path / "tea.txt", device="cpu"))
    assert [(s.text, s.chars) for s in scores] == [("çay", len(b"\xc3\xa7ay\n") - 1), ("şöyle", 8)]


def test_read_lines_keeps_each_line_break_with_its_line(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_bytes("\ufeffone\r\ntwo\n\nthree".encode())
    assert read_lines(tmp_path / "a.txt") == ["one\r\n", "two\n", "\n", "three"]
    # Only a line feed ends a line: a lone carriage return, a form feed or U+2028 do not.
    text = "one\rtwo\x0cthree\u2028four\n\nfive\n"
    (tmp_path / "b.txt").write_text(text, encoding="utf-8", newline="")
    assert (
        read_lines(tmp_path / "b.txt")
        == split_lines(text)
        == ["one\rtwo\x0cthree\u2028four\n", "\n", "five\n"]
    )


def _score(*args: str):
    return runner.invoke(app, ["score", *args])


def test_the_command_streams_a_row_per_line_and_agrees_with_eval(
    tiny_run: TrainSummary, lamp_text: str, tmp_path: Path
) -> None:
    path = tmp_path / "text.txt"
    text = lamp_text[40_000:60_000]  # several streams, a few hundred lines
    path.write_text(text, encoding="utf-8")
    model = str(tiny_run.run_dir)
    result = _score("--model", model, str(path), "--json")
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [row["text"] for row in rows] == text.splitlines()
    assert all(set(row) == {"text", "chars", "logprob", "bpc"} for row in rows)
    assert "bits per character" in result.stderr  # the summary, off stdout
    evaluated = runner.invoke(app, ["eval", "--model", model, str(path), "--json"])
    figures = json.loads(evaluated.stdout)
    chars = sum(row["chars"] for row in rows)
    bpc = -sum(row["logprob"] for row in rows) / chars / math.log(2)
    assert chars == figures["chars"]
    assert bpc == pytest.approx(figures["bpc"], rel=0.005)

    plain = _score("--model", model, str(path))
    assert plain.exit_code == 0, plain.output
    lines = plain.stdout.splitlines()
    assert lines[0].split() == ["bpc", "chars", "logprob", "line"] and len(lines) == len(rows) + 2
    assert lines[1].endswith("  " + rows[0]["text"])
    # The summary's figure, read back (a rounded substring would fail whenever the two roundings part)
    summary_bpc = re.search(r"([0-9.]+) bits per character", lines[-1])
    assert summary_bpc and float(summary_bpc[1]) == pytest.approx(figures["bpc"], rel=0.005)
    assert lines[-1].startswith(f"{len(rows):,} lines, {chars:,} characters")


def test_a_directory_is_scored_as_eval_reads_it_its_files_joined_by_a_line_break(
    tiny_run: TrainSummary, lamp_text: str, tmp_path: Path
) -> None:
    """`chargen eval DIR` reads a directory's files as one text; `chargen score DIR` scores that
    same text line by line, so its lines add up to eval's figure (it used to refuse a directory)."""
    folder = tmp_path / "notes"
    (folder / "more").mkdir(parents=True)
    first, second = lamp_text[40_000:41_000], lamp_text[41_000:42_000]
    (folder / "a.txt").write_text(first.rstrip("\n"), encoding="utf-8")  # the join ends its last line
    (folder / "more" / "b.txt").write_text(second, encoding="utf-8")
    (folder / ".hidden").write_text("left out, as eval leaves it out\n", encoding="utf-8")
    joined = first.rstrip("\n") + "\n" + second
    assert read_lines(folder) == split_lines(joined)

    model = str(tiny_run.run_dir)
    result = _score("--model", model, str(folder), "--json")
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [row["text"] for row in rows] == joined.splitlines()
    figures = json.loads(runner.invoke(app, ["eval", "--model", model, str(folder), "--json"]).stdout)
    chars = sum(row["chars"] for row in rows)
    assert chars == figures["chars"] == len(joined) - 1
    bpc = -sum(row["logprob"] for row in rows) / chars / math.log(2)
    assert bpc == pytest.approx(figures["bpc"], rel=0.005)
    (tmp_path / "empty").mkdir()
    assert "has no files" in _one_line_error(_score("--model", model, str(tmp_path / "empty")))


def test_unknown_characters_follow_the_unknown_option(tiny_run: TrainSummary, tmp_path: Path) -> None:
    (tmp_path / "odd.txt").write_text("The lamp\nsnow ☃ fell\n", encoding="utf-8")
    result = _score("--model", str(tiny_run.run_dir), str(tmp_path / "odd.txt"), "--unknown", "skip")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[-1].endswith("; 1 unknown character skipped")


def test_the_table_shows_control_characters_as_escapes(tiny_run: TrainSummary, tmp_path: Path) -> None:
    """A scored line holding ESC (a colour code, say) or BEL is printed with those as escapes, so it
    cannot restyle the terminal; --json keeps the text exactly."""
    line = "The \x1b[31mlamp\x07\tlit"
    (tmp_path / "odd.txt").write_text(f"The lamp\n{line}\n", encoding="utf-8")
    args = ("--model", str(tiny_run.run_dir), str(tmp_path / "odd.txt"), "--unknown", "skip")
    plain = _score(*args)
    assert plain.exit_code == 0, plain.output
    assert "\x1b" not in plain.stdout and "\x07" not in plain.stdout
    assert plain.stdout.splitlines()[2].endswith("  The \\x1b[31mlamp\\x07\tlit")
    as_json = _score(*args, "--json")
    assert as_json.exit_code == 0, as_json.output
    assert json.loads(as_json.stdout.splitlines()[1])["text"] == line


def _one_line_error(result, code: int = 1) -> str:
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output and result.stdout == ""
    message = result.stderr.strip()
    assert message.startswith("Error:") and "\n" not in message, message
    return message


def test_bad_input_gets_one_line_and_nothing_on_stdout(tiny_run: TrainSummary, tmp_path: Path) -> None:
    model = str(tiny_run.run_dir)
    (tmp_path / "empty.txt").write_bytes(b"")
    (tmp_path / "one.txt").write_text("a", encoding="utf-8")
    (tmp_path / "snow.txt").write_text("☃a☃", encoding="utf-8")
    (tmp_path / "odd.txt").write_text("The lamp\nsnow ☃\n", encoding="utf-8")
    (tmp_path / "good.txt").write_text("The lamp\n", encoding="utf-8")
    for args, code, said in (
        (
            ["--model", str(tmp_path / "missing-run"), str(tmp_path / "good.txt")],
            1,
            "run directory not found",
        ),
        (["--model", model, str(tmp_path / "missing.txt")], 1, "text file not found"),
        (["--model", model, str(tmp_path / "empty.txt")], 1, "is empty"),
        (["--model", model, str(tmp_path / "one.txt")], 1, "at least 2 characters"),
        (
            ["--model", model, str(tmp_path / "snow.txt"), "--unknown", "skip"],
            1,
            "the text has 1 character(s) left once the 2 character(s) the model has never seen are left out",
        ),
        (["--model", model, str(tmp_path / "odd.txt")], 1, "line 2 has 1 character(s)"),
        (["--model", model, str(tmp_path / "odd.txt")], 1, "--unknown replace"),
        (["--model", model, str(tmp_path / "good.txt"), "--unknown", "ignore"], 2, "--unknown must be"),
        (["--model", model, str(tmp_path / "good.txt"), "--encoding", "klingon"], 2, "--encoding 'klingon'"),
        (["--model", model], 2, "Missing argument"),
    ):
        assert said in _one_line_error(_score(*args), code), args


def test_a_text_saved_with_windows_line_breaks_scores_as_the_same_text(
    tiny_run: TrainSummary, lamp_text: str, tmp_path: Path
) -> None:
    """The run never saw a carriage return; a CR LF copy of a text reads as the text itself."""
    text = lamp_text[:3_000]
    (tmp_path / "lf.txt").write_bytes(text.encode())
    (tmp_path / "crlf.txt").write_bytes(text.replace("\n", "\r\n").encode())
    figures = {}
    for name in ("lf.txt", "crlf.txt"):
        for command in ("eval", "score"):
            result = runner.invoke(
                app, [command, "--model", str(tiny_run.run_dir), str(tmp_path / name), "--json"]
            )
            assert result.exit_code == 0, result.output
            figures[name, command] = result.stdout
    lf, crlf = (json.loads(figures[name, "eval"]) for name in ("lf.txt", "crlf.txt"))
    assert lf["chars"] == crlf["chars"] and lf["loss"] == crlf["loss"] and crlf["unknown"] == 0
    assert figures["lf.txt", "score"] == figures["crlf.txt", "score"]
