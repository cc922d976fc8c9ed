"""A run's settings, each decided once before its first step: the device, the precision, the seed,
this process's share of the streams, the warm-up, the clipping threshold, and the model's size and
dropout. `train`, `resume` and `compare` all decide them through `prepare`; the loop and the run
writer read what it decided. Knows nothing about files or the terminal.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch

from chargen import recipe
from chargen.config import ModelConfig, TrainConfig
from chargen.corpus import Corpus
from chargen.data import Batches, ItemBatches, StreamBatches, split_ids, streams_that_fit
from chargen.device import precision_name, random_seed, resolve_device, resolve_precision, seed_everything
from chargen.distributed import World, require_divisible
from chargen.items import first_items, split_items


@dataclass(frozen=True)
class RunSettings:
    """What a run goes by, decided."""

    model: ModelConfig  # with its vocabulary size, layers, width and dropout
    train: TrainConfig  # with its seed
    plan: recipe.Plan | None  # how size auto chose the model, when it did
    device: torch.device  # this process's
    autocast: torch.dtype | None  # the precision: bf16 arithmetic, or None for fp32
    world: World  # the processes training together
    streams: slice  # this process's columns of the batch
    warmup: int  # steps of learning-rate warm-up
    clip: float  # the gradient-norm threshold (inf: clipping only measures)

    @property
    def precision(self) -> str:
        return precision_name(self.autocast)


@dataclass
class Layout:
    """The text as training and validation read it."""

    batches: Batches  # this process's training windows
    val_ids: np.ndarray  # the validation ids, in memory
    held_out: int  # ids held out for validation, of which it uses up to `eval_chars`
    end_id: int | None = None  # the end-of-item symbol of a list; None for one text
    items: int = 0  # a list's items, training and held out
    held_out_items: int = 0


def lay_out(corpus: Corpus, config: TrainConfig, streams: slice | None = None) -> Layout:
    """The training windows and the validation ids of a corpus: for one text, its last
    `val_fraction` held out; for a list, a seeded random `val_fraction` of its items."""
    end_id = corpus.end_id
    if end_id is None:
        train_ids, held_out = split_ids(corpus.ids, config.val_fraction)
        batches: Batches = StreamBatches(train_ids, config.batch_size, config.bptt, streams)
        return Layout(batches, np.array(held_out[: config.eval_chars]), len(held_out))
    train_ids, held_out = split_items(corpus.ids, end_id, config.val_fraction)
    batches = ItemBatches(train_ids, end_id, config.batch_size, config.bptt, streams)
    held_items = int((held_out == end_id).sum()) - 1
    val_ids = first_items(held_out, end_id, config.eval_chars)
    return Layout(batches, val_ids, len(held_out), end_id, len(batches.spans) + held_items, held_items)


def with_batch(config: TrainConfig, corpus: Corpus) -> TrainConfig:
    """`config` with its batch decided (recipe.with_batch), made smaller where the training split
    holds fewer streams of `bptt` characters (a short text of one's own) or fewer items than that;
    a batch the user gave is kept, and lay_out refuses it where it does not fit."""
    if config.batch_size is not None:
        return config
    planned = recipe.with_batch(config, corpus.end_id is not None)
    if corpus.end_id is None:
        train_ids = split_ids(corpus.ids, config.val_fraction)[0]
        room = streams_that_fit(len(train_ids), config.bptt)
    else:
        train_ids = split_items(corpus.ids, corpus.end_id, config.val_fraction)[0]
        room = int((train_ids == corpus.end_id).sum()) - 1  # the training items
    return replace(planned, batch_size=max(1, min(planned.batch_size or 1, room)))


def choose_device(config: TrainConfig, world: World) -> torch.device:
    """The device to train on: with several processes on GPUs, each its own (cuda:LOCAL_RANK)."""
    require_divisible(config.batch_size, world)
    return resolve_device(config.device, world.local_rank if world.size > 1 else None)


def prepare(
    corpus: Corpus,
    model_config: ModelConfig,
    config: TrainConfig,
    world: World,
    device: torch.device,
    plan: recipe.Plan | None = None,
    fine_tune: bool = False,
) -> tuple[RunSettings, Layout]:
    """Decide the run's settings and lay its text out; everything that can fail on bad input fails
    here, before anything is written. `plan` is a resumed run's own (its model is decided already).

    The seed is drawn once (by rank 0) and seeds every generator. Rank 0 decides the model's size
    and dropout, timing candidates if need be, and every process takes its decision.
    """
    assert config.batch_size is not None, "decide the batch first (recipe.with_batch)"
    seed = seed_everything(world.from_main(config.seed if config.seed is not None else random_seed()))
    config = replace(config, seed=seed)
    streams = world.share(config.batch_size)
    layout = lay_out(corpus, config, streams)
    train_ids = layout.batches.ids
    autocast = resolve_precision(config.precision, device)
    sized = replace(model_config, vocab_size=len(corpus.vocab))
    model_config, planned = world.from_main(
        recipe.resolve(sized, config, len(train_ids), device, autocast, layout.batches.typical_window)
        if world.is_main
        else None
    )
    settings = RunSettings(
        model=model_config,
        train=recipe.with_learning_rate(config, model_config, fine_tune),  # planned for the decided width
        plan=planned or plan,
        device=device,
        autocast=autocast,
        world=world,
        streams=streams,
        warmup=config.effective_warmup(),
        clip=config.clip_threshold(),
    )
    return settings, layout


def seed_own_dropout(settings: RunSettings) -> None:
    """Give every process but rank 0 its own dropout masks (rank 0 keeps the run's seed)."""
    if settings.world.rank > 0:
        seed_everything((settings.train.seed or 0) + settings.world.rank)
