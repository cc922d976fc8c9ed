"""Items benchmark: chargen on a list of names against makemore's figures, on makemore's own split.
It prints, for each budget and seed, the test loss in nats per character (each name's end counted)
and per name, the share of 1,000 sampled names that are new, then ten samples.

    python -m chargen.bench items --corpus ../shared/corpora/names.txt --budgets 1m,3m --seeds 0,1

makemore (Karpathy) holds out 1,000 of its 32,033 names as a test set, drawn by
`torch.manual_seed(3407)` and then `torch.randperm(number_of_names)`: the last 1,000 indices. This
benchmark draws the same 1,000, trains chargen's defaults with `--items lines` on the other names
for each time budget (chargen holds out a random 10% of those for its own validation), then reports
the test loss per character with each name's end counted as one (makemore's measure), the share of
1,000 sampled names that are in neither part of the list, and ten samples. makemore's README gives
about 1.92 for its default transformer after long training; on this project's 2-core machine that
transformer reached 2.0126 in 3 minutes (../shared/BENCHMARKS.md).
"""

from __future__ import annotations

import dataclasses
import json
import statistics
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from chargen.bench import machine, refuse_kept_runs, run_name
from chargen.bench import parser as bench_parser
from chargen.bench.quality import _overrides
from chargen.checkpoint import load_model_weights, load_run
from chargen.config import SampleConfig, TextConfig, parse_duration
from chargen.corpus import load_corpus
from chargen.item_sample import sample_items
from chargen.runs import evaluate_run
from chargen.training import train

MAKEMORE_SEED = 3407  # makemore's default --seed, which also draws its test set
TEST_NAMES = 1000
SAMPLES = 1000
MAKEMORE = {"transformer, long training (its README)": "~1.92", "transformer, 3 min on 2 cores": "2.0126"}


@dataclass
class Result:
    budget: float
    seed: int
    size: str
    steps: int
    test_loss: float  # nats per character, each name's end counted
    test_loss_per_name: float  # nats
    new_share: float  # of the sampled names, those in neither the training nor the test names
    samples: list[str]


def makemore_split(names: list[str]) -> tuple[list[str], list[str]]:
    """makemore's training and test names: the test set is the last 1,000 of a seeded permutation."""
    generator = torch.Generator().manual_seed(MAKEMORE_SEED)
    order = torch.randperm(len(names), generator=generator).tolist()
    test_size = min(TEST_NAMES, len(names) // 10)
    return [names[i] for i in order[:-test_size]], [names[i] for i in order[-test_size:]]


def run_budget(
    train_file: Path, test_file: Path, listed: set[str], budget: float, seed: int, folder: Path, args: Any
) -> Result:
    model_config, train_config = _overrides(args.set)
    out = folder / run_name(budget, seed)
    config = dataclasses.replace(train_config, max_time=budget, seed=seed, precision=args.precision)
    corpus = load_corpus(train_file, TextConfig(items="lines"))
    summary = train(corpus, model_config, config, out=out)
    test = evaluate_run(out, test_file)
    run = load_run(out)
    m = run.model_config
    model = load_model_weights(run)
    items, _, _ = sample_items(
        model, run.vocab, SampleConfig(seed=seed), SAMPLES, text_config=run.text_config
    )
    new = sum(item.text not in listed for item in items)
    return Result(
        budget,
        seed,
        m.label,
        summary.steps,
        test.loss,
        test.loss_per_item,
        new / len(items),
        [item.text for item in items[:10]],
    )


def main(argv: list[str] | None = None) -> None:
    parser = bench_parser("items", __doc__)
    parser.add_argument(
        "--corpus",
        metavar="FILE",
        default="../shared/corpora/names.txt",
        help="makemore's names.txt, one name per line (default: %(default)s)",
    )
    parser.add_argument(
        "--budgets",
        metavar="LIST",
        default="1m,3m",
        help="training times, comma-separated: seconds, or 90s, 3m, 1h (default: %(default)s)",
    )
    parser.add_argument(
        "--seeds",
        metavar="LIST",
        default="0,1",
        help="seeds, comma-separated; one run per budget and seed (default: %(default)s)",
    )
    machine.add_options(parser, "to train in")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="change one ModelConfig or TrainConfig field from its default; repeat it for several",
    )
    parser.add_argument("--json", metavar="FILE", help="also write the figures to this file")
    parser.add_argument(
        "--keep",
        metavar="DIR",
        help="keep the runs in this directory (60s-seed0, ...) instead of a temporary one; refused "
        "before any training if it already holds one of them",
    )
    args = parser.parse_args(argv)
    budgets = [parse_duration(b, "--budgets") or 0.0 for b in args.budgets.split(",")]
    seeds = [int(s) for s in args.seeds.split(",")]
    machine.set_threads(args.threads)
    refuse_kept_runs(parser, args.keep, budgets, seeds)
    text = Path(args.corpus).read_text(encoding="utf-8")
    names = [line.strip() for line in text.splitlines() if line.strip()]
    train_names, test_names = makemore_split(names)
    print(f"{machine.describe()}; --precision {args.precision}", flush=True)
    print(f"{len(names):,} names: {len(train_names):,} to train on, makemore's {len(test_names):,} to test")

    results = []
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(args.keep) if args.keep else Path(scratch)
        folder.mkdir(parents=True, exist_ok=True)
        train_file, test_file = Path(scratch) / "train.txt", Path(scratch) / "test.txt"
        train_file.write_text("\n".join(train_names) + "\n", encoding="utf-8")
        test_file.write_text("\n".join(test_names) + "\n", encoding="utf-8")
        for budget in budgets:
            for seed in seeds:
                r = run_budget(train_file, test_file, set(names), budget, seed, folder, args)
                results.append(r)
                print(
                    f"{budget:>6.0f} s  seed {seed}: test {r.test_loss:.4f} nats/char "
                    f"({r.test_loss_per_name:.3f} per name), {r.new_share:.1%} of {SAMPLES} samples new, "
                    f"{r.steps:,} steps, {r.size}",
                    flush=True,
                )
    print(
        f"\n{'budget':>7} {'seed':>5} {'model':>12} {'steps':>7} {'test loss':>10} {'per name':>9} {'new':>6}"
    )
    for r in results:
        print(
            f"{r.budget:>6.0f}s {r.seed:>5} {r.size:>12} {r.steps:>7,} {r.test_loss:>10.4f} "
            f"{r.test_loss_per_name:>9.3f} {r.new_share:>6.1%}"
        )
    for budget in budgets:
        losses = [r.test_loss for r in results if r.budget == budget]
        print(f"{budget:.0f} s: mean test loss {statistics.mean(losses):.4f}, worst {max(losses):.4f}")
    print("makemore: " + "; ".join(f"{k} {v}" for k, v in MAKEMORE.items()))
    for r in results:
        print(f"\n--- {r.budget:.0f} s, seed {r.seed}: ten samples ---\n" + "\n".join(r.samples))
    if args.json:
        data = [dataclasses.asdict(r) for r in results]
        Path(args.json).write_text(json.dumps(data, indent=2, ensure_ascii=False))
