"""The errors chargen raises for a user's mistake; the CLI turns each into a one-line message.

A message names the settings it is about as the library knows them, in backquotes: a config field
or keyword argument (`lr`), or one with the value to give it (`encoding='utf-16'`), a string quoted
as vocab.quoted quotes it, so that it may hold a backquote (`items='`'`). The command line shows
each as its flag (--lr, --encoding utf-16); the library never names a flag.
"""

from __future__ import annotations

import re
from pathlib import Path

# A setting as a message names it (above): group 1 is its name, group 2 the value given, if any: a
# quoted string (in which a backquote, or an escaped quote, is text) or anything up to a backquote.
NAMED_SETTING = re.compile(r"""`(\w+)(?:=('(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*"|[^`]*))?`""")


class ChargenError(Exception):
    """A problem the user can fix; the message says what went wrong and how to fix it."""

    exit_code = 1


class ConfigError(ChargenError):
    """A bad setting; the message names the field, which `field` holds where there is one."""

    exit_code = 2

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class CorpusError(ChargenError):
    """A text that cannot be read or used for training."""


class CorpusChanged(CorpusError):
    """A text that no longer holds what a run recorded reading (its sha256 differs)."""


class VocabError(ChargenError):
    """Text with characters the model has never seen."""


class RunError(ChargenError):
    """A run directory that is missing, incomplete or not a chargen run."""


class SampleError(ChargenError):
    """Sampling that cannot give what was asked: new items the model does not find, say."""


class StorageError(ChargenError):
    """A file that cannot be written: the disk is full, or the directory read-only or forbidden."""


class TrainingError(ChargenError):
    """Training that cannot go on, such as a loss that became NaN."""


class TrainingInterrupted(ChargenError):
    """Training stopped at the user's request (Ctrl-C, SIGTERM) after saving a checkpoint."""

    exit_code = 130

    def __init__(self, step: int, run_dir: Path | None) -> None:
        super().__init__(
            f"training stopped at step {step} and a checkpoint is saved in {run_dir}; "
            "resume() continues it exactly"
        )
        self.step, self.run_dir = step, run_dir


class StoppedBeforeTraining(TrainingInterrupted):
    """Stopped at the user's request (Ctrl-C during the set-up) before training began: nothing of
    the run was written (a new run's directory is not made), so there is nothing new to resume.
    The message says what was written before it, where something was (compare's finished cells)."""

    def __init__(self, message: str = "stopped before training began; nothing was written") -> None:
        ChargenError.__init__(self, message)
        self.step, self.run_dir = 0, None


class ServerBusy(ChargenError):
    """The server holds as many requests as it may; the client should try again shortly."""
