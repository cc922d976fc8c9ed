"""Generation's steps: the logits for one more character per stream, from a state kept inside.

Training and scoring read whole windows through torch's fused modules (model.py). Generation goes
one character at a time, where a call's overhead and the bytes of weights read per step decide the
speed, so it has steppers of its own, each the same arithmetic as CharRNN.forward up to rounding:
CellStepper (torch's cell functions, any cell), and for an LSTM on a CPU GemmStepper (torch, a
matrix product a layer) and NumpyStepper (NumPy and its BLAS, for a few streams). stepping.py
times them on the machine at hand and uses the fastest.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F

from chargen.model import CharRNN, State, layer_weights


class Stepper(Protocol):
    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (B, V) for the next character after `x` (B,); the state moves on by one."""
        ...

    def state(self) -> State:
        """The state as CharRNN.forward takes it, copied out."""
        ...


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


@dataclass
class _LaidOut:
    """An LSTM's weights as GemmStepper and NumpyStepper step with them (see GemmStepper): the
    gate rows reordered to i, f, o, g and scaled, the products stored transposed."""

    table: torch.Tensor  # (V, 4H): the embedding times the first layer's input matrix, plus its biases
    products: list[torch.Tensor]  # the first layer's recurrent (H, 4H), then each [input; recurrent] (2H, 4H)
    biases: list[torch.Tensor]  # (4H,) for each layer but the first
    head_weight: torch.Tensor  # (H, V)
    head_bias: torch.Tensor  # (V,)


def _laid_out(model: CharRNN, sigmoid_scale: float, g_scale: float) -> _LaidOut:
    """`model`'s weights laid out for a stepper, the sigmoid gates' rows times `sigmoid_scale` and
    the cell gate g's times `g_scale` (what each stepper's trick for its nonlinearities needs: see
    each). Fresh tensors, holding no gradient."""
    hidden = model.config.hidden
    order = torch.cat([torch.arange(2 * hidden), torch.arange(3 * hidden, 4 * hidden)])
    order = torch.cat([order, torch.arange(2 * hidden, 3 * hidden)])  # i, f, o, g
    scale = torch.full((4 * hidden,), sigmoid_scale)
    scale[3 * hidden :] = g_scale
    column = scale[:, None]  # (4H, 1): scales the gate rows of a (4H, K) matrix
    with torch.no_grad():
        weights = [tuple(w.float() for w in layer) for layer in layer_weights(model)]
        w_ih, w_hh, b_ih, b_hh = weights[0]
        table = F.linear(model.embed.weight.float(), w_ih, b_ih + b_hh)  # (V, 4H)
        products = [(w_hh[order] * column).t().contiguous()]  # (H, 4H): the recurrent part
        biases = []
        for w_ih, w_hh, b_ih, b_hh in weights[1:]:
            both = torch.cat([w_ih, w_hh], dim=1)[order] * column
            products.append(both.t().contiguous())  # (2H, 4H)
            biases.append((b_ih + b_hh)[order] * scale)  # (4H,)
        head_weight = model.head.weight.float().t().contiguous()  # (H, V)
        return _LaidOut(
            table[:, order] * scale, products, biases, head_weight, model.head.bias.float().clone()
        )


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
    made 64 streams 5-10% faster. The same arithmetic up to rounding; stepping.py measures every
    stepper on the machine at hand and uses the fastest. Holds a transposed copy of the weights.

    With `rows=True` the layers' matrices are stored as nn.Linear stores them, a row per gate unit
    ((4H, K)), and multiplied through a transposed view: the BLAS then splits one row's product
    between threads differently. On the 2-core Intel Xeon with AMX of docs/benchmarks.md a 2x256
    step for one stream on two threads ran 8,900 to 9,100 steps/s this way against 6,400 to 6,700
    (layer 2's (512, 1024) product alone: 28 us against 48), while the (K, N) layout stayed as fast
    or faster on one thread and for 64 streams. stepping.py times both."""

    def __init__(self, model: CharRNN, state: State, rows: bool = False) -> None:
        assert model.config.cell == "lstm" and isinstance(state, tuple), "GemmStepper steps LSTMs"
        self.hidden, self.layers = model.config.hidden, model.config.layers
        w = _laid_out(model, 1.0, 2.0)  # g's rows doubled: its sigmoid gives (tanh(g) + 1) / 2
        self.table, self.biases = w.table, w.biases
        # (K, 4H) either way as addmm sees it; with `rows`, a view of a (4H, K) matrix.
        self.products = [p.t().contiguous().t() for p in w.products] if rows else w.products
        self.head_weight, self.head_bias = w.head_weight, w.head_bias
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


class NumpyStepper:
    """An LSTM's character step in NumPy, for a few streams on a CPU: each op on these small arrays
    costs NumPy about a microsecond and torch two to four, and NumPy's BLAS (OpenBLAS in its
    wheels) reads a layer's (K, 4H) matrix for one row faster than torch's: on the AMD EPYC with
    AVX2 of docs/benchmarks.md a 2x256 step took 105 us against GemmStepper's 172 (one thread,
    fp32). The layout is GemmStepper's, with two changes. Every sigmoid gate's rows are halved, so
    that one tanh over all four gates gives tanh(g) and, for the others, tanh(x/2), from which
    sigmoid(x) = (tanh(x/2) + 1) / 2 takes two cheap ops. And the layers' h sit side by side in one
    (B, layers * H) buffer, so that layer k's input [h of layer k - 1, its own h] is a slice of it,
    with no copy. The same arithmetic up to rounding. Holds a copy of the weights; the ids it is
    given must be on the CPU."""

    def __init__(self, model: CharRNN, state: State) -> None:
        assert model.config.cell == "lstm" and isinstance(state, tuple), "NumpyStepper steps LSTMs"
        self.hidden, self.layers = model.config.hidden, model.config.layers
        w = _laid_out(model, 0.5, 1.0)  # the sigmoid gates' rows halved: one tanh serves all four
        self.table, self.products = _array(w.table), [_array(p) for p in w.products]
        self.biases = [_array(b) for b in w.biases]
        self.head_weight, self.head_bias = _array(w.head_weight), _array(w.head_bias)
        self.load(state)

    def load(self, state: State) -> None:
        """Start from `state` ((layers, B, H) pair), for its B streams: the buffers are made here."""
        h, c = state  # type: ignore[misc]
        rows, hidden = h.shape[1], self.hidden
        # Copies, never views of the state given: the steps write into these in place.
        self.h_all = _array(h.transpose(0, 1).reshape(rows, -1))  # (B, layers * H): [h_0, h_1, ...]
        self.c = [_array(layer) for layer in c.unbind(0)]  # (B, H) each
        self.gates = [np.empty((rows, 4 * hidden), np.float32) for _ in range(self.layers)]
        self.scratch = np.empty((rows, hidden), np.float32)
        self.views = []
        for k, gates in enumerate(self.gates):
            inputs = self.h_all[:, max(k - 1, 0) * hidden : (k + 1) * hidden]  # [h below, own h]
            own = self.h_all[:, k * hidden : (k + 1) * hidden]
            self.views.append((gates[:, : 3 * hidden], *np.split(gates, 4, axis=1), inputs, own))

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (B, V) for the next character after `x` (B,); the state moves on by one."""
        scratch = self.scratch
        for k in range(self.layers):
            gates = self.gates[k]
            sigmoids, i, f, o, g, inputs, h = self.views[k]
            np.matmul(inputs, self.products[k], out=gates)
            gates += self.table[x.numpy()] if k == 0 else self.biases[k - 1]
            np.tanh(gates, out=gates)  # g's tanh, and tanh(x / 2) for the halved sigmoid gates
            sigmoids += 1.0
            sigmoids *= 0.5  # now i, f and o hold their sigmoids
            c = self.c[k]
            c *= f
            np.multiply(i, g, out=scratch)
            c += scratch  # c = f * c + i * tanh(g)
            np.tanh(c, out=scratch)
            np.multiply(o, scratch, out=h)  # h = o * tanh(c), in place for this layer and the next
        logits = np.matmul(self.views[-1][-1], self.head_weight)
        logits += self.head_bias
        return torch.from_numpy(logits)  # (B, V), a new array each step

    def state(self) -> State:
        """The state as CharRNN.forward takes it: a (layers, B, H) pair, copied out of the buffers."""
        rows = self.h_all.shape[0]
        h = torch.from_numpy(self.h_all.copy()).view(rows, self.layers, self.hidden).transpose(0, 1)
        return h.contiguous(), torch.from_numpy(np.stack(self.c))


def _array(t: torch.Tensor) -> np.ndarray:
    """A C-ordered fp32 NumPy copy of `t` (never a view of it), for the BLAS to stream."""
    return np.array(t.detach().float().cpu().numpy(), dtype=np.float32, order="C", copy=True)


# The steppers' names, as stepping.py times them and caches the fastest: the one place they are written.
CELLS_KERNEL = "cells"  # CellStepper: any cell, any device
GEMM_KERNEL = "gemm"  # GemmStepper, its matrices stored (K, N)
GEMM_ROWS_KERNEL = "gemm-rows"  # GemmStepper(rows=True), its matrices stored (N, K) as nn.Linear's
NUMPY_KERNEL = "numpy"  # NumpyStepper
KERNELS = (GEMM_KERNEL, GEMM_ROWS_KERNEL, NUMPY_KERNEL)  # an LSTM's steppers on a CPU


def make_stepper(model: CharRNN, state: State, kernel: str = CELLS_KERNEL) -> Stepper:
    """The stepper for `kernel`: "cells" (torch's cell functions, any cell), "gemm" (GemmStepper),
    "gemm-rows" (GemmStepper with rows=True) or "numpy" (NumpyStepper), the last three an LSTM's on
    a CPU; stepping.py says which is faster where."""
    if model.config.cell != "lstm" or kernel not in KERNELS:  # a hand-edited cache may say so
        return CellStepper(model, state)
    if kernel == NUMPY_KERNEL:
        return NumpyStepper(model, state)
    return GemmStepper(model, state, rows=kernel == GEMM_ROWS_KERNEL)
