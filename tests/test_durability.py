"""Never lose work, never run untrusted code: exact resume, interrupts, kills, NaN, crafted files."""

from __future__ import annotations

import json
import os
import pickle
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from chargen import checkpoint as ckpt
from chargen.cli import app
from chargen.config import ModelConfig, TrainConfig
from chargen.errors import RunError, TrainingError, TrainingInterrupted
from chargen.reports import StepReport
from chargen.training import resume, train
from tests.conftest import TINY_MODEL, corpus_from_text

TINY_ARGS = ["--hidden", "32", "--embed", "16", "--layers", "1", "--batch-size", "4", "--bptt", "16"]


def _weights(run_dir: Path) -> dict[str, torch.Tensor]:
    tensors = load_file(str(run_dir / ckpt.CHECKPOINT))
    return {k: v for k, v in tensors.items() if k.startswith(("model.", "optim."))}


def _train_records(run_dir: Path) -> dict[int, float]:
    lines = (run_dir / ckpt.METRICS).read_text().splitlines()
    return {r["step"]: r["loss"] for r in map(json.loads, lines) if r["kind"] == "train"}


def test_stopped_and_resumed_equals_uninterrupted_bit_for_bit(lamp_text: str, tmp_path: Path) -> None:
    torch.use_deterministic_algorithms(True)
    try:
        corpus = corpus_from_text(tmp_path, lamp_text[:30_000])
        config = TrainConfig(
            batch_size=4, bptt=16, max_steps=40, eval_every=15, log_every=5, seed=1, state_reset=0.2
        )
        model = ModelConfig(hidden=32, embed=16, layers=2, dropout=0.3)  # dropout draws random numbers too
        whole = train(corpus, model, config, out=tmp_path / "whole")

        stop = threading.Event()

        def stop_at_20(report: object) -> None:
            if isinstance(report, StepReport) and report.step == 20:
                stop.set()  # as Ctrl-C would; the loop stops after its current step

        with pytest.raises(TrainingInterrupted, match=r"checkpoint is saved in .*; resume\(\) continues it"):
            train(corpus, model, config, out=tmp_path / "halves", report=stop_at_20, stop=stop)
        stopped_at = json.loads(load_file_metadata(tmp_path / "halves"))["step"]
        assert stopped_at == 20
        resumed = resume(tmp_path / "halves")
    finally:
        torch.use_deterministic_algorithms(False)

    assert resumed.steps == whole.steps == 40
    a, b = _weights(tmp_path / "whole"), _weights(tmp_path / "halves")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert resumed.best.loss == whole.best.loss
    # The loss curve continues without a jump: every logged step matches the uninterrupted run.
    assert _train_records(tmp_path / "halves") == _train_records(tmp_path / "whole")


def load_file_metadata(run_dir: Path) -> str:
    from safetensors import safe_open

    with safe_open(str(run_dir / ckpt.CHECKPOINT), framework="pt") as f:
        return f.metadata()["position"]


def test_a_finished_run_trains_further_with_a_larger_limit(lamp_text: str, tmp_path: Path) -> None:
    corpus = corpus_from_text(tmp_path, lamp_text[:20_000])
    config = TrainConfig(batch_size=4, bptt=16, max_steps=6, eval_every=3, seed=0)
    train(corpus, TINY_MODEL, config, out=tmp_path / "run")
    reports: list[object] = []
    with pytest.raises(TrainingError, match="already reached its limit"):
        resume(tmp_path / "run", report=reports.append)
    assert reports == []  # refused before its start is reported: the command line shows one line
    assert resume(tmp_path / "run", settings={"max_steps": 10}).steps == 10
    with pytest.raises(Exception, match=r"`hidden=64` \(the run has 48\)"):
        resume(tmp_path / "run", settings={"max_steps": 20, "hidden": 64})
    other = tmp_path / "other.txt"
    other.write_text("Żółć and ☃", encoding="utf-8")
    with pytest.raises(RunError, match="'☃'"):
        resume(tmp_path / "run", corpus=other, settings={"max_steps": 20})


def _files(run_dir: Path) -> dict[str, tuple[int, bytes]]:
    """Every file of a run directory, hidden ones too, with its modification time and contents."""
    return {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in sorted(run_dir.iterdir()) if p.is_file()}


def test_a_run_whose_own_text_changed_is_not_resumed_and_nothing_is_written(
    lamp_text: str, tmp_path: Path
) -> None:
    corpus = corpus_from_text(tmp_path, lamp_text[:20_000])
    config = TrainConfig(batch_size=4, bptt=16, max_steps=6, eval_every=3, seed=0)
    run_dir = train(corpus, TINY_MODEL, config, out=tmp_path / "run").run_dir
    original = corpus.path.read_bytes()
    # Characters the run knows, so that only the recorded sha256 can tell the text changed.
    corpus.path.write_bytes(original + lamp_text[:40].encode())
    (run_dir / ".checkpoint.safetensors.tmp").write_bytes(b"cut short")  # what a resume tidies away
    before = _files(run_dir)

    with pytest.raises(RunError, match=r"changed since the run began.*original text.*`init`"):
        resume(run_dir, settings={"max_steps": 10})
    assert _files(run_dir) == before
    result = CliRunner().invoke(app, ["train", "--resume", str(run_dir), "--max-steps", "10"])
    assert result.exit_code == 1 and "changed since the run began" in result.stderr, result.output
    assert "--init" in result.stderr and result.stderr.strip().count("\n") == 0, result.stderr
    assert _files(run_dir) == before

    # A text given by name is the user's choice (docs/commands.md): it resumes if the vocabulary fits.
    assert resume(run_dir, corpus=corpus.path, settings={"max_steps": 8}).steps == 8
    corpus.path.write_bytes(original)  # the original text back: the run's own text resumes again
    assert resume(run_dir, settings={"max_steps": 10}).steps == 10


def test_resuming_on_characters_the_run_never_saw_says_what_helps(lamp_text: str, tmp_path: Path) -> None:
    corpus = corpus_from_text(tmp_path, lamp_text[:20_000])
    config = TrainConfig(batch_size=4, bptt=16, max_steps=6, eval_every=3, seed=0)
    run_dir = train(corpus, TINY_MODEL, config, out=tmp_path / "run").run_dir
    other = tmp_path / "other.txt"
    other.write_text(lamp_text[:2_000] + "☃ under ☂", encoding="utf-8")
    before = _files(run_dir)
    with pytest.raises(RunError) as refused:
        resume(run_dir, corpus=other, settings={"max_steps": 10})
    message = str(refused.value)
    assert "'☂' (U+2602), '☃' (U+2603)" in message and "`init`" in message, message
    line = lamp_text[:2_000].count("\n") + 1  # the snowman's, as an error on one's own text names it
    assert f"; the first is on line {line}: '" in message and "☃ under ☂'. A resumed run" in message, message
    assert "unknown=" not in message, message  # resume always reads with unknown="error"
    assert _files(run_dir) == before


def _start_training(run_dir: Path, corpus: Path, *extra: str) -> subprocess.Popen:
    args = (
        ["--resume", str(run_dir)] if run_dir.exists() else [str(corpus), "--out", str(run_dir), *TINY_ARGS]
    )
    command = [sys.executable, "-m", "chargen", "train", *args, "--save-every", "1", *extra]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def _wait_for(path: Path, process: subprocess.Popen, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while not path.exists():
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.02)


@pytest.mark.parametrize(("stop_signal", "exit_code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_stop_signal_saves_a_checkpoint_and_names_the_resume_command(
    stop_signal: signal.Signals, exit_code: int, lamp_text: str, tmp_path: Path
) -> None:
    """Ctrl-C (SIGINT) or SIGTERM: a clean stop, and the exit status the shell gives for that
    signal, 128 + its number (SIGTERM's used to be 130, Ctrl-C's)."""
    corpus = tmp_path / "small.txt"
    corpus.write_text(lamp_text[:20_000], encoding="utf-8")
    run_dir = tmp_path / "run"
    process = _start_training(run_dir, corpus, "--max-steps", "100000", "--eval-every", "50")
    _wait_for(run_dir / ckpt.CHECKPOINT, process)
    time.sleep(1.0)
    process.send_signal(stop_signal)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == exit_code, stderr
    assert f"chargen train --resume {run_dir}" in stderr and "Traceback" not in stderr
    assert "Stopped: training stopped at step" in stderr and "Error" not in stderr  # asked for, no error
    step = json.loads(load_file_metadata(run_dir))["step"]
    result = CliRunner().invoke(app, ["train", "--resume", str(run_dir), "--max-steps", str(step + 3)])
    assert result.exit_code == 0, result.output


def test_sigkill_at_random_moments_never_tears_a_file(lamp_text: str, tmp_path: Path) -> None:
    corpus = tmp_path / "small.txt"
    corpus.write_text(lamp_text[:20_000], encoding="utf-8")
    run_dir = tmp_path / "run"
    rng = random.Random(0)
    runner = CliRunner()
    for _ in range(20):
        process = _start_training(run_dir, corpus, "--max-steps", "100000", "--eval-every", "7")
        _wait_for(run_dir / ckpt.CHECKPOINT, process)
        time.sleep(rng.uniform(0.0, 0.8))  # often in the middle of a checkpoint write: one per step
        process.kill()
        process.wait()
        run = ckpt.load_run(run_dir)  # every JSON file whole
        ckpt.load_checkpoint(run_dir / ckpt.CHECKPOINT)
        for line in (
            (run_dir / ckpt.METRICS).read_text().splitlines() if (run_dir / ckpt.METRICS).exists() else []
        ):
            json.loads(line)
        ckpt.load_model_weights(run)
        result = runner.invoke(app, ["sample", "--model", str(run_dir), "--length", "20", "--seed", "0"])
        assert result.exit_code == 0, result.output
    step = json.loads(load_file_metadata(run_dir))["step"]
    result = runner.invoke(app, ["train", "--resume", str(run_dir), "--max-steps", str(step + 3)])
    assert result.exit_code == 0, result.output
    assert not list(run_dir.glob(".*.tmp"))  # what killed writes left behind, resuming cleared


def test_a_pickle_crafted_to_run_code_is_refused_and_does_not_run(tiny_run, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    payload = pickle.dumps(Exploit())
    # Each file is replaced in turn and read by the commands that read it.
    readers = {
        ckpt.BEST: ["eval"],
        ckpt.VALID: ["eval"],
        ckpt.RUN_JSON: ["eval", "resume"],
        ckpt.VOCAB_JSON: ["eval", "resume"],
        ckpt.CHECKPOINT: ["resume"],
    }
    for name, commands in readers.items():
        run_dir = tmp_path / f"evil-{name}"
        shutil.copytree(tiny_run.run_dir, run_dir)
        (run_dir / name).write_bytes(payload)
        args = {
            "eval": ["eval", "--model", str(run_dir)],
            "resume": ["train", "--resume", str(run_dir), "--max-steps", "61"],
        }
        for command in commands:
            result = CliRunner().invoke(app, args[command])
            assert result.exit_code != 0, (name, command, result.output)
            message = result.stderr.strip()
            assert name in message and "\n" not in message, (name, command, message)
    assert not marker.exists()


@pytest.mark.parametrize("damage", ["truncate", "empty"])
def test_truncated_or_empty_files_are_refused_with_their_name(tiny_run, tmp_path: Path, damage: str) -> None:
    for name in (ckpt.BEST, ckpt.VALID, ckpt.RUN_JSON, ckpt.VOCAB_JSON):
        run_dir = tmp_path / f"{damage}-{name}"
        shutil.copytree(tiny_run.run_dir, run_dir)
        data = (run_dir / name).read_bytes()
        (run_dir / name).write_bytes(data[: len(data) // 2] if damage == "truncate" else b"")
        result = CliRunner().invoke(app, ["eval", "--model", str(run_dir)])
        assert result.exit_code != 0, (name, result.output)
        message = result.stderr.strip()
        assert name in message and "\n" not in message and "Traceback" not in result.output


def test_a_huge_learning_rate_stops_clearly_and_keeps_finite_best_weights(
    lamp_text: str, tmp_path: Path
) -> None:
    corpus = corpus_from_text(tmp_path, lamp_text[:20_000])
    # patience=0: the divergence, not early stopping, must be what ends the run. (On The Time
    # Machine the loss became infinite at step 11, just before a patience of 10 would have stopped it.)
    config = TrainConfig(batch_size=4, bptt=16, lr=1e6, max_steps=300, eval_every=1, patience=0, seed=0)
    with pytest.raises(TrainingError, match=r"not finite|non-finite") as info:
        train(corpus, TINY_MODEL, config, out=tmp_path / "run")
    assert "lower `lr`" in str(info.value)
    best = load_file(str(tmp_path / "run" / ckpt.BEST))
    assert all(torch.isfinite(t).all() for t in best.values())
    checkpoint = load_file(str(tmp_path / "run" / ckpt.CHECKPOINT))
    assert all(torch.isfinite(t).all() for k, t in checkpoint.items() if k.startswith("model."))


def test_a_stop_asked_for_during_the_set_up_writes_nothing(lamp_text: str, tmp_path: Path) -> None:
    """Ctrl-C before the first step (while the size is measured, say) used to go on, make the run,
    train a step and save it; now nothing is written (the command says so in one line, exit 130)."""
    from chargen.errors import StoppedBeforeTraining
    from tests.conftest import TINY_MODEL, TINY_TRAIN, corpus_from_text

    corpus = corpus_from_text(tmp_path, lamp_text[:20_000])
    stop = threading.Event()
    stop.set()  # as the first Ctrl-C sets it, before train reaches its first step
    with pytest.raises(StoppedBeforeTraining):
        train(corpus, TINY_MODEL, TINY_TRAIN, out=tmp_path / "run", runs_root=tmp_path / "runs", stop=stop)
    assert not (tmp_path / "run").exists() and not (tmp_path / "runs").exists()


def _catches_sigterm(process: subprocess.Popen) -> bool:
    """Whether the process has its own SIGTERM handler: chargen's stop_on_signals installs one."""
    status = Path(f"/proc/{process.pid}/status").read_text()
    caught = int(next(line for line in status.splitlines() if line.startswith("SigCgt:")).split()[1], 16)
    return bool(caught & 1 << (signal.SIGTERM - 1))


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads a process's signals from /proc")
@pytest.mark.parametrize(
    ("command", "stop_signal", "exit_code"),
    [("train", signal.SIGINT, 130), ("train", signal.SIGTERM, 143), ("compare", signal.SIGINT, 130)],
)
def test_a_stop_signal_during_the_set_up_stops_at_once_and_says_so(
    command: str, stop_signal: signal.Signals, exit_code: int, lamp_text: str, tmp_path: Path
) -> None:
    """Ctrl-C while --size auto timed the machine printed 'stopping after this step and saving a
    checkpoint', and the set-up went on to its end (seconds of timing) before saying that training
    stopped before it began, with nothing written. There is no step to finish and nothing to save:
    it stops at once, and says only that."""
    corpus = tmp_path / "small.txt"
    corpus.write_text(lamp_text[:20_000], encoding="utf-8")
    out = tmp_path / "out"
    args = [command, str(corpus), "--out", str(out), "--size", "auto", "--max-time", "10h"]
    args += ["--no-plot"] if command == "compare" else []
    process = subprocess.Popen(
        [sys.executable, "-m", "chargen", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + 60
    while not _catches_sigterm(process):  # the text is read, and the set-up begins
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "chargen never began to handle stop signals"
        time.sleep(0.01)
    process.send_signal(stop_signal)  # while sizes are timed: seconds of it, all but this step left
    stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == exit_code, stderr
    assert stderr == "Stopped: stopped before training began; nothing was written\n" and stdout == ""
    assert not out.exists()


def test_ctrl_c_once_a_runs_steps_are_done_lets_it_finish_and_says_so(
    lamp_text: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Ctrl-C during a run's last evaluation (minutes, on a long validation text) used to print
    "stopping after this step and saving a checkpoint", then finish the evaluation and exit 0 as a
    finished run. There is no step left: it says the run is finishing, and finishes."""
    from chargen.cli.render import stop_on_signals
    from chargen.reports import FinishingReport

    corpus = corpus_from_text(tmp_path, lamp_text[:20_000])
    config = TrainConfig(batch_size=4, bptt=16, max_steps=6, eval_every=4, seed=0)
    seen: list[object] = []
    with stop_on_signals() as stop:

        def report(item: object) -> None:
            stop.watch(item)
            seen.append(item)
            if isinstance(item, FinishingReport):
                os.kill(os.getpid(), signal.SIGINT)  # the handler runs here, in the main thread

        summary = train(corpus, TINY_MODEL, config, out=tmp_path / "run", report=report, stop=stop)
    assert stop.is_set() and summary.steps == 6 and summary.final is not None
    assert [type(r).__name__ for r in seen[-2:]] == ["FinishingReport", "EvalReport"]  # step 6's evaluation
    err = capsys.readouterr().err
    assert "finishing its last evaluation" in err and "stopping after this step" not in err
    assert (tmp_path / "run" / ckpt.SUMMARY).exists()
