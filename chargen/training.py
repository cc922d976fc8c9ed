"""Starting and resuming training runs: a corpus or a run directory to settings, model and loop.

Knows nothing about the terminal: reports go through a callback (see reports.py), a stop request
through a threading.Event, and problems are raised as ChargenError. Under torchrun, every process
calls the same function; rank 0 creates and writes the run directory and reports.
"""

from __future__ import annotations

import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from chargen import checkpoint as ckpt
from chargen.allocator import keep_freed_memory
from chargen.config import ModelConfig, SampleConfig, TrainConfig, differing
from chargen.corpus import Corpus, first_unseen, load_corpus, name_paths, resolve_paths
from chargen.distributed import World, process_group, world_from_env
from chargen.errors import ConfigError, CorpusChanged, RunError, StoppedBeforeTraining, VocabError
from chargen.finetune import Start, reading_policy
from chargen.item_sample import generate_items
from chargen.items import SPLIT_SEED, source_pieces
from chargen.loop import build_loop
from chargen.model import CharRNN
from chargen.recorder import Preview
from chargen.records import CorpusRecord, RunInfo, TrainSummary
from chargen.reports import ReadyReport, Reporter, StartReport
from chargen.sample import sample_batch
from chargen.settings import Layout, RunSettings, choose_device, prepare, seed_own_dropout, with_batch
from chargen.vocab import describe_chars

# Limits a resumed run may change; everything else stays as the run was started, but these too.
LIMITS = ("epochs", "max_steps", "max_time")
ALSO_CHANGEABLE = ("patience", "device")
SAMPLE_LENGTH = 200  # characters of the sample shown at each evaluation
PREVIEW_ITEMS = 8  # items of a list shown at each evaluation


def train(
    corpus: Corpus,
    model_config: ModelConfig,
    config: TrainConfig,
    out: Path | None = None,
    report: Reporter | None = None,
    runs_root: Path = Path("runs"),
    stop: threading.Event | None = None,
    start: Start | None = None,
) -> TrainSummary:
    """Train a model on `corpus` into a new run directory and return the final figures.

    With `start` (finetune.start_from), the model begins from a parent run's weights, with a fresh
    optimiser and schedule at the fine-tuning learning rate; `corpus` and `model_config` are then
    the start's own.
    Setting `stop` makes training save a checkpoint after the current step and raise
    TrainingInterrupted; `resume` continues from there exactly. Set before the set-up is over, it
    ends the run there, with nothing written (see _set_up_over). Started by torchrun, the
    processes train together: `config.batch_size` is the global batch, shared out between them.
    """
    keep_freed_memory()  # a fifth of a CPU step's time otherwise goes to fresh pages (allocator.py)
    world = world_from_env()
    config = with_batch(config, corpus)
    device = choose_device(config, world)
    with process_group(world, device) as world:
        settings, layout = prepare(corpus, model_config, config, world, device, fine_tune=start is not None)
        model = CharRNN(settings.model).to(device)
        if start is not None:
            model.load_state_dict(start.weights)
        world.share_weights(model)
        seed_own_dropout(settings)  # the same initial weights everywhere, but each its own dropout masks
        report = _main_only(report, world)
        _set_up_over(world, stop, report)
        run_dir = world.from_main(ckpt.new_run_dir(out, corpus.name, runs_root) if world.is_main else None)
        if world.is_main:
            info = _run_info(corpus, settings, layout, start.parent.to_dict() if start else None)
            ckpt.write_new_run(run_dir, info, corpus.vocab, layout.val_ids)
        loop = build_loop(settings, model, layout, run_dir, report, _preview(corpus, settings), stop)
        loop.save()  # resumable from the first moment
        report(_start_report(settings, model, layout, run_dir, corpus.vocab.symbol, resumed_at=0))
        return loop.run()


def resume(
    run_dir: Path | str,
    corpus: Path | str | None = None,
    settings: dict[str, Any] | None = None,
    report: Reporter | None = None,
    stop: threading.Event | None = None,
    unknown: str | None = None,
) -> TrainSummary:
    """Continue a run from its checkpoint exactly where it stopped: weights, optimiser, schedule,
    data position, carried state and random generators.

    `settings` maps config fields to new values. New limits (epochs, max_steps, max_time) replace
    the run's own, so a finished run can train further; a patience and a device may change too; any
    other setting must equal the run's. `corpus` defaults to the file the run was trained on, which
    must not have changed since (its sha256 is in run.json); another file given on purpose must fit
    the run's vocabulary, and the run then goes on from its position in that text. Its own text is
    read as when it began (characters its vocabulary lacks, by `min_count` or an `init` run's
    `unknown`, replaced or skipped again); a run started with `init` reads another text with the
    `unknown` it began with; `unknown`, given, must be that one.
    """
    world = world_from_env()
    run = ckpt.load_run(run_dir)
    config = _continued(run, settings or {})
    policy = _unknown_policy(run, unknown, own=corpus is None)
    checkpoint = ckpt.load_checkpoint(run.path / ckpt.CHECKPOINT)
    data = _read_text(run, corpus, policy)
    if corpus is None and policy == "replace" and len(data.ids) != run.info.corpus.tokens:
        # A fine-tune begun with `unknown='skip'` before run.json recorded it (so read as extend),
        # on a vocabulary with the unknown symbol: skipping, not replacing, gives the ids it recorded.
        data = _read_text(run, corpus, "skip")
    if world.is_main:  # only now: a refused resume leaves the run directory as it was
        ckpt.remove_temporaries(run.path)
    device = choose_device(config, world)

    with process_group(world, device) as world:
        decided, layout = prepare(data, run.model_config, config, world, device, run.info.plan)
        seed_own_dropout(decided)  # should the checkpoint hold no generator for this process
        model = CharRNN(decided.model).to(device)
        report = _main_only(report, world)
        loop = build_loop(decided, model, layout, run.path, report, _preview(data, decided), stop)
        loop.restore(checkpoint)
        loop.refuse_a_finished_run()  # before the start is reported: a refusal is its one line
        _set_up_over(world, stop, report)
        report(_start_report(decided, model, layout, run.path, run.vocab.symbol, resumed_at=loop.at.step))
        return loop.run()


def _continued(run: ckpt.Run, given: dict[str, Any]) -> TrainConfig:
    """The run's training settings with the changes `resume` allows: new limits (which replace
    all three of the run's), patience and device. Any other setting given must equal the run's."""
    given = dict(given)
    limits = {name: given.pop(name) for name in LIMITS if given.get(name) is not None}
    others = {name: value for name in ALSO_CHANGEABLE if (value := given.pop(name, None)) is not None}
    current = {**run.model_config.to_dict(), **run.text_config.to_dict(), **run.train_config.to_dict()}
    differ = [
        differing(name, value, current.get(name), "the run")
        for name, value in given.items()
        if name not in current or current[name] != value
    ]
    if differ:
        *others, last = (f"`{name}`" for name in (*LIMITS, *ALSO_CHANGEABLE))
        changeable = f"{', '.join(others)} and {last}"
        raise ConfigError(
            f"a resumed run continues {run.path} with its own settings, and these differ: "
            f"{'; '.join(differ)}. Only {changeable} may change"
        )
    config = run.train_config
    if limits:
        config = replace(config, **{name: limits.get(name) for name in LIMITS})
    return replace(config, **others)


def _read_text(run: ckpt.Run, corpus: Path | str | None, policy: str) -> Corpus:
    """The text `resume` goes on with, read with the run's vocabulary and `policy`: its own (None),
    which must be the one it read, or a text given on purpose, taken as it is."""
    record = run.info.corpus
    source = corpus if corpus is not None else record.source()
    recorded = record.sha256 if corpus is None else None
    try:
        return load_corpus(source, run.text_config, vocab=run.vocab, unknown=policy, sha256=recorded)
    except CorpusChanged as err:
        where = record.path + (f" and {len(record.files) - 1} more file(s)" if record.files else "")
        raise RunError(
            f"cannot resume {run.path}: its text {where} has changed since the run began (its sha256 is "
            "not the one run.json records), so the run cannot continue exactly. Resume on the original "
            "text, or start a new run from this one on the changed text with `init`, which fine-tunes"
        ) from err
    except VocabError as err:
        raise RunError(_unseen(run, source)) from err


def _unknown_policy(run: ckpt.Run, given: str | None, own: bool) -> str:
    """How `resume` reads characters outside the run's vocabulary. In its own text (`own`), as it
    began: where run.json counts any, they were the rare ones `min_count` made the unknown symbol,
    or those a run started with `init` replaced or skipped. In another text, as a run started with
    `init` reads them; an error for any other run. A `given` other than the one it began with is
    refused."""
    began = run.info.unknown
    if given is not None and given != began:
        why = "it was not started with `init`"
        if began:
            why = f"it began with `unknown={began}`, which resuming keeps"
        message = f"`unknown={given}` cannot resume {run.path}: {why}; leave `unknown` out"
        raise ConfigError(message, "unknown")
    if own and run.info.corpus.unknown:
        return "skip" if began == "skip" else "replace"
    return "error" if began is None else reading_policy(began)


def _unseen(run: ckpt.Run, source: Path | str | list[str]) -> str:
    """Why `resume` cannot read `source`: characters the run's vocabulary lacks, all of them named.
    (A resumed run keeps its vocabulary, and replaces or skips them only if it began so.)"""
    paths, _, _ = resolve_paths(source)
    unseen = {c for piece in source_pieces(paths, run.text_config) for c in run.vocab.unknown_chars(piece)}
    where = first_unseen(paths, run.text_config, run.vocab)  # "; the first is on line 4: '...'"
    return (
        f"cannot resume {run.path} on {name_paths(paths)}: it has {len(unseen)} character(s) the run "
        f"never saw: {describe_chars(sorted(unseen))}{where}. A resumed run keeps its vocabulary: remove "
        "them from the text, or start a new run from this one with `init`, whose vocabulary grows to "
        "take them"
    )


def _set_up_over(world: World, stop: threading.Event | None, report: Reporter) -> None:
    """The end of a run's set-up, before anything of it is written: StoppedBeforeTraining where a
    stop was asked for during it (Ctrl-C while `size='auto'` times the machine, say), else a
    ReadyReport, after which a stop is the loop's to make, after a step, with a checkpoint. With
    several processes the loop makes it even so, as they must all stop at the same step."""
    if world.size == 1 and stop is not None and stop.is_set():
        raise StoppedBeforeTraining()
    report(ReadyReport())


def _main_only(report: Reporter | None, world: World) -> Reporter:
    return (report if world.is_main else None) or (lambda _: None)


def _sample_prefix(text: str) -> str:
    """A fixed prefix for the samples shown while training: the text's first words."""
    first_line = text.strip().split("\n", 1)[0].replace("\ufffd", "")
    return first_line[:24].rsplit(" ", 1)[0] if len(first_line) > 24 else first_line


def _preview(corpus: Corpus, settings: RunSettings) -> Preview:
    """The short sample shown at each validation: the text's first words, continued; for a list,
    a few whole items."""
    if corpus.end_id is not None:
        config = SampleConfig(seed=settings.train.seed, max_length=80)

        def items(model: CharRNN) -> str:
            made = generate_items(model, corpus.vocab, config, PREVIEW_ITEMS, settings.device, corpus.config)
            return " | ".join(item.text.replace("\n", " ") for item in made)

        return items
    prefix = _sample_prefix(corpus.decode(0, 200))
    config = SampleConfig(prefix=prefix, length=SAMPLE_LENGTH, seed=settings.train.seed, unknown="skip")
    return lambda model: prefix + sample_batch(model, corpus.vocab, config, settings.device)[0]


def _run_info(
    corpus: Corpus, settings: RunSettings, layout: Layout, parent: dict[str, Any] | None = None
) -> RunInfo:
    """run.json of a new run: its settings as decided, and the text it trains on."""
    listed = not corpus.path.is_dir() and len(corpus.paths) > 1
    items = {"items": layout.items, "held_out_items": layout.held_out_items, "split_seed": SPLIT_SEED}
    record = CorpusRecord(
        name=corpus.name,
        path=str(corpus.path.resolve()),
        sha256=corpus.sha256,
        tokens=len(corpus.ids),
        unknown=corpus.unknown,
        train_tokens=len(layout.batches.ids),
        val_tokens=len(layout.val_ids),
        held_out_tokens=layout.held_out,
        files=[str(p.resolve()) for p in corpus.paths] if listed else None,
        **(items if layout.end_id is not None else {}),
    )
    return RunInfo(
        model=settings.model,
        train=settings.train,
        text=corpus.config,
        corpus=record,
        plan=settings.plan,
        device=str(settings.device),
        precision=settings.precision,
        processes=settings.world.size,
        created=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        parent=parent,
    )


def _start_report(
    settings: RunSettings, model: CharRNN, layout: Layout, run_dir: Path, symbol: str, resumed_at: int
) -> StartReport:
    m, plan = settings.model, settings.plan
    shape = f"{m.layers}x{m.hidden} {m.cell}, dropout {m.dropout:g}, weight drop {m.recurrent_drop:g}"
    if plan is not None and resumed_at:  # the plan was for the limits the run began with
        shape += f" (size {plan.size}, planned when the run began)"
    elif plan is not None:
        shape += f" (size {plan.size}: about {plan.chars / 1e6:.1f}M {symbol}s, {plan.epochs:.1f} passes)"
    return StartReport(
        run_dir,
        f"{settings.device}, {settings.precision}",
        settings.train.seed or 0,
        model.num_parameters(),
        m.vocab_size,
        len(layout.batches.ids),
        len(layout.val_ids),
        resumed_at,
        shape,
        settings.world.size,
        symbol,
        settings.train.limits(),
    )
