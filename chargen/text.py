"""Reading text files and preparing text for a vocabulary: decoding, Unicode normalisation,
lowercasing and presets. Large files stream through in chunks; knows nothing about models.
"""

from __future__ import annotations

import codecs
import re
import unicodedata
from collections.abc import Iterator
from pathlib import Path

from chargen.config import TextConfig
from chargen.errors import CorpusError

CHUNK_BYTES = 1 << 23  # 8 MiB of the file at a time
_NOT_LETTERS = re.compile(r"[^A-Za-z]+")


class Preparer:
    """Applies a TextConfig to text, piece by piece, exactly as if the pieces were one text.

    Pieces must end at a line break (as `read_chunks` cuts them): no normalisation composes across
    a line break, so each piece can be normalised on its own.
    """

    def __init__(self, config: TextConfig) -> None:
        self.config = config
        self._ends_in_space = False  # the d2l preset folds a run of non-letters across pieces too

    def __call__(self, text: str) -> str:
        config = self.config
        # Pieces end at a line break, so a CR LF is not cut in two (but for a line of megabytes,
        # which read_chunks cuts where it must).
        if config.newlines == "lf":
            text = text.replace("\r\n", "\n")
        if config.normalize != "none":
            text = unicodedata.normalize(config.normalize.upper(), text)
        if config.preset == "d2l":
            # The d2l book's preprocessing: every run of non-letters becomes one space, then lowercase.
            text = _NOT_LETTERS.sub(" ", text).lower()
            if self._ends_in_space and text.startswith(" "):
                text = text[1:]
            if text:
                self._ends_in_space = text.endswith(" ")
        elif config.lowercase:
            text = text.lower()
        return text


def prepare(text: str, config: TextConfig) -> str:
    """A whole text (a prefix, say) prepared as the training text was."""
    return Preparer(config)(text)


def _check_file(path: Path, what: str) -> None:
    if not path.exists():
        raise CorpusError(f"{what} file not found: {path}")
    if path.is_dir():
        raise CorpusError(f"{what} {path} is a directory; give a text file")


def read_chunks(
    path: Path,
    config: TextConfig,
    what: str = "corpus",
    chunk_bytes: int = CHUNK_BYTES,
    empty_ok: bool = False,
) -> Iterator[str]:
    """The file's decoded text in pieces that each end at a line break (the last one need not).

    Raises CorpusError naming the file and the place of the first undecodable byte or NUL, or
    saying that the file is empty (unless `empty_ok`: one file of several may be).
    """
    _check_file(path, what)
    encoding = "utf-8-sig" if codecs.lookup(config.encoding).name == "utf-8" else config.encoding
    decoder = codecs.getincrementaldecoder(encoding)(config.errors)
    # In UTF-8, Latin-1 and their kin a NUL byte is a NUL character: binary, not text.
    ascii_compatible = "\x00".encode(config.encoding, "replace") == b"\x00"
    offset, lines, carry, has_text = 0, 0, "", False
    try:
        with open(path, "rb") as f:
            while True:
                raw = f.read(chunk_bytes)
                final = not raw
                if ascii_compatible and (nul := raw.find(b"\x00")) >= 0:
                    raise CorpusError(
                        f"{what} {path} contains NUL bytes (byte {offset + nul}); it looks binary, "
                        "or UTF-16 (then pass `encoding='utf-16'`)"
                    )
                try:
                    text = carry + decoder.decode(raw, final)
                except UnicodeDecodeError as err:
                    pending = len(decoder.getstate()[0])
                    bad = offset - pending + err.start
                    raise CorpusError(_bad_byte_message(path, what, config, bad)) from err
                except UnicodeError as err:  # not a byte's fault: UTF-16 without a byte-order mark
                    raise CorpusError(
                        f"{what} {path} cannot be read as {config.encoding} ({err}); give its `encoding`"
                    ) from err
                nul = text.find("\x00")
                if nul >= 0:
                    line = lines + text.count("\n", 0, nul) + 1
                    raise CorpusError(
                        f"{what} {path} contains NUL characters (first on line {line}); it looks "
                        "binary, or like UTF-16 read as UTF-8 (then pass `encoding='utf-16'`)"
                    )
                cut = len(text) if final else text.rfind("\n") + 1
                if not final and cut == 0 and len(text) < 4 * chunk_bytes:
                    cut = 0  # no line break yet: keep reading (a giant line is cut anyway, below)
                elif not final and cut == 0:
                    cut = len(text)
                piece, carry = text[:cut], text[cut:]
                offset += len(raw)
                lines += raw.count(b"\n")
                if piece:
                    has_text = has_text or not piece.isspace()
                    yield piece
                if final:
                    break
    except OSError as err:
        raise CorpusError(f"cannot read {what} {path}: {err.strerror}") from err
    if not has_text and not empty_ok:
        raise CorpusError(f"{what} {path} is empty" + (" (only white space)" if offset else ""))


def _bad_byte_message(path: Path, what: str, config: TextConfig, bad: int) -> str:
    """Where the first undecodable byte is, counted again from the start: errors are rare, and
    counting only then keeps the reading loop simple."""
    line, line_start, offset = 1, 0, 0
    with open(path, "rb") as f:
        while offset < bad:
            raw = f.read(min(CHUNK_BYTES, bad - offset))
            line += raw.count(b"\n")
            last = raw.rfind(b"\n")
            if last >= 0:
                line_start = offset + last + 1
            offset += len(raw)
    return (
        f"{what} {path} is not valid {config.encoding} at line {line}, column {bad - line_start + 1} "
        f"(byte {bad}); give its `encoding`, or pass `errors='replace'`"
    )


def read_text(
    path: Path | str, config: TextConfig | None = None, what: str = "text", empty_ok: bool = False
) -> str:
    """A whole file as one prepared string (for texts that fit in memory comfortably)."""
    config = config or TextConfig()
    preparer = Preparer(config)
    return "".join(preparer(piece) for piece in read_chunks(Path(path), config, what, empty_ok=empty_ok))
