"""CharRNN: embedding -> stacked LSTM/GRU/RNN -> linear to the vocabulary. Imports only torch.

The recurrent layers are torch's fused modules (cuDNN on a GPU, oneDNN on a CPU), never a Python
loop over time steps. Generation, one character at a time, steps through CellStepper (torch's cell
functions) or GemmStepper (an LSTM's, on a CPU); stepping.py says which is faster where.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
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

    def step(self, x: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        """Logits (B, V) for one character per stream (B,) and the state after it (see CellStepper)."""
        stepper = CellStepper(self, state)
        return stepper(x), stepper.state()

    def init_state(self, batch_size: int, device: torch.device | str = "cpu") -> State:
        h = torch.zeros(self.config.layers, batch_size, self.config.hidden, device=device)
        return (h, torch.zeros_like(h)) if self.config.cell == "lstm" else h

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())  # parameters() lists a tied matrix once


def layer_weights(model: CharRNN) -> list[tuple[torch.Tensor, ...]]:
    """Each recurrent layer's (weight_ih, weight_hh, bias_ih, bias_hh), as torch's cell functions
    take them: what both steppers step with."""
    names = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
    return [tuple(getattr(model.rnn, f"{n}_l{k}") for n in names) for k in range(model.config.layers)]


class CellStepper:
    """One character per stream at a time, through torch's fused single-step cell functions: for
    generation, where nn.LSTM's per-call overhead outweighs one step's arithmetic. Same weights and
    arithmetic as CharRNN.forward. The weights are looked up once and the state is kept as one
    tensor per layer, so a step pays no nn.Module call overhead and no stacking."""

    def __init__(self, model: CharRNN, state: State) -> None:
        self.cell = model.config.cell
        self.weights = layer_weights(model)
        self.embedding, self.head = model.embed.weight, model.head
        h, c = state if isinstance(state, tuple) else (state, None)
        self.h = list(h.unbind(0))  # (B, H) per layer
        self.c = list(c.unbind(0)) if c is not None else []

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (B, V) for the next character after `x` (B,); the state moves on by one."""
        inp = F.embedding(x, self.embedding)  # (B, E)
        for k, weights in enumerate(self.weights):
            if self.cell == "lstm":
                self.h[k], self.c[k] = torch.lstm_cell(inp, (self.h[k], self.c[k]), *weights)
            elif self.cell == "gru":
                self.h[k] = torch.gru_cell(inp, self.h[k], *weights)
            else:
                self.h[k] = torch.rnn_tanh_cell(inp, self.h[k], *weights)
            inp = self.h[k]  # (B, H); dropout between layers is off outside training
        return F.linear(inp, self.head.weight, self.head.bias)

    def state(self) -> State:
        """The state as CharRNN.forward takes it: (layers, B, H), a pair of them for an LSTM."""
        return (torch.stack(self.h), torch.stack(self.c)) if self.cell == "lstm" else torch.stack(self.h)


class GemmStepper:
    """An LSTM's character step for generation on a CPU, in fewer and cheaper calls than CellStepper
    makes: per layer one matrix product with the input and recurrent matrices side by side, stored
    transposed (the (K, N) layout that the BLAS streams fastest for one or a few rows); the first
    layer's input product looked up in a table (one row per symbol, computed once: the embedding
    times its input matrix, plus both biases); one sigmoid over all four gates, in place on one
    contiguous buffer (the cell gate g's tanh taken as 2 sigmoid(2x) - 1: its rows of the
    matrices and biases are doubled once); and the rest of the gate arithmetic done in place in
    buffers kept from step to step. On the AMD EPYC of docs/benchmarks.md a 2x256 step for one
    stream took 90 us against CellStepper's 133 (one thread, fp32); taking g's tanh as a sigmoid
    made 64 streams 5-10% faster. The same arithmetic up to rounding; stepping.py measures both
    steppers on the machine at hand and uses the faster. Holds a transposed copy of the weights."""

    def __init__(self, model: CharRNN, state: State) -> None:
        assert model.config.cell == "lstm" and isinstance(state, tuple), "GemmStepper steps LSTMs"
        hidden, layers = model.config.hidden, model.config.layers
        self.hidden, self.layers = hidden, layers
        order = torch.cat([torch.arange(2 * hidden), torch.arange(3 * hidden, 4 * hidden)])
        order = torch.cat([order, torch.arange(2 * hidden, 3 * hidden)])  # i, f, o, g
        doubled_g = torch.ones(4 * hidden)
        doubled_g[3 * hidden :] = 2.0  # so that g's sigmoid gives (tanh(g) + 1) / 2
        with torch.no_grad():
            weights = layer_weights(model)  # what is computed from them here needs no gradient
            w_ih, w_hh, b_ih, b_hh = weights[0]
            table = F.linear(model.embed.weight.detach(), w_ih, b_ih + b_hh)  # (V, 4H)
            self.table = table[:, order] * doubled_g
            column = doubled_g[:, None]  # (4H, 1): scales the gate rows of a (4H, K) matrix
            self.products = [(w_hh[order] * column).t().contiguous()]  # (H, 4H): the recurrent part
            self.biases: list[torch.Tensor] = []
            for w_ih, w_hh, b_ih, b_hh in weights[1:]:
                both = torch.cat([w_ih, w_hh], dim=1)[order] * column
                self.products.append(both.t().contiguous())  # (2H, 4H)
                self.biases.append((b_ih + b_hh)[order] * doubled_g)  # (4H,)
            self.head_weight = model.head.weight.detach().t().contiguous()  # (H, V)
            self.head_bias = model.head.bias.detach()
        self.load(state)

    def load(self, state: State) -> None:
        """Start from `state` ((layers, B, H) pair), for its B streams: the buffers are made here."""
        h, c = state  # type: ignore[misc]
        rows, hidden = h.shape[1], self.hidden
        self.gates = [torch.empty(rows, 4 * hidden) for _ in range(self.layers)]
        # Layer k > 0 multiplies [h of layer k - 1, its own h]: both live side by side in its input
        # buffer. The first layer's h has a buffer of its own (its input part is the table's row).
        self.inputs = [torch.empty(rows, hidden if k == 0 else 2 * hidden) for k in range(self.layers)]
        own = [self.inputs[0]] + [buffer[:, hidden:] for buffer in self.inputs[1:]]
        self.h = own  # (B, H) views, each layer's state
        for k in range(self.layers):
            own[k].copy_(h[k])
        self.c = [t.clone() for t in c.unbind(0)]  # (B, H) per layer
        self.scratch = torch.empty(rows, hidden)
        self.views = []
        for k, gates in enumerate(self.gates):
            i, f, o, g = gates.split(hidden, dim=1)
            feeds = self.inputs[k + 1][:, :hidden] if k + 1 < self.layers else None
            self.views.append((i, f, o, g, feeds))

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (B, V) for the next character after `x` (B,); the state moves on by one."""
        torch.index_select(self.table, 0, x, out=self.gates[0])  # (B, 4H): input part and biases
        self.gates[0].addmm_(self.inputs[0], self.products[0])
        for k in range(self.layers):
            i, f, o, g, feeds = self.views[k]
            if k > 0:
                torch.addmm(self.biases[k - 1], self.inputs[k], self.products[k], out=self.gates[k])
            self.gates[k].sigmoid_()  # g now holds (tanh(g) + 1) / 2
            self.c[k].mul_(f).addcmul_(i, g, value=2.0).sub_(i)  # c = f * c + i * tanh(g)
            torch.tanh(self.c[k], out=self.scratch)
            torch.mul(o, self.scratch, out=self.h[k])  # h = o * tanh(c)
            if feeds is not None:
                feeds.copy_(self.h[k])  # the next layer's input
        return torch.addmm(self.head_bias, self.h[-1], self.head_weight)  # (B, V), a new tensor

    def state(self) -> State:
        """The state as CharRNN.forward takes it: a (layers, B, H) pair, copied out of the buffers."""
        return torch.stack(self.h), torch.stack(self.c)


def make_stepper(model: CharRNN, state: State, kernel: str = "cells") -> CellStepper | GemmStepper:
    """The stepper for `kernel`: "cells" (torch's cell functions, any cell) or "gemm" (GemmStepper,
    an LSTM's on a CPU); stepping.py says which is faster where."""
    gemm = kernel == "gemm" and model.config.cell == "lstm"  # a hand-edited cache may say otherwise
    return GemmStepper(model, state) if gemm else CellStepper(model, state)


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
