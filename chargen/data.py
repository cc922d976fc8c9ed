"""Token arrays, the train/validation split and the BPTT windows training walks through.

Knows nothing about models or optimisers; hands out int64 torch tensors shaped (T, B).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from chargen.errors import CorpusError


def split_ids(ids: np.ndarray, val_fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """The first part for training, the last `val_fraction` for validation (views, no copy)."""
    n_val = round(len(ids) * val_fraction)
    if n_val < 2 or len(ids) - n_val < 2:
        raise CorpusError(
            f"the corpus has {len(ids)} characters: too few to hold out {val_fraction:.0%} "
            "for validation (each part needs at least 2); use a longer text or change `val_fraction`"
        )
    return ids[: len(ids) - n_val], ids[len(ids) - n_val :]


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
        if len(ids) < batch_size * (bptt + 1) + bptt:
            raise CorpusError(
                f"the training split has {len(ids)} characters, too few for one batch of "
                f"`batch_size={batch_size}` streams x `bptt={bptt}` characters; "
                "lower `batch_size` or `bptt`, or use a longer text"
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

    def layout(self, offset: int) -> tuple[np.ndarray, np.ndarray]:
        """Inputs and targets for one epoch, each (stream_len, B); targets are inputs shifted by one.
        (B counts this process's streams: all of them in a single process.)"""
        n, rows = self.stream_len * self.batch_size, (self.batch_size, self.stream_len)
        inputs = self.ids[offset : offset + n].reshape(rows)[self.streams].T
        targets = self.ids[offset + 1 : offset + 1 + n].reshape(rows)[self.streams].T
        return inputs, targets

    def epoch(self, offset: int, start_window: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """(inputs, targets) windows of shape (T, B), T = bptt except perhaps the last."""
        inputs, targets = self.layout(offset)
        for start in range(start_window * self.bptt, self.stream_len, self.bptt):
            x = np.ascontiguousarray(inputs[start : start + self.bptt], dtype=np.int64)  # (T, B)
            y = np.ascontiguousarray(targets[start : start + self.bptt], dtype=np.int64)  # (T, B)
            yield torch.from_numpy(x), torch.from_numpy(y)
