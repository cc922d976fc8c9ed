"""Dynamic-evaluation grid: a trained run's loss on a text with each combination of step size,
decay and segment length, to tune AdaptConfig's defaults. It prints the static loss, then for each
combination the adapted loss in nats per character and bpc, its gain over the static reading and
its time in seconds, and last the best combination as `chargen eval --adapt` flags.

    python -m chargen.bench adapt --model runs/ts --lr 1e-4,3e-4,1e-3 --decay 0,0.01,0.02 --segment 20,50

The text (the run's validation split unless --text names a file) is scored once statically, as
one sequential stream, then with dynamic evaluation for every combination; the gradient scale is
measured once per segment length on the run's training text. Krause et al. (2018) tuned the step
size and decay on validation text and report test figures, which is the way to use this too.
"""

from __future__ import annotations

import time

from chargen.adapt import DynamicEvaluator, GradientScale, score_ids
from chargen.bench import machine
from chargen.bench import parser as bench_parser
from chargen.checkpoint import load_model_weights, load_run
from chargen.config import AdaptConfig
from chargen.device import resolve_device, resolve_precision
from chargen.runs import require_one_text, run_gradient_scale, text_ids


def _floats(text: str) -> list[float]:
    return [float(x) for x in text.split(",") if x.strip()]


def main(argv: list[str] | None = None) -> None:
    parser = bench_parser("adapt", __doc__)
    parser.add_argument("--model", metavar="RUN_DIR", required=True, help="the trained run to adapt")
    parser.add_argument(
        "--text", metavar="TEXT_FILE", help="the text to score (default: the run's validation split)"
    )
    parser.add_argument(
        "--chars", metavar="N", type=int, help="score only the text's first N characters (default: all)"
    )
    parser.add_argument(
        "--lr",
        metavar="LIST",
        default=f"{AdaptConfig.lr}",
        help="step sizes, comma-separated, in units of each weight's training RMS gradient "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--decay",
        metavar="LIST",
        default=f"{AdaptConfig.decay}",
        help="decays, comma-separated: how hard each step pulls the weights back towards the trained "
        "ones, each in [0, 1] (default: %(default)s)",
    )
    parser.add_argument(
        "--segment",
        metavar="LIST",
        default=f"{AdaptConfig.segment}",
        help="characters scored between two steps, comma-separated (default: %(default)s)",
    )
    parser.add_argument(
        "--device", metavar="CHOICE", default="auto", help="auto, cpu, cuda or mps (default: %(default)s)"
    )
    machine.add_options(parser, "the arithmetic of every reading")
    args = parser.parse_args(argv)
    grid = [
        AdaptConfig(lr=lr, decay=decay, segment=int(segment))
        for segment in _floats(args.segment)
        for lr in _floats(args.lr)
        for decay in _floats(args.decay)
    ]
    machine.set_threads(args.threads)
    run = load_run(args.model)
    require_one_text(run)
    device = resolve_device(args.device)
    autocast = resolve_precision(args.precision, device)
    ids, _ = text_ids(run, args.text, "error")
    ids = ids[: args.chars + 1] if args.chars else ids
    model = load_model_weights(run, device)
    print(f"{machine.describe()}; --precision {args.precision}", flush=True)

    static = score_ids(model, ids, device, autocast).stats()
    print(
        f"{args.model} on {args.text or 'its validation split'}: {static.chars:,} characters, "
        f"static {static.loss:.4f} nats/char ({static.bpc:.4f} bpc) in {static.seconds:.1f} s",
        flush=True,
    )
    print(f"{'segment':>7} {'lr':>9} {'decay':>7} {'loss':>8} {'bpc':>8} {'gain':>8} {'seconds':>8}")
    best: tuple[float, AdaptConfig] | None = None
    scales: dict[int, GradientScale] = {}
    for config in grid:
        if config.segment not in scales:
            start = time.perf_counter()
            scales[config.segment], source = run_gradient_scale(run, model, config, device, autocast)
            print(
                f"  (gradient scale for segment {config.segment} on the {source}: "
                f"{time.perf_counter() - start:.1f} s)",
                flush=True,
            )
        evaluator = DynamicEvaluator(model, scales[config.segment], config, device, autocast)
        adapted = evaluator.read(ids).stats()
        print(
            f"{config.segment:>7} {config.lr:>9.2e} {config.decay:>7.3f} {adapted.loss:>8.4f} "
            f"{adapted.bpc:>8.4f} {static.loss - adapted.loss:>8.4f} {adapted.seconds:>8.1f}",
            flush=True,
        )
        if best is None or adapted.loss < best[0]:
            best = (adapted.loss, config)
    if best is not None:
        config = best[1]
        print(
            f"best: --adapt-lr {config.lr:g} --adapt-decay {config.decay:g} --adapt-segment {config.segment}"
        )
