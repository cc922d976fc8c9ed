"""Quality benchmark: how good a model chargen's defaults make in a given training time.

    python -m chargen.bench quality --corpus ../shared/corpora/tinyshakespeare.txt --budgets 95s,3m,10m

For each budget (and seed) it trains with the default settings and `--max-time` only (evaluation
is not counted against the budget, as in nanoGPT), then reports the validation loss on the last
10% of the text twice: chargen's own figure, with the state carried through the whole validation
text as when the model generates, and a windowed one, with the state reset every 64 characters,
the context nanoGPT's block-64 "baby GPT" has. The reference figures are from ../shared/BENCHMARKS.md,
measured on the team's 2-core machines.
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
from dataclasses import dataclass
from pathlib import Path

from chargen.checkpoint import load_model_weights, load_run
from chargen.config import ModelConfig, SampleConfig, TextConfig, TrainConfig, parse_duration
from chargen.corpus import load_corpus
from chargen.device import resolve_precision
from chargen.evaluate import evaluate_windows
from chargen.sample import sample_batch
from chargen.train import train

WINDOW = 64  # the block size of nanoGPT's CPU baseline

# nats/char on tinyshakespeare's last 10%, measured here; keyed by budget in seconds.
NANOGPT_BABY_GPT = {95.0: "1.886", 180.0: "1.718", 600.0: "1.506-1.536"}
TARGETS = {95.0: 1.50, 180.0: 1.40, 600.0: 1.35}
# bits per character on The Time Machine's last 10% in 3 minutes: the targets, raw and with the
# d2l preset, and what the d2l book's recipe reaches here (on the d2l text).
TIME_MACHINE_TARGET_BPC = {None: 1.95, "d2l": 2.0}
D2L_RECIPE_BPC = "2.48-2.51"


@dataclass
class Result:
    budget: float  # seconds of training
    seed: int
    size: str  # the model --size auto chose
    steps: int
    parameters: int
    carried: float  # validation loss in nats/char, state carried through the text
    windowed: float  # the same with the state reset every WINDOW characters
    sample: str

    def as_dict(self) -> dict:
        return {
            "budget_seconds": self.budget,
            "seed": self.seed,
            "size": self.size,
            "steps": self.steps,
            "parameters": self.parameters,
            "carried_nats": self.carried,
            "carried_bpc": self.carried / math.log(2),
            f"windowed_{WINDOW}_nats": self.windowed,
            "sample": self.sample,
        }


def _run_name(budget: float, seed: int) -> str:
    return f"{int(budget)}s-seed{seed}"


def run_budget(corpus_path: str, preset: str | None, budget: float, seed: int, folder: Path) -> Result:
    corpus = load_corpus(corpus_path, TextConfig(preset=preset))
    out = folder / _run_name(budget, seed)
    summary = train(corpus, ModelConfig(), TrainConfig(max_time=budget, seed=seed), out=out)
    run = load_run(out)
    m = run.model_config
    size = f"{m.layers}x{m.hidden} d{m.dropout:g}"
    model = load_model_weights(run)
    autocast = resolve_precision(run.train_config.precision, next(model.parameters()).device)
    windowed = evaluate_windows(model, run.validation_ids(), WINDOW, autocast=autocast)
    sample = sample_batch(model, run.vocab, SampleConfig(length=300, seed=seed), text_config=run.text_config)
    return Result(
        budget, seed, size, summary.steps, summary.parameters, summary.best.loss, windowed.loss, sample[0]
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m chargen.bench quality", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--corpus", default="../shared/corpora/tinyshakespeare.txt")
    parser.add_argument("--budgets", default="95s,3m,10m", help="training times, comma-separated")
    parser.add_argument("--seeds", default="0,1", help="one run per budget and seed")
    parser.add_argument("--preset", choices=["d2l"], help="the text preprocessing preset to train with")
    parser.add_argument("--json", help="also write the figures to this file")
    parser.add_argument("--keep", help="keep the runs in this directory instead of a temporary one")
    args = parser.parse_args(argv)
    budgets = [parse_duration(b, "--budgets") or 0.0 for b in args.budgets.split(",")]
    seeds = [int(s) for s in args.seeds.split(",")]
    shakespeare = Path(args.corpus).name.startswith("tinyshakespeare")
    time_machine = Path(args.corpus).name.startswith("timemachine")
    if args.keep:  # refuse before the first run rather than after it
        names = [_run_name(budget, seed) for budget in budgets for seed in seeds]
        taken = [name for name in names if (Path(args.keep) / name).exists()]
        if taken:
            parser.error(f"--keep {args.keep} already holds {', '.join(taken)}; choose another directory")

    results = []
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(args.keep) if args.keep else Path(scratch)
        for budget in budgets:
            for seed in seeds:
                result = run_budget(args.corpus, args.preset, budget, seed, folder)
                results.append(result)
                print(
                    f"{budget:>6.0f} s  seed {seed}: {result.carried:.4f} nats/char carried "
                    f"({result.carried / math.log(2):.3f} bpc), {result.windowed:.4f} windowed-{WINDOW}, "
                    f"{result.steps:,} steps, {result.size}",
                    flush=True,
                )

    print(
        f"\n{'budget':>7} {'seed':>5} {'model':>14} {'params':>9} {'steps':>7} {'carried':>8} {'bpc':>6} "
        f"{f'win-{WINDOW}':>7} {'target':>10} {'reference':>12}"
    )
    for r in results:
        target = reference = ""
        if shakespeare and r.budget in TARGETS:
            target, reference = f"{TARGETS[r.budget]:.2f} nats", NANOGPT_BABY_GPT[r.budget] + " nats"
        elif time_machine and r.budget == 180.0:
            target = f"{TIME_MACHINE_TARGET_BPC[args.preset]:.2f} bpc"
            reference = f"{D2L_RECIPE_BPC} bpc" if args.preset == "d2l" else ""
        print(
            f"{r.budget:>6.0f}s {r.seed:>5} {r.size:>14} {r.parameters:>9,} {r.steps:>7,} {r.carried:>8.4f} "
            f"{r.carried / math.log(2):>6.3f} {r.windowed:>7.4f} {target:>10} {reference:>12}"
        )
    for r in results:
        print(f"\n--- {r.budget:.0f} s, seed {r.seed} ---\n{r.sample}")
    if args.json:
        Path(args.json).write_text(json.dumps([r.as_dict() for r in results], indent=2, ensure_ascii=False))
