"""Continuing a prefix: warm the state on it in one call, then generate one character at a time.
A sample may also pick up where a text already read left off (a Continuation: its state).

Knows nothing about the terminal, and about files only that a prefix may be read from one; yields
text as it is produced, and ends it where a stop text begins.
"""

from __future__ import annotations

import math
import random
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from chargen import stepping
from chargen.config import SampleConfig, TextConfig
from chargen.errors import CorpusError
from chargen.model import CharRNN, State, expand_state
from chargen.steppers import make_stepper
from chargen.text import prepare
from chargen.vocab import Tokenizer

# A model trained with carried state has mostly seen text mid-stream; starting it on a newline
# (when the corpus has one) puts it where documents and paragraphs begin, instead of at a raw
# all-zero state it rarely saw in training.
_START = "\n"
STREAM_CHUNK = 16  # characters a stream reads back at a time: a few milliseconds of generation
STOP_CHECK = 64  # steps between a batch's looks for its stop text: one read-back from the device each


@dataclass
class Continuation:
    """Where a sample picks up a text already read instead of starting afresh: the state after all
    but the text's last character, and that character's id, which is read next (then the prefix)."""

    state: State  # one stream's, (layers, 1, hidden)
    last_id: int


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
        drop[:, 0] = False  # even where top_p rounds to 0 in the logits' precision (1e-320, say)
        logits = logits.masked_fill(drop.scatter(-1, order, drop), float("-inf"))
    return logits


def gumbel_noise(shape: tuple[int, ...], generator: torch.Generator, temperature: float) -> torch.Tensor:
    """Gumbel noise times `temperature`, drawn from `generator`: -log(-log(u)) is Gumbel; times the
    temperature, added to the raw logits, it picks as it would added to logits / temperature.
    u = 0 gives -inf: never picked, as it should. Picker and the server draw it here alike, so that
    a seed picks the same characters in both."""
    uniform = torch.rand(shape, generator=generator, device=generator.device)
    return uniform.log_().neg_().log_().neg_().mul_(temperature)


class Picker:
    """Draws one character id per stream from (B, V) logits at each step, by the Gumbel-max trick:
    the argmax of logits / temperature plus independent Gumbel noise is a draw from their softmax
    (Gumbel, 1954; as in Maddison et al., 2014). The noise is drawn from the seeded generator in
    chunks of CHUNK steps, so each step costs an add and an argmax instead of multinomial's
    softmax, cumulative sum and search: about 2.5 times faster for one stream and 6 for 64.

    On a CPU, with neither top-k nor top-p, the add and the argmax are NumPy's: between steps that
    stream megabytes of weights through the caches, torch's three small ops took 40-50 us a
    character and NumPy's two 7-10 (2x256 LSTM, one stream, AMD EPYC with AVX2). The same sums in
    the same precision, and both argmaxes take the first of equal maxima: the same picks."""

    CHUNK = 64

    def __init__(self, config: SampleConfig, generator: torch.Generator, batch: int, vocab: int) -> None:
        self.config, self.generator = config, generator
        self.shape = (self.CHUNK, batch, vocab)
        self.noise = torch.empty(0)
        self.used = self.CHUNK
        plain = config.temperature > 0 and config.top_k is None and config.top_p >= 1.0
        self.sums = np.empty((batch, vocab), np.float32) if plain and generator.device.type == "cpu" else None
        self.noise_array = np.empty(0, np.float32)  # the noise as NumPy sees it, where it adds

    def __call__(self, logits: torch.Tensor) -> torch.Tensor:
        config = self.config
        if config.temperature > 0 and self.used == self.CHUNK:
            self.noise = gumbel_noise(self.shape, self.generator, config.temperature)
            self.used = 0
            if self.sums is not None:
                self.noise_array = self.noise.numpy()  # the same memory
        if self.sums is not None and logits.dtype == torch.float32 and logits.device.type == "cpu":
            values = logits.numpy()
            if math.isfinite(values.sum()):  # else torch's way below, which cleans NaN and inf
                np.add(values, self.noise_array[self.used], out=self.sums)
                self.used += 1
                return torch.from_numpy(self.sums.argmax(axis=-1))
        # A diverged model can put out NaN or inf; clamping keeps every row a valid distribution.
        logits = torch.nan_to_num(logits.float(), nan=0.0, posinf=1e4, neginf=-1e4)
        if config.temperature == 0:
            return logits.argmax(dim=-1)
        noise = self.noise[self.used]  # (B, V)
        self.used += 1
        if config.top_k is not None or config.top_p < 1.0:
            filtered = filter_logits(logits, config.temperature, config.top_k, config.top_p)
            return (filtered * config.temperature + noise).argmax(dim=-1)
        return (logits + noise).argmax(dim=-1)  # (B,)


def decode_prefix(data: bytes, source: str) -> str:
    """A prefix given as bytes (a file's, standard input's) as text: UTF-8, a byte-order mark dropped,
    every other character kept, a final line break included. `source` names it in an error."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise CorpusError(f"{source} is not valid UTF-8 (byte {err.start}); save it as UTF-8") from None


def read_prefix(path: Path | str) -> str:
    """The prefix held in a UTF-8 text file, exactly (decode_prefix); an empty file is an empty prefix."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise CorpusError(f"prefix file not found: {path}") from None
    except IsADirectoryError:
        raise CorpusError(f"prefix file {path} is a directory; give a text file") from None
    except OSError as err:
        raise CorpusError(f"cannot read prefix file {path}: {err.strerror}") from None
    return decode_prefix(data, f"prefix file {path}")


def encode_prefix(
    vocab: Tokenizer,
    prefix: str,
    text_config: TextConfig,
    unknown: str = "error",
    after: Continuation | None = None,
) -> np.ndarray:
    """The ids the model starts from: a line break (where the corpus has them), or the last id of
    the text it continues (`after`), then the prefix prepared as the training text was. Raises
    VocabError naming `prefix` for an unknown character (by default)."""
    if after is not None:
        start = np.array([after.last_id], dtype=vocab.dtype)
    else:
        start = vocab.encode(_START, unknown="skip")
    ids = np.concatenate(
        [start, vocab.encode(prepare(prefix, text_config), what="`prefix`", unknown=unknown)]
    )
    return ids if len(ids) else np.zeros(1, dtype=vocab.dtype)  # no context at all: begin from id 0


@torch.inference_mode()  # on a generator, torch applies the mode only while it runs
def _generate(
    model: CharRNN,
    context: np.ndarray,
    config: SampleConfig,
    device: torch.device | str,
    state: State | None = None,
    chunk: int = STREAM_CHUNK,
) -> Generator[list[torch.Tensor], None, None]:
    """Yield the new ids, a (num_samples,) tensor per step, `config.length` steps in all, in lists
    of `chunk` steps (the last may be shorter); the context is read from `state` (None: a zero
    state). A list at a time, because torch enters and leaves inference mode at every resumption
    of a generator: a resumption a step cost a tenth of a one-stream step (2x256 LSTM, AMD EPYC with AVX2,
    4,514 against 4,990 steps/s)."""
    ids = torch.from_numpy(context.astype(np.int64)).to(device)
    seed = config.seed if config.seed is not None else random.SystemRandom().randrange(2**31)
    generator = torch.Generator(device=device).manual_seed(seed)
    model.eval()
    logits, state = model(ids.view(-1, 1), state)  # the whole context in one call: (T, 1, V)
    logits = logits[-1].expand(config.num_samples, -1)  # (B, V)
    # One character per stream is little work: how it runs fastest depends on the chip (stepping.py).
    settings = stepping.choose(model, config.num_samples, device)
    stepper = make_stepper(model, expand_state(state, config.num_samples), stepping.kernel(settings))
    pick = Picker(config, generator, config.num_samples, logits.shape[-1])
    with stepping.applied(settings):
        steps: list[torch.Tensor] = []
        for made in range(1, config.length + 1):
            steps.append(pick(logits))  # (B,)
            if made < config.length:  # the last step's logits would never be read
                logits = stepper(steps[-1])  # (B, V)
            if len(steps) == chunk or made == config.length:
                yield steps
                steps = []


def sample_stream(
    model: CharRNN,
    vocab: Tokenizer,
    config: SampleConfig,
    device: torch.device | str = "cpu",
    text_config: TextConfig | None = None,
    after: Continuation | None = None,
) -> Iterator[str]:
    """The first sample's text, piece by piece as it is generated (always whole characters);
    `after` continues a text already read instead of starting afresh.

    The prefix is checked before this returns, so a bad one fails before any output."""
    context = encode_prefix(vocab, config.prefix, text_config or TextConfig(), config.unknown, after)
    state = after.state if after is not None else None
    decoder = vocab.decoder()

    def pieces() -> Iterator[str]:
        # Read back to Python STREAM_CHUNK characters at a time: one call instead of one per character.
        for steps in _generate(model, context, config, device, state):
            if text := decoder.decode(torch.stack(steps)[:, 0].tolist()):  # (chunk, B): the first's
                yield text
        if text := decoder.decode([], final=True):
            yield text

    return pieces() if config.stop is None else until_stop(pieces(), config.stop)


def _could_begin(text: str, stop: str) -> int:
    """How many characters at the end of `text` could be the start of `stop`: what a stream holds back."""
    for k in range(min(len(stop) - 1, len(text)), 0, -1):
        if text.endswith(stop[:k]):
            return k
    return 0


def until_stop(pieces: Iterator[str], stop: str) -> Iterator[str]:
    """The pieces' text up to, not including, the first `stop` in it, even where `stop` straddles
    pieces. Only the trailing characters that could begin `stop` wait for the next piece, and no
    piece is read after the one that completes it (so generation ends there)."""
    pending = ""
    for piece in pieces:
        pending += piece
        at = pending.find(stop)
        if at >= 0:
            if at:
                yield pending[:at]
            return
        keep = _could_begin(pending, stop)
        if len(pending) > keep:
            yield pending[: len(pending) - keep]
            pending = pending[len(pending) - keep :]
    if pending:
        yield pending


def sample_batch(
    model: CharRNN,
    vocab: Tokenizer,
    config: SampleConfig,
    device: torch.device | str = "cpu",
    text_config: TextConfig | None = None,
    after: Continuation | None = None,
) -> list[str]:
    """`num_samples` generated continuations (without the prefix), computed together as one batch;
    with `config.stop`, each ends just before its own first stop text. `after` continues a text
    already read instead of starting afresh."""
    context = encode_prefix(vocab, config.prefix, text_config or TextConfig(), config.unknown, after)
    state = after.state if after is not None else None
    if config.stop is not None:
        return _batch_until_stop(model, vocab, context, config, device, state)
    chunks = _generate(model, context, config, device, state)
    steps = [step for chunk in chunks for step in chunk]  # stays on the device until the end
    if not steps:
        return [""] * config.num_samples
    ids = torch.stack(steps, dim=1).cpu().numpy()  # (B, length)
    return [vocab.decode(row) for row in ids]


def _batch_until_stop(
    model: CharRNN,
    vocab: Tokenizer,
    context: np.ndarray,
    config: SampleConfig,
    device: torch.device | str,
    state: State | None,
) -> list[str]:
    """sample_batch with a stop text: every STOP_CHECK steps the new ids are read back and decoded,
    each stream is cut at its first stop, and generation ends once every stream has met one."""
    stop = config.stop
    assert stop is not None
    streams = config.num_samples
    decoders = [vocab.decoder() for _ in range(streams)]  # a bytes stream may end mid-character
    texts, done = [""] * streams, [False] * streams

    def read_back(pending: list[torch.Tensor], final: bool) -> None:
        rows = torch.stack(pending, dim=1).tolist() if pending else [[] for _ in range(streams)]  # (B, steps)
        for i, row in enumerate(rows):
            if done[i]:
                continue
            searched = max(0, len(texts[i]) - len(stop) + 1)  # a stop may straddle the last read-back
            texts[i] += decoders[i].decode(row, final)
            at = texts[i].find(stop, searched)
            if at >= 0:
                texts[i], done[i] = texts[i][:at], True

    chunks = _generate(model, context, config, device, state, chunk=STOP_CHECK)
    for pending in chunks:
        read_back(pending, final=False)
        if all(done):
            chunks.close()
            break
    else:
        read_back([], final=True)
    return texts
