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
from chargen.data import StreamBatches, split_ids
from chargen.device import precision_name, random_seed, resolve_device, resolve_precision, seed_everything
from chargen.distributed import World, require_divisible


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

    batches: StreamBatches  # this process's training windows
    val_ids: np.ndarray  # the validation ids, in memory
    held_out: int  # ids held out for validation, of which it uses up to `eval_chars`


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
) -> tuple[RunSettings, Layout]:
    """Decide the run's settings and lay its text out; everything that can fail on bad input fails
    here, before anything is written. `plan` is a resumed run's own (its model is decided already).

    The seed is drawn once (by rank 0) and seeds every generator. Rank 0 decides the model's size
    and dropout, timing candidates if need be, and every process takes its decision.
    """
    seed = seed_everything(world.from_main(config.seed if config.seed is not None else random_seed()))
    config = replace(config, seed=seed)
    streams = world.share(config.batch_size)
    train_ids, held_out = split_ids(corpus.ids, config.val_fraction)
    layout = Layout(
        StreamBatches(train_ids, config.batch_size, config.bptt, streams),
        np.array(held_out[: config.eval_chars]),
        len(held_out),
    )
    autocast = resolve_precision(config.precision, device)
    sized = replace(model_config, vocab_size=len(corpus.vocab))
    model_config, planned = world.from_main(
        recipe.resolve(sized, config, len(train_ids), device, autocast) if world.is_main else None
    )
    settings = RunSettings(
        model=model_config,
        train=recipe.with_learning_rate(config, model_config),  # the rate planned for the decided width
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
