"""GPU check: one command that says whether chargen works, and how fast, on a machine with a CUDA GPU.
It prints one line per check, ok or FAIL with its figures (characters/s, validation loss), and
exits with 1 if any failed.

    python -m chargen.bench gpu --seconds 60 --json gpu.json

It needs nothing beyond what chargen itself needs (torch, typer, rich, tqdm, safetensors, numpy,
and pytest for the first part) and nothing from the network; chargen need not be installed (run it
from a clone's root). It took about 3 minutes on an H200:

1. the tests that train, sample, evaluate and save (they pick the GPU by themselves), with CUDA;
2. training on the corpus for `--seconds` in fp32 and in bf16: characters per second, validation loss;
3. sampling speed with one stream and with 64;
4. the GPU-trained fp32 run loaded on the CPU: its validation loss there must equal the GPU's
   within 1e-3, and it must sample.

On a machine without a CUDA device it says so in one line and exits with 1. `--device cpu` runs
the same steps on the CPU, to rehearse the check where no GPU is lent.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from chargen.bench import machine
from chargen.bench import parser as bench_parser

# The test files whose tests train, sample, evaluate or save, and so run on the GPU when there is one.
DEVICE_TESTS = (
    "tests/test_model.py",
    "tests/test_train.py",
    "tests/test_sample.py",
    "tests/test_evaluate.py",
    "tests/test_checkpoint.py",
    "tests/test_info.py",
)
AGREEMENT = 1e-3  # nats/char between the GPU's validation loss and the CPU's, for the same weights
TEST_TIMEOUT = 300.0  # seconds


@dataclass
class Check:
    name: str
    ok: bool
    detail: str


def default_corpus() -> str | None:
    """tinyshakespeare beside the checkout (../shared/corpora), else None: the built-in corpus."""
    shared = Path("..") / "shared" / "corpora" / "tinyshakespeare.txt"
    return str(shared) if shared.exists() else None


def run_tests(device: str) -> Check:
    began = time.perf_counter()
    files = [f for f in DEVICE_TESTS if Path(f).exists()]
    if not files:
        return Check("tests", False, "no test files here: run this from the repository's root")
    try:
        done = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-rfE", "-p", "no:cacheprovider", *files],
            capture_output=True,
            text=True,
            timeout=TEST_TIMEOUT,
            env=None if device == "cuda" else {**os.environ, "CUDA_VISIBLE_DEVICES": ""},
        )
    except subprocess.TimeoutExpired:
        return Check("tests", False, f"did not finish in {TEST_TIMEOUT:.0f} s")
    lines = done.stdout.strip().splitlines()
    last = lines[-1] if lines else done.stderr.strip()[-200:]
    # pytest's one line per failure and error (-rfE), so that a failing check says which and why
    failures = [f"\n    {line[:300]}" for line in lines if line.startswith(("FAILED ", "ERROR "))]
    return Check(
        f"tests ({len(files)} files)",
        done.returncode == 0,
        f"{last} [{time.perf_counter() - began:.0f} s]{''.join(failures[:40])}",
    )


def main(argv: list[str] | None = None) -> None:
    parser = bench_parser("gpu", __doc__)
    parser.add_argument(
        "--corpus",
        metavar="FILE",
        default=default_corpus(),
        help="text to train on (default: ../shared/corpora/tinyshakespeare.txt, else the built-in corpus)",
    )
    parser.add_argument(
        "--seconds",
        metavar="X",
        type=float,
        default=60.0,
        help="training time per precision, in seconds (default: %(default)g)",
    )
    parser.add_argument(
        "--device",
        choices=["cuda", "cpu"],
        default="cuda",
        help="cuda: the check; cpu: a rehearsal of it where no GPU is lent (default: %(default)s)",
    )
    parser.add_argument("--no-tests", action="store_true", help="leave out the test suite part")
    parser.add_argument("--json", metavar="FILE", help="also write the figures to this file")
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit(
            f"error: no CUDA device: torch {torch.__version__} sees none on this machine "
            "(torch.cuda.is_available() is False); run the GPU check where a CUDA GPU is present"
        )

    from chargen.checkpoint import load_model_weights, load_run
    from chargen.config import ModelConfig, SampleConfig, TrainConfig
    from chargen.corpus import load_corpus
    from chargen.device import resolve_precision
    from chargen.evaluate import evaluate_ids
    from chargen.sample import sample_batch
    from chargen.training import train

    print(machine.describe(), flush=True)
    if args.device == "cuda":
        props = torch.cuda.get_device_properties(0)
        print(
            f"gpu: {props.name}, {props.total_memory / 2**30:.0f} GiB, CUDA {torch.version.cuda}, "
            f"bf16 supported: {torch.cuda.is_bf16_supported()}",
            flush=True,
        )
    checks: list[Check] = []
    figures: dict[str, Any] = {"machine": machine.describe(), "device": args.device}

    def report(check: Check) -> None:
        checks.append(check)
        print(f"{'ok  ' if check.ok else 'FAIL'} {check.name}: {check.detail}", flush=True)

    if not args.no_tests:
        report(run_tests(args.device))

    corpus = load_corpus(args.corpus)
    print(f"corpus: {corpus.name} ({len(corpus.ids):,} characters)", flush=True)
    device = torch.device(args.device)
    with tempfile.TemporaryDirectory() as folder:
        runs = {}
        for precision in ("fp32", "bf16"):
            out = Path(folder) / precision
            config = TrainConfig(max_time=args.seconds, seed=0, precision=precision, device=args.device)
            summary = train(corpus, ModelConfig(), config, out=out)
            runs[precision] = (out, summary)
            m = load_run(out).model_config
            detail = (
                f"{summary.chars_per_sec:,.0f} characters/s, validation {summary.best.loss:.4f} nats/char "
                f"after {summary.steps:,} steps ({m.layers}x{m.hidden}, dropout {m.dropout:g})"
            )
            figures[f"train_{precision}"] = {
                "chars_per_sec": summary.chars_per_sec,
                "val_loss": summary.best.loss,
                "steps": summary.steps,
                "model": f"{m.layers}x{m.hidden}",
            }
            learned = summary.best.loss < math.log(len(corpus.vocab))  # better than a uniform guess
            report(Check(f"train {args.seconds:g} s {precision}", learned, detail))

        out, summary = runs["fp32"]
        run = load_run(out)
        model = load_model_weights(run, device)
        for streams, length in ((1, 4000), (64, 1000)):
            config = SampleConfig(prefix="The ", length=length, seed=0, num_samples=streams)
            sample_batch(model, run.vocab, SampleConfig(length=50, num_samples=streams), device)  # warm-up
            began = time.perf_counter()
            sample_batch(model, run.vocab, config, device, run.text_config)
            rate = streams * length / (time.perf_counter() - began)
            figures[f"sample_{streams}"] = rate
            report(
                Check(f"sample {streams} stream{'s' * (streams > 1)}", rate > 0, f"{rate:,.0f} characters/s")
            )

        cpu_model = load_model_weights(run, "cpu")
        autocast = resolve_precision(run.train_config.precision, torch.device("cpu"), recorded=True)
        on_cpu = evaluate_ids(cpu_model, run.validation_ids(), "cpu", autocast=autocast).loss
        gap = abs(on_cpu - summary.best.loss)
        figures["cpu_val_loss"], figures["gpu_val_loss"] = on_cpu, summary.best.loss
        text = sample_batch(cpu_model, run.vocab, SampleConfig(length=80, seed=0), "cpu", run.text_config)[0]
        report(
            Check(
                "the fp32 run on the CPU",
                gap <= AGREEMENT and len(text) > 0,
                f"validation {on_cpu:.4f} on the CPU vs {summary.best.loss:.4f} on {args.device} "
                f"(difference {gap:.1e}, at most {AGREEMENT:g}); it samples: {text[:40]!r}",
            )
        )
    figures["checks"] = [c.__dict__ for c in checks]
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2, ensure_ascii=False))
    failed = [c.name for c in checks if not c.ok]
    print(f"\n{'FAILED: ' + ', '.join(failed) if failed else 'all checks passed'}")
    if failed:
        sys.exit(1)
