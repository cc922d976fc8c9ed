"""The training loop: truncated BPTT with carried state, AdamW, warm-up and cosine decay, clipping,
evaluation, checkpoints that resume exactly.

Knows nothing about corpora or the terminal: it is handed ids and a run directory, reports through
a callback, and raises ChargenError. With several processes (see distributed.py) each runs this same
loop on its share of the streams; they agree on every decision, and only rank 0 writes.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from chargen import checkpoint as ckpt
from chargen.config import SampleConfig, TrainConfig
from chargen.data import StreamBatches
from chargen.device import resolve_precision
from chargen.distributed import World
from chargen.errors import TrainingError, TrainingInterrupted
from chargen.evaluate import LossStats, evaluate_ids
from chargen.model import CharRNN, State, mask_state
from chargen.records import EvalRow, Position, TrainRow, TrainSummary
from chargen.sample import sample_batch
from chargen.step import make_optimizer, train_step
from chargen.vocab import Tokenizer

SAMPLE_LENGTH = 200  # characters of the sample shown at each evaluation
MAX_BAD_STEPS = 5  # non-finite steps in a row before training gives up


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
    model: str  # its shape, and how --size auto chose it
    processes: int = 1  # training together, each on its share of the batch


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


Report = StartReport | StepReport | EvalReport
Reporter = Callable[[Report], None]


def lr_at(config: TrainConfig, step: int, fraction: float, warmup_steps: int) -> float:
    """Linear warm-up over the first steps, then cosine decay to lr * min_lr_ratio at the end."""
    warm = min(1.0, (step + 1) / warmup_steps) if warmup_steps > 0 else 1.0
    cosine = 0.5 * (1.0 + math.cos(math.pi * min(fraction, 1.0)))
    return config.lr * warm * (config.min_lr_ratio + (1.0 - config.min_lr_ratio) * cosine)


class Limits:
    """How far the run is, as a fraction of whichever limit (steps, time, epochs) is nearest."""

    def __init__(self, config: TrainConfig) -> None:
        self.config = config

    def fraction(self, step: int, seconds: float, epoch: float) -> float:
        c = self.config
        parts = [
            step / c.max_steps if c.max_steps else 0.0,
            seconds / c.max_time if c.max_time else 0.0,
            epoch / c.epochs if c.epochs else 0.0,
        ]
        return min(1.0, max(parts))

    def stopped_by(self, step: int, seconds: float, epoch: float) -> str:
        c = self.config
        if c.max_steps and step >= c.max_steps:
            return "max_steps"
        if c.epochs and epoch >= c.epochs:
            return "epochs"
        return "max_time"


class _Meter:
    """Training figures summed on the device between reports, so a step never waits for the host."""

    def __init__(self, device: torch.device, clip: float) -> None:
        self.clip = clip
        zero = torch.zeros((), device=device)
        self.loss = zero.clone()  # summed over the steps taken
        self.scored = zero.clone()  # characters of the steps taken
        self.clipped = zero.clone()
        self.skipped = zero.clone()
        self.bad_run = zero.clone()  # steps skipped in a row, up to the latest
        self.worst_run = zero.clone()  # the longest such run since the last report
        self.chars = self.steps = 0
        self.since = time.perf_counter()

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
        and characters per second since the last call; then start again."""
        now = time.perf_counter()
        mean_loss = self.loss.item() / max(self.scored.item(), 1.0)
        clipped, skipped = self.pending()
        worst_run = int(self.worst_run.item())
        speed = self.chars / max(now - self.since, 1e-9)
        for total in (self.loss, self.scored, self.clipped, self.skipped, self.worst_run):
            total.zero_()
        self.chars = self.steps = 0
        self.since = now
        return mean_loss, clipped, skipped, worst_run, speed

    def pause(self, seconds: float) -> None:
        self.since += seconds  # time spent evaluating is not training time


class Loop:
    """One training run's mutable state, so that the loop itself reads top to bottom.

    Everything that `position()` and `tensors()` capture is what a checkpoint holds; `restore()`
    puts it back, so that a resumed run takes exactly the steps the uninterrupted one would have.
    """

    def __init__(
        self,
        model: CharRNN,
        vocab: Tokenizer,
        config: TrainConfig,
        batches: StreamBatches,
        val_ids: np.ndarray,
        run_dir: Path,
        device: torch.device,
        report: Reporter,
        sample_prefix: str,
        stop: threading.Event | None = None,
        world: World | None = None,
    ) -> None:
        self.model, self.vocab, self.config, self.batches = model, vocab, config, batches
        self.val_ids, self.run_dir, self.device, self.report = val_ids, run_dir, device, report
        self.stop = stop or threading.Event()
        self.world = world or World()
        self.agree = self._average if self.world.size > 1 else None
        self.streams = self.world.share(config.batch_size)  # this process's columns of the batch
        self.local_batch = self.streams.stop - self.streams.start
        self.sample_config = SampleConfig(
            prefix=sample_prefix, length=SAMPLE_LENGTH, seed=config.seed, unknown="skip"
        )
        self.optimizer = make_optimizer(model, config)
        self.limits = Limits(config)
        self.warmup = config.warmup_steps
        if config.max_steps:  # a short run should not spend itself warming up
            self.warmup = min(self.warmup, max(1, config.max_steps // 5))
        self.clip = config.clip if config.clip > 0 else math.inf  # with inf, clipping only measures
        self.meter = _Meter(device, self.clip)
        self.autocast = resolve_precision(config.precision, device)
        self.rng = np.random.default_rng(config.seed)  # epoch offsets
        self.reset_gen = torch.Generator().manual_seed(config.seed)  # which streams start afresh
        # The position in the run: what a checkpoint records besides tensors.
        self.step, self.epoch_index, self.window, self.offset, self.chars = 0, 0, 0, -1, 0
        self.state: State = model.init_state(self.local_batch, device)
        self.start = time.perf_counter()
        self.eval_seconds = 0.0
        # With several processes, what all of them go by, as agreed at the last report.
        self.agreed_seconds, self.agreed_stop = 0.0, False
        self.best: LossStats | None = None
        self.best_step = 0
        self.last_eval: LossStats | None = None
        self.last_eval_step = -1
        self.evals_since_best = 0  # evaluations in a row without a new best, for --patience
        self.clipped_total = self.skipped = 0

    @property
    def epoch(self) -> float:
        return self.epoch_index + self.window / self.batches.windows_per_epoch

    def train_seconds(self) -> float:
        if self.world.size > 1:  # clocks differ between processes; their schedule and limits must not
            return self.agreed_seconds
        return self._clock()

    def _clock(self) -> float:
        return time.perf_counter() - self.start - self.eval_seconds

    def _stop_requested(self) -> bool:
        return self.agreed_stop if self.world.size > 1 else self.stop.is_set()

    def _average(self, loss: torch.Tensor) -> torch.Tensor:
        """train_step's hook with several processes: average the gradients, sum the losses."""
        return self.world.average_gradients(self.model.parameters(), loss)

    def _agree(self) -> None:
        """With several processes, share rank 0's clock and any process's stop request, so that all
        follow the same schedule and stop at the same step. It waits for the host, so it runs once
        per report, when the host waits anyway: time limits and Ctrl-C act at the next report."""
        clock = self._clock() if self.world.is_main else 0.0
        mine = torch.tensor([clock, float(self.stop.is_set())], dtype=torch.float64)
        self.agreed_seconds, stops = self.world.sum(mine).tolist()
        self.agreed_stop = stops > 0

    def fraction(self) -> float:
        return self.limits.fraction(self.step, self.train_seconds(), self.epoch)

    def run(self) -> TrainSummary:
        config, model, device = self.config, self.model, self.device
        if self.fraction() >= 1.0:
            limit = self.limits.stopped_by(self.step, self.train_seconds(), self.epoch)
            raise TrainingError(
                f"the run already reached its limit ({limit} at step {self.step}); "
                "give a larger `max_steps`, `max_time` or `epochs` to train further"
            )
        if self._out_of_patience():
            raise TrainingError(
                f"the run already stopped early at step {self.step}: the validation loss had not improved "
                f"for {self.evals_since_best} evaluations; give a larger `patience` (or 0) to train further"
            )
        model.train()
        while self.fraction() < 1.0 and not self._out_of_patience():
            if self.offset < 0:  # a new epoch: new window edges, fresh state
                self.offset = int(self.rng.integers(0, config.bptt))
                self.state = model.init_state(self.local_batch, device)
            for x, y in self.batches.epoch(self.offset, start_window=self.window):
                if device.type == "cuda":  # page-locked, so the copy below runs alongside the GPU
                    x, y = x.pin_memory(), y.pin_memory()
                x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
                if config.state_reset > 0:
                    # Every process draws for all streams and keeps its own, as one process would.
                    draw = torch.rand(config.batch_size, generator=self.reset_gen)[self.streams]
                    self.state = mask_state(self.state, (draw >= config.state_reset).float().to(device))
                lr = lr_at(config, self.step, self.fraction(), self.warmup)
                for group in self.optimizer.param_groups:
                    group["lr"] = lr

                loss, grad_norm, self.state, taken = train_step(
                    model, self.optimizer, x, y, self.state, self.clip, self.autocast, self.agree
                )

                chars = y.numel() * self.world.size  # the loss is summed over all processes too
                self.step += 1
                self.window += 1
                self.chars += chars
                self.meter.add(loss, grad_norm, taken, chars)
                if self.step % config.log_every == 0:
                    if self.world.size > 1:
                        self._agree()
                    self._log(lr, float(grad_norm))
                if self.step % config.eval_every == 0:
                    self._evaluate()
                    if self._out_of_patience():
                        break
                elif self.step % config.save_every == 0:
                    self.save()
                if self._stop_requested():
                    self.save()
                    raise TrainingInterrupted(self.step, self.run_dir)
                if self.fraction() >= 1.0:
                    break
            else:  # the epoch is over
                self.epoch_index, self.window, self.offset = self.epoch_index + 1, 0, -1

        if self.world.size > 1:  # all stopped at this step: the time of it, for the summary
            self._agree()
        train_seconds = self.train_seconds()
        self._count(*self.meter.take()[1:4])
        if self.last_eval_step != self.step:
            self._evaluate()
        assert self.best is not None and self.last_eval is not None
        summary = TrainSummary(
            run_dir=self.run_dir,
            steps=self.step,
            epochs=self.epoch,
            train_seconds=train_seconds,
            chars_per_sec=self.chars / train_seconds,
            best=self.best,
            best_step=self.best_step,
            final=self.last_eval,
            parameters=model.num_parameters(),
            clipped_fraction=self.clipped_total / self.step,
            skipped_steps=self.skipped,
            stopped_by="patience"
            if self._out_of_patience()
            else self.limits.stopped_by(self.step, train_seconds, self.epoch),
        )
        if self.world.is_main:
            ckpt.write_summary(summary)
        return summary

    def _count(self, clipped: int, skipped: int, worst_run: int) -> None:
        """Add a report's counts to the run's; stop when too many steps in a row were not finite."""
        self.clipped_total += clipped
        self.skipped += skipped
        if worst_run >= MAX_BAD_STEPS:
            raise TrainingError(
                f"training stopped at step {self.step}: the loss or gradient was not finite "
                f"{worst_run} steps in a row (those steps were skipped; the saved weights are "
                f"from before); lower `lr` (it is {self.config.lr:g})"
            )

    def _log(self, lr: float, grad_norm: float) -> None:
        steps = self.meter.steps
        mean_loss, clipped, skipped, worst_run, speed = self.meter.take()
        self._count(clipped, skipped, worst_run)
        seconds, fraction = self.train_seconds(), self.fraction()
        eta = seconds / fraction - seconds if fraction > 0 else math.inf
        row = TrainRow(
            self.step,
            self.epoch,
            self.chars,
            seconds,
            lr,
            mean_loss,
            grad_norm,
            clipped / max(steps, 1),
            self.skipped,
            speed,
        )
        if self.world.is_main:
            ckpt.append_metric(self.run_dir, row)
        self.report(StepReport(self.step, self.epoch, fraction, mean_loss, lr, grad_norm, speed, eta))

    def _evaluate(self) -> None:
        began = time.perf_counter()
        # With several processes each evaluates a share, and all get the same figure.
        val = evaluate_ids(self.model, self.val_ids, self.device, autocast=self.autocast, world=self.world)
        if not math.isfinite(val.loss):  # diverged: nothing of this model is worth saving
            raise TrainingError(
                f"training stopped at step {self.step}: the validation loss is not finite ({val.loss}); "
                f"the saved weights are from before; lower `lr` (it is {self.config.lr:g})"
            )
        is_best = self.best is None or val.loss < self.best.loss
        self.evals_since_best = 0 if is_best else self.evals_since_best + 1
        if is_best:
            self._require_finite_weights()
            self.best, self.best_step = val, self.step
            if self.world.is_main:
                ckpt.save_weights(self.model, self.run_dir / ckpt.BEST)
        self.last_eval, self.last_eval_step = val, self.step
        if self.world.is_main:
            ckpt.append_metric(self.run_dir, EvalRow(self.step, val, self.epoch, self.chars, is_best))
        self.save()
        if self.world.is_main:  # the sample is only for the report
            sample = sample_batch(self.model, self.vocab, self.sample_config, self.device)[0]
            self.model.train()
            self.report(EvalReport(self.step, val, is_best, self.sample_config.prefix + sample))
        spent = time.perf_counter() - began
        self.eval_seconds += spent
        self.meter.pause(spent)

    def _out_of_patience(self) -> bool:
        """Whether the validation loss stopped improving: that many evaluations without a new best.
        Every process evaluates the same figure, so all of them stop together."""
        return 0 < self.config.patience <= self.evals_since_best

    def _require_finite_weights(self) -> None:
        if not all(bool(torch.isfinite(p).all()) for p in self.model.parameters()):
            raise TrainingError(f"the weights became non-finite at step {self.step}; lower `lr`")

    # --- checkpoints -----------------------------------------------------------------------

    def save(self) -> None:
        """Write everything needed to continue from here, in one atomic file. Every process must
        call it (the carried state is gathered from all); rank 0 writes."""
        self._require_finite_weights()
        checkpoint = self.checkpoint()
        if self.world.is_main:
            ckpt.save_checkpoint(self.run_dir / ckpt.CHECKPOINT, checkpoint)

    def checkpoint(self) -> ckpt.Checkpoint:
        optimizer = self.optimizer.state_dict()
        states = self.state if isinstance(self.state, tuple) else (self.state,)
        generators = {"torch": torch.get_rng_state(), "reset": self.reset_gen.get_state()}  # dropout, resets
        if self.device.type == "cuda":
            generators["cuda"] = torch.cuda.get_rng_state(self.device)
        if self.world.size > 1:  # each process draws its own dropout masks: (processes, state size)
            generators["torch.ranks"] = self.world.gather(torch.get_rng_state()[None], dim=0)
            if self.device.type == "cuda":
                generators["cuda.ranks"] = self.world.gather(torch.cuda.get_rng_state(self.device)[None], 0)
        clipped, skipped = self.meter.pending()  # not yet reported, but part of the run's totals
        position = Position(
            step=self.step,
            epoch_index=self.epoch_index,
            window=self.window,
            offset=self.offset,
            chars=self.chars,
            train_seconds=self.train_seconds(),
            best=self.best,
            best_step=self.best_step,
            last_eval_step=self.last_eval_step,
            evals_since_best=self.evals_since_best,
            clipped_total=self.clipped_total + clipped,
            skipped=self.skipped + skipped,
        )
        return ckpt.Checkpoint(
            weights=self.model.state_dict(),
            moments=optimizer["state"],
            param_groups=optimizer["param_groups"],
            # (layers, B, hidden): every stream, whichever process carries it
            state=tuple(self.world.gather(s, dim=1) for s in states),
            generators=generators,
            numpy_rng=self.rng.bit_generator.state,
            position=position,
        )

    def restore(self, checkpoint: ckpt.Checkpoint) -> None:
        try:
            self.model.load_state_dict(checkpoint.weights)
        except RuntimeError as err:
            raise TrainingError(
                f"the checkpoint does not fit the run's model: {str(err).splitlines()[0]}"
            ) from err
        self.optimizer.load_state_dict({"state": checkpoint.moments, "param_groups": checkpoint.param_groups})
        # this process's streams
        states = [s[:, self.streams].contiguous().to(self.device) for s in checkpoint.state]
        self.state = tuple(states) if len(states) == 2 else states[0]
        self._restore_dropout_generators(checkpoint.generators)
        self.reset_gen.set_state(checkpoint.generators["reset"])
        self.rng.bit_generator.state = checkpoint.numpy_rng
        position = checkpoint.position
        self.step, self.epoch_index = position.step, position.epoch_index
        self.window, self.offset, self.chars = position.window, position.offset, position.chars
        self.start = time.perf_counter() - position.train_seconds
        self.agreed_seconds = position.train_seconds
        self.best = position.best
        self.best_step, self.last_eval_step = position.best_step, position.last_eval_step
        self.evals_since_best = position.evals_since_best
        self.clipped_total, self.skipped = position.clipped_total, position.skipped

    def _restore_dropout_generators(self, generators: dict[str, torch.Tensor]) -> None:
        """Each process takes back its own generator states when the run was saved by as many
        processes as there are now; otherwise rank 0 takes the saved rank 0's and the others keep
        the ones they were seeded with: data and weights continue exactly, dropout masks cannot."""
        cuda = self.device.type == "cuda"
        saved = generators.get("torch.ranks")
        if saved is not None and len(saved) == self.world.size:
            torch.set_rng_state(saved[self.world.rank].clone())  # a row of it would not do: it wants its own
            if cuda and "cuda.ranks" in generators:
                torch.cuda.set_rng_state(generators["cuda.ranks"][self.world.rank].clone(), self.device)
        elif self.world.is_main:
            torch.set_rng_state(generators["torch"])
            if cuda and "cuda" in generators:
                torch.cuda.set_rng_state(generators["cuda"], self.device)
