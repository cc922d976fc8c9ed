import json
import pickle
import shutil
from pathlib import Path

import pytest
import torch

from chargen import checkpoint as ckpt
from chargen.errors import RunError
from chargen.records import TrainSummary


def test_save_then_load_gives_identical_logits(tiny_run: TrainSummary, tmp_path: Path) -> None:
    run = ckpt.load_run(tiny_run.run_dir)
    model = ckpt.load_model_weights(run)
    shutil.copytree(tiny_run.run_dir, tmp_path / "copy")
    ckpt.save_weights(model, tmp_path / "copy" / ckpt.BEST)
    reloaded = ckpt.load_model_weights(ckpt.load_run(tmp_path / "copy"))
    x = torch.from_numpy(run.vocab.encode("The Time Traveller").astype("int64")).view(-1, 1)
    with torch.no_grad():
        assert torch.equal(model(x)[0], reloaded(x)[0])


def test_weights_held_in_one_flat_buffer_save_and_load(tiny_run: TrainSummary, tmp_path: Path) -> None:
    """On a GPU, cuDNN keeps nn.LSTM's weights as views into one flat buffer; safetensors'
    save_model refused that layout, so the first best model of every GPU run failed to save. The
    same layout, made here on the CPU, must save, and load back equal."""
    run = ckpt.load_run(tiny_run.run_dir)
    model = ckpt.load_model_weights(run)
    weights = list(model.rnn.parameters())
    flat = torch.cat([w.detach().reshape(-1) for w in weights])
    at = 0
    for w in weights:
        w.data = flat[at : at + w.numel()].view_as(w)
        at += w.numel()
    assert len({w.untyped_storage().data_ptr() for w in model.rnn.parameters()}) == 1
    shutil.copytree(tiny_run.run_dir, tmp_path / "copy")
    ckpt.save_weights(model, tmp_path / "copy" / ckpt.BEST)
    reloaded = ckpt.load_model_weights(ckpt.load_run(tmp_path / "copy"))
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, reloaded.state_dict()[name]), name


def test_missing_and_damaged_runs_are_refused(tiny_run: TrainSummary, tmp_path: Path) -> None:
    with pytest.raises(RunError, match="not found"):
        ckpt.load_run(tmp_path / "nothing")
    damaged = tmp_path / "damaged"
    shutil.copytree(tiny_run.run_dir, damaged)
    (damaged / ckpt.RUN_JSON).write_text("{not json")
    with pytest.raises(RunError, match=r"run\.json is not valid JSON"):
        ckpt.load_run(damaged)
    info = json.loads((tiny_run.run_dir / ckpt.RUN_JSON).read_text())
    (damaged / ckpt.RUN_JSON).write_text(json.dumps({**info, "format_version": 99}))
    with pytest.raises(RunError, match="newer chargen"):
        ckpt.load_run(damaged)


def test_a_pickle_in_place_of_the_weights_is_refused(tiny_run: TrainSummary, tmp_path: Path) -> None:
    run_dir = tmp_path / "evil"
    shutil.copytree(tiny_run.run_dir, run_dir)
    (run_dir / ckpt.BEST).write_bytes(pickle.dumps({"weights": [1, 2, 3]}))
    with pytest.raises(RunError, match=r"best\.safetensors cannot be loaded"):
        ckpt.load_model_weights(ckpt.load_run(run_dir))


def test_an_existing_directory_is_not_overwritten(tmp_path: Path) -> None:
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("precious")
    with pytest.raises(RunError, match="already exists"):
        ckpt.new_run_dir(tmp_path / "mine", "x")
    assert (tmp_path / "mine" / "notes.txt").read_text() == "precious"


def test_atomic_writes_leave_no_temporary_files(tmp_path: Path) -> None:
    ckpt.write_json(tmp_path / "a.json", {"é": 1})
    ckpt.write_json(tmp_path / "a.json", {"é": 2})
    assert json.loads((tmp_path / "a.json").read_text(encoding="utf-8")) == {"é": 2}
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]


def test_every_file_of_a_run_is_as_readable_as_the_umask_says(tiny_run: TrainSummary) -> None:
    """The weights were private (0600: safetensors writes them so) while run.json was not."""
    import os

    umask = os.umask(0)
    os.umask(umask)
    modes = {p.name: p.stat().st_mode & 0o777 for p in tiny_run.run_dir.iterdir() if p.is_file()}
    assert ckpt.BEST in modes and ckpt.CHECKPOINT in modes
    assert set(modes.values()) == {0o666 & ~umask}, modes


def test_a_run_that_never_trained_a_step_is_refused_not_sampled(lamp_text: str, tmp_path: Path) -> None:
    """A run that diverged (or was stopped) before its first step has only its random weights: sample
    and eval refuse it in one line, where they used to print noise and an untrained perplexity."""
    from typer.testing import CliRunner

    from chargen.cli import app
    from chargen.config import TrainConfig
    from chargen.errors import TrainingError
    from chargen.training import train
    from tests.conftest import TINY_MODEL, corpus_from_text

    corpus = corpus_from_text(tmp_path, lamp_text[:20_000])
    config = TrainConfig(batch_size=4, bptt=16, max_steps=30, eval_every=20, lr=1e30, clip=0, seed=0)
    with pytest.raises(TrainingError, match="not finite"):
        train(corpus, TINY_MODEL, config, out=tmp_path / "diverged")
    for command in (["sample", "--length", "5"], ["eval"]):
        result = CliRunner().invoke(app, [*command, "--model", str(tmp_path / "diverged")])
        assert result.exit_code == 1 and result.stdout == "", result.output
        assert "has not trained a step" in result.stderr and "\n" not in result.stderr.strip()
