"""The default recipe's one decision that depends on the run: how big a model, and how much dropout.

`--size auto` plans how many characters the run will train on (from --max-steps or --epochs, or,
with --max-time, from the training speed of each candidate size measured on this machine) and
takes the largest size that will see at least CHARS_PER_PARAMETER characters per parameter. The
dropout then follows how many times that plan passes over the training text and how big the model
is: none while a model has not read its text often enough to start learning it by heart, more as it
repeats itself, and sooner for a bigger model. The experiments behind these numbers are in docs/recipe.md.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
import time
from dataclasses import dataclass, replace
from typing import Any

import torch

from chargen.config import SIZES, ModelConfig, TrainConfig
from chargen.errors import ConfigError
from chargen.model import CharRNN
from chargen.step import make_optimizer, train_step

# A size is worth its parameters once the run trains on this many characters per parameter
# (docs/recipe.md). Without the forget-gate handicap, at the work one time budget buys each size on
# the 2-core EPYC (fp32, seed 0): 2x384 at 0.65 characters per parameter lost to 2x256 at twice the
# steps (1.5236 vs 1.5087), at 1.05 it won (1.4652 vs 1.4911), at 1.2 too (1.4598 vs 1.4778).
# Earlier, with the handicap: in 3 minutes 2x512 at 1.2 beat 2x384 at 3.9; at 0.6 it did no better.
# With 16 x 64 windows (2026-11-30), at 1.26: 2x384 1.4525, 2x256 after as long 1.4542, level. With
# the weight drop (2026-11-30), on The Time Machine 2x384 at 1.14 lost to 2x256 after as long (2.047
# bpc against 2.026), and in bf16 in 95 s 2x384 at about 1.0 reached 1.489 where the plain reference's
# 2x256 reached 1.469 to 1.483: so the larger size needed 1.3. Then (fp32, 3 minutes, seed 1) the
# probe found the machine fast and 2x384 at 1.35 reached 1.4558, tying the reference (1.4551) where
# 2x256 had reached 1.4459 for that seed, while bf16's 3-minute 2x384 at 1.8 to 2.1 led by 0.02 to
# 0.04: 1.6 keeps the latter and leaves the former to 2x256 even when the probe reads a quarter fast.
CHARS_PER_PARAMETER = 1.6
# A model begins to learn its text by heart, and to need dropout, once the passes over the text
# times its parameters reach this (docs/recipe.md: on tinyshakespeare 2x384, 1.9M parameters, did best
# without dropout after 3.3 passes, 6.3M; 2x512, 3.3M, did better with 0.1 than without after 3.8,
# 12.6M; in 10 minutes, 11 passes and 36M, 0.3 beat 0.19 and 0.4). So a bigger model needs it after
# fewer passes.
MEMORISING_PASS_PARAMETERS = 7e6
DROPOUT_PER_DOUBLING = 0.125
PROBE_STEPS = 8  # timed training steps per candidate size, after two untimed ones
# AdamW's peak learning rate for 256 units per layer; a wider model takes it times sqrt(256 / width),
# a narrower one the same (not measured).
# docs/recipe.md: at equal work (tinyshakespeare, fp32, seed 0) 2x256 after 1,500 steps reached
# 1.6118 / 1.5796 / 1.5609 / 1.5593 at 0.003 / 0.004 / 0.006 / 0.008, and after 3,000 steps 1.4947 at
# 0.004 and 1.4841 at 0.006; 2x384 after 2,250 steps 1.4614 / 1.4598 / 1.4733 at 0.004 / 0.006 / 0.008;
# 2x512 after 3,700 steps did better at 0.004 than at 0.003 or 0.006 (1.4506 / 1.4603 / 1.4621).
LR_AT_256 = 6e-3
# With dropout, a small text read many times over takes a higher rate: up to a third more, reached at
# dropout DROPOUT_LR_FULL, in proportion below it, so that runs planned a little differently get
# nearly the same (docs/recipe.md, 2026-12-02). At equal work (fp32, seeds 0 and 1): The Time Machine,
# 2x256, dropout 0.2, 3,500 steps, 1.4123 / 1.4109 at 0.006 against 1.4001 / 1.4057 at 0.008; the
# names list, 2x384, dropout 0.15, 6,000 steps, 1.8760 / 1.8749 at 0.0049 against 1.8747 / 1.8748 at
# 0.0065; tinyshakespeare, 2x512, dropout 0.19, 6,000 steps (seed 0), 1.3949 at 0.0042 against 1.3975
# at 0.0056 (level: the two seeds' spread there is about 0.006).
DROPOUT_LR_GAIN = 1 / 3
DROPOUT_LR_FULL = 0.2
# Streams per step of a text, with the default --bptt 64: 1,024 characters a step. docs/recipe.md:
# 2x256 after 4,300 steps (fp32, seed 0) reached 1.4542 with 16 x 64 against 1.4755 with 32 x 32.
TEXT_BATCH = 16
# Items per step of a list (--items): names are short, so a step of 16 would be mostly overhead;
# issue 16's figures were measured with 32.
ITEMS_BATCH = 32


@dataclass
class Plan:
    """What `--size auto` chose and why; recorded in run.json."""

    size: str
    chars: float  # characters the run is expected to train on
    epochs: float  # passes over the training text that makes
    chars_per_sec: float | None  # the measured speed the estimate came from, with --max-time

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# A run started from another's weights (train --init) already knows the language: a smaller peak
# rate adapts it without first undoing what it knows (docs/recipe.md, "Fine-tuning").
FINE_TUNE_LR_FACTOR = 0.5


def dropout_for(epochs: float, parameters: int) -> float:
    """Dropout for a run that passes `epochs` times over its text with a model of `parameters`:
    none until passes x parameters reaches MEMORISING_PASS_PARAMETERS, then DROPOUT_PER_DOUBLING
    more for each doubling, up to 0.5. It grows smoothly, so that two runs planned a little
    differently get nearly the same."""
    exposure = epochs * parameters / MEMORISING_PASS_PARAMETERS
    return round(min(0.5, max(0.0, DROPOUT_PER_DOUBLING * math.log2(exposure))), 2)


def resolve(
    model_config: ModelConfig,
    config: TrainConfig,
    train_chars: int,
    device: torch.device,
    autocast: torch.dtype | None,
    window: tuple[int, float] | None = None,
) -> tuple[ModelConfig, Plan | None]:
    """`model_config` with its size and dropout decided: as given where given, else as planned.

    `window` is the run's typical window: its steps and the targets it counts (a list's windows
    are as long as its items and hold padding); by default `bptt` steps of `batch_size` streams."""
    assert config.batch_size is not None, "decide the batch first (with_batch)"
    if model_config.is_resolved:
        return model_config, None
    names = list(SIZES) if model_config.size == "auto" else [model_config.size]
    candidates: dict[tuple[int, int], tuple[str, ModelConfig]] = {}
    for name in names:  # explicit --layers or --hidden override every size's own
        candidate = _with_size(model_config, name)
        shape = (candidate.layers or 0, candidate.hidden or 0)
        label = name if shape == SIZES[name] else f"{shape[0]}x{shape[1]}"  # the user's own, in part
        candidates.setdefault(shape, (label, candidate))
    plan, chosen, parameters = None, model_config, 0
    for name, candidate in candidates.values():  # smallest first: a larger one must still see enough
        chars, speed = _planned_chars(candidate, config, train_chars, device, autocast, window)
        count = _parameters(candidate)
        if plan is not None and chars < CHARS_PER_PARAMETER * count:
            break
        plan, chosen, parameters = Plan(name, chars, chars / train_chars, speed), candidate, count
    assert plan is not None
    if chosen.dropout is None:
        dropout = dropout_for(plan.epochs, parameters)
        if dropout > 0 and plan.chars_per_sec is not None:
            # Dropout's masks cost time (a 2x512 model trains ~20% slower at 0.4 than at 0), and the
            # speed above was timed without them: time the steps the run will take, and plan again.
            chars, speed = _planned_chars(
                replace(chosen, dropout=dropout), config, train_chars, device, autocast, window
            )
            plan = Plan(plan.size, chars, chars / train_chars, speed)
            dropout = dropout_for(plan.epochs, parameters)
        chosen = replace(chosen, dropout=dropout)
    return chosen, plan


def learning_rate(model_config: ModelConfig) -> float:
    """The planned peak learning rate for a model of this width (resolved: `hidden` is known)."""
    assert model_config.hidden is not None, "the size is not decided yet"
    return round(LR_AT_256 * math.sqrt(min(1.0, 256 / model_config.hidden)), 5)


def dropout_gain(dropout: float) -> float:
    """What the planned rate is multiplied by for a fresh run with this dropout (DROPOUT_LR_GAIN)."""
    return 1 + DROPOUT_LR_GAIN * min(1.0, dropout / DROPOUT_LR_FULL)


def with_batch(config: TrainConfig, listed: bool) -> TrainConfig:
    """`config` with its batch decided: as given, else TEXT_BATCH streams for a text or ITEMS_BATCH
    items for a list (`listed`)."""
    if config.batch_size is not None:
        return config
    return replace(config, batch_size=ITEMS_BATCH if listed else TEXT_BATCH)


def with_learning_rate(
    config: TrainConfig, model_config: ModelConfig, fine_tune: bool = False
) -> TrainConfig:
    """`config` with its learning rate decided: as given, else planned from the model's width, times
    its dropout's gain (or FINE_TUNE_LR_FACTOR for a run that starts from another's weights)."""
    if config.lr is not None:
        return config
    assert model_config.dropout is not None, "the dropout is not decided yet"
    # A fine-tuned run's factor was measured on its own (docs/recipe.md, "Fine-tuning"), without the gain.
    factor = FINE_TUNE_LR_FACTOR if fine_tune else dropout_gain(model_config.dropout)
    return replace(config, lr=round(learning_rate(model_config) * factor, 6))


def _with_size(model_config: ModelConfig, name: str) -> ModelConfig:
    """The size's layers and width, except where the user gave their own."""
    layers, hidden = SIZES[name]
    return replace(
        model_config,
        layers=model_config.layers if model_config.layers is not None else layers,
        hidden=model_config.hidden if model_config.hidden is not None else hidden,
    )


def _parameters(model_config: ModelConfig) -> int:
    with torch.device("meta"):  # shapes only: no memory, no initialisation, the seeded generator untouched
        return CharRNN(replace(model_config, dropout=0.0)).num_parameters()


def _planned_chars(
    model_config: ModelConfig,
    config: TrainConfig,
    train_chars: int,
    device: torch.device,
    autocast: torch.dtype | None,
    window: tuple[int, float] | None = None,
) -> tuple[float, float | None]:
    """Characters the run will train on, whichever limit comes first; with --max-time, from the
    measured speed (also returned)."""
    steps, per_step = window or (config.bptt, float(config.batch_size * config.bptt))
    limits = []
    if config.max_steps:
        limits.append(float(config.max_steps * per_step))
    if config.epochs:
        limits.append(config.epochs * train_chars)
    speed = None
    if config.max_time:
        speed = measure_speed(model_config, config, device, autocast, (steps, per_step))
        limits.append(config.max_time * speed)
    if not limits:
        raise ConfigError("training needs a limit: `max_steps`, `max_time` or `epochs`")
    return min(limits), speed


def measure_speed(
    model_config: ModelConfig,
    config: TrainConfig,
    device: torch.device,
    autocast: torch.dtype | None,
    window: tuple[int, float] | None = None,
) -> float:
    """Characters per second of training steps of this model on random text, timed here: the
    median of a few steps, as another process on the machine can slow any one of them down many
    times over. The random generators are left as they were, so the run starts as its seed says.
    `window`: the steps of a window and the targets it counts, as in `resolve`."""
    steps, counted = window or (config.bptt, float(config.batch_size * config.bptt))
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        timed = replace(model_config, dropout=model_config.dropout or 0.0)
        model = CharRNN(timed).to(device)
        optimizer = make_optimizer(model, with_learning_rate(config, timed))  # any rate times alike
        shape = (steps, config.batch_size)
        x = torch.randint(0, model_config.vocab_size, shape, device=device)
        y = torch.randint(0, model_config.vocab_size, shape, device=device)
        state = model.init_state(config.batch_size, device)
        seconds = []
        for _ in range(PROBE_STEPS + 2):
            began = time.perf_counter()
            loss, _, state, _ = train_step(model, optimizer, x, y, state, config.clip_threshold(), autocast)
            float(loss)  # waits for the step to finish, on any device
            seconds.append(time.perf_counter() - began)
    return counted / statistics.median(seconds[2:])  # the first steps build kernels
