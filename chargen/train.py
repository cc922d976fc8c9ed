"""The training loop: truncated BPTT with carried state, AdamW, warm-up and cosine decay, clipping.

Knows nothing about the terminal: it reports through a callback and raises ChargenError.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from chargen import checkpoint as ckpt
from chargen.config import ModelConfig, SampleConfig, TrainConfig
from chargen.corpus import Corpus
from chargen.data import StreamBatches, split_ids
from chargen.device import resolve_device, seed_everything
from chargen.errors import TrainingError
from chargen.evaluate import LossStats, evaluate_ids, summed_cross_entropy
from chargen.model import CharRNN, State, detach_state, mask_state
from chargen.sample import sample_batch
from chargen.vocab import Tokenizer

SAMPLE_LENGTH = 200  # characters of the sample shown at each evaluation


@dataclass
class StartReport:
    run_dir: Path
    device: str
    seed: int
    parameters: int
    vocab_size: int
    train_chars: int
    val_chars: int


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
class TrainSummary:
    run_dir: Path
    steps: int
    epochs: float
    train_seconds: float
    chars_per_sec: float
    best: LossStats
    best_step: int
    final: LossStats
    parameters: int
    clipped_fraction: float
    stopped_by: str  # which limit ended the run


Report = StartReport | StepReport | EvalReport
Reporter = Callable[[Report], None]


def lr_at(config: TrainConfig, step: int, fraction: float, warmup_steps: int) -> float:
    """Linear warm-up over the first steps, then cosine decay to lr * min_lr_ratio at the end."""
    warm = min(1.0, (step + 1) / warmup_steps) if warmup_steps > 0 else 1.0
    cosine = 0.5 * (1.0 + math.cos(math.pi * min(fraction, 1.0)))
    return config.lr * warm * (config.min_lr_ratio + (1.0 - config.min_lr_ratio) * cosine)


def train_step(
    model: CharRNN,
    optimizer: torch.optim.Optimizer,
    x: torch.Tensor,
    y: torch.Tensor,
    state: State,
    clip: float,
) -> tuple[torch.Tensor, torch.Tensor, State]:
    """One optimiser step on a (T, B) window; returns the summed loss, the pre-clip gradient norm
    and the state to carry into the next window."""
    logits, state = model(x, state)  # (T, B, V)
    state = detach_state(state)
    loss = summed_cross_entropy(logits, y)
    optimizer.zero_grad(set_to_none=True)
    (loss / y.numel()).backward()
    grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), clip)  # with inf: only measures
    optimizer.step()
    return loss.detach(), grad_norm, state


def _make_optimizer(model: CharRNN, config: TrainConfig) -> torch.optim.AdamW:
    """AdamW, decaying matrices only: biases and gains are better left alone."""
    matrices = [p for p in model.parameters() if p.dim() >= 2]
    vectors = [p for p in model.parameters() if p.dim() < 2]
    groups = [
        {"params": matrices, "weight_decay": config.weight_decay},
        {"params": vectors, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=config.lr, betas=(0.9, 0.99))


def _sample_prefix(text: str) -> str:
    """A fixed prefix for the samples shown while training: the text's first words."""
    first_line = text.strip().split("\n", 1)[0].replace("\ufffd", "")
    return first_line[:24].rsplit(" ", 1)[0] if len(first_line) > 24 else first_line


class _Limits:
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


def train(
    corpus: Corpus,
    model_config: ModelConfig,
    config: TrainConfig,
    out: Path | None = None,
    report: Reporter | None = None,
    runs_root: Path = Path("runs"),
) -> TrainSummary:
    """Train a model on `corpus` into a new run directory and return the final figures."""
    report = report or (lambda _: None)
    seed = seed_everything(config.seed)
    config = replace(config, seed=seed)
    device = resolve_device(config.device)

    # Everything that can fail on bad input happens before the run directory is created.
    vocab = corpus.vocab
    train_ids, held_out = split_ids(corpus.ids, config.val_fraction)
    val_ids = np.array(held_out[: config.eval_chars])  # the validation split, in memory
    batches = StreamBatches(train_ids, config.batch_size, config.bptt)
    model_config = replace(model_config, vocab_size=len(vocab))
    model = CharRNN(model_config).to(device)

    run_dir = ckpt.new_run_dir(out, corpus.name, runs_root)
    ckpt.write_json(run_dir / ckpt.VOCAB_JSON, vocab.to_dict())
    ckpt.save_ids(val_ids, run_dir / ckpt.VALID)
    ckpt.write_json(
        run_dir / ckpt.RUN_JSON,
        {
            "format": ckpt.FORMAT,
            "format_version": ckpt.FORMAT_VERSION,
            "model": model_config.to_dict(),
            "train": config.to_dict(),
            "text": corpus.config.to_dict(),
            "corpus": {
                "name": corpus.name,
                "path": str(corpus.path),
                "sha256": corpus.sha256,
                "tokens": len(corpus.ids),
                "unknown": corpus.unknown,
                "train_tokens": len(train_ids),
                "val_tokens": len(val_ids),
                "held_out_tokens": len(held_out),
            },
            "device": str(device),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        },
    )
    report(
        StartReport(
            run_dir, str(device), seed, model.num_parameters(), len(vocab), len(train_ids), len(val_ids)
        )
    )

    prefix = _sample_prefix(corpus.decode(0, 200))
    return _Loop(model, vocab, config, batches, val_ids, run_dir, device, report, prefix).run()


class _Meter:
    """Training figures summed on the device between reports, so a step never waits for the host."""

    def __init__(self, device: torch.device, clip: float) -> None:
        self.clip = clip
        self.loss = torch.zeros((), device=device)
        self.clipped = torch.zeros((), device=device)
        self.chars = self.steps = self.clipped_total = 0
        self.since = time.perf_counter()

    def add(self, loss: torch.Tensor, grad_norm: torch.Tensor, chars: int) -> None:
        self.loss += loss
        self.clipped += (grad_norm > self.clip).float()
        self.chars += chars
        self.steps += 1

    def take(self) -> tuple[float, float, float]:
        """Mean loss per character, fraction of steps clipped and characters per second since the
        last call; then start again."""
        now = time.perf_counter()
        mean_loss = self.loss.item() / max(self.chars, 1)
        clipped = int(self.clipped.item())
        self.clipped_total += clipped
        result = (mean_loss, clipped / max(self.steps, 1), self.chars / max(now - self.since, 1e-9))
        self.loss.zero_()
        self.clipped.zero_()
        self.chars = self.steps = 0
        self.since = now
        return result

    def pause(self, seconds: float) -> None:
        self.since += seconds  # time spent evaluating is not training time


class _Loop:
    """One training run's mutable state, so that the loop itself reads top to bottom."""

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
    ) -> None:
        self.model, self.vocab, self.config, self.batches = model, vocab, config, batches
        self.val_ids, self.run_dir, self.device, self.report = val_ids, run_dir, device, report
        self.sample_config = SampleConfig(
            prefix=sample_prefix, length=SAMPLE_LENGTH, seed=config.seed, unknown="skip"
        )
        self.optimizer = _make_optimizer(model, config)
        self.limits = _Limits(config)
        self.warmup = config.warmup_steps
        if config.max_steps:  # a short run should not spend itself warming up
            self.warmup = min(self.warmup, max(1, config.max_steps // 5))
        self.clip = config.clip if config.clip > 0 else math.inf  # with inf, clipping only measures
        self.meter = _Meter(device, self.clip)
        self.rng = np.random.default_rng(config.seed)  # epoch offsets
        self.reset_gen = torch.Generator().manual_seed(config.seed)  # which streams start afresh
        self.step, self.epoch, self.chars = 0, 0.0, 0
        self.start = time.perf_counter()
        self.eval_seconds = 0.0
        self.best: LossStats | None = None
        self.best_step = 0
        self.last_eval: LossStats | None = None
        self.last_eval_step = -1

    def train_seconds(self) -> float:
        return time.perf_counter() - self.start - self.eval_seconds

    def fraction(self) -> float:
        return self.limits.fraction(self.step, self.train_seconds(), self.epoch)

    def run(self) -> TrainSummary:
        config, model, device = self.config, self.model, self.device
        model.train()
        epoch_index = 0
        while self.fraction() < 1.0:
            offset = int(self.rng.integers(0, config.bptt))
            state = model.init_state(config.batch_size, device)  # a new layout: start afresh
            for window, (x, y) in enumerate(self.batches.epoch(offset)):
                x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
                if config.state_reset > 0:
                    draw = torch.rand(config.batch_size, generator=self.reset_gen)
                    state = mask_state(state, (draw >= config.state_reset).float().to(device))
                lr = lr_at(config, self.step, self.fraction(), self.warmup)
                for group in self.optimizer.param_groups:
                    group["lr"] = lr

                loss, grad_norm, state = train_step(model, self.optimizer, x, y, state, self.clip)

                self.step += 1
                self.chars += y.numel()
                self.epoch = epoch_index + (window + 1) / self.batches.windows_per_epoch
                self.meter.add(loss, grad_norm, y.numel())
                if self.step % config.log_every == 0:
                    self._log(lr, float(grad_norm))
                if self.step % config.eval_every == 0:
                    self._evaluate()
                if self.fraction() >= 1.0:
                    break
            epoch_index += 1

        train_seconds = self.train_seconds()
        self.meter.take()  # counts the clipped steps since the last report
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
            clipped_fraction=self.meter.clipped_total / self.step,
            stopped_by=self.limits.stopped_by(self.step, train_seconds, self.epoch),
        )
        ckpt.write_json(self.run_dir / ckpt.SUMMARY, _summary_dict(summary))
        return summary

    def _log(self, lr: float, grad_norm: float) -> None:
        mean_loss, clipped, speed = self.meter.take()
        if not math.isfinite(mean_loss):
            raise TrainingError(
                f"the training loss became {mean_loss} at step {self.step}; lower --lr "
                f"(it is {self.config.lr}) or keep --clip on"
            )
        seconds, fraction = self.train_seconds(), self.fraction()
        eta = seconds / fraction - seconds if fraction > 0 else math.inf
        record = {
            "kind": "train",
            "step": self.step,
            "epoch": self.epoch,
            "chars": self.chars,
            "time": seconds,
            "lr": lr,
            "loss": mean_loss,
            "bpc": mean_loss / math.log(2),
            "grad_norm": grad_norm,
            "clipped": clipped,
            "chars_per_sec": speed,
        }
        ckpt.append_jsonl(self.run_dir / ckpt.METRICS, record)
        self.report(StepReport(self.step, self.epoch, fraction, mean_loss, lr, grad_norm, speed, eta))

    def _evaluate(self) -> None:
        began = time.perf_counter()
        val = evaluate_ids(self.model, self.val_ids, self.device)
        is_best = math.isfinite(val.loss) and (self.best is None or val.loss < self.best.loss)
        if is_best:
            self.best, self.best_step = val, self.step
            ckpt.save_weights(self.model, self.run_dir / ckpt.BEST)
        ckpt.save_weights(self.model, self.run_dir / ckpt.LAST)
        self.last_eval, self.last_eval_step = val, self.step
        ckpt.append_jsonl(
            self.run_dir / ckpt.METRICS,
            {"kind": "eval", "step": self.step, "epoch": self.epoch, **val.to_dict(), "best": is_best},
        )
        sample = sample_batch(self.model, self.vocab, self.sample_config, self.device)[0]
        self.model.train()
        self.report(EvalReport(self.step, val, is_best, self.sample_config.prefix + sample))
        spent = time.perf_counter() - began
        self.eval_seconds += spent
        self.meter.pause(spent)


def _summary_dict(summary: TrainSummary) -> dict[str, Any]:
    return {
        "steps": summary.steps,
        "epochs": summary.epochs,
        "train_seconds": summary.train_seconds,
        "chars_per_sec": summary.chars_per_sec,
        "parameters": summary.parameters,
        "clipped_fraction": summary.clipped_fraction,
        "stopped_by": summary.stopped_by,
        "best_step": summary.best_step,
        "best": summary.best.to_dict(),
        "final": summary.final.to_dict(),
    }
