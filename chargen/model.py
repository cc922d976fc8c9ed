"""CharRNN: embedding -> stacked LSTM/GRU/RNN -> linear to the vocabulary. Imports only torch.

The recurrent layers are torch's fused modules (cuDNN on a GPU, oneDNN on a CPU), never a Python
loop over time steps. Generation, one character at a time, steps through steppers.py.
"""

from __future__ import annotations

import torch
from torch import nn

from chargen.config import ModelConfig

# An LSTM's state is (h, c); a GRU's or plain RNN's is just h. Each tensor is (layers, B, hidden).
State = torch.Tensor | tuple[torch.Tensor, torch.Tensor]

_CELLS: dict[str, type[nn.RNNBase]] = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}


def thinned(x: torch.Tensor, p: float) -> torch.Tensor:
    """`x` with each entry kept with probability 1 - p, scaled by 1 / (1 - p) to keep its mean: what
    F.dropout computes, drawn as one uniform and a comparison per entry, which on a CPU costs well
    under half of dropout's Bernoulli draw (AMD EPYC, two threads: a 1536 x 384 matrix 2.4 ms
    against 6.5; a 64 x 16 x 256 activation 0.95 against 2.47)."""
    keep = torch.rand(x.shape, device=x.device) >= p  # fp32 uniforms, whatever x computes in
    return x * keep * (1.0 / (1.0 - p))


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
        if self.training and self.weight_drop > 0:
            # the fused module run with dropped copies of its recurrent matrices in their place
            dropped = {
                f"weight_hh_l{k}": thinned(getattr(self.rnn, f"weight_hh_l{k}"), self.weight_drop)
                for k in range(self.config.layers)
            }
            out, state = torch.func.functional_call(self.rnn, dropped, (emb, state))
        else:
            out, state = self.rnn(emb, state)  # (T, B, H)
        logits = self.head(self.drop(out))  # (T, B, V)
        return logits, state

    def init_state(self, batch_size: int, device: torch.device | str = "cpu") -> State:
        h = torch.zeros(self.config.layers, batch_size, self.config.hidden, device=device)
        return (h, torch.zeros_like(h)) if self.config.cell == "lstm" else h

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())  # parameters() lists a tied matrix once


def detach_state(state: State) -> State:
    """Cut the graph at a window edge: gradients stop here, but the values carry on."""
    if isinstance(state, tuple):
        return tuple(s.detach() for s in state)  # type: ignore[return-value]
    return state.detach()


def keep_state_where(keep: torch.Tensor, new: State, old: State) -> State:
    """`new` where the scalar bool `keep` is true, else `old`, without asking the host which.
    The result is fp32 whatever precision the step computed in."""
    if isinstance(new, tuple):
        return tuple(torch.where(keep, n, o).float() for n, o in zip(new, old, strict=True))  # type: ignore[return-value]
    return torch.where(keep, new, old).float()  # type: ignore[arg-type]


def mask_state(state: State, keep: torch.Tensor) -> State:
    """Zero the state of the streams where `keep` (B,) is 0, as if they were starting afresh."""
    keep = keep.view(1, -1, 1)  # broadcast over layers and units
    if isinstance(state, tuple):
        return tuple(s * keep for s in state)  # type: ignore[return-value]
    return state * keep


def expand_state(state: State, batch_size: int) -> State:
    """Repeat a one-stream state for `batch_size` streams."""
    if isinstance(state, tuple):
        return tuple(s.expand(-1, batch_size, -1).contiguous() for s in state)  # type: ignore[return-value]
    return state.expand(-1, batch_size, -1).contiguous()
