"""Speed benchmark: chargen's training, evaluation and sampling throughput, measured against the
machine's own matrix-multiply ceiling and a d2l-style reference, in one process on the same data.

    python -m chargen.bench --corpus ../shared/corpora/timemachine.txt [--json bench.json]

Not a test: timings on shared machines are noisy, so it reports medians over several runs and
ratios measured side by side, and it never runs in CI.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from chargen.config import ModelConfig, SampleConfig, TrainConfig
from chargen.corpus import load_corpus
from chargen.data import StreamBatches
from chargen.evaluate import evaluate_ids
from chargen.loop import make_optimizer, train_step
from chargen.model import CharRNN
from chargen.sample import sample_batch
from chargen.vocab import Vocab

GATES = {"lstm": 4, "gru": 3, "rnn": 1}


def median_rate(work: Callable[[], int], repeats: int = 5, warmup: int = 1) -> tuple[float, float]:
    """Median and spread (max - min) of items per second over `repeats` timed calls of `work`,
    which returns how many items it processed."""
    for _ in range(warmup):
        work()
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        items = work()
        rates.append(items / (time.perf_counter() - start))
    return statistics.median(rates), max(rates) - min(rates)


def forward_flops_per_char(config: ModelConfig) -> float:
    """Multiply-adds x 2 of the recurrent and output layers for one character (pointwise work and
    the embedding lookup are small and left out)."""
    gates = GATES[config.cell] * config.hidden
    flops, inputs = 0.0, config.embed
    for _ in range(config.layers):
        flops += 2 * gates * (inputs + config.hidden)
        inputs = config.hidden
    return flops + 2 * config.hidden * config.vocab_size


def matmul_ceiling(rows: int, inputs: int, outputs: int) -> float:
    """GFLOP/s of nn.Linear (oneDNN on a CPU) at one shape: the rate the machine can reach."""
    layer = nn.Linear(inputs, outputs)
    x = torch.randn(rows, inputs)

    def work() -> int:
        with torch.no_grad():
            for _ in range(20):
                layer(x)
        return 20 * 2 * rows * inputs * outputs

    return median_rate(work, repeats=7)[0] / 1e9


# --- the reference: written in the style of the d2l book's RNN chapter ---------------------------


class D2LStyleModel(nn.Module):
    """One-hot inputs into nn.LSTM, a linear layer on the flattened outputs: the book's RNNModel."""

    def __init__(self, vocab_size: int, hidden: int, layers: int) -> None:
        super().__init__()
        self.vocab_size = vocab_size
        self.rnn = nn.LSTM(vocab_size, hidden, layers)
        self.linear = nn.Linear(hidden, vocab_size)

    def forward(self, x: torch.Tensor, state):  # x: (B, T) ids
        one_hot = F.one_hot(x.T.long(), self.vocab_size).float()  # (T, B, V)
        y, state = self.rnn(one_hot, state)
        return self.linear(y.reshape(-1, y.shape[-1])), state


def d2l_train_windows(model: D2LStyleModel, windows: list, lr: float = 1.0) -> int:
    """The book's loop: SGD, a loss.item() every batch, clipping by a hand-computed norm."""
    optimizer = torch.optim.SGD(model.parameters(), lr)
    state, chars, total_loss = None, 0, 0.0
    for x, y in windows:  # (T, B) windows, turned into the book's (B, T)
        if state is not None:
            state = tuple(s.detach() for s in state)
        y_hat, state = model(x.T, state)
        loss = F.cross_entropy(y_hat, y.reshape(-1)).mean()
        optimizer.zero_grad()
        loss.backward()
        norm = torch.sqrt(sum(torch.sum(p.grad**2) for p in model.parameters()))
        if norm > 1:
            for p in model.parameters():
                p.grad[:] *= 1 / norm
        optimizer.step()
        total_loss += loss.item() * y.numel()  # the book's per-batch read-back to the host
        chars += y.numel()
    return chars


def d2l_sample(model: D2LStyleModel, length: int) -> int:
    """The book's predict loop: one character per call, its argmax read back to Python each time."""
    outputs, state = [0], None
    with torch.no_grad():
        for _ in range(length):
            y, state = model(torch.tensor([[outputs[-1]]]), state)
            outputs.append(int(y.argmax(dim=1).reshape(1)))
    return length


# --- chargen ------------------------------------------------------------------------------------


@dataclass
class Row:
    model: str
    what: str
    chars_per_sec: float
    spread: float
    limit: float | None  # characters per second the measured ceiling allows
    reference: float | None  # the d2l-style reference's characters per second, where there is one

    def as_dict(self) -> dict:
        return {
            "model": self.model,
            "what": self.what,
            "chars_per_sec": self.chars_per_sec,
            "spread": self.spread,
            "fraction_of_limit": self.chars_per_sec / self.limit if self.limit else None,
            "ratio_to_reference": self.chars_per_sec / self.reference if self.reference else None,
        }


def bench_model(
    name: str, config: ModelConfig, ids: np.ndarray, batch: int, bptt: int, ceiling: float, reference: bool
) -> list[Row]:
    torch.manual_seed(0)
    flops = forward_flops_per_char(config)
    batches = StreamBatches(ids, batch, bptt)
    windows = list(batches.epoch(0))[:12]
    model = CharRNN(config)
    train_config = TrainConfig(batch_size=batch, bptt=bptt, max_steps=1)
    optimizer = make_optimizer(model, train_config)

    def chargen_train() -> int:
        state, chars = model.init_state(batch), 0
        for x, y in windows:
            _, _, state, _ = train_step(model, optimizer, x, y, state, clip=1.0)
            chars += y.numel()
        return chars

    def chargen_sample(config: SampleConfig) -> int:
        sample_batch(model, vocab, config)
        return config.length * config.num_samples

    rows = []
    d2l = D2LStyleModel(config.vocab_size, config.hidden, config.layers) if reference else None
    ref_train = median_rate(lambda: d2l_train_windows(d2l, windows))[0] if d2l else None
    if ref_train:
        rows.append(Row(name, f"train, d2l-style reference (B={batch}, T={bptt})", ref_train, 0, None, None))
    rate, spread = median_rate(chargen_train)
    rows.append(
        Row(name, f"train (B={batch}, T={bptt})", rate, spread, ceiling * 1e9 / (3 * flops), ref_train)
    )

    val = ids[: min(len(ids), 200_000)]
    eval_rate, eval_spread = median_rate(lambda: evaluate_ids(model, val).chars, repeats=3)
    rows.append(Row(name, "evaluate", eval_rate, eval_spread, ceiling * 1e9 / flops, None))

    vocab = Vocab([chr(0x100 + i) for i in range(config.vocab_size)])  # any characters will do
    ref_sample = median_rate(lambda: d2l_sample(d2l, 1000), repeats=3)[0] if d2l else None
    if ref_sample:
        rows.append(Row(name, "sample 1 stream, d2l-style reference", ref_sample, 0, None, None))
    for streams, length in ((1, 3000), (64, 500)):
        sample_config = SampleConfig(length=length, num_samples=streams, seed=0)
        rate, spread = median_rate(lambda c=sample_config: chargen_sample(c), repeats=3)
        rows.append(
            Row(
                name,
                f"sample {streams} stream{'s' * (streams > 1)}",
                rate,
                spread,
                None,
                ref_sample if streams == 1 else None,
            )
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", default="../shared/corpora/timemachine.txt")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args()
    corpus = load_corpus(args.corpus)
    vocab_size = len(corpus.vocab)
    ids = np.asarray(corpus.ids)

    ceiling = matmul_ceiling(2048, 256, 1024)
    print(
        f"machine: {torch.get_num_threads()} threads, "
        f"nn.Linear ceiling {ceiling:.0f} GFLOP/s (2048x256 @ 256x1024)"
    )
    sizes = [
        ("2x256 lstm", ModelConfig(cell="lstm", vocab_size=vocab_size, hidden=256), 16, 64, True),
        # The d2l book's configuration, as the book has it: no dropout.
        (
            "2x256 lstm",
            ModelConfig(cell="lstm", vocab_size=vocab_size, hidden=256, dropout=0.0),
            32,
            35,
            True,
        ),
        ("2x512 lstm", ModelConfig(cell="lstm", vocab_size=vocab_size, hidden=512), 16, 64, False),
        ("2x256 gru", ModelConfig(cell="gru", vocab_size=vocab_size, hidden=256), 16, 64, False),
    ]
    rows: list[Row] = []
    for name, config, batch, bptt, reference in sizes:
        rows.extend(bench_model(name, config, ids, batch, bptt, ceiling, reference))
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    print(f"{'model':<11} {'what':<42} {'chars/s':>9} {'spread':>8} {'of limit':>9} {'vs ref':>7}")
    for row in rows:
        d = row.as_dict()
        limit = f"{d['fraction_of_limit']:.0%}" if d["fraction_of_limit"] else ""
        ratio = f"{d['ratio_to_reference']:.2f}x" if d["ratio_to_reference"] else ""
        print(
            f"{row.model:<11} {row.what:<42} {row.chars_per_sec:>9,.0f} "
            f"{row.spread:>8,.0f} {limit:>9} {ratio:>7}"
        )
    print(f"peak resident memory: {peak_mb:.0f} MB")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                {"ceiling_gflops": ceiling, "peak_rss_mb": peak_mb, "rows": [r.as_dict() for r in rows]},
                f,
                indent=2,
            )


if __name__ == "__main__":
    main()
