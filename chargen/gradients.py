"""Gradient diagnostics: how much the loss at the end of a window depends on the state k steps back.

For each k = 1..T, the norm of d(loss at the last step) / d(top layer's hidden state k steps
before it), averaged over streams. A plain RNN's falls by orders of magnitude within a few dozen
steps (vanishing gradients); an LSTM's falls much more slowly. Knows nothing about files.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from chargen.config import ModelConfig
from chargen.errors import ConfigError
from chargen.model import CharRNN
from chargen.steppers import CellStepper


def gradient_decay(model: CharRNN, ids: torch.Tensor) -> np.ndarray:
    """(T,) mean gradient norm with respect to the top layer's hidden state k = 1..T steps before
    the last prediction of the (T + 1, B) window `ids`.

    The window runs one step at a time, a CellStepper made afresh from each step's state, keeping
    each step's state in the graph, so one backward pass gives the gradient at every step.
    """
    steps = ids.shape[0] - 1
    was_training = model.training
    model.eval()  # no dropout: the gradient of the network itself
    state = model.init_state(ids.shape[1], ids.device)
    tops = []
    for t in range(steps):
        stepper = CellStepper(model, state)
        stepper(ids[t])
        state = stepper.state()  # stacked: the next step reads it, so its gradient is the whole one
        top = state[0] if isinstance(state, tuple) else state  # (layers, B, H)
        top.retain_grad()  # keep this step's gradient for reading after backward
        tops.append(top)
    logits = model.head(tops[-1][-1])  # (B, V): the prediction after the last step
    # Summed, not averaged: each window's state then gets the gradient of its own loss, so the
    # norms do not shrink as 1 / streams when more windows are averaged.
    loss = F.cross_entropy(logits, ids[steps], reduction="sum")
    loss.backward()
    model.train(was_training)
    # k = 1 is the last state itself (tops[steps - 1]); k = steps is the first.
    norms = [tops[steps - k].grad[-1].norm(dim=-1).mean().item() for k in range(1, steps + 1)]
    return np.array(norms)


def random_window(vocab_size: int, steps: int, streams: int, seed: int = 0) -> torch.Tensor:
    """A (steps + 1, streams) window of random ids, for models that have seen no text."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, vocab_size, (steps + 1, streams), generator=generator)


def text_windows(ids: np.ndarray, steps: int, streams: int, what: str = "the text") -> torch.Tensor:
    """(steps + 1, streams) windows cut from evenly spaced places in a text's ids (`what`, as a
    message names it)."""
    require_positive(steps, streams)
    if len(ids) < steps + 1:
        raise ConfigError(
            f"`steps={steps}` needs windows of {steps + 1:,} characters, and {what} has {len(ids):,}; "
            "lower `steps`",
            "steps",
        )
    starts = np.linspace(0, len(ids) - steps - 1, streams).astype(np.int64)
    window = np.stack([ids[s : s + steps + 1] for s in starts], axis=1)
    return torch.from_numpy(window.astype(np.int64))


def untrained_decay(cell: str, steps: int, streams: int, seed: int = 0) -> np.ndarray:
    """gradient_decay of an untrained 2x256 model of `cell` (seeded) on random input."""
    require_positive(steps, streams)
    torch.manual_seed(seed)
    model = CharRNN(ModelConfig(cell=cell, vocab_size=64, layers=2, hidden=256, dropout=0.0))
    return gradient_decay(model, random_window(64, steps, streams, seed))


def require_positive(steps: int, streams: int) -> None:
    """At least one step back and one window to average over; the message names the one that is not."""
    for name, value in (("steps", steps), ("streams", streams)):
        if value < 1:
            raise ConfigError(f"`{name}` must be at least 1, not {value}", name)
