"""Validation at the evaluation steps: the loss on the held-out text, the best weights so far, and
patience. With several processes each evaluates a share, and all get the same figure, so they all
take the same decisions. Knows nothing about the schedule or the terminal.
"""

from __future__ import annotations

import math

import numpy as np

from chargen.checkpoint import RunWriter
from chargen.errors import TrainingError
from chargen.evaluate import LossStats, evaluate_text
from chargen.model import CharRNN
from chargen.records import EvalRow, Position
from chargen.settings import RunSettings
from chargen.step import require_finite_weights


class Validation:
    """Validates the model and keeps the best weights; the position records the best figure."""

    def __init__(
        self,
        settings: RunSettings,
        model: CharRNN,
        val_ids: np.ndarray,
        writer: RunWriter,
        end_id: int | None = None,
    ) -> None:
        self.settings, self.model, self.val_ids, self.writer = settings, model, val_ids, writer
        self.end_id = end_id  # a list's end-of-item symbol: its items are scored each afresh
        self.last: LossStats | None = None  # the latest figure, for the summary

    def __call__(self, at: Position, epoch: float) -> tuple[LossStats, bool]:
        """Validate the model at `at`, which records the best so far; returns the figure and whether
        it is a new best (whose weights are then saved)."""
        s = self.settings
        val = evaluate_text(self.model, self.val_ids, self.end_id, s.device, s.autocast, s.world)
        if not math.isfinite(val.loss):  # diverged: nothing of this model is worth saving
            raise TrainingError(
                f"training stopped at step {at.step}: the validation loss is not finite ({val.loss}); "
                f"the saved weights are from before; lower `lr` (it is {s.train.lr:g})"
            )
        is_best = at.best is None or val.loss < at.best.loss
        at.evals_since_best = 0 if is_best else at.evals_since_best + 1
        if is_best:
            require_finite_weights(self.model, at.step)
            at.best, at.best_step = val, at.step
            self.writer.best(self.model)
        self.last, at.last_eval_step = val, at.step
        self.writer.metric(EvalRow(at.step, val, epoch, at.chars, is_best))
        return val, is_best

    def out_of_patience(self, at: Position) -> bool:
        """Whether the validation loss stopped improving: `patience` evaluations without a new best."""
        return 0 < self.settings.train.patience <= at.evals_since_best
