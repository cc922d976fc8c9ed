"""Dynamic evaluation: a model that keeps learning from the text it reads, segment by segment.

Krause, Kahembwe, Murray and Renals, "Dynamic Evaluation of Neural Sequence Models" (ICML 2018),
with their "RMS" rule. The text is read as one stream with the state carried, as a sequential
evaluation reads it. After each segment of `segment` characters is scored, the model takes one
gradient step on that segment's mean loss:

    theta <- theta - lr * g / (rms + epsilon) + decay * min(rms / mean(rms), 1 / decay) * (theta_0 - theta)

where theta_0 are the trained weights and rms the root mean square of each parameter's gradient,
measured once on the training text (gradient_scale). The first term adapts each parameter in units
of how much training moved it; the second pulls it back towards the trained weights, harder for the
parameters training moved most. A character is always scored before any step that saw it, so the
figure is an honest prediction of text the model has not yet read.

Knows nothing about runs, files or the terminal.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from chargen.config import AdaptConfig
from chargen.device import autocast_to
from chargen.errors import CorpusError, TrainingError
from chargen.evaluate import LossStats, scored_chars
from chargen.model import CharRNN, State, map_state

# Krause et al. measured the gradient scale on batches of 100 streams. The scale (and so what a
# step of `lr` means) depends on how many streams each gradient averages over, so it is fixed here,
# and lowered only for a training text too short to give every stream a few segments.
SCALE_STREAMS = 64


@dataclass
class GradientScale:
    """The root mean square of each parameter's gradient on training text, in the order of the
    model's parameters(): Krause et al.'s sqrt(MS_g)."""

    rms: list[torch.Tensor]
    chars: int  # characters it was measured on
    seconds: float = 0.0


@dataclass
class Reading:
    """What reading a text with dynamic evaluation leaves: the log-probability of each character
    after the first (nats, float64; log_probs[j] is that of ids[j + 1]), and the state after
    ids[:-1], from which the text's last character is read next."""

    log_probs: np.ndarray
    state: State
    seconds: float

    def stats(self) -> LossStats:
        chars = len(self.log_probs)
        return LossStats(chars=chars, loss=-float(self.log_probs.sum()) / chars, seconds=self.seconds)


def _learner(model: CharRNN) -> CharRNN:
    """A copy of `model` whose gradients can be taken as it computes at evaluation. It is left in
    training mode, since cuDNN computes no recurrent backward pass in evaluation mode, with every
    dropout at 0, so training mode computes exactly what evaluation mode does."""
    net = copy.deepcopy(model)
    net.rnn.flatten_parameters()  # one contiguous block for cuDNN again, as the original had (no-op on a CPU)
    net.rnn.dropout = 0.0
    net.drop.p = 0.0
    net.weight_drop = 0.0
    net.train()
    for p in net.parameters():
        p.requires_grad_(True)
    return net


def _carried(state: State) -> State:
    """The state at a segment's edge: detached, so gradients (and memory) stop there, and fp32
    whatever precision the segment computed in, as the state sampling starts from must be."""
    return map_state(lambda s: s.detach().float(), state)


def _segment_loss(
    net: CharRNN, x: torch.Tensor, y: torch.Tensor, state: State | None, autocast: torch.dtype | None
) -> tuple[torch.Tensor, State]:
    """Per-character losses (T, B) of predicting y from x, and the state after x."""
    with autocast_to(autocast, x.device.type):
        logits, state = net(x, state)  # (T, B, V)
    losses = F.cross_entropy(logits.float().flatten(0, 1), y.flatten(), reduction="none")
    return losses.view(y.shape), state


def gradient_scale(
    model: CharRNN,
    ids: np.ndarray,
    config: AdaptConfig,
    device: torch.device | str = "cpu",
    autocast: torch.dtype | None = None,
    streams: int = SCALE_STREAMS,
) -> GradientScale:
    """Krause et al.'s MS_g: the mean squared gradient of each parameter, over batches of `streams`
    segments of `config.segment` characters with the state carried, as their released code
    measures it (its square root is returned). The streams start evenly across `ids` (training
    text) and read about `config.scale_chars` characters in all."""
    start = time.perf_counter()
    segment = config.segment
    n = len(ids) - 1
    streams = max(1, min(streams, n // (4 * segment)))  # at least a few segments per stream
    column = n // streams  # each stream's share of the text
    steps = min(column, max(segment, config.scale_chars // streams))
    if steps < segment:
        raise CorpusError(
            f"the text to measure the gradient scale on has {len(ids)} characters, fewer than one "
            f"`segment` of {segment}; use a shorter segment or a longer training text"
        )
    steps -= steps % segment  # whole segments only, so every gradient averages as many characters
    pos = np.arange(streams, dtype=np.int64)[None, :] * column + np.arange(steps, dtype=np.int64)[:, None]
    ids64 = np.asarray(ids).astype(np.int64, copy=False)
    inputs = torch.from_numpy(ids64[pos]).to(device)  # (steps, S)
    targets = torch.from_numpy(ids64[pos + 1]).to(device)  # (steps, S)

    with torch.inference_mode(False), torch.enable_grad():
        net = _learner(model)
        params = list(net.parameters())
        squares = [torch.zeros_like(p) for p in params]
        state: State | None = None
        for t in range(0, steps, segment):
            losses, state = _segment_loss(
                net, inputs[t : t + segment], targets[t : t + segment], state, autocast
            )
            grads = torch.autograd.grad(losses.mean(), params)
            for square, g in zip(squares, grads, strict=True):
                square.addcmul_(g, g)
            state = _carried(state)  # the next segment continues the text
        rms = [(square / (steps // segment)).sqrt_() for square in squares]
    return GradientScale(rms, steps * streams, time.perf_counter() - start)


class DynamicEvaluator:
    """A copy of a model that reads a text segment by segment, each scored and then learnt from.

    `read` may be called several times to continue one text, passing on the state; `score` reads
    without learning. `model` is the adapted copy (the original is never changed)."""

    def __init__(
        self,
        model: CharRNN,
        scale: GradientScale,
        config: AdaptConfig,
        device: torch.device | str = "cpu",
        autocast: torch.dtype | None = None,
    ) -> None:
        self.config, self.device, self.autocast = config, torch.device(device), autocast
        with torch.inference_mode(False), torch.no_grad():  # weights that gradients can be taken of
            self.net = _learner(model)
            self.params = list(self.net.parameters())
            rms = [r.to(self.device) for r in scale.rms]
            assert [r.shape for r in rms] == [p.shape for p in self.params], "the scale is of another model"
            self.trained = [p.detach().clone() for p in self.params]  # theta_0
            self.rate = [config.lr / (r + config.epsilon) for r in rms]
            # Krause et al. divide by the mean over all parameters (their released code takes the
            # mean of each tensor's mean instead), and cap the factor at 1 / decay so that no
            # parameter is pulled back past its trained value in one step.
            mean_rms = sum(float(r.sum()) for r in rms) / sum(r.numel() for r in rms)
            pulls = config.decay > 0 and mean_rms > 0
            self.pull = (
                [(r / mean_rms).clamp(max=1 / config.decay) * config.decay for r in rms] if pulls else None
            )

    @property
    def model(self) -> CharRNN:
        """The adapted model in evaluation mode, to sample from or score with."""
        return self.net.eval()

    def _update(self, grads: tuple[torch.Tensor, ...]) -> None:
        """One step of the RMS rule, both terms taken at the weights before it."""
        for k, (p, g) in enumerate(zip(self.params, grads, strict=True)):
            if self.pull is not None:
                p.addcmul_(self.pull[k], self.trained[k] - p)  # back towards the trained weights
            p.addcmul_(self.rate[k], g, value=-1.0)  # the gradient step, in units of the training RMS

    def read(self, ids: np.ndarray, state: State | None = None) -> Reading:
        """Score ids[1:] from ids[:-1], one segment at a time, learning from each once scored.
        `state` is where the text picks up (None: a zero state)."""
        if self.config.lr == 0:  # no step, and the pull of the trained weights on themselves is nil
            return self.score(ids, state)
        n = scored_chars(ids)
        start = time.perf_counter()
        segment = self.config.segment
        inputs, targets = _stream(ids, self.device)
        log_probs = torch.empty(n, dtype=torch.float64, device=self.device)
        self.net.train()  # for cuDNN's backward pass; every dropout is 0 (_learner)
        with torch.inference_mode(False), torch.enable_grad():
            for t in range(0, n, segment):
                x, y = inputs[t : t + segment], targets[t : t + segment]  # (T, 1)
                losses, state = _segment_loss(self.net, x, y, state, self.autocast)
                # Scored first: nothing in this segment has touched the weights yet.
                log_probs[t : t + segment] = -losses.detach().view(-1).double()
                grads = torch.autograd.grad(losses.mean(), self.params)
                with torch.no_grad():
                    self._update(grads)
                state = _carried(state)
        assert state is not None
        values = log_probs.cpu().numpy()  # waits for the device, so the time below is the work's
        if not np.isfinite(values).all():  # the steps blew the weights up: no figure to report
            at = int(np.argmin(np.isfinite(values)))
            raise TrainingError(
                f"dynamic evaluation diverged: the adapted model's loss became {-values[at]} at "
                f"character {at + 1:,} of {n:,}; lower `lr` (it is {self.config.lr:g})"
            )
        return Reading(values, state, time.perf_counter() - start)

    def score(self, ids: np.ndarray, state: State | None = None) -> Reading:
        """The same reading with the weights as they are now, learning nothing."""
        return score_ids(self.model, ids, self.device, self.autocast, state, self.config.segment)


def _stream(ids: np.ndarray, device: torch.device | str) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs and targets (n, 1) of one stream through `ids`."""
    ids64 = torch.from_numpy(np.asarray(ids).astype(np.int64, copy=False)).to(device)
    return ids64[:-1].view(-1, 1), ids64[1:].view(-1, 1)


@torch.no_grad()  # not inference mode: the state it returns may go on into a reading that learns
def score_ids(
    model: CharRNN,
    ids: np.ndarray,
    device: torch.device | str = "cpu",
    autocast: torch.dtype | None = None,
    state: State | None = None,
    window: int = 512,
) -> Reading:
    """A static, sequential reading: each character's log-probability (after the first) with the
    state carried from `state`, `window` characters per call. With a window of the segment length,
    it computes what dynamic evaluation does before its first step."""
    n = scored_chars(ids)
    start = time.perf_counter()
    inputs, targets = _stream(ids, device)
    log_probs = torch.empty(n, dtype=torch.float64, device=device)
    was_training = model.training
    model.eval()
    for t in range(0, n, window):
        losses, state = _segment_loss(model, inputs[t : t + window], targets[t : t + window], state, autocast)
        log_probs[t : t + window] = -losses.view(-1).double()
        state = _carried(state)
    model.train(was_training)
    assert state is not None
    values = log_probs.cpu().numpy()
    return Reading(values, state, time.perf_counter() - start)


def dynamic_log_probs(
    model: CharRNN,
    ids: np.ndarray,
    config: AdaptConfig,
    scale: GradientScale,
    device: torch.device | str = "cpu",
    autocast: torch.dtype | None = None,
) -> Reading:
    """Each character's log-probability (after the first) under dynamic evaluation from a zero
    state; `model` itself is left as it was."""
    return DynamicEvaluator(model, scale, config, device, autocast).read(ids)


def dynamic_evaluate(
    model: CharRNN,
    ids: np.ndarray,
    config: AdaptConfig,
    scale: GradientScale,
    device: torch.device | str = "cpu",
    autocast: torch.dtype | None = None,
) -> LossStats:
    """Mean loss of predicting ids[t + 1] from ids[: t + 1] for every t, adapting as it reads: the
    dynamic counterpart of evaluate_ids with one stream. With `config.lr` 0 it is that figure."""
    return dynamic_log_probs(model, ids, config, scale, device, autocast).stats()


def adapt_on(
    model: CharRNN,
    ids: np.ndarray,
    config: AdaptConfig,
    scale: GradientScale,
    device: torch.device | str = "cpu",
    autocast: torch.dtype | None = None,
) -> tuple[CharRNN, State]:
    """A copy of `model` adapted by reading `ids` with dynamic evaluation, and the state after
    ids[:-1]: reading ids[-1] next continues the text."""
    evaluator = DynamicEvaluator(model, scale, config, device, autocast)
    reading = evaluator.read(ids)
    return evaluator.model, reading.state
