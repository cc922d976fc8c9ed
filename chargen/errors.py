"""The errors chargen raises for a user's mistake; the CLI turns each into a one-line message."""


class ChargenError(Exception):
    """A problem the user can fix; the message says what went wrong and how to fix it."""

    exit_code = 1


class ConfigError(ChargenError):
    """A bad option value; the message names the flag."""

    exit_code = 2


class CorpusError(ChargenError):
    """A text that cannot be read or used for training."""


class VocabError(ChargenError):
    """Text with characters the model has never seen."""


class RunError(ChargenError):
    """A run directory that is missing, incomplete or not a chargen run."""


class TrainingError(ChargenError):
    """Training that cannot go on, such as a loss that became NaN."""


class TrainingInterrupted(ChargenError):
    """Training stopped at the user's request (Ctrl-C, SIGTERM) after saving a checkpoint."""

    exit_code = 130
