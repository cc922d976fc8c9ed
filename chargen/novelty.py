"""Memorisation check: how much of a generated text occurs verbatim in the training text.

A model that has learnt the text's patterns writes new strings of characters; one that has
memorised it recites. The share of a sample's n-character sequences (n = 20 by default) that also
occur in the training text tells the two apart. Works on token ids; knows nothing about models.
"""

from __future__ import annotations

import numpy as np

_BASE = np.uint64(1_000_003)  # an odd multiplier for a polynomial hash, wrapping modulo 2**64


def ngram_hashes(ids: np.ndarray, n: int) -> np.ndarray:
    """A 64-bit polynomial hash of every run of n consecutive ids: (len(ids) - n + 1,) values.

    Built with n vectorised passes, no loop per position. Distinct n-grams can collide, but with
    64 bits that is rare enough to ignore for a percentage."""
    if len(ids) < n:
        return np.zeros(0, dtype=np.uint64)
    ids64 = ids.astype(np.uint64) + np.uint64(1)  # so that id 0 still counts
    hashes = np.zeros(len(ids) - n + 1, dtype=np.uint64)
    with np.errstate(over="ignore"):  # wrapping is the point
        for k in range(n):
            hashes = hashes * _BASE + ids64[k : len(ids) - n + 1 + k]
    return hashes


class NgramIndex:
    """The set of n-grams of a training text, for asking how many of a sample's are in it."""

    def __init__(self, training_ids: np.ndarray, n: int = 20) -> None:
        self.n = n
        self._known = np.unique(ngram_hashes(np.asarray(training_ids), n))

    def verbatim_fraction(self, ids: np.ndarray) -> float | None:
        """Share of the n-grams of `ids` found in the training text; None if `ids` is shorter than n."""
        hashes = ngram_hashes(np.asarray(ids), self.n)
        if len(hashes) == 0:
            return None
        return float(np.isin(hashes, self._known).mean())
