"""Vanishing gradients, measured: a plain RNN forgets far faster than an LSTM."""

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from chargen.cli import app
from chargen.config import ModelConfig
from chargen.errors import ConfigError
from chargen.gradients import gradient_decay, random_window, text_windows
from chargen.model import CharRNN


def _fall_over_50_steps(cell: str) -> float:
    torch.manual_seed(0)
    model = CharRNN(ModelConfig(cell=cell, vocab_size=64, layers=2, hidden=256, dropout=0.0))
    norms = gradient_decay(model, random_window(64, 50, 8, seed=0))
    assert norms.shape == (50,) and (norms > 0).all()
    return float(torch.log10(torch.tensor(norms[0] / norms[49])))


def test_a_plain_rnn_loses_gradient_by_orders_of_magnitude_more_than_an_lstm() -> None:
    rnn, lstm = _fall_over_50_steps("rnn"), _fall_over_50_steps("lstm")
    assert rnn > 8  # about 12.6 orders of magnitude here
    # With torch's own initialisation the untrained LSTM's forget gates sit near 0.5, so its gradient
    # falls about 10.6 orders: 2 fewer than the RNN's. (With the forget-gate bias of 1 chargen had
    # before issue 13 it fell about 4; that bias cost quality in short runs, docs/recipe.md.)
    assert rnn - lstm > 1.5


def test_the_cli_prints_the_decay_table(tiny_run) -> None:
    runner = CliRunner()
    result = runner.invoke(app, ["gradients", "--cell", "rnn", "--steps", "30", "--streams", "4"])
    assert result.exit_code == 0, result.output
    assert "orders of magnitude" in result.stdout and "untrained 2x256 rnn" in result.stdout
    trained = runner.invoke(app, ["gradients", str(tiny_run.run_dir), "--steps", "20", "--streams", "4"])
    assert trained.exit_code == 0, trained.output
    bad = runner.invoke(app, ["gradients", "--cell", "transformer"])
    assert bad.exit_code == 2 and "--cell must be one of" in bad.stderr


def test_a_run_given_with_cell_is_refused_not_ignored(tiny_run) -> None:
    runner = CliRunner()
    for run in (str(tiny_run.run_dir), "runs/latest"):  # the default counts when typed
        both = runner.invoke(app, ["gradients", run, "--cell", "rnn", "--steps", "5", "--streams", "2"])
        assert both.exit_code == 2 and both.stdout == "", both.output
        assert both.stderr.strip() == (
            "Error: RUN_DIR and --cell were both given; give a run, or --cell for an untrained model"
        )
    alone = runner.invoke(app, ["gradients", "--cell", "rnn", "--steps", "5", "--streams", "2"])
    assert alone.exit_code == 0 and "untrained 2x256 rnn" in alone.stdout, alone.output


def test_a_seed_given_with_a_run_is_refused_not_ignored(tiny_run) -> None:
    runner = CliRunner()
    seeded = runner.invoke(app, ["gradients", str(tiny_run.run_dir), "--seed", "3", "--steps", "5"])
    assert seeded.exit_code == 2 and seeded.stdout == "", seeded.output
    assert seeded.stderr.strip() == "Error: --seed draws an untrained model and its text; give it with --cell"
    untrained = ["gradients", "--cell", "rnn", "--seed", "3", "--steps", "5", "--streams", "2"]
    with_cell = runner.invoke(app, untrained)
    assert with_cell.exit_code == 0, with_cell.output


def test_text_windows_are_cut_from_the_text() -> None:
    ids = torch.arange(1000).numpy()
    window = text_windows(ids, steps=9, streams=3)
    assert window.shape == (10, 3) and (window[1:] - window[:-1] == 1).all()
    with pytest.raises(ConfigError, match="needs windows of 1,001 characters, and the text has 1,000"):
        text_windows(ids, steps=1000, streams=3)  # a user's setting: a typed error, not a ValueError


def test_steps_or_streams_below_1_are_refused_in_one_line_naming_the_flag(tiny_run) -> None:
    runner = CliRunner()
    untrained = ["gradients", "--cell", "rnn"]
    trained = ["gradients", str(tiny_run.run_dir)]
    for command in (untrained, trained):
        for args, said in (
            (["--steps", "0"], "--steps must be at least 1, not 0"),
            (["--streams", "-2"], "--streams must be at least 1, not -2"),
            (["--steps", "3", "--streams", "0"], "--streams must be at least 1, not 0"),
        ):
            result = runner.invoke(app, [*command, *args])
            assert result.exit_code == 2 and result.stdout == "", result.output
            assert result.stderr.strip() == f"Error: {said}", result.stderr
    # A window longer than the run's validation text: the flag to lower, and how far.
    long = runner.invoke(app, [*trained, "--steps", "100000", "--streams", "2"])
    assert long.exit_code == 2 and long.stdout == "", long.output
    assert long.stderr.startswith("Error: --steps 100000 needs windows of 100,001 characters, and its ")
    assert long.stderr.strip().endswith("; lower --steps") and len(long.stderr.splitlines()) == 1


def test_the_norms_do_not_depend_on_how_many_windows_are_averaged() -> None:
    torch.manual_seed(0)
    model = CharRNN(ModelConfig(cell="lstm", vocab_size=64, layers=2, hidden=32, dropout=0.0))
    one = random_window(64, 10, 1, seed=0)
    alone = gradient_decay(model, one)
    beside = gradient_decay(model, one.repeat(1, 8))  # the same window 8 times: the same mean
    assert np.allclose(alone, beside, rtol=1e-4), (alone, beside)
