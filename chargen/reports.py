"""What training reports as it goes, through the callback it is given: the CLI draws these, the
plotter redraws on them, a test can stop a run on one.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from chargen.evaluate import LossStats


@dataclass
class ReadyReport:
    """The run is set up (its settings decided, its model made) and nothing of it is written yet:
    a stop asked for from here ends it after a step, with a checkpoint (TrainingInterrupted); one
    asked for before, by one process, here, with nothing written (StoppedBeforeTraining; see
    training._set_up_over)."""


@dataclass
class StartReport:
    run_dir: Path
    device: str
    seed: int
    parameters: int
    vocab_size: int
    train_chars: int
    val_chars: int
    resumed_at: int  # the step a resumed run continues from; 0 for a new run
    model: str  # its shape, and how size auto chose it
    processes: int = 1  # training together, each on its share of the batch
    symbol: str = "character"  # what the figures are per: the tokenizer's symbol (vocab.py)
    limits: str = ""  # where the run stops (TrainConfig.limits), as given now: a resumed run's may be new


@dataclass
class StepReport:
    step: int
    epoch: float  # passes over the training split so far
    fraction: float  # of the whole run, by whichever limit is nearest
    loss: float  # mean training loss per character since the last report, in nats
    lr: float
    grad_norm: float  # before clipping, at the last step
    chars_per_sec: float
    eta: float  # seconds of training left, estimated

    @property
    def bpc(self) -> float:
        return self.loss / math.log(2)


@dataclass
class EvalReport:
    step: int
    val: LossStats
    is_best: bool
    sample: str  # a short continuation of a fixed prefix


@dataclass
class FinishingReport:
    """The run's last step is taken (a limit or patience ended it): its final evaluation, if that
    step has none yet, and its summary follow. A stop asked for from here changes nothing: the run
    is finished, not interrupted."""

    step: int


Report = ReadyReport | StartReport | StepReport | EvalReport | FinishingReport
Reporter = Callable[[Report], None]
