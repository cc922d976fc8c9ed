"""Continuing a prefix: warm the state on it in one call, then generate one character at a time.

Knows nothing about files or the terminal; yields text as it is produced.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from contextlib import contextmanager

import torch

from chargen.config import SampleConfig
from chargen.model import CharRNN, expand_state
from chargen.vocab import Vocab

# A model trained with carried state has mostly seen text mid-stream; starting it on a newline
# (when the corpus has one) puts it where documents and paragraphs begin, instead of at a raw
# all-zero state it rarely saw in training.
_START = "\n"


def filter_logits(logits: torch.Tensor, temperature: float, top_k: int | None, top_p: float) -> torch.Tensor:
    """Scale (B, V) logits by temperature and set those outside the top-k / top-p set to -inf."""
    logits = logits / temperature
    if top_k is not None and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]  # (B, 1)
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        probs = sorted_logits.softmax(dim=-1)
        # Drop a character when the ones more likely than it already reach top_p (the first stays).
        drop = probs.cumsum(dim=-1) - probs >= top_p
        logits = logits.masked_fill(drop.scatter(-1, order, drop), float("-inf"))
    return logits


def next_ids(logits: torch.Tensor, config: SampleConfig, generator: torch.Generator) -> torch.Tensor:
    """One character id per stream from (B, V) logits; temperature 0 takes the likeliest."""
    if config.temperature == 0:
        return logits.argmax(dim=-1)
    probs = filter_logits(logits.float(), config.temperature, config.top_k, config.top_p).softmax(dim=-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(1)  # (B,)


def _generate(
    model: CharRNN, vocab: Vocab, config: SampleConfig, device: torch.device | str
) -> Iterator[torch.Tensor]:
    """Yield a (num_samples,) tensor of new ids per step, `config.length` times."""
    context = (_START if _START in vocab.chars else "") + config.prefix
    if not context:  # no newline in the vocabulary and no prefix: any character will do to begin
        context = vocab.chars[0]
    ids = torch.from_numpy(vocab.encode(context, what="the prefix").astype("int64")).to(device)
    seed = config.seed if config.seed is not None else random.SystemRandom().randrange(2**31)
    generator = torch.Generator(device=device).manual_seed(seed)

    model.eval()
    logits, state = model(ids.view(-1, 1))  # the whole context in one call: (T, 1, V)
    logits = logits[-1].expand(config.num_samples, -1)  # (B, V)
    state = expand_state(state, config.num_samples)
    with _small_steps(torch.device(device), config.num_samples):
        for _ in range(config.length):
            step = next_ids(logits, config, generator)  # (B,)
            yield step
            logits, state = model(step.view(1, -1), state)
            logits = logits[0]  # (B, V)


@contextmanager
def _small_steps(device: torch.device, batch_size: int) -> Iterator[None]:
    """On a CPU, one character for a few streams is too little work to share between threads or
    hand to oneDNN: their per-call overhead exceeds the arithmetic, so run on one thread without it."""
    if device.type != "cpu" or batch_size > 8:
        yield
        return
    threads, mkldnn = torch.get_num_threads(), torch.backends.mkldnn.enabled
    torch.set_num_threads(1)
    torch.backends.mkldnn.enabled = False
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        torch.backends.mkldnn.enabled = mkldnn


@torch.inference_mode()
def sample_stream(
    model: CharRNN, vocab: Vocab, config: SampleConfig, device: torch.device | str = "cpu"
) -> Iterator[str]:
    """The generated characters of the first sample, one by one as they are produced."""
    for step in _generate(model, vocab, config, device):
        yield vocab.chars[int(step[0])]


@torch.inference_mode()
def sample_batch(
    model: CharRNN, vocab: Vocab, config: SampleConfig, device: torch.device | str = "cpu"
) -> list[str]:
    """`num_samples` generated continuations (without the prefix), computed together as one batch."""
    steps = list(_generate(model, vocab, config, device))  # stays on the device until the end
    if not steps:
        return [""] * config.num_samples
    ids = torch.stack(steps, dim=1).cpu().numpy()  # (B, length)
    return [vocab.decode(row) for row in ids]
