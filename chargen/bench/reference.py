"""The references the benchmarks measure chargen against, written here from torch alone.

The speed benchmark's is in the style of the d2l book's RNN chapter (one-hot inputs, SGD, a loss
read back every batch, a per-character sampling loop). The quality benchmark's is the plain one
below: about what a competent
person writes in 150 lines of PyTorch for a character model, trained for the same time on the same
text. Deliberately written here from torch alone (none of chargen's model, data or training code),
so that a handicap in chargen's own code cannot hide in the reference too.

Its configuration is the one issue 13 measured against: embedding 64, `nn.LSTM` 2x256 with torch's
own initialisation, batch 16, window 64, AdamW lr 0.003 (weight decay 0.01), gradient clipping at
1, a linear warm-up then cosine decay over the time budget, the state carried from window to window
and no dropout. Its model has chargen's forward signature, so both are scored by one evaluation.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class ReferenceConfig:
    embed: int = 64
    hidden: int = 256
    layers: int = 2
    batch_size: int = 16
    bptt: int = 64
    lr: float = 3e-3
    weight_decay: float = 0.01
    warmup_steps: int = 100
    clip: float = 1.0


class PlainLSTM(nn.Module):
    def __init__(self, vocab_size: int, config: ReferenceConfig) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab_size, config.embed)
        self.rnn = nn.LSTM(config.embed, config.hidden, config.layers)
        self.head = nn.Linear(config.hidden, vocab_size)

    def forward(self, x: torch.Tensor, state=None):  # x: (T, B) ids
        out, state = self.rnn(self.embed(x), state)  # (T, B, H)
        return self.head(out), state  # (T, B, V)


class ReferenceTrainer:
    """The reference's model, optimiser and one training step; the state is carried between steps."""

    def __init__(
        self, vocab_size: int, seed: int, autocast: torch.dtype | None, config: ReferenceConfig
    ) -> None:
        torch.manual_seed(seed)
        self.config, self.autocast = config, autocast
        self.model = PlainLSTM(vocab_size, config)
        self.optimizer = torch.optim.AdamW(
            self.model.parameters(), lr=config.lr, weight_decay=config.weight_decay
        )
        self.state: tuple[torch.Tensor, torch.Tensor] | None = None
        self.steps = 0

    def windows(self, train_ids: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """Inputs and targets (L, B): the text as `batch_size` contiguous columns, so that window
        k + 1 of a column continues window k."""
        batch = self.config.batch_size
        per_column = (len(train_ids) - 1) // batch
        columns = torch.from_numpy(train_ids[: per_column * batch + 1].astype(np.int64))
        inputs = columns[:-1].view(batch, per_column).T.contiguous()
        targets = columns[1:].view(batch, per_column).T.contiguous()
        return inputs, targets

    def step(self, x: torch.Tensor, y: torch.Tensor, fraction: float) -> None:
        """One optimiser step on a (T, B) window, `fraction` of the way through the run."""
        config = self.config
        warm = min(1.0, (self.steps + 1) / config.warmup_steps)
        for group in self.optimizer.param_groups:
            group["lr"] = config.lr * warm * 0.5 * (1 + math.cos(math.pi * min(1.0, fraction)))
        if self.state is not None:
            self.state = tuple(s.detach().float() for s in self.state)  # carry the values, not the graph
        with torch.autocast("cpu", dtype=self.autocast or torch.float32, enabled=self.autocast is not None):
            logits, self.state = self.model(x, self.state)
        loss = F.cross_entropy(logits.float().flatten(0, 1), y.flatten())
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(self.model.parameters(), config.clip)
        self.optimizer.step()
        self.steps += 1


@dataclass
class ReferenceResult:
    model: PlainLSTM
    steps: int
    chars_per_sec: float


def train_reference(
    train_ids: np.ndarray,
    vocab_size: int,
    seconds: float,
    seed: int,
    autocast: torch.dtype | None = None,
    config: ReferenceConfig | None = None,
) -> ReferenceResult:
    """Train the reference for `seconds` of wall time on `train_ids` and return it."""
    config = config or ReferenceConfig()
    trainer = ReferenceTrainer(vocab_size, seed, autocast, config)
    inputs, targets = trainer.windows(train_ids)
    trainer.model.train()
    began, elapsed = time.perf_counter(), 0.0
    while elapsed < seconds:
        for start in range(0, len(inputs) - config.bptt + 1, config.bptt):
            end = start + config.bptt
            trainer.step(inputs[start:end], targets[start:end], elapsed / seconds)
            elapsed = time.perf_counter() - began
            if elapsed >= seconds:
                break
        trainer.state = None  # a new pass over the text starts afresh
    chars = trainer.steps * config.batch_size * config.bptt
    return ReferenceResult(trainer.model, trainer.steps, chars / elapsed)


# --- the reference: written in the style of the d2l book's RNN chapter ---------------------------


class D2LStyleModel(nn.Module):
    """One-hot inputs into nn.LSTM, a linear layer on the flattened outputs: the book's RNNModel."""

    def __init__(self, vocab_size: int, hidden: int, layers: int) -> None:
        super().__init__()
        self.vocab_size = vocab_size
        self.rnn = nn.LSTM(vocab_size, hidden, layers)
        self.linear = nn.Linear(hidden, vocab_size)

    def forward(self, x: torch.Tensor, state):  # x: (B, T) ids
        one_hot = F.one_hot(x.T.long(), self.vocab_size).float()  # (T, B, V)
        y, state = self.rnn(one_hot, state)
        return self.linear(y.reshape(-1, y.shape[-1])), state


def d2l_train_windows(model: D2LStyleModel, windows: list, lr: float = 1.0) -> int:
    """The book's loop: SGD, a loss.item() every batch, clipping by a hand-computed norm."""
    optimizer = torch.optim.SGD(model.parameters(), lr)
    state, chars, total_loss = None, 0, 0.0
    for x, y in windows:  # (T, B) windows, turned into the book's (B, T)
        if state is not None:
            state = tuple(s.detach() for s in state)
        y_hat, state = model(x.T, state)
        loss = F.cross_entropy(y_hat, y.reshape(-1)).mean()
        optimizer.zero_grad()
        loss.backward()
        norm = torch.sqrt(sum(torch.sum(p.grad**2) for p in model.parameters()))
        if norm > 1:
            for p in model.parameters():
                p.grad[:] *= 1 / norm
        optimizer.step()
        total_loss += loss.item() * y.numel()  # the book's per-batch read-back to the host
        chars += y.numel()
    return chars


def d2l_sample(model: D2LStyleModel, length: int) -> int:
    """The book's predict loop: one character per call, its argmax read back to Python each time."""
    outputs, state = [0], None
    with torch.no_grad():
        for _ in range(length):
            y, state = model(torch.tensor([[outputs[-1]]]), state)
            outputs.append(int(y.argmax(dim=1).reshape(1)))
    return length
