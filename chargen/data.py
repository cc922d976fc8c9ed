"""Token arrays, the train/validation split and the BPTT windows training walks through.

Knows nothing about models or optimisers; hands out int64 torch tensors shaped (T, B).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import NamedTuple

import numpy as np
import torch

from chargen.errors import CorpusError
from chargen.items import IGNORE, ItemSpans


def split_ids(ids: np.ndarray, val_fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """The first part for training, the last `val_fraction` for validation (views, no copy)."""
    n_val = round(len(ids) * val_fraction)
    if n_val < 2 or len(ids) - n_val < 2:
        raise CorpusError(
            f"the corpus has {len(ids)} characters: too few to hold out {val_fraction:.0%} "
            "for validation (each part needs at least 2); use a longer text or change `val_fraction`"
        )
    return ids[: len(ids) - n_val], ids[len(ids) - n_val :]


def streams_that_fit(n_ids: int, bptt: int) -> int:
    """The most streams StreamBatches lays out in `n_ids` ids with windows of `bptt`: each takes a
    window and one id more for its last target, and an epoch may start up to bptt - 1 ids in."""
    return (n_ids - bptt) // (bptt + 1)


def longest_window(n_ids: int) -> int:
    """The longest `bptt` that leaves room for one stream in `n_ids` ids (streams_that_fit >= 1)."""
    return (n_ids - 1) // 2


class StreamBatches:
    """Lays the training ids out as `batch_size` parallel streams and cuts them into BPTT windows.

    The text is cut into B equal, contiguous pieces, one per column, so that window k+1 of a
    column continues window k of the same column and the hidden state can be carried over:

        text:    a b c d e f | g h i j k l | m n o p q r | s t u v w x      (B = 4)
        inputs:  a g m s      targets: b h n t      <- window 1 (bptt = 3)
                 b h n t               c i o u
                 c i o u               d j p v
                 d j p v               e k q w      <- window 2 ...

    Each epoch starts at a random offset in [0, bptt), so window edges fall in new places.

    With several processes, each hands out only its `streams`, a share of the B columns of this
    same layout, so that together they walk exactly the windows one process would.
    """

    def __init__(self, ids: np.ndarray, batch_size: int, bptt: int, streams: slice | None = None) -> None:
        if batch_size > streams_that_fit(len(ids), bptt):
            longest = longest_window(len(ids))
            if batch_size > 1:
                remedy = "lower `batch_size` or `bptt`, or use a longer text"
            elif longest >= 1:  # one stream is as few as there can be
                remedy = f"lower `bptt` (at most {longest} fits), or use a longer text"
            else:
                remedy = "use a longer text"
            raise CorpusError(
                f"the training split has {len(ids)} characters, too few for one batch of "
                f"`batch_size={batch_size}` streams x `bptt={bptt}` characters; {remedy}"
            )
        self.ids = ids
        self.batch_size = batch_size
        self.bptt = bptt
        self.stream_len = (len(ids) - bptt - 1) // batch_size  # so any offset < bptt fits
        self.streams = streams or slice(0, batch_size)

    @property
    def local_batch(self) -> int:
        """The streams this process carries: all of them in a single process."""
        return self.streams.stop - self.streams.start

    def draw_offset(self, rng: np.random.Generator) -> int:
        """Where a new epoch's windows start: in [0, bptt), which `stream_len` leaves room for."""
        return int(rng.integers(0, self.bptt))

    def draw_resets(self, generator: torch.Generator, chance: float) -> torch.Tensor:
        """(B,) 0 for each of this process's streams whose state starts afresh, each with `chance`,
        else 1. Every process draws for all the streams and keeps its own, as one process would."""
        draw = torch.rand(self.batch_size, generator=generator)[self.streams]
        return (draw >= chance).float()

    @property
    def windows_per_epoch(self) -> int:
        return -(-self.stream_len // self.bptt)

    @property
    def chars_per_epoch(self) -> int:
        return self.stream_len * self.batch_size

    @property
    def typical_window(self) -> tuple[int, float]:
        """Steps of a window and the targets it counts (recipe.measure_speed times such windows)."""
        return self.bptt, float(self.bptt * self.batch_size)

    def layout(self, offset: int) -> tuple[np.ndarray, np.ndarray]:
        """Inputs and targets for one epoch, each (stream_len, B); targets are inputs shifted by one.
        (B counts this process's streams: all of them in a single process.)"""
        n, rows = self.stream_len * self.batch_size, (self.batch_size, self.stream_len)
        inputs = self.ids[offset : offset + n].reshape(rows)[self.streams].T
        targets = self.ids[offset + 1 : offset + 1 + n].reshape(rows)[self.streams].T
        return inputs, targets

    def epoch(self, offset: int, start_window: int = 0) -> Iterator[Window]:
        """The windows (inputs, targets of shape (T, B), T = bptt except perhaps the last)."""
        inputs, targets = self.layout(offset)
        for start in range(start_window * self.bptt, self.stream_len, self.bptt):
            x = np.ascontiguousarray(inputs[start : start + self.bptt], dtype=np.int64)  # (T, B)
            y = np.ascontiguousarray(targets[start : start + self.bptt], dtype=np.int64)  # (T, B)
            yield Window(torch.from_numpy(x), torch.from_numpy(y), None, len(x) * self.batch_size)


class Window(NamedTuple):
    """One step's data: inputs and targets (T, B) of this process's streams; for a list, which
    streams start a new item here, and the targets the whole batch counts (padding does not)."""

    x: torch.Tensor  # (T, B) int64
    y: torch.Tensor  # (T, B) int64; IGNORE where there is nothing to predict
    fresh: torch.Tensor | None  # (B,) 0 where a stream's state starts afresh, else 1; None: carry all
    targets: int  # targets counted in the loss, over all processes' streams


class ItemBatches:
    """Lays a list of items out in batches for training, each item read from a fresh state.

    Every epoch the items are shuffled (by the epoch's seed) and sorted by length within groups of
    GROUP batches, so that a batch holds items of about one length and little of it is padding; then
    cut into batches of B items, and the batches shuffled. A batch is read in windows of up to
    `bptt` steps, its state carried from one window to the next and zeroed when a batch begins:

        inputs:   END e m m a     targets:  e m m a END
                  END a v a PAD             a v a END IGN     (IGN: padding, not counted)

    Items that fill no whole batch sit the epoch out, drawn at random (others do the next time).
    With several processes, each takes its `streams`, a share of the B items of every batch.
    """

    GROUP = 16  # batches per sorting group: long enough to even out lengths, short enough to mix

    def __init__(
        self, ids: np.ndarray, end_id: int, batch_size: int, bptt: int, streams: slice | None = None
    ) -> None:
        self.ids, self.end_id = ids, end_id
        self.spans = ItemSpans.of(ids, end_id)
        if (n := len(self.spans)) < batch_size:
            raise CorpusError(
                f"the training split has {n} item{'s' * (n != 1)}, fewer than one batch of "
                f"`batch_size={batch_size}`; lower `batch_size`, or use a longer list"
            )
        self.batch_size, self.bptt = batch_size, bptt
        self.streams = streams or slice(0, batch_size)
        self._typical = self._plan(0)

    @property
    def local_batch(self) -> int:
        return self.streams.stop - self.streams.start

    def draw_offset(self, rng: np.random.Generator) -> int:
        """A new epoch's seed, which orders its items."""
        return int(rng.integers(0, 2**31 - 1))

    def _plan(self, seed: int) -> list[np.ndarray]:
        """The epoch's batches: each an array of B item indices, of about one length."""
        rng = np.random.default_rng(seed)
        steps, b = self.spans.steps, self.batch_size
        # The items that fill no whole batch sit out, drawn before the sort: cut after it, they
        # would be the longest of their group every epoch, and a short list would never learn them.
        order = rng.permutation(len(self.spans))
        order = order[: len(order) - len(order) % b]
        batches = []
        for g in range(0, len(order), b * self.GROUP):
            members = order[g : g + b * self.GROUP]
            members = members[np.argsort(steps[members], kind="stable")]
            batches.extend(members[k : k + b] for k in range(0, len(members) - b + 1, b))
        return [batches[k] for k in rng.permutation(len(batches))]

    def _windows_of(self, batch: np.ndarray) -> int:
        return -(-int(self.spans.steps[batch].max()) // self.bptt)

    @property
    def windows_per_epoch(self) -> int:
        """Windows in an epoch: exact when no item is longer than `bptt`, else a typical epoch's."""
        return sum(self._windows_of(batch) for batch in self._typical)

    @property
    def chars_per_epoch(self) -> int:
        return sum(int(self.spans.steps[batch].sum()) for batch in self._typical)

    @property
    def typical_window(self) -> tuple[int, float]:
        """Steps of a window and the targets it counts, on average over an epoch: a list's windows
        are as long as its items, and padding is not counted."""
        windows = self.windows_per_epoch
        steps = (
            sum(int(self.spans.steps[b].max()) for b in self._typical) / windows
        )  # a batch's windows cover its longest
        return max(1, round(steps)), self.chars_per_epoch / windows

    def epoch(self, offset: int, start_window: int = 0) -> Iterator[Window]:
        """The epoch's windows from window `start_window` on; `offset` is the epoch's seed."""
        window = 0
        for batch in self._plan(offset):
            n = self._windows_of(batch)
            if window + n <= start_window:
                window += n
                continue
            x, y = self.spans.padded(self.ids, batch, n * self.bptt, self.end_id)  # (n * bptt, B)
            for k in range(n):
                if window >= start_window:
                    xk, yk = x[k * self.bptt : (k + 1) * self.bptt], y[k * self.bptt : (k + 1) * self.bptt]
                    counted = yk != IGNORE
                    length = int(np.flatnonzero(counted.any(axis=1)).max()) + 1  # no tail of padding
                    yield Window(
                        torch.from_numpy(np.ascontiguousarray(xk[:length, self.streams])),
                        torch.from_numpy(np.ascontiguousarray(yk[:length, self.streams])),
                        torch.zeros(self.local_batch) if k == 0 else None,
                        int(counted.sum()),
                    )
                window += 1


Batches = StreamBatches | ItemBatches
