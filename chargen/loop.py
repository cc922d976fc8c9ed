"""The training loop: truncated BPTT with carried state, stepping through the windows, validating,
saving and reporting when the schedule says, until a limit, patience or a stop request ends it.

Everything it needs is made beforehand (`build_loop`) and handed to it: the step, the schedule and
clock, validation, the recorder of figures and the checkpointer. Knows nothing about corpora or the
terminal. With several processes (see distributed.py) each runs this same loop on its share of the
streams; they agree on every decision, and only rank 0 writes.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from chargen.checkpoint import Checkpoint, RunWriter
from chargen.data import Batches, StreamBatches, Window
from chargen.errors import TrainingError, TrainingInterrupted
from chargen.model import CharRNN, State, mask_state
from chargen.recorder import Preview, Recorder
from chargen.records import Position, TrainSummary
from chargen.reports import Reporter
from chargen.schedule import Clock, Schedule
from chargen.settings import Layout, RunSettings
from chargen.snapshot import Checkpointer, Generators
from chargen.step import Stepper
from chargen.validation import Validation


@dataclass(frozen=True)
class Parts:
    """The loop's collaborators, made beforehand (see build_loop)."""

    stepper: Stepper  # one optimiser step
    schedule: Schedule  # learning rate, progress and limits
    clock: Clock  # training time, and what several processes agree on
    validation: Validation  # validation, best weights, patience
    recorder: Recorder  # metrics rows and reports
    saver: Checkpointer  # checkpoints: capture and restore
    generators: Generators  # window offsets and state resets
    writer: RunWriter  # the summary, at the end


class Loop:
    """One run's training. The run's position is `at`; the hidden state carried between windows
    is `state`. A checkpoint holds both, so that a resumed run continues exactly."""

    def __init__(
        self, settings: RunSettings, model: CharRNN, batches: Batches, run_dir: Path, parts: Parts
    ) -> None:
        self.settings, self.model, self.batches, self.run_dir = settings, model, batches, run_dir
        self.stepper, self.schedule, self.clock = parts.stepper, parts.schedule, parts.clock
        self.validation, self.recorder, self.saver = parts.validation, parts.recorder, parts.saver
        self.gens, self.writer = parts.generators, parts.writer
        self.at = Position()
        self.state: State = model.init_state(batches.local_batch, settings.device)

    @property
    def epoch(self) -> float:
        return self.schedule.epoch(self.at)

    def fraction(self) -> float:
        return self.schedule.fraction(self.at, self.clock.seconds())

    def run(self) -> TrainSummary:
        self.refuse_a_finished_run()
        self.model.train()
        while self.fraction() < 1.0 and not self.validation.out_of_patience(self.at):
            if self.at.offset < 0:  # a new epoch: new window edges, fresh state
                self.at.offset = self.batches.draw_offset(self.gens.offsets)
                self.state = self.model.init_state(self.batches.local_batch, self.settings.device)
            for window in self.batches.epoch(self.at.offset, start_window=self.at.window):
                lr, grad_norm = self._train_on(window)
                if self._after_step(lr, grad_norm):
                    break
            else:  # the epoch is over
                self.at.next_epoch()
        return self._finish()

    def _train_on(self, window: Window) -> tuple[float, torch.Tensor]:
        """One step on a (T, B) window; returns the learning rate and the pre-clip gradient norm."""
        device, config = self.settings.device, self.settings.train
        x, y = window.x, window.y
        if device.type == "cuda":  # page-locked, so the copy below runs alongside the GPU
            x, y = x.pin_memory(), y.pin_memory()
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        if window.fresh is not None:  # items begin here: their streams start from a zero state
            self.state = mask_state(self.state, window.fresh.to(device))
        elif config.state_reset > 0 and isinstance(self.batches, StreamBatches):
            keep = self.batches.draw_resets(self.gens.resets, config.state_reset)
            self.state = mask_state(self.state, keep.to(device))
        lr = self.schedule.lr(self.at, self.fraction())
        # Each process divides its summed loss by its share of the whole batch's targets, so that
        # the gradients averaged over the processes are those of the batch's mean loss.
        share = window.targets / self.settings.world.size
        loss, grad_norm, self.state, taken = self.stepper(x, y, self.state, lr, share)
        chars = window.targets  # the loss is summed over all processes too
        self.at.step += 1
        self.at.window += 1
        self.at.chars += chars
        self.recorder.add(loss, grad_norm, taken, chars)
        return lr, grad_norm

    def _after_step(self, lr: float, grad_norm: torch.Tensor) -> bool:
        """Report, validate, save or stop as the step's number says; True when the run is over."""
        config, step = self.settings.train, self.at.step
        if step % config.log_every == 0:
            self.clock.agree()
            seconds = self.clock.seconds()
            self.recorder.log(self.at, self.epoch, lr, float(grad_norm), self.fraction(), seconds)
        if step % config.eval_every == 0:
            self._evaluate()
            if self.validation.out_of_patience(self.at):
                return True
        elif step % config.save_every == 0:
            self.save()
        if self.clock.stop_requested():
            self.save()
            raise TrainingInterrupted(step, self.run_dir)
        return self.fraction() >= 1.0

    def _evaluate(self) -> None:
        began = time.perf_counter()
        val, is_best = self.validation(self.at, self.epoch)
        # Paused before the checkpoint records the clock: its training time must not hold this
        # evaluation, or a resumed --max-time would get less than it asks for.
        self.clock.pause(time.perf_counter() - began)
        began = time.perf_counter()
        self.save()
        self.recorder.evaluated(self.model, self.at.step, val, is_best)
        self.clock.pause(time.perf_counter() - began)

    def refuse_a_finished_run(self) -> None:
        """TrainingError where a restored run has nothing left to do: at its limit, or out of patience."""
        if self.fraction() >= 1.0:
            raise TrainingError(
                f"the run already reached its limit ({self.schedule.stopped_by(self.at)} at step "
                f"{self.at.step}); give a larger `max_steps`, `max_time` or `epochs` to train further"
            )
        if self.validation.out_of_patience(self.at):
            raise TrainingError(
                f"the run already stopped early at step {self.at.step}: the validation loss had not "
                f"improved for {self.at.evals_since_best} evaluations; give a larger `patience` (or 0) "
                "to train further"
            )

    def _finish(self) -> TrainSummary:
        self.clock.agree()  # with several processes: all stopped at this step, at this time
        train_seconds = self.clock.seconds()
        self.recorder.finishing(self.at)
        if self.at.last_eval_step != self.at.step:
            self._evaluate()
        best, final = self.at.best, self.validation.last
        assert best is not None and final is not None
        patience = self.validation.out_of_patience(self.at)
        summary = TrainSummary(
            run_dir=self.run_dir,
            steps=self.at.step,
            epochs=self.epoch,
            train_seconds=train_seconds,
            chars_per_sec=self.at.chars / train_seconds,
            best=best,
            best_step=self.at.best_step,
            final=final,
            parameters=self.model.num_parameters(),
            clipped_fraction=self.at.clipped_total / self.at.step,
            skipped_steps=self.at.skipped,
            stopped_by="patience" if patience else self.schedule.stopped_by(self.at),
        )
        self.writer.summary(summary)
        return summary

    def save(self) -> None:
        """A checkpoint of this moment. Every process must call it; rank 0 writes."""
        position = self.recorder.with_pending(self.at)  # not yet reported, but part of the totals
        position.train_seconds = self.clock.seconds()
        self.saver.save(position, self.state)

    def restore(self, checkpoint: Checkpoint) -> None:
        self.state = self.saver.restore(checkpoint)
        self.at = checkpoint.position
        self.clock.resume_at(self.at.train_seconds)


def build_loop(
    settings: RunSettings,
    model: CharRNN,
    layout: Layout,
    run_dir: Path,
    report: Reporter,
    preview: Preview,
    stop: threading.Event | None = None,
) -> Loop:
    """A loop with its collaborators made, for a new run or (then `restore` it) a resumed one."""
    writer = RunWriter(run_dir, writes=settings.world.is_main)
    clock = Clock(settings.world, stop or threading.Event())
    stepper = Stepper(model, settings.train, settings.clip, settings.autocast, settings.world)
    generators = Generators(settings.train.seed or 0)
    parts = Parts(
        stepper=stepper,
        schedule=Schedule(settings.train, settings.warmup, layout.batches.windows_per_epoch),
        clock=clock,
        validation=Validation(settings, model, layout.val_ids, writer, layout.end_id),
        recorder=Recorder(settings, writer, report, clock, preview),
        saver=Checkpointer(settings, model, stepper.optimizer, generators, writer),
        generators=generators,
        writer=writer,
    )
    return Loop(settings, model, layout.batches, run_dir, parts)
