"""Dynamic evaluation: no score draws on the character it predicts or a later one, a step of 0 is
static evaluation, adapting helps on a text that repeats itself, the model it adapts is a copy
to sample from, and the commands (eval --adapt, sample --adapt-on) with their bad input."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from chargen.adapt import (
    DynamicEvaluator,
    GradientScale,
    adapt_on,
    dynamic_evaluate,
    gradient_scale,
    score_ids,
)
from chargen.checkpoint import Run, load_model_weights, load_run
from chargen.cli import app
from chargen.config import AdaptConfig, SampleConfig, TextConfig
from chargen.corpus import load_corpus
from chargen.errors import ConfigError
from chargen.evaluate import LossStats, evaluate_ids
from chargen.model import CharRNN
from chargen.records import TrainSummary
from chargen.runs import training_ids
from chargen.sample import Continuation, sample_batch
from chargen.training import train
from tests.conftest import TINY_MODEL, TINY_TRAIN

runner = CliRunner()
STRONG = AdaptConfig(lr=3e-3, decay=0.0, segment=16)  # big steps, so any leak would show


@pytest.fixture(scope="module")
def run(tiny_run: TrainSummary) -> Run:
    return load_run(tiny_run.run_dir)


@pytest.fixture(scope="module")
def model(run: Run) -> CharRNN:
    return load_model_weights(run)


@pytest.fixture(scope="module")
def scale(run: Run, model: CharRNN) -> GradientScale:
    return gradient_scale(model, training_ids(run), STRONG)


def _read(model: CharRNN, ids: np.ndarray, scale: GradientScale, config: AdaptConfig = STRONG) -> np.ndarray:
    return DynamicEvaluator(model, scale, config).read(ids).log_probs


def test_the_gradient_scale_has_one_finite_tensor_per_parameter(model: CharRNN, scale: GradientScale) -> None:
    params = list(model.parameters())
    assert [r.shape for r in scale.rms] == [p.shape for p in params]
    assert all(bool(torch.isfinite(r).all()) and bool((r >= 0).all()) for r in scale.rms)
    assert sum(float(r.sum()) for r in scale.rms) > 0 and scale.chars > 0


# ids[t] is scored by log_probs[t - 1]: with segments of 16, t = 16 is the last a segment scores,
# t = 17 the first of the next, t = 40 one in the middle.
@pytest.mark.parametrize("t", [16, 17, 40])
def test_changing_a_character_changes_no_score_before_it(
    run: Run, model: CharRNN, scale: GradientScale, t: int
) -> None:
    ids = np.array(run.validation_ids()[:120], dtype=np.int64)
    before = _read(model, ids, scale)
    changed = ids.copy()
    changed[t] = (ids[t] + 1) % len(run.vocab)
    after = _read(model, changed, scale)
    # log_probs[j] scores ids[j + 1]: the characters before t are scored exactly as they were...
    np.testing.assert_allclose(after[: t - 1], before[: t - 1], rtol=0, atol=1e-9)
    # ...while the steps taken on the change move the scores after it (the adapting is real).
    assert np.abs(after[t:] - before[t:]).max() > 1e-4


def test_the_probabilities_of_every_possible_next_character_sum_to_one(
    run: Run, model: CharRNN, scale: GradientScale
) -> None:
    """Had a step used the character before scoring it, each choice would score higher than the
    model's prediction gives it, and together they would hold more than probability 1."""
    ids = np.array(run.validation_ids()[:41], dtype=np.int64)  # the last, ids[40], mid-segment
    choices = []
    for c in range(len(run.vocab)):
        ids[40] = c
        choices.append(_read(model, ids, scale)[-1])
    assert abs(float(np.logaddexp.reduce(choices))) < 1e-5


def test_a_step_of_zero_is_static_evaluation(run: Run, model: CharRNN, scale: GradientScale) -> None:
    ids = run.validation_ids()[:1500]  # short enough for evaluate_ids to read it as one stream
    static = evaluate_ids(model, ids)
    for lr in (0.0, 1e-12):  # 0 skips the steps; a negligible one takes them
        adapted = dynamic_evaluate(model, ids, dataclasses.replace(STRONG, lr=lr), scale)
        assert adapted.chars == static.chars == len(ids) - 1
        assert abs(adapted.loss - static.loss) < 1e-5


def test_a_step_of_zero_is_static_evaluation_with_dropout_and_weight_drop_too(
    run: Run, model: CharRNN, scale: GradientScale
) -> None:
    """The learner computes in training mode: every dropout, the weight drop included, must be off."""
    dropped = CharRNN(dataclasses.replace(model.config, dropout=0.4, weight_drop=0.4))
    dropped.load_state_dict(model.state_dict())
    ids = run.validation_ids()[:600]
    static = evaluate_ids(dropped.eval(), ids)
    adapted = dynamic_evaluate(dropped, ids, dataclasses.replace(STRONG, lr=1e-12), scale)
    assert abs(adapted.loss - static.loss) < 1e-5


def test_adapting_lowers_the_loss_on_a_text_that_repeats(run: Run, model: CharRNN) -> None:
    ids = run.vocab.encode("The lamp at Pellow Point. " * 30)
    config = AdaptConfig()  # the defaults
    scale = gradient_scale(model, training_ids(run), config)
    static = evaluate_ids(model, ids)
    adapted = DynamicEvaluator(model, scale, config).read(ids)
    assert adapted.stats().loss < static.loss - 0.1, (static.loss, adapted.stats().loss)
    # It learns as it reads: the last 100 characters cost less than the first 100.
    assert -adapted.log_probs[-100:].mean() < -adapted.log_probs[:100].mean() - 0.2


def test_adapt_on_returns_an_adapted_copy_and_the_state_to_continue_from(
    run: Run, model: CharRNN, scale: GradientScale
) -> None:
    trained = [p.detach().clone() for p in model.parameters()]
    passage = run.vocab.encode("The lamp at Pellow Point. ")
    # The default step size: ten times it (1e-3) overshoots on the tiny model as an AVX2-only EPYC
    # trains it (3.59 nats a character against the static 3.29; the default gives 2.77).
    adapted, state = adapt_on(model, np.tile(passage, 30), AdaptConfig(decay=0.0, segment=32), scale)
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), trained, strict=True))  # untouched
    assert any(not torch.equal(p, q) for p, q in zip(adapted.parameters(), trained, strict=True))
    assert not adapted.training and all(s.dtype == torch.float32 and s.grad_fn is None for s in state)
    # Read on from where it left off, the adapted model expects the passage once more far better
    # than the trained one does from its own state there.
    again = np.concatenate([passage[-1:], passage])
    static_state = score_ids(model, np.tile(passage, 30)).state
    assert score_ids(adapted, again, state=state).stats().loss < (
        score_ids(model, again, state=static_state).stats().loss - 0.2
    )
    # Sampling picks up there too, the same way each time with one seed.
    after = Continuation(state, int(passage[-1]))
    config = SampleConfig(length=40, seed=3)
    texts = sample_batch(adapted, run.vocab, config, after=after)
    assert len(texts[0]) == 40 and texts == sample_batch(adapted, run.vocab, config, after=after)


def test_bad_settings_name_their_field() -> None:
    for field, value in (("lr", -1.0), ("decay", 1.5), ("segment", 0), ("epsilon", 0.0)):
        with pytest.raises(ConfigError, match=f"`{field}`") as error:
            AdaptConfig(**{field: value})
        assert error.value.field == field


# --- the command line ----------------------------------------------------------------------------


def _one_line_error(result, code: int = 1) -> str:  # type: ignore[no-untyped-def]
    assert result.exit_code == code, result.output
    message = result.stderr.strip()
    assert message.startswith("Error:") and "\n" not in message, message
    assert result.stdout == ""
    return message


@pytest.fixture
def text_file(tmp_path: Path) -> Path:
    path = tmp_path / "chapter.txt"
    path.write_text("The lamp at Pellow Point. " * 35, encoding="utf-8")  # 910 characters
    return path


def test_eval_adapt_reports_both_figures_and_their_times(tiny_run: TrainSummary, text_file: Path) -> None:
    model = str(tiny_run.run_dir)
    result = runner.invoke(app, ["eval", "--adapt", str(text_file), "--model", model, "--json"])
    assert result.exit_code == 0, result.output
    figures = json.loads(result.stdout)
    assert figures["chars"] == len(text_file.read_text(encoding="utf-8")) - 1
    assert figures["adapted_loss"] < figures["loss"]  # the text repeats itself
    assert figures["adapted_bpc"] == pytest.approx(figures["adapted_loss"] / np.log(2))
    assert (
        figures["adapt_seconds"] > 0 and figures["seconds"] > 0 and figures["scale_from"] == "training text"
    )
    assert figures["adapt_lr"] == AdaptConfig.lr and figures["adapt_segment"] == AdaptConfig.segment

    args = ["--adapt-lr", "0.01", "--adapt-decay", "0", "--adapt-segment", "20", "--json"]
    result = runner.invoke(app, ["eval", "--adapt", "--model", model, *args])  # the validation split
    assert result.exit_code == 0, result.output
    figures = json.loads(result.stdout)
    assert (figures["adapt_lr"], figures["adapt_decay"], figures["adapt_segment"]) == (0.01, 0.0, 20)

    result = runner.invoke(app, ["eval", "--adapt", str(text_file), "--model", model])
    assert result.exit_code == 0, result.output
    assert "adapted" in result.stdout and "static" in result.stdout and "training text" in result.stderr


def test_sample_adapt_on_continues_the_text_and_says_whether_adapting_helped(
    tiny_run: TrainSummary, text_file: Path
) -> None:
    args = ["sample", "--model", str(tiny_run.run_dir), "--adapt-on", str(text_file), "--length", "30"]
    result = runner.invoke(app, [*args, "--seed", "1", "--adapt-lr", "0.001"])
    assert result.exit_code == 0, result.output
    assert len(result.stdout) == 31 and result.stdout.endswith("\n")  # 30 characters, then a line break
    line = result.stderr.strip()
    assert "\n" not in line and "last 91 characters" in line and "before" in line and "after" in line
    result = runner.invoke(app, [*args, "--num-samples", "2", "--prefix", "The "])
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("The ")


def test_without_its_training_text_the_scale_comes_from_the_validation_split(
    tiny_run: TrainSummary, text_file: Path, tmp_path: Path
) -> None:
    moved = tmp_path / "moved"
    for name in ("run.json", "vocab.json", "valid.safetensors", "best.safetensors"):
        (moved / name).parent.mkdir(exist_ok=True)
        (moved / name).write_bytes((tiny_run.run_dir / name).read_bytes())
    info = json.loads((moved / "run.json").read_text(encoding="utf-8"))
    info["corpus"]["path"] = str(tmp_path / "gone.txt")
    (moved / "run.json").write_text(json.dumps(info), encoding="utf-8")
    result = runner.invoke(app, ["eval", "--adapt", str(text_file), "--model", str(moved), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["scale_from"] == "validation split"
    # Scoring the validation split itself, it may not also be where the scale comes from.
    message = _one_line_error(runner.invoke(app, ["eval", "--adapt", "--model", str(moved)]))
    assert "not available" in message and "give a text file" in message
    # A training text edited since the run read it is no longer its training text: it might now
    # hold what is scored. So too for the n-grams --novelty compares a sample with.
    edited = tmp_path / "edited.txt"
    edited.write_text(
        "The lamp at the point.\n" * 40, encoding="utf-8"
    )  # not the text run.json's sha256 is of
    info["corpus"]["path"] = str(edited)
    (moved / "run.json").write_text(json.dumps(info), encoding="utf-8")
    result = runner.invoke(app, ["eval", "--adapt", str(text_file), "--model", str(moved), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["scale_from"] == "validation split"
    message = _one_line_error(runner.invoke(app, ["sample", "--novelty", "--model", str(moved)]))
    assert "has changed since the run read it" in message


def test_bad_input_is_one_line(tiny_run: TrainSummary, tmp_path: Path) -> None:
    model = ["--model", str(tiny_run.run_dir)]
    empty = tmp_path / "empty.txt"
    empty.write_text("", encoding="utf-8")
    assert "empty" in _one_line_error(runner.invoke(app, ["eval", "--adapt", str(empty), *model]))
    assert "empty" in _one_line_error(runner.invoke(app, ["sample", "--adapt-on", str(empty), *model]))
    one = tmp_path / "one.txt"
    one.write_text("T", encoding="utf-8")
    assert "at least 2 characters" in _one_line_error(
        runner.invoke(app, ["eval", "--adapt", str(one), *model])
    )
    short = tmp_path / "short.txt"
    short.write_text("The lamp", encoding="utf-8")
    # No longer than one segment: the only step would come after the text ends, so it is refused,
    # before the gradient scale is measured, rather than reporting the static figures as adapted.
    message = _one_line_error(runner.invoke(app, ["eval", "--adapt", str(short), *model]), code=2)
    assert "has 7 character(s) to score, no more than one --adapt-segment (50)" in message
    assert "lower --adapt-segment below 7" in message
    result = runner.invoke(app, ["eval", "--adapt", "--adapt-segment", "6", str(short), *model, "--json"])
    assert result.exit_code == 0 and json.loads(result.stdout)["chars"] == 7, result.output
    assert "at least 20" in _one_line_error(runner.invoke(app, ["sample", "--adapt-on", str(short), *model]))
    # Long enough as given, too short once the characters the model never saw are skipped: it says so.
    unseen = tmp_path / "unseen.txt"
    unseen.write_text("The lamp " + "\u0416" * 30, encoding="utf-8")  # Cyrillic Zhe: not in the corpus
    skip = ["sample", "--adapt-on", str(unseen), "--unknown", "skip", *model]
    message = _one_line_error(runner.invoke(app, skip))
    assert "has 9 character(s) left once the 30 character(s) the model has never seen are left out" in message
    assert "at least 20" in message
    message = _one_line_error(runner.invoke(app, ["eval", "--adapt", "--adapt-lr", "-1", *model]), code=2)
    assert "--adapt-lr must not be negative" in message
    message = _one_line_error(runner.invoke(app, ["eval", "--adapt-segment", "20", *model]), code=2)
    assert "--adapt-segment works only with --adapt" in message
    message = _one_line_error(runner.invoke(app, ["sample", "--adapt-decay", "2", *model]), code=2)
    assert "--adapt-decay must be in [0, 1]" in message
    message = _one_line_error(runner.invoke(app, ["sample", "--adapt-lr", "0.1", *model]), code=2)
    assert "--adapt-lr works only with --adapt-on" in message
    latin = tmp_path / "latin.txt"
    latin.write_bytes("The lamp at Pellow Point, café. ".encode("latin-1") * 5)
    message = _one_line_error(runner.invoke(app, ["sample", "--adapt-on", str(latin), *model]))
    assert "give its --encoding" in message  # a flag sample has
    read = runner.invoke(
        app, ["sample", "--adapt-on", str(latin), "--encoding", "latin-1", "--unknown", "skip", *model]
    )
    assert read.exit_code == 0 and "adapted to" in read.stderr, read.output
    message = _one_line_error(runner.invoke(app, ["sample", "--encoding", "latin-1", *model]), code=2)
    assert "--encoding works only with --adapt-on" in message
    # Steps so large they blow the weights up: no NaN figure, and nothing sampled from NaN weights.
    text = tmp_path / "text.txt"
    text.write_text("The lamp at Pellow Point. " * 10, encoding="utf-8")
    for command in (["eval", "--adapt", str(text)], ["sample", "--adapt-on", str(text)]):
        message = _one_line_error(runner.invoke(app, [*command, *model, "--adapt-lr", "1e300"]))
        assert "dynamic evaluation diverged" in message and "lower --adapt-lr" in message, message
    assert not list(tmp_path.glob("runs"))  # nothing written


def test_a_perplexity_too_large_for_a_float_is_null_in_json_not_infinity() -> None:
    huge = LossStats(chars=10, loss=868.0)  # what steps of 10 reached on The Time Machine
    assert huge.perplexity == float("inf") and huge.to_dict()["perplexity"] is None
    assert json.loads(json.dumps(huge.to_dict()))["loss"] == 868.0
    assert LossStats(chars=10, loss=2.0).to_dict()["perplexity"] == pytest.approx(np.exp(2.0))


def test_a_run_trained_on_a_list_is_refused(tmp_path: Path) -> None:
    names = tmp_path / "names.txt"
    names.write_text("\n".join(["emma", "olivia", "ava", "isabella", "sophia", "mia"] * 40), encoding="utf-8")
    config = dataclasses.replace(TINY_TRAIN, max_steps=2, eval_every=2)
    train(load_corpus(names, TextConfig(items="lines")), TINY_MODEL, config, out=tmp_path / "list")
    model = ["--model", str(tmp_path / "list")]
    for command in (["eval", "--adapt"], ["sample", "--adapt-on", str(names)]):
        message = _one_line_error(runner.invoke(app, [*command, *model]), code=2)  # a setting, refused
        said = f"Error: {command[1]} applies to a run trained on a text, and this one was trained on a list"
        assert message == said


def test_the_tuning_grid_prints_a_row_per_combination_and_the_best(
    tiny_run: TrainSummary, capsys: pytest.CaptureFixture[str]
) -> None:
    from chargen.bench import adapt as bench

    grid = ["--lr", "1e-4,1e-3", "--decay", "0", "--segment", "16,32", "--chars", "500"]
    bench.main(["--model", str(tiny_run.run_dir), *grid, "--precision", "fp32"])
    lines = capsys.readouterr().out.splitlines()
    rows = [line.split() for line in lines if line.split() and line.split()[0] in ("16", "32")]
    assert [(r[0], float(r[1])) for r in rows] == [("16", 1e-4), ("16", 1e-3), ("32", 1e-4), ("32", 1e-3)]
    assert "500 characters" in lines[1] and lines[-1].startswith("best: --adapt-lr ")
