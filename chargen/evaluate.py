"""Loss per character over a text with the state carried across it; perplexity and bpc from it.

Knows nothing about training. Every figure chargen reports comes from `LossStats`, built from a
summed loss and a character count, so means are always taken over characters.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from chargen.device import autocast_to
from chargen.distributed import World
from chargen.errors import CorpusError
from chargen.items import ItemSpans
from chargen.model import CharRNN


@dataclass
class LossStats:
    chars: int  # characters predicted
    loss: float  # mean cross-entropy per character, in nats
    seconds: float = 0.0  # time taken to compute it
    unknown: int = 0  # characters outside the vocabulary (replaced or skipped before scoring)
    items: int = 0  # items of a list scored (their ends count among the characters); 0 for one text

    @property
    def perplexity(self) -> float:
        return math.exp(self.loss) if self.loss < 700 else math.inf

    @property
    def bpc(self) -> float:
        return self.loss / math.log(2)  # bits per character

    @property
    def chars_per_sec(self) -> float:
        return self.chars / self.seconds if self.seconds > 0 else 0.0

    @property
    def loss_per_item(self) -> float:
        """Mean cross-entropy of a whole item, its end included, in nats (a list only)."""
        return self.loss * self.chars / self.items if self.items else math.nan

    @property
    def json_perplexity(self) -> float | None:
        """The perplexity as JSON can hold it: None where it overflows (a loss of 700 nats and more),
        since JSON has no Infinity."""
        return self.perplexity if math.isfinite(self.perplexity) else None

    def to_dict(self) -> dict[str, float | int | None]:
        data: dict[str, float | int | None] = {
            "chars": self.chars,
            "loss": self.loss,
            "perplexity": self.json_perplexity,
            "bpc": self.bpc,
            "chars_per_sec": self.chars_per_sec,
            "unknown": self.unknown,
        }
        if self.items:
            data.update(items=self.items, loss_per_item=self.loss_per_item)
        return data


def scored_chars(
    ids: np.ndarray, verb: str = "evaluate", what: str = "the text", left_out: int = 0, listed: bool = False
) -> int:
    """How many of a text's `ids` are scored: all but the first, which nothing predicts. Fewer than
    2 (a list's: no item) is a CorpusError, the one place that says so. `left_out` counts the
    characters the model never saw that were left out of the ids (skipped, or dropped for want of
    an unknown symbol): the text as given was longer, so the message says what is left of it."""
    if len(ids) >= 2:
        return len(ids) - 1
    if not left_out:
        raise CorpusError(f"{what} must have at least 2 characters to {verb}")
    left, least = ("no items", "one item") if listed else (f"{len(ids)} character(s)", "2 characters")
    raise CorpusError(f"{what} {has_left(left, left_out)}; it needs at least {least} to {verb}")


def has_left(count: str, left_out: int) -> str:
    """What a message says a text has: `count`, and where `left_out` characters the model has never
    seen were left out of it (skipped, or dropped for want of an unknown symbol), that it is what is left."""
    if not left_out:
        return f"has {count}"
    return f"has {count} left once the {left_out:,} character(s) the model has never seen are left out"


def summed_cross_entropy(
    logits: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor | None = None
) -> torch.Tensor:
    """Total cross-entropy in nats: (T, B, V) logits, (T, B) targets, optional (T, B) 0/1 weights."""
    if weights is None:
        return F.cross_entropy(logits.flatten(0, 1), targets.flatten(), reduction="sum")
    losses = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), reduction="none")
    return (losses * weights.flatten()).sum()


def _stream_layout(n: int, streams: int, warmup: int) -> tuple[np.ndarray, np.ndarray]:
    """Positions (L, S) each stream reads, and which of them it scores.

    Stream 0 reads and scores positions [0, L). Stream j >= 1 starts `warmup` positions before the
    part it scores, so its state is already warm when scoring begins, and the scored parts tile
    [0, n) without overlap. Positions past the end are read as padding and not scored.
    """
    if streams == 1:
        length = n
        starts = np.zeros(1, dtype=np.int64)
    else:
        seg = -(-(n - warmup) // streams)
        length = warmup + seg
        starts = np.arange(streams, dtype=np.int64) * seg
    t = np.arange(length, dtype=np.int64)[:, None]
    pos = starts[None, :] + t  # (L, S)
    scored = pos < n
    scored[:warmup, 1:] = False  # warm-up of every stream but the first
    return pos, scored


@torch.inference_mode()
def evaluate_ids(
    model: CharRNN,
    ids: np.ndarray,
    device: torch.device | str = "cpu",
    max_streams: int = 64,
    warmup: int = 256,
    window: int = 512,
    autocast: torch.dtype | None = None,
    world: World | None = None,
) -> LossStats:
    """Mean loss of predicting ids[t + 1] from ids[: t + 1], for every t.

    The text is cut into up to `max_streams` contiguous segments evaluated side by side (one
    batched call instead of a long sequential one); each segment's state is first warmed on the
    `warmup` characters before it, so the result matches one sequential pass closely. `autocast`
    computes in that dtype (bf16: twice as fast on a CPU with bf16 units, and the mean loss moves
    by about one part in 10^5); the loss is summed in fp64 either way. With several processes
    (`world`), each evaluates its share of the segments and the sums are added up, so every
    process gets the figure one process would.
    """
    n = scored_chars(ids)
    start = time.perf_counter()
    world = world or World()
    streams = max(1, min(max_streams, n // (8 * warmup)))  # keep warm-up overhead under ~1/8
    pos, scored = _stream_layout(n, streams, warmup)
    pos, scored = pos[:, world.share(streams)], scored[:, world.share(streams)]  # (L, S) of this process
    ids64 = ids.astype(np.int64, copy=False)
    inputs = torch.from_numpy(ids64[np.minimum(pos, n - 1)]).to(device)  # (L, S)
    targets = torch.from_numpy(ids64[np.minimum(pos + 1, n)]).to(device)  # (L, S)
    weights = torch.from_numpy(scored.astype(np.float32)).to(device)  # (L, S)

    was_training = model.training
    model.eval()
    state = None
    total = torch.zeros((), dtype=torch.float64, device=device)
    for t in range(0, inputs.shape[0] if inputs.shape[1] else 0, window):  # a process may have no share
        with autocast_to(autocast, torch.device(device).type):
            logits, state = model(inputs[t : t + window], state)  # (T, S, V)
        loss = summed_cross_entropy(logits.float(), targets[t : t + window], weights[t : t + window])
        total += loss.double()
    model.train(was_training)
    chars = int(scored.sum())
    if world.size > 1:
        total, all_chars = world.sum(torch.stack([total, total.new_tensor(chars)]))
        chars = int(all_chars)
    assert chars == n, (chars, n)
    return LossStats(chars=chars, loss=total.item() / chars, seconds=time.perf_counter() - start)


@torch.inference_mode()
def evaluate_windows(
    model: CharRNN,
    ids: np.ndarray,
    context: int,
    device: torch.device | str = "cpu",
    autocast: torch.dtype | None = None,
    batch: int = 512,
) -> LossStats:
    """Mean loss with the state reset every `context` characters: the text is cut into windows of
    `context` characters, each read from a zero state, and each window's next characters are scored
    from the 1 to `context` characters before them in the window. This is how a model with a fixed
    context (a transformer of block size `context`) is measured; the tail that fills no window is
    left out."""
    n_windows = (len(ids) - 1) // context
    if n_windows < 1:
        raise CorpusError(f"the text must have more than {context} characters to evaluate in windows")
    start = time.perf_counter()
    windows = torch.from_numpy(ids[: n_windows * context + 1].astype(np.int64))
    inputs = windows[:-1].view(n_windows, context).T.to(device)  # (context, W)
    targets = windows[1:].view(n_windows, context).T.to(device)  # (context, W)
    was_training = model.training
    model.eval()
    total = torch.zeros((), dtype=torch.float64, device=device)
    for w in range(0, n_windows, batch):
        with autocast_to(autocast, torch.device(device).type):
            logits, _ = model(inputs[:, w : w + batch])  # (context, B, V), from a zero state
        total += summed_cross_entropy(logits.float(), targets[:, w : w + batch]).double()
    model.train(was_training)
    chars = n_windows * context
    return LossStats(chars=chars, loss=total.item() / chars, seconds=time.perf_counter() - start)


@torch.inference_mode()
def item_losses(
    model: CharRNN,
    ids: np.ndarray,
    end_id: int,
    device: torch.device | str = "cpu",
    autocast: torch.dtype | None = None,
    batch: int = 256,
    window: int = 512,
    world: World | None = None,
) -> np.ndarray:
    """(N,) summed loss in nats of each item of an END-delimited run of ids, its END included,
    each read from a zero state, as training reads them (this process's share of them with
    several processes, the rest zero). Items of about one length are scored side by side."""
    spans = ItemSpans.of(ids, end_id)
    world = world or World()
    order = np.argsort(spans.steps, kind="stable")
    groups = _groups(order, spans.steps, batch)
    losses = np.zeros(len(spans), dtype=np.float64)
    was_training = model.training
    model.eval()
    for group in groups[world.share(len(groups))]:
        inputs, targets = spans.padded(ids, group, int(spans.steps[group].max()), end_id)  # (L, B)
        x, y = torch.from_numpy(inputs).to(device), torch.from_numpy(targets).to(device)
        state, total = None, torch.zeros(len(group), dtype=torch.float64, device=device)
        for start in range(0, x.shape[0], window):
            with autocast_to(autocast, torch.device(device).type):
                logits, state = model(x[start : start + window], state)  # (T, B, V)
            each = F.cross_entropy(
                logits.float().flatten(0, 1), y[start : start + window].flatten(), reduction="none"
            )  # ignored targets give 0
            total += each.view(-1, len(group)).double().sum(0)
        losses[group] = total.cpu().numpy()
    model.train(was_training)
    return losses


def _groups(order: np.ndarray, steps: np.ndarray, batch: int, cells: int = 1 << 22) -> list[np.ndarray]:
    """Items in order of length, cut into groups of at most `batch`, and of at most `cells` padded
    positions (a group of long documents holds fewer, so memory stays bounded)."""
    groups, start = [], 0
    while start < len(order):
        end = min(start + batch, len(order))
        while end - start > 1 and (end - start) * int(steps[order[end - 1]]) > cells:
            end = start + max(1, (end - start) // 2)
        groups.append(order[start:end])
        start = end
    return groups


def evaluate_items(
    model: CharRNN,
    ids: np.ndarray,
    end_id: int,
    device: torch.device | str = "cpu",
    autocast: torch.dtype | None = None,
    world: World | None = None,
) -> LossStats:
    """Mean loss per character of a list, each item's END counted as a character (the measure
    makemore reports), with every item read from a zero state."""
    start = time.perf_counter()
    world = world or World()
    spans = ItemSpans.of(ids, end_id)
    total = float(item_losses(model, ids, end_id, device, autocast, world=world).sum())
    if world.size > 1:
        total = float(world.sum(torch.tensor([total], dtype=torch.float64))[0])
    chars = int(spans.steps.sum())
    seconds = time.perf_counter() - start
    return LossStats(chars=chars, loss=total / chars, seconds=seconds, items=len(spans))


def evaluate_text(
    model: CharRNN,
    ids: np.ndarray,
    end_id: int | None = None,
    device: torch.device | str = "cpu",
    autocast: torch.dtype | None = None,
    world: World | None = None,
) -> LossStats:
    """The loss of a text (evaluate_ids) or, given its end-of-item symbol, of a list (evaluate_items)."""
    if end_id is None:
        return evaluate_ids(model, ids, device, autocast=autocast, world=world)
    return evaluate_items(model, ids, end_id, device, autocast, world)
