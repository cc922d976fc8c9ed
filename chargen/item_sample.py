"""Sampling whole items from a model trained on a list: each from the end-of-item symbol with a
fresh state until the model ends it, many side by side; and keeping only those the list does not
have. Knows nothing about files or the terminal.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from chargen import stepping
from chargen.config import SampleConfig, TextConfig
from chargen.errors import ConfigError, SampleError
from chargen.items import END
from chargen.model import CharRNN, State, expand_state
from chargen.sample import Picker
from chargen.steppers import make_stepper
from chargen.text import prepare
from chargen.vocab import Tokenizer

BATCH = 256  # items generated side by side
TRIES_PER_ITEM = 20  # for `new`: give up after generating this many items per item asked (and 1,000)


@dataclass
class Item:
    text: str  # the item, its prefix included
    logprob: float  # natural log of the model's probability of its symbols, and its end if it ended (T=1)
    chars: int  # symbols scored: the item's, and its end if it ended
    ended: bool  # whether the model ended it (False: cut off at the maximum length)
    new: bool | None = None  # not in the training list (None: not checked)

    def to_dict(self) -> dict[str, object]:
        return {
            "text": self.text,
            "logprob": self.logprob,
            "chars": self.chars,
            "bpc": -self.logprob / self.chars / np.log(2),
            "ended": self.ended,
            **({} if self.new is None else {"new": self.new}),
        }


@torch.inference_mode()
def generate_items(
    model: CharRNN,
    vocab: Tokenizer,
    config: SampleConfig,
    count: int,
    device: torch.device | str = "cpu",
    text_config: TextConfig | None = None,
) -> Iterator[Item]:
    """`count` items, each beginning with `config.prefix` and at most `config.max_length`
    characters long (the prefix counted), in batches of up to BATCH. The same seed gives the same
    items."""
    if count < 1:
        raise ConfigError(f"`items` must be at least 1, not {count}", "items")
    ids = item_context(vocab, config, text_config)
    end, prefix = int(ids[0]), ids[1:]
    context = torch.from_numpy(ids.astype(np.int64)).to(device)
    seed = config.seed if config.seed is not None else random.SystemRandom().randrange(2**31)
    generator = torch.Generator(device=device).manual_seed(seed)
    model.eval()
    logits, state = model(context.view(-1, 1))  # (T, 1, V): the end symbol, then the prefix
    prefix_logprob = float(F.log_softmax(logits[:-1, 0].float(), -1).gather(1, context[1:].view(-1, 1)).sum())
    begun = Begun(logits[-1], state, vocab.decode(prefix), prefix_logprob, len(prefix))
    budget = max(0, config.max_length - len(prefix))
    done = 0
    while done < count:
        batch = min(BATCH, count - done)
        yield from _batch_of_items(model, vocab, config, begun, batch, generator, end, budget)
        done += batch


def item_context(vocab: Tokenizer, config: SampleConfig, text_config: TextConfig | None = None) -> np.ndarray:
    """What every item of `config` is generated from: the end symbol (an item begins), then the
    prefix's ids, prepared as the list was. The prefix may not hold the end symbol, nor be longer
    than `max_length`, which counts it."""
    end = int(vocab.encode(END)[0])
    prefix = vocab.encode(prepare(config.prefix, text_config or TextConfig()), "`prefix`", config.unknown)
    if end in prefix.tolist():
        raise SampleError("`prefix` holds the end-of-item symbol (NUL)")
    if len(prefix) > config.max_length:
        raise ConfigError(
            f"`prefix` has {len(prefix)} characters, more than the {config.max_length} `max_length` "
            "allows an item, its prefix included",
            "max_length",
        )
    return np.concatenate([[end], prefix])


@dataclass
class Begun:
    """Where every item starts: the logits and state after the end symbol and the prefix."""

    logits: torch.Tensor  # (1, V)
    state: State
    text: str  # the prefix, prepared
    logprob: float  # of the prefix after the end symbol
    chars: int  # symbols of the prefix


def _batch_of_items(
    model: CharRNN,
    vocab: Tokenizer,
    config: SampleConfig,
    begun: Begun,
    batch: int,
    generator: torch.Generator,
    end: int,
    budget: int,
) -> Iterator[Item]:
    """`batch` items side by side, each until its end symbol or `budget` more characters."""
    first, state = begun.logits, begun.state
    logits = first.expand(batch, -1)  # (B, V)
    settings = stepping.choose(model, batch, logits.device)
    stepper = make_stepper(model, expand_state(state, batch), stepping.kernel(settings))
    pick = Picker(config, generator, batch, logits.shape[-1])
    steps: list[torch.Tensor] = []
    logprob = torch.zeros(batch, dtype=torch.float64, device=logits.device)
    ended = torch.zeros(batch, dtype=torch.bool, device=logits.device)
    lengths = torch.full((batch,), budget, dtype=torch.long, device=logits.device)
    no_end = torch.tensor([end], device=logits.device)
    with stepping.applied(settings):
        for t in range(budget + 1):
            # An item has at least one character: with no prefix, the first cannot be the end.
            chosen = pick(logits.index_fill(1, no_end, -torch.inf) if t == 0 and begun.chars == 0 else logits)
            scores = F.log_softmax(logits.float(), -1).gather(1, chosen.view(-1, 1)).squeeze(1)
            stops = (chosen == end) & ~ended
            # The pick after `budget` characters is there only to let an item end at its full
            # length: any other character there is cut off, not part of the item, so not scored.
            scored = ~ended if t < budget else stops
            logprob += torch.where(scored, scores.double(), 0.0)
            lengths = torch.where(stops, t, lengths)
            ended |= stops
            steps.append(chosen)
            if t % 16 == 15 and bool(ended.all()):  # asking the host costs a wait: now and then
                break
            if t < budget:
                logits = stepper(chosen)
    ids = torch.stack(steps, dim=1).cpu().numpy()  # (B, T)
    for row, n, total, finished in zip(ids, lengths.tolist(), logprob.tolist(), ended.tolist(), strict=True):
        text = begun.text + vocab.decode(row[:n])
        yield Item(text, begun.logprob + total, begun.chars + n + int(finished), finished)


def new_items(items: Iterator[Item], known: set[str], count: int, tries: int) -> tuple[list[Item], int, int]:
    """The first `count` items that `known` does not hold and that do not repeat one another, out of
    at most `tries`; with how many were generated and how many of them were new to `known`."""
    kept: list[Item] = []
    seen: set[str] = set()
    generated = new = 0
    for item in items:
        generated += 1
        item.new = item.text not in known
        new += item.new
        if item.new and item.ended and item.text not in seen:
            kept.append(item)
            seen.add(item.text)
            if len(kept) == count:
                break
        if generated >= tries:
            break
    return kept, generated, new


def sample_items(
    model: CharRNN,
    vocab: Tokenizer,
    config: SampleConfig,
    count: int,
    device: torch.device | str = "cpu",
    text_config: TextConfig | None = None,
    known: Callable[[], set[str]] | None = None,
) -> tuple[list[Item], int, int]:
    """`count` items; with `known` (the training list, read when needed), only new ones, none
    repeated, generating more until there are `count` (SampleError if TRIES_PER_ITEM times as many,
    and 1,000 more, do not give them). Returns the items, how many were generated and how many of
    those were new (all of them, without `known`)."""
    if known is None:
        items = list(generate_items(model, vocab, config, count, device, text_config))
        return items, len(items), len(items)
    listed = known()
    tries = TRIES_PER_ITEM * count + 1000
    # Ask for a few more than needed at a time: some will be known or repeated.
    stream = generate_items(model, vocab, config, tries, device, text_config)
    kept, generated, new = new_items(stream, listed, count, tries)
    if len(kept) < count:
        raise SampleError(
            f"found only {len(kept)} new item{'s' if len(kept) != 1 else ''} of the {count} asked in "
            f"{generated:,} tries ({generated - new:,} were in the training list, the rest repeated "
            "one or were cut off at `max_length`); ask for fewer, raise `temperature`, or train longer"
        )
    return kept, generated, new
