"""The run directory: saving and loading a trained model and everything needed to use it.

A run is a directory of readable JSON and safetensors weights; loading it never unpickles
anything. Every file is written to a temporary name and renamed, so a crash leaves either the old
file or the new one.

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
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.numpy import load_file, save_file
from safetensors.torch import load_model, save_model
from safetensors.torch import save_file as save_torch_file

from chargen.config import ModelConfig, TextConfig, TrainConfig
from chargen.errors import ChargenError, RunError
from chargen.model import CharRNN
from chargen.vocab import Tokenizer, tokenizer_from_dict

FORMAT = "chargen-run"
FORMAT_VERSION = 1
RUN_JSON, VOCAB_JSON, METRICS, SUMMARY, VALID = (
    "run.json",
    "vocab.json",
    "metrics.jsonl",
    "summary.json",
    "valid.safetensors",
)
BEST, CHECKPOINT = "best.safetensors", "checkpoint.safetensors"
LATEST = "latest"  # symbolic link, beside the runs, to the newest one
_UMASK = os.umask(0)
os.umask(_UMASK)


@contextmanager
def _atomic_path(path: Path) -> Iterator[Path]:
    """A temporary path beside `path` that replaces it (fsync, then rename) when the block ends."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes files private; a run is an ordinary file
    try:
        yield Path(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_bytes_atomic(path: Path, data: bytes) -> None:
    with _atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text_atomic(path: Path, text: str) -> None:
    with _atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(path: Path, data: Any) -> None:
    write_text_atomic(path, json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def append_jsonl(path: Path, record: dict[str, Any]) -> None:
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(record, ensure_ascii=False) + "\n")


def save_weights(model: CharRNN, path: Path) -> None:
    with _atomic_path(path) as tmp:
        save_model(model, str(tmp))  # handles the tied embedding/output matrix


def save_checkpoint(path: Path, tensors: dict[str, torch.Tensor], position: dict[str, Any]) -> None:
    """Tensors (weights, optimiser moments, state, generator states) and the loop's position."""
    # safetensors refuses tensors that share memory (a tied matrix), so each is saved as its own copy.
    plain = {name: t.detach().to("cpu").clone().contiguous() for name, t in tensors.items()}
    with _atomic_path(path) as tmp:
        save_torch_file(plain, str(tmp), metadata={"position": json.dumps(position)})


def remove_temporaries(run_dir: Path) -> None:
    """Delete what writes cut short by a crash left behind: never a file anything reads."""
    for leftover in run_dir.glob(".*.tmp"):
        leftover.unlink(missing_ok=True)


def load_checkpoint(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    if not path.exists():
        raise RunError(f"{path} is missing: there is nothing to resume from")
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
            tensors = {name: f.get_tensor(name) for name in f.keys()}  # noqa: SIM118 (not a dict)
        return tensors, json.loads(metadata["position"])
    except (SafetensorError, OSError, KeyError, json.JSONDecodeError) as err:
        raise RunError(f"{path} cannot be loaded ({str(err).splitlines()[0]}); the file is damaged") from err


def save_ids(ids: np.ndarray, path: Path) -> None:
    with _atomic_path(path) as tmp:
        save_file({"ids": np.ascontiguousarray(ids)}, str(tmp))


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
    if tmp.is_symlink() or tmp.exists():
        tmp.unlink()
    tmp.symlink_to(run_dir.name, target_is_directory=True)
    os.replace(tmp, link)  # atomic: `latest` always points at a whole run


@dataclass
class Run:
    """A loaded run: what sampling and evaluation need."""

    path: Path
    model_config: ModelConfig
    train_config: TrainConfig
    text_config: TextConfig
    vocab: Tokenizer
    info: dict[str, Any]  # the whole of run.json

    def validation_ids(self) -> np.ndarray:
        path = self.path / VALID
        if not path.exists():
            raise RunError(f"{path} is missing; give a TEXT_FILE to evaluate on")
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
    info = _read_json(path / RUN_JSON)
    if not isinstance(info, dict) or info.get("format") != FORMAT:
        raise RunError(f"{path / RUN_JSON} is not a chargen run description")
    if info.get("format_version", 0) > FORMAT_VERSION:
        raise RunError(
            f"{path} was written by a newer chargen (run format {info['format_version']}, "
            f"this one reads {FORMAT_VERSION}); upgrade chargen"
        )
    try:
        vocab = tokenizer_from_dict(_read_json(path / VOCAB_JSON))
        model_config = ModelConfig.from_dict(info["model"])
        train_config = TrainConfig.from_dict(info["train"])
        text_config = TextConfig.from_dict(info.get("text", {}))
    except (KeyError, TypeError, ValueError, ChargenError) as err:
        raise RunError(f"{path} has an invalid run description ({err})") from err
    if len(vocab) != model_config.vocab_size:
        raise RunError(
            f"{path}: vocab.json has {len(vocab)} characters but the model expects {model_config.vocab_size}"
        )
    return Run(path, model_config, train_config, text_config, vocab, info)


def load_model_weights(run: Run, device: torch.device | str = "cpu") -> CharRNN:
    """The run's model with its best weights (or, before its first evaluation, the checkpoint's),
    in evaluation mode on `device`."""
    model = CharRNN(run.model_config)
    source = run.path / BEST if (run.path / BEST).exists() else run.path / CHECKPOINT
    try:
        if source.name == BEST:
            load_model(model, str(source), device=str(device))
        else:
            tensors, _ = load_checkpoint(source)
            model.load_state_dict(
                {k[len("model.") :]: v for k, v in tensors.items() if k.startswith("model.")}
            )
    except (SafetensorError, RuntimeError, OSError) as err:
        raise RunError(
            f"{source} cannot be loaded ({str(err).splitlines()[0]}); the file is damaged"
        ) from err
    return model.to(device).eval()


def describe(run: Run) -> dict[str, Any]:
    """What a person wants to know about a run, from its files: settings, progress, figures.

    A damaged summary or checkpoint is listed under "problems" rather than refused: info is what
    one runs to find out what is wrong with a run.
    """
    problems = []
    summary = position = None
    if (run.path / SUMMARY).exists():
        try:
            summary = json.loads((run.path / SUMMARY).read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            problems.append(f"{SUMMARY} is not valid JSON ({err})")
    if (run.path / CHECKPOINT).exists():
        try:
            with safe_open(str(run.path / CHECKPOINT), framework="pt") as f:
                position = json.loads((f.metadata() or {}).get("position", "null"))
        except (SafetensorError, OSError, json.JSONDecodeError) as err:
            problems.append(
                f"{CHECKPOINT} cannot be read ({str(err).splitlines()[0]}); the run cannot resume"
            )
    return {
        "path": str(run.path),
        "model": run.model_config.to_dict(),
        "plan": run.info.get("plan"),  # how --size auto chose the model, if it did
        "parameters": CharRNN(run.model_config).num_parameters(),
        "vocab": {"kind": run.vocab.kind, "size": len(run.vocab), "chars": getattr(run.vocab, "chars", None)},
        "text": run.text_config.to_dict(),
        "train": run.train_config.to_dict(),
        "corpus": run.info.get("corpus", {}),
        "steps": position["step"] if position else None,
        "summary": summary,
        "files": {p.name: p.stat().st_size for p in sorted(run.path.iterdir()) if not p.name.startswith(".")},
        "problems": problems,
    }
