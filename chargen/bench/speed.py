"""Speed benchmark: chargen's training, evaluation and sampling throughput, measured against the
machine's own matrix-multiply ceiling and a d2l-style reference, in one process on the same data.
It prints one row per measurement: characters per second (the median of several turns) and their
spread, that rate as a share of the fp32 and bf16 limits, and its ratio to the reference's.

    python -m chargen.bench speed --corpus ../shared/corpora/timemachine.txt --json bench.json

Not a test: timings on shared machines are noisy, so it reports medians over several runs, times
the things it compares in turn (round-robin) so that a slow moment hurts both alike, gives a ratio
to a reference as the median of the ratios within turns (paired_ratio), and never runs in CI.
Sampling is timed through the `chargen sample` command itself, start-up subtracted.

Each row's limit is the characters per second that the fp32 nn.Linear ceiling would allow (FLOPs
per character counted, training taken as three times the forward pass); bf16 rows are also shown
against the bf16 ceiling, which on a chip with bf16 units is several times higher. oneDNN's fused
fp32 recurrent kernels can run faster than nn.Linear's fp32 path, so an fp32 row may pass 100%.
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from chargen import stepping
from chargen.bench import machine
from chargen.bench import parser as bench_parser
from chargen.bench.machine import matmul_ceiling
from chargen.bench.reference import (
    D2LStyleModel,
    ReferenceConfig,
    ReferenceTrainer,
    d2l_sample,
    d2l_train_windows,
)
from chargen.config import ModelConfig, TrainConfig
from chargen.corpus import Corpus, load_corpus
from chargen.data import StreamBatches
from chargen.device import precision_name, resolve_precision
from chargen.evaluate import evaluate_ids
from chargen.model import CharRNN
from chargen.recipe import with_batch, with_learning_rate
from chargen.step import make_optimizer, train_step
from chargen.training import train

GATES = {"lstm": 4, "gru": 3, "rnn": 1}


def turns(works: dict[str, Callable[[], int]], repeats: int = 5) -> dict[str, list[float]]:
    """Items per second of each of `works` (which return how many items they processed) at each
    of `repeats` turns. One warm-up call each; then in every turn each work runs once, in reverse
    order every other turn, so that neither is always the one that follows the other."""
    for work in works.values():
        work()
    rates: dict[str, list[float]] = {name: [] for name in works}
    for turn in range(repeats):
        for name in list(works)[:: 1 if turn % 2 == 0 else -1]:
            start = time.perf_counter()
            items = works[name]()
            rates[name].append(items / (time.perf_counter() - start))
    return rates


def median_spread(rates: list[float]) -> tuple[float, float]:
    return statistics.median(rates), max(rates) - min(rates)


def side_by_side(works: dict[str, Callable[[], int]], repeats: int = 5) -> dict[str, tuple[float, float]]:
    """Median and spread (max - min) of items per second for each of `works`, taking turns."""
    return {name: median_spread(r) for name, r in turns(works, repeats).items()}


def paired_ratio(rates: list[float], reference: list[float]) -> float:
    """The median over turns of one work's rate over the reference's in the same turn. A neighbour
    that slows this shared machine for a second or two slows both works of a turn alike, so the
    ratio within a turn varies much less than either rate does."""
    return statistics.median(a / b for a, b in zip(rates, reference, strict=True))


def forward_flops_per_char(config: ModelConfig) -> float:
    """Multiply-adds x 2 of the recurrent and output layers for one character (pointwise work and
    the embedding lookup are small and left out). Training is counted as three times this."""
    gates = GATES[config.cell] * config.hidden
    flops, inputs = 0.0, config.embed
    for _ in range(config.layers):
        flops += 2 * gates * (inputs + config.hidden)
        inputs = config.hidden
    return flops + 2 * config.hidden * config.vocab_size


# --- chargen ------------------------------------------------------------------------------------


@dataclass
class Row:
    model: str
    what: str
    chars_per_sec: float
    spread: float
    limit: float | None  # characters per second the fp32 ceiling allows (the yardstick)
    reference: float | None  # the d2l-style reference's characters per second, where there is one
    bf16_limit: float | None = None  # for a bf16 row: what the bf16 ceiling allows
    paired: float | None = None  # paired_ratio against the reference, where both took turns

    def ratio_of_medians(self) -> float | None:
        return self.chars_per_sec / self.reference if self.reference else None

    def as_dict(self) -> dict:
        return {
            "model": self.model,
            "what": self.what,
            "chars_per_sec": self.chars_per_sec,
            "spread": self.spread,
            "limit": self.limit,
            "fraction_of_limit": self.chars_per_sec / self.limit if self.limit else None,
            "fraction_of_bf16_limit": self.chars_per_sec / self.bf16_limit if self.bf16_limit else None,
            "ratio_to_reference": self.paired or self.ratio_of_medians(),
            "ratio_of_medians": self.ratio_of_medians(),
        }


PRECISIONS: list[torch.dtype | None] = [None]  # what every row measures; main() sets it from --precision


def precisions() -> list[torch.dtype | None]:
    """fp32, and bf16 where --precision asks for it (auto: where chargen would pick it by itself)."""
    return PRECISIONS


def bench_training(
    name: str,
    config: ModelConfig,
    ids: np.ndarray,
    batch: int,
    bptt: int,
    ceilings: dict[str, float],
    reference: bool,
    sgd_too: bool = False,
) -> list[Row]:
    """Training steps of chargen at each precision and, if asked, of the d2l-style reference, in turn.
    `sgd_too`: also chargen's step in fp32 with the reference's optimiser, torch's SGD (fused), in
    AdamW's place: what of the difference is the optimiser (AdamW reads and writes two moments per
    weight besides the weight)."""
    windows = [(w.x, w.y) for w in StreamBatches(ids, batch, bptt).epoch(0)][:12]
    flops = 3 * forward_flops_per_char(config)

    def chargen_trainer(autocast: torch.dtype | None, sgd: bool = False) -> Callable[[], int]:
        torch.manual_seed(0)
        model = CharRNN(config)
        optimizer: torch.optim.Optimizer = (
            torch.optim.SGD(model.parameters(), lr=1e-3, fused=True)
            if sgd
            else make_optimizer(model, TrainConfig(batch_size=batch, bptt=bptt, max_steps=1, lr=1e-3))
        )

        def work() -> int:
            state, chars = model.init_state(batch), 0
            for x, y in windows:
                _, _, state, _ = train_step(model, optimizer, x, y, state, 1.0, autocast)
                chars += y.numel()
            return chars

        return work

    works = {precision_name(p): chargen_trainer(p) for p in precisions()}
    if sgd_too:
        works["fp32, SGD in AdamW's place"] = chargen_trainer(None, sgd=True)
    if reference:
        d2l = D2LStyleModel(config.vocab_size, config.hidden, config.layers)
        works["reference"] = lambda: d2l_train_windows(d2l, windows)
    every = turns(works, repeats=9 if reference else 5)
    ref_turns = every.pop("reference", None)
    ref = median_spread(ref_turns) if ref_turns else None
    what = f"train, B={batch} T={bptt} dropout {config.dropout:g}"
    rows = [Row(name, f"{what}, d2l-style reference", *ref, None, None)] if ref else []
    for precision, rates in every.items():
        limit, bf16_limit = ceilings["fp32"] * 1e9 / flops, ceilings["bf16"] * 1e9 / flops
        row = Row(name, f"{what}, {precision}", *median_spread(rates), limit, ref[0] if ref else None)
        paired = paired_ratio(rates, ref_turns) if ref_turns else None
        rows.append(replace(row, bf16_limit=bf16_limit if precision == "bf16" else None, paired=paired))
    return rows


def bench_default_training(
    name: str, config: ModelConfig, ids: np.ndarray, ceilings: dict[str, float]
) -> list[Row]:
    """chargen's training at its default batch and window, against the quality benchmark's plain
    reference (reference.py) at its own, in each precision, in turn."""
    defaults = with_learning_rate(with_batch(TrainConfig(max_steps=1), listed=False), config)
    windows = [(w.x, w.y) for w in StreamBatches(ids, defaults.batch_size, defaults.bptt).epoch(0)][:12]
    plain = ReferenceConfig()
    flops = 3 * forward_flops_per_char(config)

    def chargen_trainer(autocast: torch.dtype | None) -> Callable[[], int]:
        torch.manual_seed(0)
        model = CharRNN(config)
        optimizer = make_optimizer(model, defaults)

        def work() -> int:
            state, chars = model.init_state(defaults.batch_size), 0
            for x, y in windows:
                _, _, state, _ = train_step(model, optimizer, x, y, state, defaults.clip, autocast)
                chars += y.numel()
            return chars

        return work

    def reference_trainer(autocast: torch.dtype | None) -> Callable[[], int]:
        trainer = ReferenceTrainer(config.vocab_size, 0, autocast, plain)
        inputs, targets = trainer.windows(ids[: 13 * plain.batch_size * plain.bptt + 1])

        def work() -> int:
            trainer.state = None
            for start in range(0, 12 * plain.bptt, plain.bptt):
                trainer.step(inputs[start : start + plain.bptt], targets[start : start + plain.bptt], 0.5)
            return 12 * plain.batch_size * plain.bptt

        return work

    works: dict[str, Callable[[], int]] = {}
    for p in precisions():
        works[f"chargen {precision_name(p)}"] = chargen_trainer(p)
        works[f"reference {precision_name(p)}"] = reference_trainer(p)
    every = turns(works, repeats=9)
    rows = []
    for p in precisions():
        precision = precision_name(p)
        ref_turns, rates = every[f"reference {precision}"], every[f"chargen {precision}"]
        ref = median_spread(ref_turns)
        limit = ceilings["fp32"] * 1e9 / flops
        what = f"B={plain.batch_size} T={plain.bptt}, plain reference (quality bench), {precision}"
        rows.append(Row(name, what, *ref, limit, None))
        what = f"train, defaults B={defaults.batch_size} T={defaults.bptt} dropout 0, {precision}"
        paired = paired_ratio(rates, ref_turns)
        rows.append(Row(name, what, *median_spread(rates), limit, ref[0], paired=paired))
    return rows


def bench_evaluation(
    name: str, config: ModelConfig, ids: np.ndarray, ceilings: dict[str, float]
) -> list[Row]:
    """`evaluate_ids` on up to 200,000 characters, at each precision."""
    torch.manual_seed(0)
    model = CharRNN(config)
    val = ids[: min(len(ids), 200_000)]
    works = {
        precision_name(p): (lambda p=p: evaluate_ids(model, val, autocast=p).chars) for p in precisions()
    }
    limit = 1e9 / forward_flops_per_char(config)
    return [
        Row(
            name,
            f"evaluate, {precision}",
            rate,
            spread,
            ceilings["fp32"] * limit,
            None,
            ceilings["bf16"] * limit if precision == "bf16" else None,
        )
        for precision, (rate, spread) in side_by_side(works, repeats=3).items()
    ]


def command_seconds(args: list[str], repeats: int = 3) -> float:
    """Median wall time of running `python -m chargen ARGS`, output discarded."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "chargen", *args],
            check=True,
            stdout=subprocess.DEVNULL,
            env={**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads())},  # as --threads says
        )
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def bench_sampling(name: str, corpus: Corpus, config: ModelConfig, reference: bool) -> list[Row]:
    """`chargen sample` from the command line, one stream and 64, its start-up (loading, the prefix)
    subtracted; and the d2l-style reference's per-character loop, in this process."""
    rows = []
    ref = None
    if reference:
        d2l = D2LStyleModel(config.vocab_size, config.hidden, config.layers)
        ref = side_by_side({"ref": lambda: d2l_sample(d2l, 1000)}, repeats=3)["ref"][0]
        rows.append(Row(name, "sample 1 stream, d2l-style reference", ref, 0, None, None))
    with tempfile.TemporaryDirectory() as folder:
        run = Path(folder) / "run"
        train(corpus, config, TrainConfig(max_steps=1, seed=0), out=run)  # weights to sample from
        base = ["sample", "--model", str(run), "--seed", "0", "--prefix", "The "]
        for streams, length in ((1, 40_000), (64, 2_000)):
            many = ["--num-samples", str(streams)]
            # The first uses measure the step settings (stepping.py): settle them, untimed.
            command_seconds([*base, *many, "--length", "0"], repeats=stepping.MEASUREMENTS)
            start_up = command_seconds([*base, *many, "--length", "0"])
            seconds = command_seconds([*base, *many, "--length", str(length)])
            rate = streams * length / max(seconds - start_up, 1e-9)
            what = f"sample {streams} stream{'s' * (streams > 1)} (chargen sample, start-up {start_up:.1f} s)"
            rows.append(Row(name, what, rate, 0, None, ref if streams == 1 else None))
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = bench_parser("speed", __doc__)
    parser.add_argument(
        "--corpus",
        metavar="FILE",
        default="../shared/corpora/timemachine.txt",
        help="text to train on, evaluate and sample from (default: %(default)s)",
    )
    machine.add_options(parser, "fp32: fp32 rows only; bf16: bf16 rows too; auto: bf16 where native")
    parser.add_argument(
        "--json",
        metavar="FILE",
        help="also write the figures (each row, the ceilings in GFLOP/s) to this file",
    )
    args = parser.parse_args(argv)
    machine.set_threads(args.threads)
    bf16 = resolve_precision(args.precision, torch.device("cpu"))
    PRECISIONS[:] = [None] if bf16 is None else [None, bf16]
    corpus = load_corpus(args.corpus)
    ids = np.asarray(corpus.ids)
    base = ModelConfig(vocab_size=len(corpus.vocab), layers=2, hidden=256, dropout=0.2)

    ceilings = {"fp32": matmul_ceiling(torch.float32), "bf16": matmul_ceiling(torch.bfloat16)}
    print(
        f"{machine.describe()}\nnn.Linear ceiling (2048x256 @ 256x1024) "
        f"{ceilings['fp32']:.0f} GFLOP/s in fp32, {ceilings['bf16']:.0f} in bf16; "
        f"--precision {args.precision}: rows in {', '.join(precision_name(p) for p in PRECISIONS)}",
        flush=True,
    )
    lstm, d2l_config = base, replace(base, dropout=0.0)  # the d2l book's configuration has no dropout
    measurements: list[Callable[[], list[Row]]] = [
        lambda: bench_training("2x256 lstm", lstm, ids, 16, 64, ceilings, reference=True),
        lambda: bench_training("2x256 lstm", d2l_config, ids, 32, 35, ceilings, reference=True, sgd_too=True),
        lambda: bench_default_training("2x256 lstm", d2l_config, ids, ceilings),
        lambda: bench_evaluation("2x256 lstm", lstm, ids, ceilings),
        lambda: bench_sampling("2x256 lstm", corpus, lstm, reference=True),
        lambda: bench_training(
            "2x512 lstm", replace(base, hidden=512), ids, 16, 64, ceilings, reference=False
        ),
        lambda: bench_evaluation("2x512 lstm", replace(base, hidden=512), ids, ceilings),
        lambda: bench_training(
            "2x256 gru", replace(base, cell="gru"), ids, 16, 64, ceilings, reference=False
        ),
        lambda: bench_evaluation("2x256 gru", replace(base, cell="gru"), ids, ceilings),
    ]
    print(
        f"{'model':<11} {'what':<58} {'chars/s':>9} {'spread':>8} {'of fp32 limit':>14} "
        f"{'of bf16 limit':>14} {'vs ref':>7}"
    )
    rows: list[Row] = []
    for measure in measurements:  # each row printed as soon as it is measured
        for row in measure():
            rows.append(row)
            d = row.as_dict()
            limit = f"{d['fraction_of_limit']:.0%}" if d["fraction_of_limit"] else ""
            bf16 = f"{d['fraction_of_bf16_limit']:.0%}" if d["fraction_of_bf16_limit"] else ""
            ratio = f"{d['ratio_to_reference']:.2f}x" if d["ratio_to_reference"] else ""
            print(
                f"{row.model:<11} {row.what:<58} {row.chars_per_sec:>9,.0f} "
                f"{row.spread:>8,.0f} {limit:>14} {bf16:>14} {ratio:>7}",
                flush=True,
            )
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak resident memory of this process: {peak_mb:.0f} MB")
    if args.json:
        with open(args.json, "w") as f:
            figures = {
                "ceilings_gflops": ceilings,
                "peak_rss_mb": peak_mb,
                "rows": [r.as_dict() for r in rows],
            }
            json.dump(figures, f, indent=2)
