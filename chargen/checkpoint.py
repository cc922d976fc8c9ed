"""The run directory: the one writer and the one reader of each of its files.

A run is a directory of readable JSON and safetensors weights; loading it never unpickles
anything. Every file but the metrics is written to a temporary name and renamed, so a crash or a
full disk leaves either the old file or the new one; a file that cannot be written is a
StorageError naming it. What each file holds is defined in records.py.

    run.json            format version, model and training configuration, corpus details
    vocab.json          the characters, in id order
    best.safetensors    the weights with the lowest validation loss so far
    checkpoint.safetensors  everything to resume exactly: weights, optimiser, carried state,
                        random generators, and the loop's position (as JSON metadata), in one
                        file so that one rename keeps them consistent
    metrics.jsonl       one JSON object per logged step and per evaluation
    summary.json        final figures, written when training ends
    valid.safetensors   the validation ids, so `chargen eval` needs nothing else
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.numpy import load_file
from safetensors.numpy import save_file as save_numpy_file
from safetensors.torch import load_model
from safetensors.torch import save_file as save_torch_file

from chargen.config import ModelConfig, TextConfig, TrainConfig
from chargen.errors import ChargenError, RunError
from chargen.files import append_line, atomic_path, write_json, writing
from chargen.model import CharRNN
from chargen.records import (
    FORMAT,
    FORMAT_VERSION,
    Checkpoint,
    MetricRow,
    RunDescription,
    RunInfo,
    TrainSummary,
)
from chargen.records import metric_row as decode_metric_row
from chargen.vocab import Tokenizer, tokenizer_from_dict

RUN_JSON, VOCAB_JSON, METRICS, SUMMARY, VALID = (
    "run.json",
    "vocab.json",
    "metrics.jsonl",
    "summary.json",
    "valid.safetensors",
)
BEST, CHECKPOINT = "best.safetensors", "checkpoint.safetensors"
LATEST = "latest"  # symbolic link, beside the runs, to the newest one


def _damaged(path: Path, err: Exception) -> RunError:
    return RunError(f"{path} cannot be loaded ({str(err).splitlines()[0]}); the file is damaged")


def _cause(err: RunError) -> str:
    """What went wrong underneath a RunError, in one line."""
    return str(err.__cause__ or err).splitlines()[0]


# --- the directory ------------------------------------------------------------------------------


def new_run_dir(out: Path | None, corpus_name: str, runs_root: Path = Path("runs")) -> Path:
    """Create the run directory: `out`, or runs/<corpus>-<timestamp>; `runs/latest` points to it."""
    if out is None:
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        out = runs_root / f"{corpus_name}-{stamp}"
        suffix = 2
        while out.exists():
            out = runs_root / f"{corpus_name}-{stamp}-{suffix}"
            suffix += 1
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        if not out.is_dir():
            what = "a file, not a directory"
        else:
            what = "a chargen run" if (out / RUN_JSON).exists() else "not empty"
        raise RunError(f"{out} already exists and is {what}; choose another `out` directory or remove it")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise RunError(f"cannot create run directory {out}: {err.strerror}") from err
    if out.parent.resolve() == runs_root.resolve():
        _point_latest(runs_root, out)
    return out


def _point_latest(runs_root: Path, run_dir: Path) -> None:
    link = runs_root / LATEST
    tmp = runs_root / f".{LATEST}.tmp"
    with writing(link):
        if tmp.is_symlink() or tmp.exists():
            tmp.unlink()
        tmp.symlink_to(run_dir.name, target_is_directory=True)
        os.replace(tmp, link)  # atomic: `latest` always points at a whole run


def remove_temporaries(run_dir: Path) -> None:
    """Delete what writes cut short by a crash left behind: never a file anything reads."""
    for leftover in run_dir.glob(".*.tmp"):
        with writing(leftover):
            leftover.unlink(missing_ok=True)


# --- run.json, vocab.json, valid.safetensors: written when a run starts --------------------------


def write_new_run(run_dir: Path, info: RunInfo, vocab: Tokenizer, val_ids: np.ndarray) -> None:
    """The files that describe a new run: vocabulary, validation ids and settings."""
    write_json(run_dir / VOCAB_JSON, vocab.to_dict())
    with atomic_path(run_dir / VALID) as tmp:
        save_numpy_file({"ids": np.ascontiguousarray(val_ids)}, str(tmp))
    write_json(run_dir / RUN_JSON, info.to_dict())


@dataclass
class Run:
    """A loaded run: what sampling, evaluation and resuming need."""

    path: Path
    info: RunInfo  # the whole of run.json
    vocab: Tokenizer

    @property
    def model_config(self) -> ModelConfig:
        return self.info.model

    @property
    def train_config(self) -> TrainConfig:
        return self.info.train

    @property
    def text_config(self) -> TextConfig:
        return self.info.text

    def validation_ids(self) -> np.ndarray:
        path = self.path / VALID
        if not path.exists():
            raise RunError(f"{path} is missing; give a text file to evaluate on")
        try:
            return load_file(str(path))["ids"]
        except (SafetensorError, KeyError, OSError) as err:
            raise RunError(f"{path} cannot be loaded ({err}); the file is damaged") from err


def _read_json(path: Path) -> Any:
    if not path.exists():
        raise RunError(f"{path.parent} is not a complete chargen run: {path.name} is missing")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise RunError(f"{path} is not valid JSON ({err}); the run is damaged") from err


def load_run(path: Path | str) -> Run:
    path = Path(path)
    if not path.exists():
        raise RunError(f"run directory not found: {path}; give the directory of a run, or train one")
    if not path.is_dir():
        raise RunError(f"{path} is not a run directory")
    data = _read_json(path / RUN_JSON)
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise RunError(f"{path / RUN_JSON} is not a chargen run description")
    if data.get("format_version", 0) > FORMAT_VERSION:
        raise RunError(
            f"{path} was written by a newer chargen (run format {data['format_version']}, "
            f"this one reads {FORMAT_VERSION}); upgrade chargen"
        )
    try:
        vocab = tokenizer_from_dict(_read_json(path / VOCAB_JSON))
        info = RunInfo.from_dict(data)
    except (KeyError, TypeError, ValueError, ChargenError) as err:
        raise RunError(f"{path} has an invalid run description ({err})") from err
    if len(vocab) != info.model.vocab_size:
        raise RunError(
            f"{path}: vocab.json has {len(vocab)} characters but the model expects {info.model.vocab_size}"
        )
    return Run(path, info, vocab)


# --- best.safetensors ---------------------------------------------------------------------------


def save_weights(model: CharRNN, path: Path) -> None:
    """The model's weights, as safetensors' `save_model` lays them out (a tied matrix once, under
    its first name, the other name in the metadata), so that `load_model` reads them.

    The tensors are copied to the CPU first, one copy each: on a GPU, nn.LSTM keeps its weights as
    views into one flat buffer (cuDNN's layout), and `save_model` refuses views that do not cover
    their whole storage."""
    names: dict[tuple[int, torch.Size], list[str]] = {}
    state = model.state_dict()
    for name, tensor in state.items():
        names.setdefault((tensor.data_ptr(), tensor.shape), []).append(name)
    tensors: dict[str, torch.Tensor] = {}
    metadata: dict[str, str] = {}
    for group in names.values():
        kept, *tied = sorted(group)
        tensors[kept] = state[kept].detach().to("cpu", copy=True).contiguous()
        metadata.update(dict.fromkeys(tied, kept))
    with atomic_path(path) as tmp:
        save_torch_file(tensors, str(tmp), metadata=metadata or None)


def load_model_weights(run: Run, device: torch.device | str = "cpu") -> CharRNN:
    """The run's model with its best weights (or, before its first evaluation, the checkpoint's),
    in evaluation mode on `device`."""
    model = CharRNN(run.model_config)
    source = run.path / BEST if (run.path / BEST).exists() else run.path / CHECKPOINT
    try:
        if source.name == BEST:
            load_model(model, str(source), device=str(device))
        else:
            checkpoint = load_checkpoint(source)
            if checkpoint.position.step == 0:  # stopped or failed before its first step: untrained
                raise RunError(
                    f"{run.path} has not trained a step: it stopped or failed before its first, so its "
                    f"weights are the random ones it began with; train it with: chargen train --resume "
                    f"{run.path}"
                )
            model.load_state_dict(checkpoint.weights)
    except (SafetensorError, RuntimeError, OSError) as err:
        raise _damaged(source, err) from err
    return model.to(device).eval()


# --- checkpoint.safetensors ---------------------------------------------------------------------


def save_checkpoint(path: Path, checkpoint: Checkpoint) -> None:
    tensors, metadata = checkpoint.to_tensors()
    # safetensors refuses tensors that share memory (a tied matrix), so each is saved as its own copy.
    plain = {name: t.detach().to("cpu").clone().contiguous() for name, t in tensors.items()}
    with atomic_path(path) as tmp:
        save_torch_file(plain, str(tmp), metadata=metadata)


@contextmanager
def _reading(path: Path) -> Iterator[None]:
    """A checkpoint that is missing or cannot be read is a RunError naming it."""
    if not path.exists():
        raise RunError(f"{path} is missing: there is nothing to resume from")
    try:
        yield
    except (SafetensorError, OSError, KeyError, TypeError, json.JSONDecodeError) as err:
        raise _damaged(path, err) from err


def load_checkpoint(path: Path) -> Checkpoint:
    with _reading(path), safe_open(str(path), framework="pt") as f:
        contents = {name: f.get_tensor(name) for name in f.keys()}  # noqa: SIM118 (not a dict)
        return Checkpoint.from_tensors(contents, f.metadata() or {})


# --- metrics.jsonl and summary.json -------------------------------------------------------------


def append_metric(run_dir: Path, row: MetricRow) -> None:
    append_line(run_dir / METRICS, json.dumps(row.to_dict(), ensure_ascii=False))


def read_metrics(run_dir: Path) -> list[MetricRow]:
    """The rows of metrics.jsonl; a line cut short by a crash or a full disk is skipped."""
    path = run_dir / METRICS
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines() if path.exists() else []:
        try:
            rows.append(decode_metric_row(json.loads(line)))
        except (json.JSONDecodeError, KeyError, TypeError, ValueError):
            continue
    return rows


def write_summary(summary: TrainSummary) -> None:
    write_json(summary.run_dir / SUMMARY, summary.to_dict())


def read_summary(run_dir: Path) -> TrainSummary | None:
    """The run's final figures; None before it has finished."""
    path = run_dir / SUMMARY
    if not path.exists():
        return None
    data = _read_json(path)
    try:
        return TrainSummary.from_dict(data, run_dir)
    except (KeyError, TypeError) as err:
        raise RunError(f"{path} is not a run summary ({err}); the run is damaged") from err


class RunWriter:
    """The files a run writes while it trains. With several processes only rank 0 writes: the
    others' writer does nothing."""

    def __init__(self, run_dir: Path, writes: bool = True) -> None:
        self.run_dir, self.writes = run_dir, writes

    def checkpoint(self, checkpoint: Checkpoint) -> None:
        if self.writes:
            save_checkpoint(self.run_dir / CHECKPOINT, checkpoint)

    def best(self, model: CharRNN) -> None:
        if self.writes:
            save_weights(model, self.run_dir / BEST)

    def metric(self, row: MetricRow) -> None:
        if self.writes:
            append_metric(self.run_dir, row)

    def summary(self, summary: TrainSummary) -> None:
        if self.writes:
            write_summary(summary)


# --- what `chargen info` shows ------------------------------------------------------------------


def describe(run: Run) -> RunDescription:
    """What a person wants to know about a run, from its files: settings, progress, figures.

    A damaged summary or checkpoint is listed under problems rather than refused: info is what
    one runs to find out what is wrong with a run.
    """
    problems, summary, position = [], None, None
    try:
        summary = read_summary(run.path)
    except RunError as err:
        problems.append(f"{SUMMARY} cannot be read ({_cause(err)})")
    if (run.path / CHECKPOINT).exists():
        try:
            position = load_checkpoint(run.path / CHECKPOINT).position
        except RunError as err:
            problems.append(f"{CHECKPOINT} cannot be read ({_cause(err)}); the run cannot resume")
    # The best validation so far, the figures of the weights best.safetensors holds: from the
    # checkpoint, which a run stopped or killed before its end has and keeps up to date when it is
    # resumed (summary.json is written only at the end), else from the summary.
    best, best_step = (summary.best, summary.best_step) if summary else (None, None)
    if position is not None and position.best is not None:
        best, best_step = position.best, position.best_step
    if (run.path / BEST).exists():
        try:
            load_model_weights(run)  # what sample, eval, score and serve load
        except RunError as err:
            problems.append(f"{BEST} cannot be read ({_cause(err)}); sample, eval and serve cannot use it")
    files = {p.name: p.stat().st_size for p in sorted(run.path.iterdir()) if not p.name.startswith(".")}
    parameters = CharRNN(run.model_config).num_parameters()
    steps = position.step if position else None
    return RunDescription(
        run.path, run.info, parameters, run.vocab, steps, summary, best, best_step, files, problems
    )
