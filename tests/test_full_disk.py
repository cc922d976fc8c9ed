"""A disk that fills up (or turns read-only) under a run: one line on stderr, exit code 1, no
traceback, and once there is room again the last good checkpoint samples and resumes.

The run lives on a small tmpfs of its own where the machine lets the tests mount one (as root);
elsewhere the writes are made to fail with the same OSError, ENOSPC, where chargen makes its files.
"""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from safetensors import SafetensorError
from typer.testing import CliRunner

from chargen import checkpoint as ckpt
from chargen import files
from chargen.cli import app
from chargen.cli.render import TrainProgress
from chargen.errors import StorageError
from chargen.reports import Report, StepReport

runner = CliRunner()
TINY = ["--hidden", "32", "--embed", "16", "--layers", "1", "--batch-size", "4", "--bptt", "16"]
NO_SPACE = os.strerror(errno.ENOSPC)  # "No space left on device"


class Disk:
    """A small file system for a run: a tmpfs where one can be mounted, else a folder whose writes
    chargen's file layer is made to refuse with the OSError a full disk gives."""

    def __init__(self, path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.path, self.full, self.room = path, False, 0
        path.mkdir()
        mount = ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(path)]
        self.tmpfs = (
            shutil.which("mount") is not None and subprocess.run(mount, capture_output=True).returncode == 0
        )
        if not self.tmpfs:
            make_temporary = tempfile.mkstemp

            def mkstemp(*args: Any, **kwargs: Any) -> tuple[int, str]:
                # With room left, the small files still fit and the checkpoint does not.
                if self.full and not (self.room and ckpt.CHECKPOINT not in kwargs.get("prefix", "")):
                    raise OSError(errno.ENOSPC, NO_SPACE)
                return make_temporary(*args, **kwargs)

            monkeypatch.setattr(files, "tempfile", SimpleNamespace(mkstemp=mkstemp))

    def fill(self, leave: int = 0) -> None:
        """Take up every byte but `leave`."""
        self.full, self.room = True, leave
        if not self.tmpfs:
            return
        room = self.path / "room"
        room.write_bytes(b"\0" * leave)
        fd = os.open(self.path / "ballast", os.O_WRONLY | os.O_CREAT)
        try:
            for block in (1 << 16, 1 << 12, 1):
                while True:
                    try:
                        os.write(fd, b"\0" * block)
                    except OSError as error:
                        assert error.errno == errno.ENOSPC, error
                        break
        finally:
            os.close(fd)
        room.unlink()

    def free(self) -> None:
        self.full = False
        (self.path / "ballast").unlink(missing_ok=True)

    def remount(self, how: str) -> None:
        subprocess.run(["mount", "-o", f"remount,{how}", str(self.path)], check=True)

    def unmount(self) -> None:
        if self.tmpfs and subprocess.run(["umount", str(self.path)]).returncode != 0:
            subprocess.run(["umount", "-l", str(self.path)], check=True)


@pytest.fixture
def disk(lamp_text: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Disk]:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "lamp.txt").write_text(lamp_text[:20_000], encoding="utf-8")
    small = Disk(tmp_path / "disk", monkeypatch)
    yield small
    small.unmount()


def _at_step(step: int, action: Callable[[], None], monkeypatch: pytest.MonkeyPatch) -> None:
    """Do `action` the first time training reports `step` (after that step's metrics row)."""
    shown, done = TrainProgress.__call__, []

    def report(progress: TrainProgress, item: Report) -> None:
        shown(progress, item)
        if isinstance(item, StepReport) and item.step == step and not done:
            action()
            done.append(step)

    monkeypatch.setattr(TrainProgress, "__call__", report)


def _one_line_error(result, file: str) -> str:
    """The failure is one line naming the file and the cause, the last on stderr; no traceback."""
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output and result.stdout == ""
    errors = [line for line in result.stderr.splitlines() if "Error" in line]
    assert len(errors) == 1 and result.stderr.strip().splitlines()[-1] == errors[0], result.stderr
    assert errors[0].startswith("Error: cannot write ") and file in errors[0], errors[0]
    return errors[0]


def _leftovers(run_dir: Path) -> list[str]:
    return [p.name for p in run_dir.glob(".*.tmp")]


def test_a_disk_full_at_the_first_checkpoint_is_one_line_and_leaves_nothing_half_written(
    disk: Disk,
) -> None:
    run_dir = disk.path / "run"
    disk.fill(leave=48 << 10)  # room for run.json, vocab.json and the validation ids, not a checkpoint
    args = ["train", "lamp.txt", *TINY, "--max-steps", "40", "--seed", "0", "--out", str(run_dir)]
    message = _one_line_error(runner.invoke(app, args), ckpt.CHECKPOINT)
    assert message.endswith(NO_SPACE), message
    assert not (run_dir / ckpt.CHECKPOINT).exists() and _leftovers(run_dir) == []
    disk.free()
    # There is no checkpoint to go on from: resuming and sampling say so, in one line each.
    for command in (["train", "--resume", str(run_dir)], ["sample", "--model", str(run_dir)]):
        result = runner.invoke(app, command)
        assert result.exit_code == 1 and "Traceback" not in result.output, result.output
        assert result.stderr.strip().count("\n") == 0 and "nothing to resume from" in result.stderr


@pytest.mark.parametrize(("full_at", "last_good"), [(10, 0), (30, 20)])
def test_a_disk_full_at_a_later_checkpoint_keeps_the_last_good_one(
    full_at: int, last_good: int, disk: Disk, monkeypatch: pytest.MonkeyPatch
) -> None:
    run_dir = disk.path / "run"
    _at_step(full_at, disk.fill, monkeypatch)
    args = ["train", "lamp.txt", *TINY, "--max-steps", "60", "--save-every", "10", "--eval-every", "20"]
    result = runner.invoke(app, [*args, "--seed", "0", "--out", str(run_dir)])
    message = _one_line_error(result, ckpt.CHECKPOINT)
    assert message.endswith(NO_SPACE), message
    assert (
        ckpt.load_checkpoint(run_dir / ckpt.CHECKPOINT).position.step == last_good
        and _leftovers(run_dir) == []
    )

    disk.free()
    sampled = runner.invoke(app, ["sample", "--model", str(run_dir), "--length", "40", "--seed", "0"])
    if last_good:
        assert sampled.exit_code == 0 and len(sampled.stdout) == 41, sampled.output
    else:  # its checkpoint holds the random weights it began with: refused, not sampled
        assert sampled.exit_code == 1 and "has not trained a step" in sampled.stderr, sampled.output
    resumed = runner.invoke(app, ["train", "--resume", str(run_dir)])
    assert resumed.exit_code == 0, resumed.output
    if last_good:  # (a run resumed at step 0 does not say so)
        assert f"resumed at step {last_good}" in resumed.stderr, resumed.stderr
    assert ckpt.read_summary(run_dir).steps == 60  # type: ignore[union-attr]


def test_a_disk_turned_read_only_under_a_run_is_one_line_too(
    disk: Disk, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not disk.tmpfs:
        pytest.skip("turning a disk read-only needs a tmpfs of the test's own (mounting needs root)")
    run_dir = disk.path / "run"
    _at_step(30, lambda: disk.remount("ro"), monkeypatch)
    args = ["train", "lamp.txt", *TINY, "--max-steps", "40", "--save-every", "10", "--eval-every", "20"]
    message = _one_line_error(runner.invoke(app, [*args, "--out", str(run_dir)]), ckpt.CHECKPOINT)
    assert message.endswith(os.strerror(errno.EROFS)), message
    disk.remount("rw")
    resumed = runner.invoke(app, ["train", "--resume", str(run_dir)])
    assert resumed.exit_code == 0 and "resumed at step 20" in resumed.stderr, resumed.output


@pytest.mark.parametrize(
    "error",
    [
        PermissionError(errno.EACCES, os.strerror(errno.EACCES)),
        OSError(errno.EROFS, os.strerror(errno.EROFS)),
        SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)"),
    ],
)
def test_every_failed_write_names_the_file_and_the_cause(error: Exception, tmp_path: Path) -> None:
    with pytest.raises(StorageError) as raised, files.writing(tmp_path / "summary.json"):
        raise error
    cause = os.strerror(getattr(error, "errno", None) or errno.ENOSPC)
    assert str(raised.value) == f"cannot write {tmp_path / 'summary.json'}: {cause}"
