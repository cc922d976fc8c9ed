"""The generation loop behind `chargen serve`: one thread owns the model, and each step advances every
active stream of every request by one character in ONE batched cell call. A request joins at the
next step (its prefix warmed in one model call, its state rows appended), and leaves when it is done
or its client has gone (its rows dropped). Knows nothing about HTTP: results go to a sink.

Each request picks with its own seeded torch.Generator, drawing Gumbel noise for its own rows only
exactly as sample.Picker draws it, with its own temperature, top-k and top-p; only the network step
is shared. Two things make a seed's text the same alone and beside others, to the bit:

- the batch never has fewer than MIN_ROWS rows (zero rows pad it): on the CPUs we measured, a
  matrix product of 1 to 3 rows takes another kernel than one of 4 or more, whose rows come out
  bit-identical whatever their number;
- torch computes on one thread: with two, rows are shared out by count and rounding depends on it.
  One thread is also what stepping.py finds fastest for small steps on most machines.

    rows:  | request A (n=2) | request B (n=1) | pad |      state: one (rows, H) tensor per layer
           |  a0    a1       |  b0             |  0  |      logits: (rows without pad, V)
"""

from __future__ import annotations

import contextlib
import queue
import random
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from chargen.config import TextConfig
from chargen.device import autocast_to
from chargen.errors import ChargenError, CorpusError, ServerBusy
from chargen.evaluate import LossStats
from chargen.item_sample import Item, item_context
from chargen.items import END, describe_mode, text_items
from chargen.model import CharRNN
from chargen.sample import Picker, _could_begin, encode_prefix, filter_logits, gumbel_noise
from chargen.scoring import UnitScore, score_units, split_lines
from chargen.serve.requests import GenerateRequest, Limits, ScoreRequest
from chargen.steppers import CellStepper
from chargen.vocab import Tokenizer

MIN_ROWS = 4  # see above: fewer rows would change the arithmetic
CHUNK = Picker.CHUNK  # steps of Gumbel noise drawn at a time, as sample.Picker draws it
TOP = 5  # alternatives a stream reports per character, when its request asks
STREAM_CHARS = 256  # a stream's event carries at most this many characters...
STREAM_SECONDS = 0.04  # ...and every stream sends what it has this often, all on one step (the first at once)

Top = tuple[list[int], list[float]]  # the likeliest symbols' ids and probabilities at one step
Sink = Callable[[str, dict[str, Any]], None]  # (event name, data); called from the loop's thread


@dataclass(eq=False)  # a row is itself: Job.rows.index finds it by identity, not by equal fields
class _Row:
    """One sample (or item) of a request."""

    decoder: Any
    text: str = ""  # generated so far (an item's: after its prefix, and only for a stream; see `ids`)
    symbols: int = 0  # the symbols `text` was made of: what `length` and `chars` count (bytes, in a byte run)
    marks: list[int] = field(default_factory=list)  # per character of `text`: `symbols` once it was made
    probs: list[float] = field(default_factory=list)  # per character of `text` (streams only)
    tops: list[Top | None] = field(default_factory=list)  # likeliest alternatives, per character (if asked)
    sent: int = 0  # characters of `text` already sent
    done: bool = False
    ids: list[int] = field(default_factory=list)  # an item's symbols
    logprob: float = 0.0  # an item's, float64 as generate_items sums it


class Job:
    """One generate request in the loop: its rows, generator, noise and results."""

    def __init__(self, request: GenerateRequest, context: np.ndarray, sink: Sink, engine: Engine) -> None:
        config = request.sample
        self.request, self.config, self.sink = request, config, sink
        self.context = context
        self.listed = request.items is not None
        self.rows = [_Row(engine.vocab.decoder()) for _ in range(request.items or config.num_samples)]
        seed = config.seed if config.seed is not None else random.SystemRandom().randrange(2**31)
        self.seed = seed
        self.generator = torch.Generator().manual_seed(seed)
        self.used = CHUNK  # steps of its noise in the engine's bank already used (none drawn yet)
        self.live = list(range(len(self.rows)))  # rows not done
        self.t = 0  # steps taken
        self.cancelled = False  # set by the server when the client goes away
        self.began = time.perf_counter()
        self.first: float | None = None  # seconds to the first character
        self.prefix_text = ""  # an item's prefix, prepared
        self.prefix_logprob = 0.0
        self.prefix_chars = 0
        self.budget = config.length  # picks per row (an item: max_length less its prefix, plus its end)
        # A plain request (a text's run, no `stop`, each symbol one character) keeps its picks in
        # arrays, a step a line, and makes text of them only when it sends or ends: no Python per
        # row and step. Its rows all end together, at `budget`. The others go character by character.
        self.plain = not self.listed and config.stop is None and engine.whole_chars
        self.sent = 0  # steps of a plain request already sent
        if self.plain:
            shape, streamed = (self.budget, len(self.rows)), request.stream
            self.picked = np.empty(shape, dtype=np.int32)  # (steps, rows): symbol ids
            self.probs = np.empty(shape) if streamed else None  # (steps, rows): as sent, rounded
            asked = request.alternatives
            self.top_ids = np.empty((*shape, TOP), dtype=np.int32) if asked else None  # (steps, rows, TOP)
            self.top_probs = np.empty((*shape, TOP)) if asked else None

    def record(
        self, ids: np.ndarray, probs: np.ndarray, top_ids: np.ndarray | None, top_probs: np.ndarray | None
    ) -> None:
        """A plain request's picks at this step, one per row: ids and rounded probabilities (rows,),
        and the alternatives (rows, TOP) if it asked for them."""
        self.picked[self.t] = ids
        if self.probs is not None:
            self.probs[self.t] = probs
        if self.top_ids is not None:
            self.top_ids[self.t], self.top_probs[self.t] = top_ids, top_probs  # type: ignore[index]
        self.t += 1

    def alive(self) -> list[int]:
        """The rows still generating, in the batch's order (kept up to date by the loop)."""
        return self.live

    def draw(self, vocab: int) -> torch.Tensor:
        """The next CHUNK steps of Gumbel noise (times the temperature) for every row of the request,
        dead ones included, drawn from its generator in the shape sample.Picker draws them, so a seed
        picks as `chargen sample`'s."""
        return gumbel_noise((CHUNK, len(self.rows), vocab), self.generator, self.config.temperature)


class Engine:
    """The loop's thread, its queue of arriving requests and the batch it steps."""

    def __init__(
        self,
        model: CharRNN,
        vocab: Tokenizer,
        text_config: TextConfig,
        limits: Limits | None = None,
        autocast: torch.dtype | None = None,
    ) -> None:
        """`autocast`: the precision scoring computes in (the run's, as `chargen score` uses); generation
        is fp32, for picks that do not depend on the batch."""
        self.autocast = autocast
        self.model, self.vocab, self.text_config = model.eval(), vocab, text_config
        self.limits = limits or Limits()
        self.listed = text_config.items is not None
        self.end = int(vocab.encode(END)[0]) if self.listed else -1
        # Each symbol as the API names it, in the alternatives and in a score's `symbols`: a byte that
        # is part of a character is <0xC4>, not the U+FFFD it decodes to alone.
        self.labels = vocab.labels()
        self.texts = None if vocab.kind == "bytes" else [vocab.decode([i]) for i in range(len(vocab))]
        # Plain requests make their text from arrays of ids, one character per id (Job.plain).
        self.whole_chars = self.texts is not None and all(len(text) == 1 for text in self.texts)
        if self.listed:
            self.labels[self.end] = "(end)"
        self.label_array = np.array(self.labels, dtype=object)  # the labels, to look up arrays of ids
        self.inbox: queue.SimpleQueue[Job | tuple[ScoreRequest, Sink] | None] = queue.SimpleQueue()
        self.jobs: list[Job] = []  # in the batch's row order
        self.stepper = CellStepper(model, model.init_state(MIN_ROWS))
        self.logits = torch.empty(0, len(vocab))  # (rows, V): what each active row picks from next
        # Each active row's current CHUNK steps of noise, and where it is in them as a line of the
        # bank seen as (rows * CHUNK, V): one index_select a step picks every row's noise, whatever
        # step of its own chunk each request is at.
        self.bank = torch.zeros(0, CHUNK, len(vocab))  # (rows, CHUNK, V); zero for temperature 0
        self.cursor = torch.zeros(0, dtype=torch.long)  # (rows,): row * CHUNK + its step in the chunk
        self.flushed = 0.0  # when the streams last sent what they had (all at once: fewer wake-ups)
        self.waiting = 0  # requests submitted and not finished (the queue's length)
        self.lock = threading.Lock()
        self.closing: str | None = None
        self.steps = 0
        self.pad = MIN_ROWS  # zero rows after the active ones (none active yet)
        self.thread = threading.Thread(target=self._run, name="chargen-generate", daemon=True)

    # --- the server's side: called from the event loop's thread --------------------------------

    def start(self) -> None:
        self.thread.start()

    def close(self, reason: str = "the server is shutting down", wait: float = 5.0) -> None:
        """End every request with an error event naming `reason`, and stop the loop."""
        if self.closing is None:
            self.closing = reason
            self.inbox.put(None)
        if self.thread.is_alive() and threading.current_thread() is not self.thread:
            self.thread.join(wait)

    def _enter(self) -> None:
        with self.lock:
            if self.closing is not None:
                raise ServerBusy(self.closing)
            if self.waiting >= self.limits.max_queue:
                raise ServerBusy(
                    f"the server holds {self.waiting} requests, its `max_queue`; try again shortly"
                )
            self.waiting += 1

    def _leave(self) -> None:
        with self.lock:
            self.waiting -= 1

    def submit(self, request: GenerateRequest, sink: Sink) -> Job:
        """Queue a generate request; its prefix is checked here (VocabError naming `prefix`), and
        ServerBusy when the queue is full."""
        context = self._context(request)
        self._enter()
        job = Job(request, context, sink, self)
        self.inbox.put(job)
        return job

    def submit_score(self, request: ScoreRequest, sink: Sink) -> None:
        self._enter()
        self.inbox.put((request, sink))

    def _context(self, request: GenerateRequest) -> np.ndarray:
        config = request.sample
        if not self.listed:
            return encode_prefix(self.vocab, config.prefix, self.text_config, config.unknown)
        return item_context(self.vocab, config, self.text_config)

    # --- the loop's thread ----------------------------------------------------------------------

    def _run(self) -> None:
        torch.set_num_threads(1)  # see the module's docstring
        # This thread and the server's event loop share the GIL; with Python's default 5 ms switch
        # interval, each time the loop wakes for a socket it may wait that long for this thread to
        # let go, and 32 streams then crawled at a fraction of one's speed. 0.5 ms lets it in.
        sys.setswitchinterval(0.0005)
        with torch.inference_mode():
            while self.closing is None:
                self._admit(block=not self.jobs)
                if self.closing is not None:
                    break
                self._drop([job for job in self.jobs if job.cancelled], None)
                if self.jobs:
                    try:
                        self._step()
                    except Exception as err:  # the loop outlives any one step's failure; the
                        # requests in that step end with an error event, and it serves the next
                        self._drop(list(self.jobs), f"generation failed: {err}")
            self._drop(list(self.jobs), self.closing)
            while True:  # requests that arrived meanwhile
                try:
                    waiting = self.inbox.get_nowait()
                except queue.Empty:
                    break
                if isinstance(waiting, Job):
                    self._finish(waiting, self.closing)
                elif waiting is not None:
                    self._tell(waiting[1], "error", {"error": self.closing})
                    self._leave()

    def _admit(self, block: bool) -> None:
        """Take what has arrived (waiting for it when nothing runs): score it, or warm it and add
        its rows to the batch."""
        joined: list[Job] = []
        while True:
            try:
                waiting = self.inbox.get(timeout=0.5) if block and not joined else self.inbox.get_nowait()
            except queue.Empty:
                if block and not joined and self.closing is None:
                    continue
                break
            if waiting is None:
                break  # closing: those that joined leave with the rest
            if isinstance(waiting, Job):
                if waiting.cancelled:
                    self._finish(waiting, None)
                elif self._warm(waiting):
                    joined.append(waiting)
            else:
                self._score(*waiting)
                self._leave()
            block = False
        if joined:
            self._rebuild(list(range(self._active_rows())), joined)

    def _active_rows(self) -> int:
        return self.logits.shape[0]

    def _warm(self, job: Job) -> bool:
        """The request's context through the model in one call; its first logits and state kept on
        the job until it joins. False when it is already done (nothing to generate)."""
        ids = torch.from_numpy(job.context.astype(np.int64))
        logits, state = self.model(ids.view(-1, 1))  # (T, 1, V)
        rows = len(job.rows)
        if job.listed:
            prefix = ids[1:]
            job.prefix_text = self.vocab.decode(job.context[1:])
            job.prefix_chars = len(prefix)
            job.prefix_logprob = float(
                F.log_softmax(logits[:-1, 0].float(), -1).gather(1, prefix.view(-1, 1)).sum()
            )
            job.budget = max(0, job.config.max_length - len(prefix)) + 1
        elif job.budget == 0:
            self._finish(job, None)
            return False
        h, c = state if isinstance(state, tuple) else (state, None)
        job.first_logits = logits[-1].expand(rows, -1)  # type: ignore[attr-defined]  # (rows, V)
        job.first_h = [t.expand(rows, -1) for t in h.unbind(0)]  # type: ignore[attr-defined]
        job.first_c = [t.expand(rows, -1) for t in c.unbind(0)] if c is not None else []  # type: ignore[attr-defined]
        return True

    def _rebuild(self, keep: list[int], joined: list[Job]) -> None:
        """The batch with only the rows `keep` of the present one, then the rows of `joined`, padded
        to MIN_ROWS."""
        index = torch.tensor(keep, dtype=torch.long)
        rows = len(keep) + sum(len(job.rows) for job in joined)
        pad = max(0, MIN_ROWS - rows)
        hidden = self.model.config.hidden

        def rebuilt(old: list[torch.Tensor], new: str) -> list[torch.Tensor]:
            out = []
            for k, tensor in enumerate(old):
                parts = [tensor.index_select(0, index), *(getattr(job, new)[k] for job in joined)]
                parts.append(torch.zeros(pad, hidden))
                out.append(torch.cat(parts))  # (rows + pad, H)
            return out

        self.stepper.h = rebuilt(self.stepper.h, "first_h")
        self.stepper.c = rebuilt(self.stepper.c, "first_c") if self.stepper.c else []
        self.logits = torch.cat([self.logits.index_select(0, index), *(job.first_logits for job in joined)])
        added = rows - len(keep)  # a joining request draws its noise at its first step
        self.bank = torch.cat(
            [self.bank.index_select(0, index), self.bank.new_zeros(added, *self.bank.shape[1:])]
        )
        steps = self.cursor.index_select(0, index) - index * CHUNK  # each kept row's step in its chunk
        self.cursor = torch.cat([steps, steps.new_zeros(added)]) + torch.arange(rows) * CHUNK
        for job in joined:
            del job.first_logits, job.first_h, job.first_c  # type: ignore[attr-defined]
        self.jobs.extend(joined)
        self.pad = pad

    def _step(self) -> None:
        """Pick one symbol for every active row, hand each request its own, then advance the rows
        that go on by one batched cell call."""
        logits = self.logits  # (B, V)
        vocab = logits.shape[-1]
        clean = torch.nan_to_num(logits.float(), nan=0.0, posinf=1e4, neginf=-1e4)  # as Picker does
        picked, noisy, at = clean, False, 0
        asked: list[int] = []  # the rows of requests that want the alternatives (the playground does)
        for job in self.jobs:
            rows, config = job.live, job.config
            n = len(rows)
            if job.used == CHUNK:  # the request's next chunk of noise into its rows of the bank
                job.used = 0
                self.cursor[at : at + n] = torch.arange(at * CHUNK, (at + n) * CHUNK, CHUNK)
                if config.temperature > 0:
                    chunk = job.draw(vocab)  # (CHUNK, all its rows, V)
                    self.bank[at : at + n] = (chunk if n == len(job.rows) else chunk[:, rows]).transpose(0, 1)
            job.used += 1
            noisy |= config.temperature > 0
            first_item = job.listed and job.t == 0 and job.prefix_chars == 0
            filtered = config.temperature > 0 and (config.top_k is not None or config.top_p < 1.0)
            if first_item or filtered:  # only these requests' rows differ from the clean logits
                block = clean[at : at + n]
                if first_item:  # an item has at least one character
                    block = block.index_fill(1, torch.tensor([self.end]), -1e4)
                if filtered:
                    block = (
                        filter_logits(block, config.temperature, config.top_k, config.top_p)
                        * config.temperature
                    )
                picked = clean.clone() if picked is clean else picked
                picked[at : at + n] = block
            if job.request.alternatives:
                asked.extend(range(at, at + n))
            at += n
        if noisy:
            picked = picked + self.bank.view(-1, vocab).index_select(0, self.cursor)  # (B, V)
            self.cursor += 1
        chosen = picked.argmax(dim=-1)  # (B,)
        logp = F.log_softmax(logits.float(), dim=-1)  # (B, V): the model's own probabilities
        chosen_t = logp.gather(1, chosen.view(-1, 1)).squeeze(1)  # (B,)
        chosen_p = torch.round(chosen_t.double().exp(), decimals=5)  # (B,): rounded here, not per row
        top_ids = top_probs = np.empty((0, TOP))
        if asked:
            wanted = logp if len(asked) == len(logp) else logp.index_select(0, torch.tensor(asked))
            top_v, top_i = wanted.topk(min(TOP, vocab), dim=-1)  # (rows asking, TOP) each
            top_ids, top_probs = top_i.numpy(), torch.round(top_v.double().exp(), decimals=5).numpy()
        ids, probs = chosen.numpy(), chosen_p.numpy()  # (B,) each
        per_row: tuple[list[int], list[float], list[float]] | None = None  # for the requests not plain
        self.steps += 1
        now = time.perf_counter()
        tick = now - self.flushed >= STREAM_SECONDS  # time for every stream to send what it has
        if tick:
            self.flushed = now

        keep: list[int] = []
        at = top = 0  # the job's first row in the batch, and among the rows asking for alternatives
        for job in self.jobs:
            rows, asks = job.live, job.request.alternatives
            n = len(rows)
            if job.first is None:
                job.first = now - job.began
            if job.plain:
                tops = (top_ids[top : top + n], top_probs[top : top + n]) if asks else (None, None)
                job.record(ids[at : at + n], probs[at : at + n], *tops)
                if job.t < job.budget:
                    keep.extend(range(at, at + n))
                else:
                    for i in rows:
                        job.rows[i].text, job.rows[i].done = self.vocab.decode(job.picked[:, i]), True
                        job.rows[i].symbols = job.t
                    job.live = []
            else:
                if per_row is None:
                    per_row = (ids.tolist(), chosen_t.tolist(), probs.tolist())
                symbols, logprobs, rounded = per_row
                for j, i in enumerate(rows):
                    r = at + j
                    alternatives = (top_ids[top + j].tolist(), top_probs[top + j].tolist()) if asks else None
                    self._advance(job, job.rows[i], symbols[r], logprobs[r], rounded[r], alternatives)
                    if not job.rows[i].done:
                        keep.append(r)
                job.t += 1
                if job.t == job.budget:
                    for i in rows:
                        self._end_row(job, job.rows[i])
                    keep = [r for r in keep if not (at <= r < at + n)]
                job.live = [i for i in rows if not job.rows[i].done]
            at += n
            top += n if asks else 0
            if job.request.stream:
                self._flush(job, tick)
        finished = [job for job in self.jobs if not job.alive()]
        if len(keep) < len(ids):
            self.jobs = [job for job in self.jobs if job not in finished]
            self._rebuild(keep, [])
        for job in finished:
            self._finish(job, None)
        if keep:
            x = chosen.index_select(0, torch.tensor(keep)) if len(keep) < len(ids) else chosen
            if self.pad:
                x = torch.cat([x, torch.zeros(self.pad, dtype=torch.long)])
            self.logits = self.stepper(x)[: len(keep)]  # (B', V)

    def _advance(
        self, job: Job, row: _Row, symbol: int, logprob: float, prob: float, top: Top | None
    ) -> None:
        """Row `row` of `job` picked `symbol`, to which the model gave `logprob` (`prob`, rounded);
        `top`: the likeliest symbols there and their probabilities, for a stream."""
        if job.listed:
            # The last pick is there only to let an item end at its full length: any other symbol
            # there is cut off, not kept and not scored (as generate_items does).
            if symbol == self.end:
                row.logprob += logprob
                row.done = True
                self._item(job, row, ended=True)
            elif job.t < job.budget - 1:
                row.logprob += logprob
                row.ids.append(symbol)
                if job.request.stream:  # the item grows in the stream, piece by piece
                    piece = self._piece(row, symbol)
                    row.text += piece
                    row.probs.extend([prob] * len(piece))
            return
        row.symbols += 1
        self._extend(job, row, self._piece(row, symbol), prob, top)

    def _piece(self, row: _Row, symbol: int) -> str:
        """What `symbol` adds to `row`'s text. A character vocabulary's symbols are whole characters:
        looked up, not decoded one by one; a byte's may be part of one, which its decoder keeps."""
        return row.decoder.decode([symbol]) if self.texts is None else self.texts[symbol]

    def _extend(self, job: Job, row: _Row, piece: str, prob: float, top: Top | None) -> None:
        searched = max(0, len(row.text) - len(job.config.stop or "") + 1)
        row.text += piece
        if job.request.stream:
            row.probs.extend([prob] * len(piece))
        if job.request.alternatives:
            row.tops.extend([top] * len(piece))
        stop = job.config.stop
        if stop is None:
            return
        # A byte run's character may take several symbols: what is cut off at the stop must take
        # its symbols with it, so that `chars` counts what `length` counts.
        row.marks.extend([row.symbols] * len(piece))
        if (at := row.text.find(stop, searched)) >= 0:
            row.text, row.probs, row.tops = row.text[:at], row.probs[:at], row.tops[:at]
            row.symbols, row.marks = row.marks[at - 1] if at else 0, []
            row.done = True

    def _end_row(self, job: Job, row: _Row) -> None:
        """The row has all the symbols it may have."""
        if row.done:
            return
        row.done = True
        if job.listed:
            self._item(job, row, ended=False)
        else:
            self._extend(job, row, row.decoder.decode([], final=True), 1.0, None)
            row.done = True

    def _item(self, job: Job, row: _Row, ended: bool) -> None:
        item = Item(
            job.prefix_text + self.vocab.decode(row.ids),
            job.prefix_logprob + row.logprob,
            job.prefix_chars + len(row.ids) + int(ended),
            ended,
        )
        row.symbols = job.prefix_chars + len(row.ids)
        if job.request.stream:
            index = job.rows.index(row)
            rest = row.decoder.decode([], final=True)  # a byte run's unfinished character, as U+FFFD
            row.text += rest
            row.probs.extend([1.0] * len(rest))
            if len(row.text) > row.sent:  # its last piece, before it ends
                self._send(job, index, row, len(row.text))
            self._tell(job.sink, "item", {"index": index, **item.to_dict()})
        row.item = item  # type: ignore[attr-defined]

    def _flush(self, job: Job, tick: bool) -> None:
        """Send a streaming request's new characters: the first at once, then what came since the
        last `tick` (at most STREAM_CHARS at a time), the rest at its end."""
        if job.plain:
            self._flush_plain(job, tick)
            return
        done = not job.alive()
        for i, row in enumerate(job.rows):
            ready = (
                len(row.text) if row.done else len(row.text) - _could_begin(row.text, job.config.stop or "")
            )
            pending = ready - row.sent
            if pending <= 0:
                continue
            if not (done or row.done or row.sent == 0 or pending >= STREAM_CHARS or tick):
                continue
            self._send(job, i, row, ready)

    def _send(self, job: Job, i: int, row: _Row, ready: int) -> None:
        """A piece of row `i`: its characters from the last sent up to `ready`. A list's piece names
        its item by `index`, as the item's own event does; a text's, its sample by `row`."""
        key = "index" if job.listed else "row"
        piece = {key: i, "text": row.text[row.sent : ready], "probs": row.probs[row.sent : ready]}
        if job.request.alternatives:
            piece["top"] = [self._named(top) for top in row.tops[row.sent : ready]]
        self._tell(job.sink, "piece", piece)
        row.sent = ready

    def _flush_plain(self, job: Job, tick: bool) -> None:
        """_flush for a plain request: its rows move together, so they are sent together."""
        pending = job.t - job.sent
        if pending <= 0 or not (tick or job.sent == 0 or job.t == job.budget or pending >= STREAM_CHARS):
            return
        steps = slice(job.sent, job.t)
        for i in range(len(job.rows)):
            piece = {
                "row": i,
                "text": self.vocab.decode(job.picked[steps, i]),
                "probs": job.probs[steps, i].tolist(),  # type: ignore[index]
            }
            if job.top_ids is not None:
                labels = self.label_array[job.top_ids[steps, i]].tolist()  # (steps, TOP)
                probs = job.top_probs[steps, i].tolist()  # type: ignore[index]
                piece["top"] = [
                    [[label, p] for label, p in zip(ls, ps, strict=True)]
                    for ls, ps in zip(labels, probs, strict=True)
                ]
            self._tell(job.sink, "piece", piece)
        job.sent = job.t

    def _finish(self, job: Job, error: str | None) -> None:
        """The request leaves: its final event (the results, or an error) and its place in the queue."""
        self._leave()
        if job.cancelled:
            return
        if error is not None:
            self._tell(job.sink, "error", {"error": error})
            return
        seconds = time.perf_counter() - job.began
        chars = sum(row.symbols for row in job.rows)  # symbols, as `length` counts them: bytes in a byte run
        done: dict[str, Any] = {
            "seed": job.seed,
            "chars": chars,
            "seconds": round(seconds, 4),
            "first_char_seconds": None if job.first is None else round(job.first, 4),
            "chars_per_sec": round(chars / seconds, 1) if seconds > 0 else None,
        }
        if job.listed:
            done["items"] = [row.item.to_dict() for row in job.rows]  # type: ignore[attr-defined]
        else:
            done["texts"] = [row.text for row in job.rows]
        self._tell(job.sink, "done", done)

    def _drop(self, jobs: list[Job], error: str | None) -> None:
        """Take `jobs` out of the batch (a client gone, a failed step, shutting down)."""
        if not jobs:
            return
        keep, at = [], 0
        for job in self.jobs:
            rows = len(job.alive())
            if job not in jobs:
                keep.extend(range(at, at + rows))
            at += rows
        self.jobs = [job for job in self.jobs if job not in jobs]
        self._rebuild(keep, [])
        for job in jobs:
            self._finish(job, error)

    def _named(self, top: Top | None) -> list[list[str | float]]:
        """The alternatives as the API gives them: [[character, probability], ...], likeliest first."""
        return [] if top is None else [[self.labels[i], p] for i, p in zip(*top, strict=True)]

    @staticmethod
    def _tell(sink: Sink, name: str, data: dict[str, Any]) -> None:
        with contextlib.suppress(RuntimeError):  # the server's event loop has closed: nobody listens
            sink(name, data)

    def _score(self, request: ScoreRequest, sink: Sink) -> None:
        try:
            result = self.score(request)
        except ChargenError as err:
            self._tell(sink, "error", {"error": str(err), "field": getattr(err, "field", None)})
        else:
            self._tell(sink, "done", result)

    def score(self, request: ScoreRequest) -> dict[str, Any]:
        """Per-symbol log-probabilities and bits per character of a text, as `chargen score` figures
        them: a text's run reads it line by line with the state carried; a list's run item by item
        (cut as the run's list was), each from a fresh state, its end included."""
        if self.listed:
            return self._score_items(text_items(request.text, self.text_config), request.unknown)
        scores = score_units(
            self.model,
            self.vocab,
            split_lines(request.text),
            self.text_config,
            request.unknown,
            "cpu",
            self.autocast,
            what="`text` line",
        )
        assert scores.symbols is not None and scores.symbol_logprobs is not None
        symbols = [
            [self.labels[i], lp]
            for i, lp in zip(scores.symbols.tolist(), scores.symbol_logprobs.tolist(), strict=True)
        ]
        units = [unit.to_dict() for unit in scores]
        return self._scored(scores.stats, float(scores.logprobs.sum()), units, symbols, "lines")

    def _score_items(self, items: list[str], unknown_policy: str) -> dict[str, Any]:
        """`items` (prepared) scored one by one, keeping each symbol's log-probability (score_items
        batches them and keeps only their sums)."""
        begun = time.perf_counter()
        units, symbols, total, chars, unknown = [], [], 0.0, 0, 0
        for number, item in enumerate(items, 1):
            ids, missing = self.vocab.encode_counting(item, f"`text` item {number}", unknown_policy)
            unknown += missing
            context = torch.from_numpy(np.concatenate([[self.end], ids, [self.end]]).astype(np.int64))
            with autocast_to(self.autocast, "cpu"):
                logits, _ = self.model(context[:-1].view(-1, 1))  # (T, 1, V) from a fresh state
            lps = F.log_softmax(logits[:, 0].float(), -1).gather(1, context[1:].view(-1, 1)).squeeze(1)
            unit = UnitScore(item, len(lps), float(lps.double().sum()))
            units.append(unit.to_dict())
            symbols.extend(
                [self.labels[i], lp] for i, lp in zip(context[1:].tolist(), lps.tolist(), strict=True)
            )
            total += unit.logprob
            chars += unit.chars
        if not chars:
            mode = describe_mode(self.text_config.items or "lines")
            raise CorpusError(f"`text` has no items to score when read as {mode}")
        stats = LossStats(chars, -total / chars, time.perf_counter() - begun, unknown)
        return self._scored(stats, total, units, symbols, "items")

    @staticmethod
    def _scored(stats: LossStats, logprob: float, units: list, symbols: list, name: str) -> dict[str, Any]:
        return {
            "chars": stats.chars,
            "logprob": logprob,
            "bpc": stats.bpc,
            "perplexity": stats.perplexity,
            "unknown": stats.unknown,
            "seconds": round(stats.seconds, 4),
            name: units,
            "symbols": symbols,
        }
