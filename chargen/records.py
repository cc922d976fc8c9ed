"""What the files of a run directory hold, each as a dataclass with the one encoder (`to_dict`) and
the one decoder (`from_dict`) of its JSON. Knows nothing about where the files are or how they are
written: checkpoint.py does that, with these.

Decoders take runs written by earlier versions: a field added since gets its default.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from chargen.config import ModelConfig, TextConfig, TrainConfig, known_fields
from chargen.evaluate import LossStats
from chargen.recipe import Plan
from chargen.vocab import Tokenizer

FORMAT = "chargen-run"
FORMAT_VERSION = 1


def _stats(data: dict[str, Any]) -> LossStats:
    """A LossStats from its to_dict (which gives a speed, not the seconds it came from)."""
    speed = data.get("chars_per_sec") or 0.0
    seconds = data["chars"] / speed if speed > 0 else 0.0
    return LossStats(chars=data["chars"], loss=data["loss"], seconds=seconds, unknown=data.get("unknown", 0))


@dataclass
class Position:
    """Where a run is, besides its tensors and random generators: what the loop advances and a
    checkpoint records, so that a resumed run takes exactly the steps the uninterrupted one would."""

    step: int = 0  # optimiser steps taken
    epoch_index: int = 0  # whole passes over the training split
    window: int = 0  # windows taken in the current pass
    offset: int = -1  # where the current pass's windows start, in [0, bptt), or a list's seed for the
    # order of its items in this pass (data.ItemBatches); -1 before it starts
    chars: int = 0  # training characters seen, by all processes together
    train_seconds: float = 0.0  # time spent training, evaluation excluded (as of the last save)
    best: LossStats | None = None  # the lowest validation loss so far (characters and loss only)
    best_step: int = 0
    last_eval_step: int = -1
    evals_since_best: int = 0  # evaluations in a row without a new best, for `patience`
    clipped_total: int = 0  # steps whose gradient norm was above the threshold
    skipped: int = 0  # steps whose loss or gradient was not finite, so the weights were left alone

    def next_epoch(self) -> None:
        self.epoch_index, self.window, self.offset = self.epoch_index + 1, 0, -1

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["best"] = None if self.best is None else {"chars": self.best.chars, "loss": self.best.loss}
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Position:
        best = data.get("best")
        fields = {**known_fields(cls, data), "best": None}
        if best is not None:
            fields["best"] = LossStats(chars=best["chars"], loss=best["loss"])
        return cls(**fields)


@dataclass
class Checkpoint:
    """checkpoint.safetensors: everything a run needs to continue exactly where it was, as tensors
    by name and the position (with what else is not a tensor) as JSON metadata."""

    weights: dict[str, torch.Tensor]  # the model's state dict
    moments: dict[int, dict[str, torch.Tensor]]  # the optimiser's state, by parameter index
    param_groups: list[dict[str, Any]]  # the optimiser's settings
    state: tuple[torch.Tensor, ...]  # the carried state of every stream: (h,) or (h, c), (layers, B, H)
    generators: dict[str, torch.Tensor]  # torch, reset; where there are, cuda, torch.ranks, cuda.ranks
    numpy_rng: dict[str, Any]  # the state of the generator of the epochs' window offsets
    position: Position

    def to_tensors(self) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
        tensors = {f"model.{name}": t for name, t in self.weights.items()}
        for index, moments in self.moments.items():
            tensors.update({f"optim.{index}.{key}": value for key, value in moments.items()})
        tensors.update({f"state.{i}": s for i, s in enumerate(self.state)})
        tensors.update({f"rng.{name}": t for name, t in self.generators.items()})
        rest = {"numpy_rng": self.numpy_rng, "param_groups": self.param_groups}
        return tensors, {"position": json.dumps({**self.position.to_dict(), **rest})}

    @classmethod
    def from_tensors(cls, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> Checkpoint:
        """KeyError, TypeError or JSONDecodeError where the contents are not a checkpoint's."""
        saved = json.loads(metadata["position"])
        moments: dict[int, dict[str, torch.Tensor]] = {}
        for name, value in tensors.items():
            if name.startswith("optim."):
                _, index, key = name.split(".", 2)
                moments.setdefault(int(index), {})[key] = value
        return cls(
            weights={k[len("model.") :]: v for k, v in tensors.items() if k.startswith("model.")},
            moments=moments,
            param_groups=saved["param_groups"],
            state=tuple(tensors[f"state.{i}"] for i in range(2) if f"state.{i}" in tensors),
            generators={k[len("rng.") :]: v for k, v in tensors.items() if k.startswith("rng.")},
            numpy_rng=saved["numpy_rng"],
            position=Position.from_dict(saved),
        )


@dataclass
class TrainRow:
    """A line of metrics.jsonl for the training steps since the last one."""

    step: int
    epoch: float = 0.0  # passes over the training split
    chars: int = 0  # training characters seen
    time: float = 0.0  # seconds of training
    lr: float = 0.0
    loss: float = math.nan  # mean per character since the last row, in nats
    grad_norm: float = math.nan  # before clipping, at the last step
    clipped: float = 0.0  # fraction of the steps since the last row that were clipped
    skipped: int = 0  # non-finite steps in the whole run so far
    chars_per_sec: float = 0.0

    @property
    def bpc(self) -> float:
        return self.loss / math.log(2)

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        first = {k: data.pop(k) for k in ("step", "epoch", "chars", "time", "lr", "loss")}
        return {"kind": "train", **first, "bpc": self.bpc, **data}


@dataclass
class EvalRow:
    """A line of metrics.jsonl for a validation."""

    step: int
    val: LossStats
    epoch: float = 0.0
    seen: int | None = None  # training characters seen (None in runs written before it was recorded)
    best: bool = False  # a new lowest loss

    def to_dict(self) -> dict[str, Any]:
        where = {"step": self.step, "epoch": self.epoch, "seen": self.seen}
        return {"kind": "eval", **where, **self.val.to_dict(), "best": self.best}


MetricRow = TrainRow | EvalRow


def metric_row(data: dict[str, Any]) -> MetricRow:
    """The decoder of a metrics.jsonl line; KeyError or ValueError for one that is not a row."""
    if data["kind"] == "train":
        return TrainRow(**known_fields(TrainRow, data))
    if data["kind"] == "eval":
        fields = {k: v for k, v in known_fields(EvalRow, data).items() if k != "val"}
        return EvalRow(val=_stats(data), **fields)
    raise ValueError(f"unknown kind of row {data['kind']!r}")


@dataclass
class TrainSummary:
    """What a finished run achieved: summary.json, and what `train` and `resume` return."""

    run_dir: Path  # not in the file: it is the directory the file is in
    steps: int
    epochs: float
    train_seconds: float
    chars_per_sec: float
    best: LossStats
    best_step: int
    final: LossStats
    parameters: int
    clipped_fraction: float
    skipped_steps: int = 0  # steps whose loss or gradient was not finite, so the weights were left alone
    stopped_by: str | None = None  # which limit ended the run (None: written before it was recorded)

    def to_dict(self) -> dict[str, Any]:
        data = {k: v for k, v in dataclasses.asdict(self).items() if k not in ("run_dir", "best", "final")}
        order = ("steps", "epochs", "train_seconds", "chars_per_sec", "parameters", "clipped_fraction")
        rest = ("skipped_steps", "stopped_by", "best_step")
        return {
            **{k: data[k] for k in (*order, *rest)},
            "best": self.best.to_dict(),
            "final": self.final.to_dict(),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any], run_dir: Path) -> TrainSummary:
        fields = {k: v for k, v in known_fields(cls, data).items() if k not in ("best", "final", "run_dir")}
        return cls(run_dir=run_dir, best=_stats(data["best"]), final=_stats(data["final"]), **fields)


@dataclass
class CorpusRecord:
    """The text a run was trained on, as run.json records it."""

    name: str
    path: str  # resolved: resuming and the novelty check read the file again
    sha256: str
    tokens: int = 0
    unknown: int = 0  # characters outside the vocabulary, mapped to the unknown symbol
    train_tokens: int = 0
    val_tokens: int = 0  # the held-out ids validation uses (valid.safetensors)
    held_out_tokens: int = 0  # all held-out ids, of which validation uses up to `eval_chars`
    files: list[str] | None = None  # resolved, when the run read several files given one by one
    items: int = 0  # a list's items (their end symbols are among the tokens); 0 for one text
    held_out_items: int = 0  # the items held out: a random share, drawn with `split_seed`
    split_seed: int | None = None  # the seed of that draw (items.split_items)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def source(self) -> str | list[str]:
        """What to read the text from again: the file or directory, or the files one by one."""
        return self.files or self.path


@dataclass
class RunInfo:
    """run.json: how the run was set up, written once when it starts."""

    model: ModelConfig
    train: TrainConfig
    text: TextConfig
    corpus: CorpusRecord
    plan: Plan | None = None  # how size auto chose the model, when it did
    device: str = "cpu"
    precision: str = "fp32"
    processes: int = 1
    created: str = ""
    parent: dict[str, Any] | None = None  # for a run started from another's weights: which, exactly

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "model": self.model.to_dict(),
            "train": self.train.to_dict(),
            "plan": self.plan.to_dict() if self.plan else None,
            "text": self.text.to_dict(),
            "corpus": self.corpus.to_dict(),
            "device": self.device,
            "precision": self.precision,
            "processes": self.processes,
            "created": self.created,
            "parent": self.parent,
        }

    @property
    def unknown(self) -> str | None:
        """The `unknown` a run started from another began with (None for any other run); one written
        before it was recorded was resumed as an `extend` run is, so it still is."""
        return self.parent.get("unknown", "extend") if self.parent else None

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunInfo:
        """TypeError, KeyError or a ChargenError where the description is not one."""
        plan = data.get("plan")
        return cls(
            model=ModelConfig.from_dict(data["model"]),
            train=TrainConfig.from_dict(data["train"]),
            text=TextConfig.from_dict(data.get("text", {})),
            corpus=CorpusRecord(**known_fields(CorpusRecord, data["corpus"])),
            plan=Plan(**known_fields(Plan, plan)) if plan else None,
            **{k: data[k] for k in ("device", "precision", "processes", "created", "parent") if k in data},
        )


@dataclass
class RunDescription:
    """What `chargen info` shows: a run's settings, progress and figures, read from its files."""

    path: Path
    info: RunInfo
    parameters: int
    vocab: Tokenizer
    steps: int | None  # as of the checkpoint; None without a readable one
    summary: TrainSummary | None  # None until the run has finished, or when it cannot be read
    best: LossStats | None  # the lowest validation loss: the summary's, else the checkpoint's so far
    best_step: int | None  # the step it was measured at; None with no validation to show
    files: dict[str, int]  # name: bytes
    problems: list[str]  # what could not be read, and what that means

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "model": self.info.model.to_dict(),
            "plan": self.info.plan.to_dict() if self.info.plan else None,
            "parameters": self.parameters,
            "vocab": {
                "kind": self.vocab.kind,
                "size": len(self.vocab),
                "chars": getattr(self.vocab, "chars", None),  # None for bytes
            },
            "text": self.info.text.to_dict(),
            "train": self.info.train.to_dict(),
            "corpus": self.info.corpus.to_dict(),
            # the run it started from (--init), as the table's 'started from', with its `unknown`
            "parent": {**self.info.parent, "unknown": self.info.unknown} if self.info.parent else None,
            "steps": self.steps,
            "summary": self.summary.to_dict() if self.summary else None,
            # also for a run not finished (stopped, killed): what best.safetensors holds
            "best": None
            if self.best is None
            else {
                "step": self.best_step,
                "loss": self.best.loss,
                "perplexity": self.best.json_perplexity,
                "bpc": self.best.bpc,
            },
            "files": self.files,
            "problems": self.problems,
        }
