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
from chargen.vocab import Vocab

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
    first_line = text.strip().split("\n", 1)[0]
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
    vocab = Vocab.from_text(corpus.text)
    ids = vocab.encode(corpus.text)
    train_ids, val_ids = split_ids(ids, config.val_fraction)
    batches = StreamBatches(train_ids, config.batch_size, config.bptt)
    model_config = replace(model_config, vocab_size=len(vocab))
    model = CharRNN(model_config).to(device)

    run_dir = ckpt.new_run_dir(out, corpus.name, runs_root)
    ckpt.write_json(run_dir / ckpt.VOCAB_JSON, vocab.to_dict())
    ckpt.write_text_atomic(run_dir / ckpt.VALID_TEXT, corpus.text[len(train_ids) :])
    ckpt.write_json(
        run_dir / ckpt.RUN_JSON,
        {
            "format": ckpt.FORMAT,
            "format_version": ckpt.FORMAT_VERSION,
            "model": model_config.to_dict(),
            "train": config.to_dict(),
            "corpus": {
                "name": corpus.name,
                "path": str(corpus.path),
                "sha256": corpus.sha256,
                "chars": len(ids),
                "train_chars": len(train_ids),
                "val_chars": len(val_ids),
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

    return _Loop(
        model, vocab, config, batches, val_ids, run_dir, device, report, _sample_prefix(corpus.text)
    ).run()


class _Loop:
    """One training run's mutable state, so that the loop itself reads top to bottom."""

    def __init__(
        self,
        model: CharRNN,
        vocab: Vocab,
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
        self.sample_config = SampleConfig(prefix=sample_prefix, length=SAMPLE_LENGTH, seed=config.seed)
        self.optimizer = _make_optimizer(model, config)
        self.limits = _Limits(config)
        self.warmup = config.warmup_steps
        if config.max_steps:  # a short run should not spend itself warming up
            self.warmup = min(self.warmup, max(1, config.max_steps // 5))
        self.rng = np.random.default_rng(config.seed)  # epoch offsets
        self.reset_gen = torch.Generator().manual_seed(config.seed)  # which streams start afresh
        self.best: LossStats | None = None
        self.best_step = 0
        self.last_eval: LossStats | None = None
        self.last_eval_step = -1
        self.eval_seconds = 0.0

    def run(self) -> TrainSummary:
        config, model, device = self.config, self.model, self.device
        clip = config.clip if config.clip > 0 else math.inf  # with inf, clipping only measures the norm
        step, epoch_index, epoch_pos = 0, 0, 0.0
        start = time.perf_counter()
        # Summed on the device between reports, so the loop does not wait for the host every step.
        loss_sum = torch.zeros((), device=device)
        chars_total, chars_since, steps_since, clipped_since = 0, 0, 0, torch.zeros((), device=device)
        clipped_total, last_report_time = 0, start
        grad_norm = torch.zeros((), device=device)
        stopped = False

        model.train()
        while not stopped:
            offset = int(self.rng.integers(0, config.bptt))
            state = model.init_state(config.batch_size, device)  # a new layout: start afresh
            for window, (x, y) in enumerate(self.batches.epoch(offset)):
                x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
                if config.state_reset > 0:
                    keep = (
                        torch.rand(config.batch_size, generator=self.reset_gen) >= config.state_reset
                    ).float()
                    state = mask_state(state, keep.to(device))
                train_seconds = time.perf_counter() - start - self.eval_seconds
                epoch_pos = epoch_index + window / self.batches.windows_per_epoch
                fraction = self.limits.fraction(step, train_seconds, epoch_pos)
                lr = lr_at(config, step, fraction, self.warmup)
                for group in self.optimizer.param_groups:
                    group["lr"] = lr

                loss, grad_norm, state = train_step(model, self.optimizer, x, y, state, clip)

                step += 1
                loss_sum += loss
                chars_since += y.numel()
                chars_total += y.numel()
                steps_since += 1
                clipped_since += (grad_norm > clip).float()

                if step % config.log_every == 0:
                    now = time.perf_counter()
                    mean_loss = loss_sum.item() / chars_since
                    if not math.isfinite(mean_loss):
                        raise TrainingError(
                            f"the training loss became {mean_loss} at step {step}; lower --lr "
                            f"(it is {config.lr}) or keep --clip on"
                        )
                    clipped = int(clipped_since.item())
                    clipped_total += clipped
                    train_seconds = now - start - self.eval_seconds
                    fraction = self.limits.fraction(step, train_seconds, epoch_pos)
                    speed = chars_since / max(now - last_report_time, 1e-9)
                    eta = train_seconds / fraction - train_seconds if fraction > 0 else math.inf
                    ckpt.append_jsonl(
                        self.run_dir / ckpt.METRICS,
                        {
                            "kind": "train",
                            "step": step,
                            "epoch": epoch_pos,
                            "time": train_seconds,
                            "chars": chars_total,
                            "lr": lr,
                            "loss": mean_loss,
                            "bpc": mean_loss / math.log(2),
                            "grad_norm": float(grad_norm),
                            "clipped": clipped / steps_since,
                            "chars_per_sec": speed,
                        },
                    )
                    self.report(
                        StepReport(step, epoch_pos, fraction, mean_loss, lr, float(grad_norm), speed, eta)
                    )
                    loss_sum.zero_()
                    clipped_since.zero_()
                    chars_since, steps_since, last_report_time = 0, 0, now

                if step % config.eval_every == 0:
                    eval_start = time.perf_counter()
                    self._evaluate(step, epoch_pos)
                    self.eval_seconds += time.perf_counter() - eval_start
                    last_report_time += time.perf_counter() - eval_start

                train_seconds = time.perf_counter() - start - self.eval_seconds
                epoch_pos = epoch_index + (window + 1) / self.batches.windows_per_epoch
                if self.limits.fraction(step, train_seconds, epoch_pos) >= 1.0:
                    stopped = True
                    break
            epoch_index += 1

        train_seconds = time.perf_counter() - start - self.eval_seconds
        clipped_total += int(clipped_since.item())
        if self.last_eval_step != step:
            self._evaluate(step, epoch_pos)
        assert self.best is not None and self.last_eval is not None
        summary = TrainSummary(
            run_dir=self.run_dir,
            steps=step,
            epochs=epoch_pos,
            train_seconds=train_seconds,
            chars_per_sec=chars_total / train_seconds,
            best=self.best,
            best_step=self.best_step,
            final=self.last_eval,
            parameters=model.num_parameters(),
            clipped_fraction=clipped_total / step,
            stopped_by=self.limits.stopped_by(step, train_seconds, epoch_pos),
        )
        ckpt.write_json(self.run_dir / ckpt.SUMMARY, _summary_dict(summary))
        return summary

    def _evaluate(self, step: int, epoch: float) -> None:
        val = evaluate_ids(self.model, self.val_ids, self.device)
        is_best = math.isfinite(val.loss) and (self.best is None or val.loss < self.best.loss)
        if is_best:
            self.best, self.best_step = val, step
            ckpt.save_weights(self.model, self.run_dir / ckpt.BEST)
        ckpt.save_weights(self.model, self.run_dir / ckpt.LAST)
        self.last_eval, self.last_eval_step = val, step
        ckpt.append_jsonl(
            self.run_dir / ckpt.METRICS,
            {"kind": "eval", "step": step, "epoch": epoch, **val.to_dict(), "best": is_best},
        )
        sample = sample_batch(self.model, self.vocab, self.sample_config, self.device)[0]
        self.model.train()
        self.report(EvalReport(step, val, is_best, self.sample_config.prefix + sample))


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
