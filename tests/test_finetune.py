"""Fine-tuning (`train --init RUN`): a new run from a parent's weights, its vocabulary grown without
changing the old characters' predictions, the parent recorded, and bad input refused."""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from pathlib import Path

import pytest
from typer.testing import CliRunner

from chargen.checkpoint import load_model_weights, load_run
from chargen.cli import app
from chargen.evaluate import evaluate_ids
from chargen.finetune import start_from
from chargen.model import CharRNN
from chargen.records import TrainSummary
from tests.conftest import words

TURKISH = (
    "Çalıkuşu romanında Feride, İstanbul'dan ayrılıp Anadolu'da öğretmenlik yapar. Şöyle der: ığdır. " * 40
)


def _run(args: list[str]) -> None:
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output


def test_a_grown_vocabulary_leaves_the_old_predictions_as_they_were(
    tiny_run: TrainSummary, tmp_path: Path
) -> None:
    text = tmp_path / "tr.txt"
    text.write_text(TURKISH, encoding="utf-8")
    start = start_from(tiny_run.run_dir, text)
    parent = load_run(tiny_run.run_dir)
    assert set(start.new_chars) >= {"ı", "ş", "ğ", "İ", "Ç", "ö"} and len(start.corpus.vocab) > len(
        parent.vocab
    )
    child = CharRNN(replace(start.model, dropout=0.0))
    child.load_state_dict(start.weights)
    # The parent's validation text (no new characters), in each model's own ids: the same loss at step 0.
    val = parent.validation_ids()
    as_text = parent.vocab.decode(val)
    before = evaluate_ids(load_model_weights(parent), val).loss
    after = evaluate_ids(child, start.corpus.vocab.encode(as_text)).loss
    assert abs(before - after) <= 1e-4, (before, after)


def test_init_starts_a_new_run_that_records_its_parent(tiny_run: TrainSummary, tmp_path: Path) -> None:
    text = tmp_path / "tr.txt"
    text.write_text(TURKISH, encoding="utf-8")
    child = tmp_path / "child"
    _run(
        [
            "train",
            str(text),
            "--init",
            str(tiny_run.run_dir),
            "--max-steps",
            "6",
            "--eval-every",
            "3",
            "--out",
            str(child),
        ]
    )
    info = json.loads((child / "run.json").read_text())
    best = tiny_run.run_dir / "best.safetensors"
    assert info["parent"]["path"] == str(tiny_run.run_dir.resolve())
    assert info["parent"]["weights_sha256"] == hashlib.sha256(best.read_bytes()).hexdigest()
    parent_info = json.loads((tiny_run.run_dir / "run.json").read_text())
    assert info["text"] == parent_info["text"]
    assert (info["model"]["layers"], info["model"]["hidden"]) == (
        parent_info["model"]["layers"],
        parent_info["model"]["hidden"],
    )
    assert info["model"]["vocab_size"] > parent_info["model"]["vocab_size"]
    assert info["train"]["lr"] < 0.006  # the fine-tuning rate, below a fresh run's
    result = CliRunner().invoke(app, ["info", str(child)])
    assert "started from" in result.stdout
    result = CliRunner().invoke(app, ["info", str(child), "--json"])  # the same, as one object
    assert result.exit_code == 0 and json.loads(result.stdout)["parent"] == info["parent"], result.output
    result = CliRunner().invoke(app, ["sample", "--model", str(child), "--prefix", "Şöyle", "--length", "20"])
    assert result.exit_code == 0 and result.stdout.startswith("Şöyle"), result.output
    # --unknown skip keeps the parent's vocabulary
    _run(
        [
            "train",
            str(text),
            "--init",
            str(tiny_run.run_dir),
            "--unknown",
            "skip",
            "--max-steps",
            "2",
            "--out",
            str(tmp_path / "same"),
        ]
    )
    assert (
        json.loads((tmp_path / "same" / "run.json").read_text())["model"]["vocab_size"]
        == parent_info["model"]["vocab_size"]
    )


def test_a_fine_tune_says_what_became_of_the_characters_the_parent_never_saw(
    tiny_run: TrainSummary, tmp_path: Path
) -> None:
    text = tmp_path / "tr.txt"
    text.write_text(TURKISH, encoding="utf-8")
    unseen = sum(TURKISH.count(c) for c in set(TURKISH) if c not in load_run(tiny_run.run_dir).vocab.chars)
    args = ["train", str(text), "--init", str(tiny_run.run_dir), "--max-steps", "1"]
    grown = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "grown")])
    assert grown.exit_code == 0, grown.output
    said = [line for line in grown.stderr.splitlines() if line.startswith("fine-tuning from")]
    assert len(said) == 1 and "new character(s) get their own rows" in said[0] and "'ş'" in said[0], said
    skipped = CliRunner().invoke(app, [*args, "--unknown", "skip", "--out", str(tmp_path / "skipped")])
    assert skipped.exit_code == 0, skipped.output
    said = [line for line in skipped.stderr.splitlines() if line.startswith("fine-tuning from")]
    left = len(TURKISH) - unseen
    assert (
        said
        and f"{unseen:,} character(s) it never saw were left out (--unknown skip), leaving {left:,}"
        in said[0]
    )
    refused = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "grown")])  # said once it starts
    assert refused.exit_code == 1 and refused.stderr.startswith("Error:"), refused.output
    assert len(refused.stderr.strip().splitlines()) == 1, refused.stderr


def test_a_list_run_fine_tunes_on_a_new_list(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("\n".join(f"name{k}x" for k in range(300)), encoding="utf-8")
    (tmp_path / "b.txt").write_text("\n".join(f"ayşe{k}ğ" for k in range(200)), encoding="utf-8")
    small = ["--hidden", "16", "--embed", "8", "--layers", "1", "--batch-size", "8", "--max-steps", "4"]
    _run(["train", str(tmp_path / "a.txt"), "--items", "lines", *small, "--out", str(tmp_path / "p")])
    _run(
        [
            "train",
            str(tmp_path / "b.txt"),
            "--init",
            str(tmp_path / "p"),
            "--max-steps",
            "4",
            "--batch-size",
            "8",
            "--out",
            str(tmp_path / "c"),
        ]
    )
    info = json.loads((tmp_path / "c" / "run.json").read_text())
    assert info["text"]["items"] == "lines" and info["corpus"]["items"] == 200
    result = CliRunner().invoke(app, ["sample", "--model", str(tmp_path / "c"), "--items", "3"])
    assert result.exit_code == 0 and len(result.stdout.splitlines()) == 3, result.output


@pytest.mark.parametrize(
    ("extra", "phrase"),
    [
        (["--init", "missing-run"], "not found"),
        (["--init", "DAMAGED"], "damaged"),
        (["--init", "PARENT", "--tokenizer", "bytes"], "--tokenizer bytes"),
        (["--init", "PARENT", "--resume", "PARENT"], "give one of them"),
        (["--init", "PARENT", "--hidden", "64"], "--hidden"),
        (["--init", "PARENT", "--unknown", "maybe"], "--unknown"),
        (["--init", "PARENT", "--items", "\\n\\n"], "differ: --items \\n\\n (the parent has none); leave"),
        (["--init", "PARENT", "--lowercase"], "differ: --lowercase (the parent has it off); leave"),
    ],
    ids=["missing", "damaged", "tokenizer", "with-resume", "shape", "unknown", "items", "lowercase"],
)
def test_bad_init_is_one_line_and_writes_nothing(
    tiny_run: TrainSummary, tmp_path: Path, extra: list[str], phrase: str
) -> None:
    damaged = tmp_path / "damaged"
    damaged.mkdir()
    for name in ("run.json", "vocab.json", "valid.safetensors"):
        (damaged / name).write_bytes((tiny_run.run_dir / name).read_bytes())
    (damaged / "best.safetensors").write_bytes((tiny_run.run_dir / "best.safetensors").read_bytes()[:100])
    swap = {
        "DAMAGED": str(damaged),
        "PARENT": str(tiny_run.run_dir),
        "missing-run": str(tmp_path / "missing-run"),
    }
    text = tmp_path / "tr.txt"
    text.write_text(TURKISH, encoding="utf-8")
    out = tmp_path / "child"
    result = CliRunner().invoke(
        app, ["train", str(text), *[swap.get(a, a) for a in extra], "--out", str(out)]
    )
    assert result.exit_code != 0 and "Traceback" not in result.output
    message = result.stderr.strip()
    assert message.startswith("Error:") and "\n" not in message and phrase in message, message
    assert not out.exists()


def test_a_switch_turned_off_that_differs_is_named_as_typed(lamp_text: str, tmp_path: Path) -> None:
    """A parent that lowercases, and --no-lowercase given to a fine-tune or a resume of it: the
    message names --no-lowercase, the flag typed, not `--lowercase False`."""
    lamp = tmp_path / "lamp.txt"
    lamp.write_text(lamp_text[:20_000], encoding="utf-8")
    small = ["--hidden", "16", "--embed", "8", "--layers", "1", "--batch-size", "4", "--bptt", "16"]
    parent = tmp_path / "parent"
    _run(["train", str(lamp), "--lowercase", *small, "--max-steps", "2", "--out", str(parent)])
    child = tmp_path / "child"
    for args, phrase in (
        (
            [str(lamp), "--init", str(parent), "--out", str(child)],
            "differ: --no-lowercase (the parent has it on)",
        ),
        (["--resume", str(parent), "--max-steps", "3"], "differ: --no-lowercase (the run has it on)"),
    ):
        result = CliRunner().invoke(app, ["train", *args, "--no-lowercase"])
        message = result.stderr.strip()
        assert result.exit_code == 2 and "\n" not in message and phrase in message, message
        assert "False" not in message
    assert not child.exists()


def _fine_tune_on_a_min_count_parent(lamp_text: str, tmp_path: Path, unknown: str) -> Path:
    """A fine-tune, four steps on Turkish with `unknown`, of a tiny parent that has the unknown
    symbol (--min-count), so that `replace` maps to it rather than dropping. Returns the child."""
    lamp = tmp_path / "lamp.txt"
    lamp.write_text(lamp_text[:20_000], encoding="utf-8")
    small = ["--hidden", "16", "--embed", "8", "--layers", "1", "--batch-size", "4", "--bptt", "16"]
    parent = tmp_path / "parent"
    _run(["train", str(lamp), "--min-count", "3", *small, "--max-steps", "2", "--out", str(parent)])
    assert "\ufffd" in load_run(parent).vocab.chars
    text = tmp_path / "tr.txt"
    text.write_text(TURKISH, encoding="utf-8")
    child = tmp_path / "child"
    fine_tune = ["--init", str(parent), "--unknown", unknown, "--batch-size", "4", "--bptt", "16"]
    _run(["train", str(text), *fine_tune, "--max-steps", "4", "--eval-every", "2", "--out", str(child)])
    return child


@pytest.mark.parametrize("unknown", ["skip", "replace"])
def test_a_fine_tune_that_skips_or_replaces_resumes_reading_its_text_the_same_way(
    lamp_text: str, tmp_path: Path, unknown: str
) -> None:
    child = _fine_tune_on_a_min_count_parent(lamp_text, tmp_path, unknown)
    recorded = json.loads((child / "run.json").read_text())
    assert recorded["parent"]["unknown"] == unknown and recorded["corpus"]["unknown"] > 0
    info = CliRunner().invoke(app, ["info", str(child), "--json"])
    assert json.loads(info.stdout)["parent"]["unknown"] == unknown, info.output

    # As the stop message prints it, and with the same --unknown again: each goes on where it stopped.
    for again, steps in (([], 6), (["--unknown", unknown], 8)):
        result = CliRunner().invoke(app, ["train", "--resume", str(child), *again, "--max-steps", str(steps)])
        assert result.exit_code == 0, result.output
        assert f"resumed at step {steps - 2}" in words(result.output), result.output
        assert load_run(child).info.unknown == unknown
    info = CliRunner().invoke(app, ["info", str(child), "--json"])
    assert json.loads(info.stdout)["steps"] == 8, info.output

    other = "replace" if unknown == "skip" else "skip"
    result = CliRunner().invoke(
        app, ["train", "--resume", str(child), "--unknown", other, "--max-steps", "9"]
    )
    message = result.stderr.strip()
    assert result.exit_code == 2 and "\n" not in message and "--unknown" in message, message


def test_runs_whose_text_had_characters_below_min_count_fine_tune_and_resume(
    lamp_text: str, tmp_path: Path
) -> None:
    """--min-count maps a text's rare characters to the unknown symbol. A run so trained resumes on
    its own text, and an extend fine-tune onto it maps the new text's rare characters so too (it
    grows by the others), then resumes."""
    lamp = tmp_path / "lamp.txt"
    lamp.write_text(lamp_text[:20_000], encoding="utf-8")
    small = ["--hidden", "16", "--embed", "8", "--layers", "1", "--batch-size", "4", "--bptt", "16"]
    parent = tmp_path / "parent"
    _run(["train", str(lamp), "--min-count", "3", *small, "--max-steps", "2", "--out", str(parent)])
    assert json.loads((parent / "run.json").read_text())["corpus"]["unknown"] > 0
    result = CliRunner().invoke(app, ["train", "--resume", str(parent), "--max-steps", "3"])
    assert result.exit_code == 0 and "resumed at step 2" in words(result.output), result.output

    text = tmp_path / "tr.txt"
    text.write_text(TURKISH + "ǂ", encoding="utf-8")  # ǂ once: below the parent's --min-count 3
    child = tmp_path / "child"
    fine_tune = ["--init", str(parent), "--batch-size", "4", "--bptt", "16", "--eval-every", "2"]
    _run(["train", str(text), *fine_tune, "--max-steps", "2", "--out", str(child)])
    vocab = load_run(child).vocab.chars
    assert "ş" in vocab and "ǂ" not in vocab and "\ufffd" in vocab
    assert json.loads((child / "run.json").read_text())["corpus"]["unknown"] == 1
    result = CliRunner().invoke(app, ["train", "--resume", str(child), "--max-steps", "4"])
    assert result.exit_code == 0 and "resumed at step 2" in words(result.output), result.output


@pytest.mark.parametrize("unknown", ["skip", "replace"])
def test_a_skip_or_replace_fine_tune_from_before_the_policy_was_recorded_resumes(
    lamp_text: str, tmp_path: Path, unknown: str
) -> None:
    """run.json's parent had no `unknown` before it was recorded; such a run read its text as it
    began all the same, told apart by the count of ids it recorded where it matters (skip and
    replace differ only where the vocabulary has the unknown symbol)."""
    child = _fine_tune_on_a_min_count_parent(lamp_text, tmp_path, unknown)
    recorded = json.loads((child / "run.json").read_text())
    del recorded["parent"]["unknown"]  # as a run written before it was recorded
    (child / "run.json").write_text(json.dumps(recorded), encoding="utf-8")
    result = CliRunner().invoke(app, ["train", "--resume", str(child), "--max-steps", "6"])
    assert result.exit_code == 0 and "resumed at step 4" in words(result.output), result.output
    corpus = recorded["corpus"]  # the same text as it trained on: replaced, or skipped
    sizes = f"{corpus['train_tokens']:,} training and {corpus['val_tokens']:,} validation"
    assert sizes in words(result.output)
