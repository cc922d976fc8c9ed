"""What training reports as it goes: a metrics row and a StepReport every `log_every` steps, an
EvalReport with a short sample at each validation, and the run's counts of clipped and skipped
steps. Figures are summed on the device between reports, so that no step waits for the host.
Knows nothing about the schedule; rank 0 alone reports (the others' reporter does nothing).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import replace

import torch

from chargen.checkpoint import RunWriter
from chargen.errors import TrainingError
from chargen.evaluate import LossStats
from chargen.model import CharRNN
from chargen.records import Position, TrainRow
from chargen.reports import EvalReport, FinishingReport, Reporter, StepReport
from chargen.schedule import Clock
from chargen.settings import RunSettings

MAX_BAD_STEPS = 5  # non-finite steps in a row before training gives up
Preview = Callable[[CharRNN], str]  # a short sample of the model's, for the reports


class Meter:
    """Training figures summed on the device between reports."""

    def __init__(self, device: torch.device, clip: float, clock: Clock) -> None:
        self.clip, self.clock = clip, clock
        zero = torch.zeros((), device=device)
        self.loss = zero.clone()  # summed over the steps taken
        self.scored = zero.clone()  # characters of the steps taken
        self.clipped = zero.clone()
        self.skipped = zero.clone()
        self.bad_run = zero.clone()  # steps skipped in a row, up to the latest
        self.worst_run = zero.clone()  # the longest such run since the last report
        self.chars = self.steps = 0
        self.since = clock.elapsed()

    def add(self, loss: torch.Tensor, grad_norm: torch.Tensor, taken: torch.Tensor, chars: int) -> None:
        self.loss += torch.where(taken, loss, 0.0)
        self.scored += taken * chars
        self.clipped += taken & (grad_norm > self.clip)
        self.skipped += ~taken
        self.bad_run = (self.bad_run + 1) * ~taken
        self.worst_run = torch.maximum(self.worst_run, self.bad_run)
        self.chars += chars
        self.steps += 1

    def pending(self) -> tuple[int, int]:
        """Steps clipped and skipped since the last report (one host sync)."""
        return int(self.clipped.item()), int(self.skipped.item())

    def take(self) -> tuple[float, int, int, int, float]:
        """Mean loss per character, steps clipped, steps skipped, the longest run of skipped steps
        and characters per second of training since the last call; then start again."""
        now = self.clock.elapsed()
        mean_loss = self.loss.item() / max(self.scored.item(), 1.0)
        clipped, skipped = self.pending()
        worst_run = int(self.worst_run.item())
        speed = self.chars / max(now - self.since, 1e-9)
        for total in (self.loss, self.scored, self.clipped, self.skipped, self.worst_run):
            total.zero_()
        self.chars = self.steps = 0
        self.since = now
        return mean_loss, clipped, skipped, worst_run, speed


class Recorder:
    """The run's figures as it goes: summed by the Meter, then written and reported."""

    def __init__(
        self, settings: RunSettings, writer: RunWriter, report: Reporter, clock: Clock, preview: Preview
    ) -> None:
        self.settings, self.writer, self.report, self.preview = settings, writer, report, preview
        self.meter = Meter(settings.device, settings.clip, clock)

    def add(self, loss: torch.Tensor, grad_norm: torch.Tensor, taken: torch.Tensor, chars: int) -> None:
        self.meter.add(loss, grad_norm, taken, chars)

    def log(
        self, at: Position, epoch: float, lr: float, grad_norm: float, fraction: float, seconds: float
    ) -> None:
        """Write and report the figures since the last report."""
        steps = self.meter.steps
        mean_loss, clipped, skipped, worst_run, speed = self.meter.take()
        self._count(at, clipped, skipped, worst_run)
        eta = seconds / fraction - seconds if fraction > 0 else math.inf
        clipped_share = clipped / max(steps, 1)
        self.writer.metric(
            TrainRow(
                at.step, epoch, at.chars, seconds, lr, mean_loss, grad_norm, clipped_share, at.skipped, speed
            )
        )
        self.report(StepReport(at.step, epoch, fraction, mean_loss, lr, grad_norm, speed, eta))

    def finishing(self, at: Position) -> None:
        """The run's steps are done: count what the last report did not, and say so (its last
        evaluation and its summary follow)."""
        self._count(at, *self.meter.take()[1:4])
        self.report(FinishingReport(at.step))

    def with_pending(self, at: Position) -> Position:
        """`at` with the steps clipped and skipped since the last report counted in."""
        clipped, skipped = self.meter.pending()
        return replace(at, clipped_total=at.clipped_total + clipped, skipped=at.skipped + skipped)

    def evaluated(self, model: CharRNN, step: int, val: LossStats, is_best: bool) -> None:
        """Report a validation, with a short sample of the model's (rank 0 only: it is only for the
        report)."""
        if self.settings.world.is_main:
            sample = self.preview(model)
            model.train()
            self.report(EvalReport(step, val, is_best, sample))

    def _count(self, at: Position, clipped: int, skipped: int, worst_run: int) -> None:
        """Add a report's counts to the run's; stop when too many steps in a row were not finite."""
        at.clipped_total += clipped
        at.skipped += skipped
        if worst_run >= MAX_BAD_STEPS:
            raise TrainingError(
                f"training stopped at step {at.step}: the loss or gradient was not finite "
                f"{worst_run} steps in a row (those steps were skipped; the saved weights are "
                f"from before); lower `lr` (it is {self.settings.train.lr:g})"
            )
