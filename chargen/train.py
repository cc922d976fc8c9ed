"""Starting and resuming training runs: corpus to run directory to model, then the loop.

Knows nothing about the terminal: reports go through a callback (see loop.py), a stop request
through a threading.Event, and problems are raised as ChargenError. Under torchrun, every process
calls the same function; rank 0 creates and writes the run directory and reports.
"""

from __future__ import annotations

import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from chargen import checkpoint as ckpt
from chargen import recipe
from chargen.config import ModelConfig, TrainConfig, parse_duration
from chargen.corpus import Corpus, load_corpus
from chargen.data import StreamBatches, split_ids
from chargen.device import precision_name, random_seed, resolve_device, resolve_precision, seed_everything
from chargen.distributed import World, process_group, require_divisible, world_from_env
from chargen.errors import ChargenError, ConfigError, RunError, VocabError
from chargen.loop import Loop, Reporter, StartReport, TrainSummary
from chargen.model import CharRNN

# Limits a resumed run may change; everything else stays as the run was started.
LIMITS = ("epochs", "max_steps", "max_time")


def _sample_prefix(text: str) -> str:
    """A fixed prefix for the samples shown while training: the text's first words."""
    first_line = text.strip().split("\n", 1)[0].replace("\ufffd", "")
    return first_line[:24].rsplit(" ", 1)[0] if len(first_line) > 24 else first_line


def _layout(corpus: Corpus, config: TrainConfig, world: World) -> tuple[StreamBatches, np.ndarray, int]:
    """This process's training windows, the validation ids (in memory) and how many ids were held out."""
    train_ids, held_out = split_ids(corpus.ids, config.val_fraction)
    val_ids = np.array(held_out[: config.eval_chars])
    streams = world.share(config.batch_size)
    return StreamBatches(train_ids, config.batch_size, config.bptt, streams), val_ids, len(held_out)


def _device(config: TrainConfig, world: World) -> torch.device:
    """The device to train on: with several processes on GPUs, each its own (cuda:LOCAL_RANK)."""
    require_divisible(config.batch_size, world)
    return resolve_device(config.device, world.local_rank if world.size > 1 else None)


def train(
    corpus: Corpus,
    model_config: ModelConfig,
    config: TrainConfig,
    out: Path | None = None,
    report: Reporter | None = None,
    runs_root: Path = Path("runs"),
    stop: threading.Event | None = None,
) -> TrainSummary:
    """Train a model on `corpus` into a new run directory and return the final figures.

    Setting `stop` makes training save a checkpoint after the current step and raise
    TrainingInterrupted; `resume` continues from there exactly. Started by torchrun, the
    processes train together: `config.batch_size` is the global batch, shared out between them.
    """
    world = world_from_env()
    device = _device(config, world)
    with process_group(world, device) as world:
        return _train(world, device, corpus, model_config, config, out, report, runs_root, stop)


def _train(
    world: World,
    device: torch.device,
    corpus: Corpus,
    model_config: ModelConfig,
    config: TrainConfig,
    out: Path | None,
    report: Reporter | None,
    runs_root: Path,
    stop: threading.Event | None,
) -> TrainSummary:
    report = (report if world.is_main else None) or (lambda _: None)
    seed = seed_everything(world.from_main(config.seed if config.seed is not None else random_seed()))
    config = replace(config, seed=seed)

    # Everything that can fail on bad input happens before the run directory is created.
    batches, val_ids, held_out = _layout(corpus, config, world)
    model_config = replace(model_config, vocab_size=len(corpus.vocab))
    # Rank 0 decides the size (it may time each candidate) and every process takes its decision.
    autocast = resolve_precision(config.precision, device)
    model_config, plan = world.from_main(
        recipe.resolve(model_config, config, len(batches.ids), device, autocast) if world.is_main else None
    )
    config = recipe.with_learning_rate(config, model_config)
    model = CharRNN(model_config).to(device)
    world.share_weights(model)
    if world.rank > 0:  # the same initial weights everywhere, but each process its own dropout masks
        seed_everything(seed + world.rank)

    run_dir = world.from_main(ckpt.new_run_dir(out, corpus.name, runs_root) if world.is_main else None)
    if world.is_main:
        _write_run(run_dir, corpus, model_config, config, plan, batches, val_ids, held_out, device, world)
    prefix = _sample_prefix(corpus.decode(0, 200))
    loop = Loop(model, corpus.vocab, config, batches, val_ids, run_dir, device, report, prefix, stop, world)
    loop.save()  # resumable from the first moment
    report(_start_report(loop, seed, len(corpus.vocab), 0, plan.to_dict() if plan else None))
    return loop.run()


def _write_run(
    run_dir: Path,
    corpus: Corpus,
    model_config: ModelConfig,
    config: TrainConfig,
    plan: recipe.Plan | None,
    batches: StreamBatches,
    val_ids: np.ndarray,
    held_out: int,
    device: torch.device,
    world: World,
) -> None:
    """The files that describe a new run: vocabulary, validation ids, settings and corpus."""
    ckpt.write_json(run_dir / ckpt.VOCAB_JSON, corpus.vocab.to_dict())
    ckpt.save_ids(val_ids, run_dir / ckpt.VALID)
    ckpt.write_json(
        run_dir / ckpt.RUN_JSON,
        {
            "format": ckpt.FORMAT,
            "format_version": ckpt.FORMAT_VERSION,
            "model": model_config.to_dict(),
            "train": config.to_dict(),
            "plan": plan.to_dict() if plan else None,  # how --size auto chose, when it did
            "text": corpus.config.to_dict(),
            "corpus": {
                "name": corpus.name,
                "path": str(corpus.path.resolve()),
                "sha256": corpus.sha256,
                "tokens": len(corpus.ids),
                "unknown": corpus.unknown,
                "train_tokens": len(batches.ids),
                "val_tokens": len(val_ids),
                "held_out_tokens": held_out,
            },
            "device": str(device),
            "precision": precision_name(resolve_precision(config.precision, device)),
            "processes": world.size,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        },
    )


def resume(
    run_dir: Path | str,
    corpus: Path | str | None = None,
    settings: dict[str, Any] | None = None,
    report: Reporter | None = None,
    stop: threading.Event | None = None,
) -> TrainSummary:
    """Continue a run from its checkpoint exactly where it stopped: weights, optimiser, schedule,
    data position, carried state and random generators.

    `settings` may hold new limits (epochs, max_steps, max_time), which replace the run's own so a
    finished run can train further, a patience and a device; any other setting must equal the run's. `corpus`
    defaults to the file the run was trained on; another file must fit the run's vocabulary.
    """
    world = world_from_env()
    settings = dict(settings or {})
    run = ckpt.load_run(run_dir)
    limits = {name: settings.pop(name) for name in LIMITS if settings.get(name) is not None}
    device = settings.pop("device", None)
    patience = settings.pop("patience", None)
    _refuse_changes(run, settings)
    tensors, position = ckpt.load_checkpoint(run.path / ckpt.CHECKPOINT)
    if world.is_main:
        ckpt.remove_temporaries(run.path)
    config = run.train_config
    if limits:
        limits["max_time"] = parse_duration(limits.get("max_time"))
        config = replace(config, **{name: limits.get(name) for name in LIMITS})
    if device is not None:
        config = replace(config, device=device)
    if patience is not None:
        config = replace(config, patience=patience)
    torch_device = _device(config, world)

    source = corpus if corpus is not None else run.info["corpus"]["path"]
    try:
        data = load_corpus(source, run.text_config, vocab=run.vocab, unknown="error")
    except VocabError as err:
        raise RunError(f"cannot resume {run.path} on {source}: {err}") from err

    with process_group(world, torch_device) as world:
        report = (report if world.is_main else None) or (lambda _: None)
        if world.rank > 0:  # dropout masks, should the checkpoint hold no generator for this process
            seed_everything((config.seed or 0) + world.rank)
        batches, val_ids, _ = _layout(data, config, world)
        model = CharRNN(run.model_config).to(torch_device)
        prefix = _sample_prefix(data.decode(0, 200))
        loop = Loop(
            model, run.vocab, config, batches, val_ids, run.path, torch_device, report, prefix, stop, world
        )
        loop.restore(tensors, position)
        report(_start_report(loop, config.seed or 0, len(run.vocab), loop.step, run.info.get("plan")))
        return loop.run()


def _refuse_changes(run: ckpt.Run, settings: dict[str, Any]) -> None:
    """A resumed run keeps its model, text and training settings; say which given ones differ."""
    current = {**run.model_config.to_dict(), **run.text_config.to_dict(), **run.train_config.to_dict()}
    differ = [
        f"--{name.replace('_', '-')} {value} (the run has {current.get(name, 'none')})"
        for name, value in settings.items()
        if name not in current or current[name] != value
    ]
    if differ:
        raise ConfigError(
            f"--resume continues {run.path} with its own settings, and these differ: {'; '.join(differ)}. "
            "Only --max-steps, --max-time, --epochs, --patience and --device may change"
        )


def training_ids(run: ckpt.Run) -> np.ndarray:
    """The ids of a run's training split, read again from the corpus file it records (cached)."""
    path = run.info["corpus"]["path"]
    try:
        data = load_corpus(path, run.text_config, vocab=run.vocab, unknown="replace")
    except ChargenError as err:
        raise RunError(f"the training text of {run.path} is not available ({err})") from err
    return split_ids(data.ids, run.train_config.val_fraction)[0]


def _start_report(
    loop: Loop, seed: int, vocab_size: int, resumed_at: int, plan: dict[str, Any] | None
) -> StartReport:
    m = loop.model.config
    model = f"{m.layers}x{m.hidden} {m.cell}, dropout {m.dropout:g}"
    if plan is not None:
        chars, passes = plan["chars"] / 1e6, plan["epochs"]
        model += f" (size {plan['size']}: about {chars:.1f}M characters, {passes:.1f} passes)"
    return StartReport(
        loop.run_dir,
        f"{loop.device}, {precision_name(loop.autocast)}",
        seed,
        loop.model.num_parameters(),
        vocab_size,
        len(loop.batches.ids),
        len(loop.val_ids),
        resumed_at,
        model,
        loop.world.size,
    )
