"""How far a run is and what follows from it: the learning rate at each step, the fraction of the run
done, which limit ends it, and the training clock all of these go by. Knows nothing about models.

The clock leaves evaluation out. With several processes, their clocks differ, but their schedules
and limits must not: they go by rank 0's time as agreed at the last report.
"""

from __future__ import annotations

import math
import threading
import time

import torch

from chargen.config import TrainConfig
from chargen.distributed import World
from chargen.records import Position


def lr_at(config: TrainConfig, step: int, fraction: float, warmup_steps: int) -> float:
    """Linear warm-up over the first steps, then cosine decay to lr * min_lr_ratio at the end."""
    warm = min(1.0, (step + 1) / warmup_steps) if warmup_steps > 0 else 1.0
    cosine = 0.5 * (1.0 + math.cos(math.pi * min(fraction, 1.0)))
    return config.lr * warm * (config.min_lr_ratio + (1.0 - config.min_lr_ratio) * cosine)


class Schedule:
    """The run's limits and learning rate, for a position in it."""

    def __init__(self, config: TrainConfig, warmup: int, windows_per_epoch: int) -> None:
        self.config, self.warmup, self.windows_per_epoch = config, warmup, windows_per_epoch

    def epoch(self, at: Position) -> float:
        """Passes over the training split so far."""
        return at.epoch_index + at.window / self.windows_per_epoch

    def fraction(self, at: Position, seconds: float) -> float:
        """How far the run is, as a fraction of whichever limit (steps, time, epochs) is nearest."""
        c = self.config
        parts = [
            at.step / c.max_steps if c.max_steps else 0.0,
            seconds / c.max_time if c.max_time else 0.0,
            self.epoch(at) / c.epochs if c.epochs else 0.0,
        ]
        return min(1.0, max(parts))

    def stopped_by(self, at: Position) -> str:
        c = self.config
        if c.max_steps and at.step >= c.max_steps:
            return "max_steps"
        if c.epochs and self.epoch(at) >= c.epochs:
            return "epochs"
        return "max_time"

    def lr(self, at: Position, fraction: float) -> float:
        return lr_at(self.config, at.step, fraction, self.warmup)


class Clock:
    """Seconds of training, and whether to stop: this process's own, or with several processes
    what they agreed on at the last report (rank 0's time, and whether any was asked to stop)."""

    def __init__(self, world: World, stop: threading.Event) -> None:
        self.world, self.stop = world, stop
        self.began = time.perf_counter()
        self.paused = 0.0  # seconds spent evaluating since then
        self.before = 0.0  # seconds a resumed run had trained
        self.agreed_seconds, self.agreed_stop = 0.0, False

    def resume_at(self, seconds: float) -> None:
        """Go on from a resumed run's training time."""
        self.before = self.agreed_seconds = seconds

    def elapsed(self) -> float:
        """Seconds of training since this process began, for speeds."""
        return time.perf_counter() - self.began - self.paused

    def own(self) -> float:
        return self.before + self.elapsed()

    def seconds(self) -> float:
        return self.agreed_seconds if self.world.size > 1 else self.own()

    def pause(self, seconds: float) -> None:
        self.paused += seconds  # time spent evaluating is not training time

    def stop_requested(self) -> bool:
        return self.agreed_stop if self.world.size > 1 else self.stop.is_set()

    def agree(self) -> None:
        """With several processes, share rank 0's clock and any process's stop request, so that all
        follow the same schedule and stop at the same step. It waits for the host, so it runs once
        per report, when the host waits anyway: time limits and Ctrl-C act at the next report."""
        if self.world.size == 1:
            return
        clock = self.own() if self.world.is_main else 0.0
        mine = torch.tensor([clock, float(self.stop.is_set())], dtype=torch.float64)
        self.agreed_seconds, stops = self.world.sum(mine).tolist()
        self.agreed_stop = stops > 0
