"""Character vocabulary: Unicode code points <-> integer ids. Knows nothing about torch or files."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from chargen.errors import VocabError


def _code_points(text: str) -> np.ndarray:
    """The code points of `text` as a uint32 array, without a Python loop per character."""
    return np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype="<u4")


def describe_chars(chars: Iterable[str], limit: int = 10) -> str:
    """A readable list such as `'é' (U+00E9), '\\t' (U+0009)` for error messages."""
    chars = list(chars)
    shown = ", ".join(f"{c!r} (U+{ord(c):04X})" for c in chars[:limit])
    return shown + (f" and {len(chars) - limit} more" if len(chars) > limit else "")


class Vocab:
    """The characters a model knows, sorted by code point; id i is the i-th character."""

    def __init__(self, chars: Sequence[str]) -> None:
        if len(set(chars)) != len(chars) or any(len(c) != 1 for c in chars):
            raise VocabError("a vocabulary must be a list of distinct single characters")
        self.chars = sorted(chars)
        self._codes = np.array([ord(c) for c in self.chars], dtype=np.uint32)
        self._lookup = np.array(self.chars)  # id -> character, for vectorised decoding

    @classmethod
    def from_text(cls, text: str) -> Vocab:
        return cls([chr(c) for c in np.unique(_code_points(text))])

    def __len__(self) -> int:
        return len(self.chars)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Vocab) and self.chars == other.chars

    @property
    def dtype(self) -> np.dtype:
        """The smallest unsigned integer type that holds every id."""
        return np.dtype(np.uint8 if len(self) <= 256 else np.uint16 if len(self) <= 65536 else np.uint32)

    def unknown_chars(self, text: str) -> list[str]:
        """The distinct characters of `text` that are not in the vocabulary, in code-point order."""
        codes = np.unique(_code_points(text))
        return [chr(c) for c in codes[~np.isin(codes, self._codes)]]

    def encode(self, text: str, what: str = "the text") -> np.ndarray:
        """Ids of every character of `text`; raises VocabError naming any unknown characters."""
        codes = _code_points(text)
        ids = np.searchsorted(self._codes, codes)
        ids[ids == len(self)] = 0  # out of range: cannot match, caught just below
        if len(self) == 0 or not np.array_equal(self._codes[ids], codes):
            unknown = self.unknown_chars(text)
            raise VocabError(
                f"{what} has {len(unknown)} character(s) the model has never seen: "
                f"{describe_chars(unknown)}; remove them or train on text that contains them"
            )
        return ids.astype(self.dtype)

    def decode(self, ids: Iterable[int] | np.ndarray) -> str:
        return "".join(self._lookup[np.asarray(ids, dtype=np.int64)].tolist())

    def to_dict(self) -> dict:
        return {"chars": self.chars}

    @classmethod
    def from_dict(cls, data: dict) -> Vocab:
        return cls(data["chars"])
