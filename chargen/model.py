"""CharRNN: embedding -> stacked LSTM/GRU/RNN -> linear to the vocabulary. Imports only torch.

The recurrent layers are torch's fused modules (cuDNN on a GPU, oneDNN on a CPU), never a Python
loop over time steps. Generation, one character at a time, steps through steppers.py.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from chargen.config import ModelConfig

# An LSTM's state is (h, c); a GRU's or plain RNN's is just h. Each tensor is (layers, B, hidden).
State = torch.Tensor | tuple[torch.Tensor, torch.Tensor]

_CELLS: dict[str, type[nn.RNNBase]] = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}
# A recurrent layer's tensors, in the order torch's cell functions take them; layer k's are named
# f"{name}_l{k}" in the fused module.
LAYER_TENSORS = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")


def keep_mask(shape: torch.Size, p: float, device: torch.device) -> torch.Tensor:
    """A bool tensor of `shape`, each entry True with probability 1 - p, independently. On a CPU it
    is drawn as 16 random bits per entry, four to a 64-bit draw (p rounded to a multiple of 1/65,536):
    torch draws its CPU random numbers one at a time, and a uniform per entry made up most of a
    mask's cost (AMD EPYC with AVX2, two threads, 1024 x 256: 0.75 ms against 1.6)."""
    if device.type != "cpu":
        return torch.rand(shape, device=device) >= p
    entries = math.prod(shape)
    words = torch.empty((entries + 3) // 4, dtype=torch.int64).random_(-(2**63), None)  # every bit random
    return words.view(torch.int16)[:entries].view(shape) >= round(p * 65536) - 32768


def thinned(x: torch.Tensor, p: float) -> torch.Tensor:
    """`x` with each entry kept with probability 1 - p, scaled by 1 / (1 - p) to keep its mean: what
    F.dropout computes, with the mask drawn by `keep_mask` and applied as one fp32 product (a bf16
    `x` comes back in fp32, rounded once where it is next cast). Forward and backward on a CPU cost
    well under half of dropout's (AMD EPYC with AVX2, two threads, 1024 x 256: 1.3 ms against 3.3
    for the uniforms and two products this drew before)."""
    return x * keep_mask(x.shape, p, x.device).to(torch.float32).mul_(1.0 / (1.0 - p))


class Dropout(nn.Dropout):
    """nn.Dropout drawn by `thinned`."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return thinned(x, self.p) if self.training and self.p > 0 else x


class CharRNN(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        assert config.layers and config.hidden and config.dropout is not None, "the size is not decided yet"
        self.config = config
        self.embed = nn.Embedding(config.vocab_size, config.embed)
        self.rnn = _CELLS[config.cell](
            config.embed,
            config.hidden,
            num_layers=config.layers,
            dropout=config.dropout if config.layers > 1 else 0.0,
        )
        self.drop = Dropout(config.dropout)
        # One-layer modules without weights of their own, for _layer_by_layer; a tuple attribute,
        # so that torch neither registers nor moves them.
        self._templates = tuple(
            _CELLS[config.cell](config.embed if k == 0 else config.hidden, config.hidden, device="meta")
            for k in range(config.layers)
        )
        # DropConnect on the recurrent matrices (Wan et al., 2013; the "weight drop" of Merity et al.,
        # 2017): a fresh mask per window, the same at every step of it, so that it thins what the
        # state can carry from one character to the next, which output dropout never touches.
        self.weight_drop = config.recurrent_drop
        self.head = nn.Linear(config.hidden, config.vocab_size)
        if config.tie_weights:
            self.head.weight = self.embed.weight
        # torch's own initialisation throughout. Starting the LSTM forget gates at bias 1
        # (Jozefowicz et al., 2015), which chargen did before, cost 0.05-0.1 nats/char in
        # 95-second and 3-minute runs on tinyshakespeare, in fp32 and bf16 (docs/recipe.md).

    def forward(self, x: torch.Tensor, state: State | None = None) -> tuple[torch.Tensor, State]:
        """Logits for the next character at every position, and the state after the last one."""
        emb = self.embed(x)  # (T, B) -> (T, B, E)
        dropped: dict[str, torch.Tensor] = {}  # the recurrent matrices' dropped copies, run in their place
        if self.training and self.weight_drop > 0:
            dropped = {
                f"weight_hh_l{k}": thinned(getattr(self.rnn, f"weight_hh_l{k}"), self.weight_drop)
                for k in range(self.config.layers)
            }
        if self.training and self.rnn.dropout > 0 and emb.device.type == "cpu":
            out, state = self._layer_by_layer(emb, state, dropped)
        elif dropped:
            out, state = torch.func.functional_call(self.rnn, dropped, (emb, state))
        else:
            out, state = self.rnn(emb, state)  # (T, B, H)
        logits = self.head(self.drop(out))  # (T, B, V)
        return logits, state

    def _layer_by_layer(
        self, emb: torch.Tensor, state: State | None, dropped: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, State]:
        """The stacked module in training, a layer a call, with the dropout between layers drawn by
        `thinned` where torch's own draws a Bernoulli per entry: on a CPU, where torch calls oneDNN
        a layer at a time anyway, a default training step (2x256, 16 x 64, dropout 0.14) ran 4-6%
        faster (AMD EPYC with AVX2, fp32, one thread and two). Each call runs a one-layer template
        (on the meta device, out of the state dict) with layer k's weights in place of its own."""
        layers = self.config.layers
        states: list[State] = []
        for k, (template, tensors) in enumerate(zip(self._templates, layer_weights(self), strict=True)):
            weights = {
                f"{name}_l0": dropped.get(f"{name}_l{k}", tensor)
                for name, tensor in zip(LAYER_TENSORS, tensors, strict=True)
            }
            start = None if state is None else _layer_state(state, k)
            emb, after = torch.func.functional_call(template, weights, (emb, start))
            states.append(after)
            if k + 1 < layers:
                emb = thinned(emb, self.rnn.dropout)
        return emb, map_state(lambda *parts: torch.cat(parts), *states)

    def init_state(self, batch_size: int, device: torch.device | str = "cpu") -> State:
        h = torch.zeros(self.config.layers, batch_size, self.config.hidden, device=device)
        return (h, torch.zeros_like(h)) if self.config.cell == "lstm" else h

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())  # parameters() lists a tied matrix once


def layer_weights(model: CharRNN) -> list[tuple[torch.Tensor, ...]]:
    """Each recurrent layer's (weight_ih, weight_hh, bias_ih, bias_hh), as torch's cell functions
    take them: what every stepper steps with, and what `_layer_by_layer` runs each layer with."""
    return [tuple(getattr(model.rnn, f"{n}_l{k}") for n in LAYER_TENSORS) for k in range(model.config.layers)]


def map_state(fn: Callable[..., torch.Tensor], *states: State) -> State:
    """`fn` applied tensor by tensor to states of one cell: to their h's, and for an LSTM then to
    their c's, giving a state of the same kind. The one place that tells an LSTM's pair from a
    tensor, for the helpers below (and elsewhere)."""
    if isinstance(states[0], tuple):
        return tuple(fn(*parts) for parts in zip(*states, strict=True))  # type: ignore[return-value]
    return fn(*states)


def _layer_state(state: State, k: int) -> State:
    """Layer k's part of a (layers, B, H) state, as a one-layer module takes it."""
    return map_state(lambda s: s[k : k + 1], state)


def detach_state(state: State) -> State:
    """Cut the graph at a window edge: gradients stop here, but the values carry on."""
    return map_state(torch.Tensor.detach, state)


def keep_state_where(keep: torch.Tensor, new: State, old: State) -> State:
    """`new` where the scalar bool `keep` is true, else `old`, without asking the host which.
    The result is fp32 whatever precision the step computed in."""
    return map_state(lambda n, o: torch.where(keep, n, o).float(), new, old)


def mask_state(state: State, keep: torch.Tensor) -> State:
    """Zero the state of the streams where `keep` (B,) is 0, as if they were starting afresh."""
    keep = keep.view(1, -1, 1)  # broadcast over layers and units
    return map_state(lambda s: s * keep, state)


def expand_state(state: State, batch_size: int) -> State:
    """Repeat a one-stream state for `batch_size` streams."""
    return map_state(lambda s: s.expand(-1, batch_size, -1).contiguous(), state)
