"""Reading a training or evaluation text from disk, and finding the project's default corpus."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from chargen.errors import CorpusError

CORPORA_DIR = Path(__file__).resolve().parent.parent / "corpora"
DEFAULT_CORPUS = CORPORA_DIR / "the-lamp-at-pellow-point.txt"


@dataclass
class Corpus:
    name: str  # short name for run directories: the file's stem
    path: Path
    text: str
    sha256: str  # of the file's bytes, so a run records exactly what it was trained on


def _position(data: bytes, offset: int) -> str:
    line = data.count(b"\n", 0, offset) + 1
    column = offset - (data.rfind(b"\n", 0, offset) + 1) + 1
    return f"line {line}, column {column} (byte {offset})"


def read_text(path: Path | str, what: str = "corpus") -> tuple[str, bytes]:
    """The file's text, decoded as UTF-8 with a byte-order mark dropped, and its raw bytes."""
    path = Path(path)
    if not path.exists():
        raise CorpusError(f"{what} file not found: {path}")
    if path.is_dir():
        raise CorpusError(f"{what} {path} is a directory; give a text file")
    try:
        data = path.read_bytes()
    except OSError as err:
        raise CorpusError(f"cannot read {what} {path}: {err.strerror}") from err
    nul = data.find(b"\x00")
    if nul >= 0:
        raise CorpusError(
            f"{what} {path} contains NUL bytes at {_position(data, nul)}; "
            "it looks binary (or UTF-16), not UTF-8 text"
        )
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise CorpusError(
            f"{what} {path} is not valid UTF-8 at {_position(data, err.start)}; convert it to UTF-8"
        ) from err
    if not text.strip():
        raise CorpusError(f"{what} {path} is empty" + (" (only white space)" if text else ""))
    return text, data


def load_corpus(path: Path | str | None = None) -> Corpus:
    """The corpus at `path`, or the project's own default corpus when `path` is None."""
    if path is None:
        if not DEFAULT_CORPUS.exists():
            raise CorpusError(
                f"the default corpus {DEFAULT_CORPUS} is missing (chargen must be installed from a "
                "source checkout with `pip install -e .`); give a CORPUS file instead"
            )
        path = DEFAULT_CORPUS
    path = Path(path)
    text, data = read_text(path)
    return Corpus(name=path.stem, path=path, text=text, sha256=hashlib.sha256(data).hexdigest())
