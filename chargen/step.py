"""One optimiser step of truncated BPTT, and the optimiser it takes: what training and the recipe's
speed probe both run. Knows nothing about data, schedules or files.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from chargen.config import TrainConfig
from chargen.device import autocast_to
from chargen.distributed import World
from chargen.errors import TrainingError
from chargen.evaluate import summed_cross_entropy
from chargen.model import CharRNN, State, detach_state, keep_state_where


def make_optimizer(model: CharRNN, config: TrainConfig) -> torch.optim.AdamW:
    """AdamW, decaying matrices only: biases and gains are better left alone."""
    matrices = [p for p in model.parameters() if p.dim() >= 2]
    vectors = [p for p in model.parameters() if p.dim() < 2]
    groups = [
        {"params": matrices, "weight_decay": config.weight_decay},
        {"params": vectors, "weight_decay": 0.0},
    ]
    # fused: one kernel for the whole update, and it can skip a non-finite step (see train_step).
    return torch.optim.AdamW(groups, lr=config.lr, betas=(0.9, 0.99), fused=True)


def train_step(
    model: CharRNN,
    optimizer: torch.optim.Optimizer,
    x: torch.Tensor,
    y: torch.Tensor,
    state: State,
    clip: float,
    autocast: torch.dtype | None = None,
    agree: Callable[[torch.Tensor], torch.Tensor] | None = None,
    count: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor, State, torch.Tensor]:
    """One optimiser step on a (T, B) window, with no host synchronisation on a GPU.

    The gradient is that of the summed loss divided by `count`: the window's targets (the
    default), or for padded windows those that count (see data.Window).
    Returns the summed loss, the pre-clip gradient norm, the state to carry into the next window
    and whether the step was taken (a bool tensor on the device): a non-finite loss or gradient
    leaves the weights, the optimiser and the carried state as they were. `autocast` runs the
    network's arithmetic in that dtype (bf16); weights, gradients and the loss stay fp32.
    With several processes, `agree` averages the gradients over all of them and turns this
    process's loss into their sum, so that every process clips alike and takes the same decision.
    """
    with autocast_to(autocast, x.device.type):
        logits, new_state = model(x, state)  # (T, B, V)
    loss = summed_cross_entropy(logits.float(), y)
    optimizer.zero_grad(set_to_none=True)
    (loss / (count or y.numel())).backward()
    if agree is not None:
        loss = agree(loss.detach())
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    # On a CPU torch's foreach norm runs on one thread and the per-tensor norms on all of them
    # (2x256 LSTM, AMD EPYC, two threads: 0.39 ms against 0.25 a step); on a GPU foreach is one kernel.
    grad_norm = torch.nn.utils.get_total_norm(grads, foreach=x.device.type != "cpu")
    taken = torch.isfinite(loss) & torch.isfinite(grad_norm)
    # Fused AdamW reads two attributes torch's GradScaler sets. `found_inf`: at 1 it skips the whole
    # update on the device, so a NaN never reaches the weights and no step waits for the host to
    # look at the loss. `grad_scale`: it divides every gradient by it as it reads them, which clips
    # the norm to `clip` (with inf: never) inside the update, not in a pass of its own over the
    # gradients (which read and wrote each of them once more).
    optimizer.found_inf = (~taken).float()  # type: ignore[attr-defined]
    if x.device.type == "cpu" and not bool(grad_norm > clip):
        # With a scale the update also writes every gradient back, and on a CPU that write can
        # cost more than the rest of the update (2x256 LSTM, AMD EPYC, two threads: 2.2 ms against
        # 0.8 in some processes; docs/benchmarks.md). Where the clip does not bite (all but 0.1% of
        # a default run's steps) there is nothing to scale, and on a CPU the norm is read without
        # waiting on any device.
        optimizer.grad_scale = None  # type: ignore[attr-defined]
    else:
        optimizer.grad_scale = (grad_norm / clip).clamp(min=1.0)  # type: ignore[attr-defined]
    optimizer.step()
    new_state = keep_state_where(taken, detach_state(new_state), state)  # the graph ends at the window edge
    return loss.detach(), grad_norm, new_state, taken


class Stepper:
    """train_step as a run takes it: at the learning rate it is given, with the run's clipping
    threshold and precision, and with several processes averaging their gradients."""

    def __init__(
        self, model: CharRNN, config: TrainConfig, clip: float, autocast: torch.dtype | None, world: World
    ) -> None:
        self.model, self.clip, self.autocast, self.world = model, clip, autocast, world
        self.optimizer = make_optimizer(model, config)

    def __call__(
        self, x: torch.Tensor, y: torch.Tensor, state: State, lr: float, count: float | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, State, torch.Tensor]:
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        agree = self._average if self.world.size > 1 else None
        return train_step(self.model, self.optimizer, x, y, state, self.clip, self.autocast, agree, count)

    def _average(self, loss: torch.Tensor) -> torch.Tensor:
        """train_step's hook with several processes: average the gradients, sum the losses."""
        return self.world.average_gradients(self.model.parameters(), loss)


def require_finite_weights(model: CharRNN, step: int) -> None:
    """Refuse to keep weights that are no longer numbers: nothing of them is worth saving."""
    if not all(bool(torch.isfinite(p).all()) for p in model.parameters()):
        raise TrainingError(f"the weights became non-finite at step {step}; lower `lr`")
