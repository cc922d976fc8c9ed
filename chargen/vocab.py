"""Vocabularies: text <-> integer ids, by Unicode code point or by UTF-8 byte. No torch, no files.

Both kinds share one interface (`encode`, `decode`, `decoder`, `labels`, `to_dict`), so the rest of
chargen never asks which one it has.
"""

from __future__ import annotations

import codecs
import unicodedata
from collections.abc import Iterable, Sequence
from typing import Protocol

import numpy as np

from chargen.errors import VocabError

UNKNOWN = "\ufffd"  # the unknown symbol: Unicode's own replacement character, so it prints as �


def code_points(text: str) -> np.ndarray:
    """The code points of `text` as a uint32 array, without a Python loop per character."""
    return np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype="<u4")


def count_code_points(text: str, counts: np.ndarray | None = None) -> np.ndarray:
    """Occurrences of every code point (an array indexed by code point), added to `counts`."""
    new = np.bincount(code_points(text), minlength=0x110000)
    return new if counts is None else counts + new


def _combines(char: str) -> bool:
    """Whether `char` is a combining mark, which a terminal draws onto the character before it."""
    return unicodedata.combining(char) != 0 or unicodedata.category(char) in ("Mn", "Me")


def quoted(text: str) -> str:
    """`text` as every message shows a user's characters, separator or excerpt: quoted and escaped as
    repr does it (a line break as \\n, a tab as \\t, other control characters by code point, \\x07
    or \\u2028), and its combining marks escaped too ('\\u0301'): repr leaves them as they are, and
    a lone acute accent would sit on the quote mark before it."""
    return "".join(c.encode("unicode_escape").decode("ascii") if _combines(c) else c for c in repr(text))


def describe_chars(chars: Iterable[str], limit: int = 10) -> str:
    """A readable list such as `'é' (U+00E9), '\\t' (U+0009)` for error messages."""
    chars = list(chars)
    shown = ", ".join(f"{quoted(c)} (U+{ord(c):04X})" for c in chars[:limit])
    return shown + (f" and {len(chars) - limit} more" if len(chars) > limit else "")


def unseen_message(what: str, chars: Sequence[str], where: str = "") -> str:
    """The error for text with characters outside a vocabulary: `what` has them, all named, and
    `where` (such as "; the first is on line 4: 'zoë'") says where the first of them is."""
    return (
        f"{what} has {len(chars)} character(s) the model has never seen: {describe_chars(chars)}{where}; "
        "remove them, or pass `unknown='replace'` or `unknown='skip'`"
    )


def _smallest_dtype(size: int) -> np.dtype:
    return np.dtype(np.uint8 if size <= 256 else np.uint16 if size <= 65536 else np.uint32)


class StreamDecoder(Protocol):
    def decode(self, ids: Sequence[int], final: bool = False) -> str: ...


class Vocab:
    """The characters a model knows, sorted by code point; id i is the i-th character.

    When the vocabulary has the unknown symbol U+FFFD, characters outside it can be mapped to it.
    """

    kind = "chars"
    symbol = "character"  # what one id stands for, in the names of figures: bits per character

    def __init__(self, chars: Sequence[str]) -> None:
        if len(set(chars)) != len(chars) or any(len(c) != 1 for c in chars):
            raise VocabError("a vocabulary must be a list of distinct single characters")
        self.chars = sorted(chars)
        codes = np.array([ord(c) for c in self.chars], dtype=np.int64)
        # code point -> id, or -1; one gather encodes a whole text.
        self._table = np.full(int(codes.max()) + 1 if len(codes) else 1, -1, dtype=np.int32)
        self._table[codes] = np.arange(len(codes), dtype=np.int32)
        self._lookup = np.array(self.chars)  # id -> character, for vectorised decoding
        self.unknown_id = self.chars.index(UNKNOWN) if UNKNOWN in self.chars else None

    @classmethod
    def from_text(cls, text: str, min_count: int = 1, with_unknown: bool = False) -> Vocab:
        return cls.from_counts(count_code_points(text), min_count, with_unknown)

    @classmethod
    def from_counts(cls, counts: np.ndarray, min_count: int = 1, with_unknown: bool = False) -> Vocab:
        """Characters seen at least `min_count` times; the unknown symbol joins when any were
        left out, or when `with_unknown` asks for it."""
        kept = np.flatnonzero(counts >= min_count)
        chars = [chr(c) for c in kept]
        if (with_unknown or (counts > 0).sum() > len(kept)) and UNKNOWN not in chars:
            chars.append(UNKNOWN)
        return cls(chars)

    def __len__(self) -> int:
        return len(self.chars)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Vocab) and self.chars == other.chars

    @property
    def dtype(self) -> np.dtype:
        """The smallest unsigned integer type that holds every id."""
        return _smallest_dtype(len(self))

    def _lookup_ids(self, codes: np.ndarray) -> np.ndarray:
        inside = codes < len(self._table)
        return np.where(inside, self._table[np.where(inside, codes, 0)], -1)

    def unknown_chars(self, text: str) -> list[str]:
        """The distinct characters of `text` that are not in the vocabulary, in code-point order."""
        codes = code_points(text)
        return [chr(c) for c in np.unique(codes[self._lookup_ids(codes) < 0])]

    def first_unknown(self, text: str) -> int | None:
        """The index in `text` of its first character outside the vocabulary; None if it has none."""
        outside = np.flatnonzero(self._lookup_ids(code_points(text)) < 0)
        return int(outside[0]) if len(outside) else None

    def encode_counting(
        self, text: str, what: str = "the text", unknown: str = "error"
    ) -> tuple[np.ndarray, int]:
        """Ids of `text` and how many of its characters were unknown.

        unknown="error" raises VocabError naming them; "replace" maps them to the unknown symbol
        (when the vocabulary has none, to nothing: they are dropped); "skip" drops them.
        """
        ids = self._lookup_ids(code_points(text))
        missing = ids < 0
        n_unknown = int(missing.sum())
        if n_unknown:
            if unknown == "error":
                raise VocabError(unseen_message(what, self.unknown_chars(text)))
            if drops_unknown(self, unknown):
                ids = ids[~missing]
            else:
                ids[missing] = self.unknown_id
        return ids.astype(self.dtype), n_unknown

    def encode(self, text: str, what: str = "the text", unknown: str = "error") -> np.ndarray:
        return self.encode_counting(text, what, unknown)[0]

    def decode(self, ids: Iterable[int] | np.ndarray) -> str:
        return "".join(self._lookup[np.asarray(ids, dtype=np.int64)].tolist())

    def decoder(self) -> StreamDecoder:
        return _CharDecoder(self)

    def labels(self) -> list[str]:
        """Each symbol as a reader is shown it alone, by id: its character."""
        return list(self.chars)

    def to_dict(self) -> dict:
        return {"kind": self.kind, "chars": self.chars}


class _CharDecoder:
    def __init__(self, vocab: Vocab) -> None:
        self.vocab = vocab

    def decode(self, ids: Sequence[int], final: bool = False) -> str:
        return self.vocab.decode(ids)


class ByteVocab:
    """UTF-8 bytes as symbols: 256 of them, so no text is ever unknown."""

    kind = "bytes"
    symbol = "byte"  # figures are per UTF-8 byte: bits per byte
    unknown_id = None
    dtype = np.dtype(np.uint8)

    def __len__(self) -> int:
        return 256

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ByteVocab)

    def unknown_chars(self, text: str) -> list[str]:
        return []

    def first_unknown(self, text: str) -> int | None:
        return None

    def encode_counting(
        self, text: str, what: str = "the text", unknown: str = "error"
    ) -> tuple[np.ndarray, int]:
        return np.frombuffer(text.encode("utf-8", "surrogatepass"), dtype=np.uint8).copy(), 0

    def encode(self, text: str, what: str = "the text", unknown: str = "error") -> np.ndarray:
        return self.encode_counting(text)[0]

    def decode(self, ids: Iterable[int] | np.ndarray) -> str:
        """Text of the bytes; an invalid or incomplete sequence becomes U+FFFD."""
        return np.asarray(ids, dtype=np.uint8).tobytes().decode("utf-8", "replace")

    def decoder(self) -> StreamDecoder:
        return _ByteDecoder()

    def labels(self) -> list[str]:
        """Each symbol as a reader is shown it alone, by id: an ASCII byte is a character and shows as
        one; any other is part of a character and shows as its value, <0xC4> (alone, it would decode
        to U+FFFD, which says nothing), so "ğ" is the two symbols <0xC4> <0x9F>."""
        return [chr(b) if b < 0x80 else f"<0x{b:02X}>" for b in range(256)]

    def to_dict(self) -> dict:
        return {"kind": self.kind}


class _ByteDecoder:
    """Holds back an incomplete UTF-8 sequence until its last byte arrives, so streamed output is
    always valid text; an invalid sequence is replaced with U+FFFD."""

    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")

    def decode(self, ids: Sequence[int], final: bool = False) -> str:
        return self._decoder.decode(bytes(ids), final)


Tokenizer = Vocab | ByteVocab


def drops_unknown(vocab: Tokenizer, unknown: str) -> bool:
    """Whether `unknown` ("replace" or "skip") leaves the characters outside `vocab` out of the ids,
    rather than mapping them to its unknown symbol: "skip" always, "replace" where it has none."""
    return unknown == "skip" or vocab.unknown_id is None


def tokenizer_from_dict(data: dict) -> Tokenizer:
    kind = data.get("kind", "chars")
    if kind == "bytes":
        return ByteVocab()
    if kind == "chars":
        return Vocab(data["chars"])
    raise VocabError(f"unknown vocabulary kind {kind!r}")
