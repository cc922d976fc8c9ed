"""The results of commands as tables: a finished run, a comparison, a run's description, an
evaluation, gradient decay; and the novelty line. Tables that are a command's result go to stdout,
the rest to stderr.
"""

from __future__ import annotations

import json
import math
import sys
import unicodedata
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.table import Table

from chargen.cli.render import Units, err, literal
from chargen.items import describe_mode

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    from chargen.catalogue import Entry, Found
    from chargen.compare import Comparison
    from chargen.evaluate import LossStats
    from chargen.finetune import Start
    from chargen.records import RunDescription, TrainSummary
    from chargen.runs import AdaptedEvaluation, FileAdaptation
    from chargen.scoring import Scores


def print_summary(summary: TrainSummary, units: Units) -> None:
    table = Table(title="training finished", show_header=False, title_justify="left")
    table.add_row("run", literal(summary.run_dir))
    table.add_row(
        "best validation",
        f"{summary.best.bpc:.4f} {units.bits}, {summary.best.loss:.4f} nats/{units.short}, "
        f"perplexity {summary.best.perplexity:.2f} (step {summary.best_step})",
    )
    table.add_row("final validation", f"{summary.final.bpc:.4f} {units.bits}")
    table.add_row(
        "steps", f"{summary.steps:,} ({summary.epochs:.2f} epochs, stopped by {summary.stopped_by})"
    )
    table.add_row(
        "speed", f"{summary.chars_per_sec:,.0f} {units.symbol}s/s over {summary.train_seconds:.0f} s"
    )
    table.add_row("clipped steps", f"{summary.clipped_fraction:.1%}")
    table.add_row("parameters", f"{summary.parameters:,}")
    err.print(table)
    if summary.best.items:  # a list
        err.print(f"next: chargen sample --model {literal(summary.run_dir)} --items 20 --new")
    else:
        err.print(f'next: chargen sample --model {literal(summary.run_dir)} --prefix "..."')


def print_comparison(comparison: Comparison, units: Units) -> None:
    """The comparison's table on stdout (it is the command's result), then where its files are."""
    table = Table(
        "cell",
        "parameters",
        f"{units.symbol}s/s",
        f"best validation {units.bits}",
        "clipped",
        "steps",
        title=f"{literal(comparison.out)} (seed {comparison.seed})",
        title_justify="left",
    )
    for row in comparison.rows:
        s = row.summary
        table.add_row(
            row.cell,
            f"{s.parameters:,}",
            f"{s.chars_per_sec:,.0f}",
            f"{s.best.bpc:.4f}",
            f"{s.clipped_fraction:.1%}",
            f"{s.steps:,}",
        )
    Console().print(table)
    written = [comparison.out / "compare.json", *([comparison.plot] if comparison.plot else [])]
    err.print(f"wrote {' and '.join(map(literal, written))}; each run is in {literal(comparison.out)}/<cell>")


def start_from_note(parent: Path, start: Start) -> str | None:
    """The line a fine-tune prints once it has started, saying what became of the characters of
    its text that the parent never saw (None when there were none)."""
    from chargen.vocab import describe_chars, drops_unknown

    said = []
    if start.new_chars:
        said.append(
            f"{len(start.new_chars)} new character(s) get their own rows: {describe_chars(start.new_chars)}"
        )
    if start.corpus.unknown:
        policy = start.parent.unknown
        if policy == "extend":  # rarer than the parent's --min-count, as in a run of its own
            done = "rarer than its --min-count became the unknown symbol"
        elif not drops_unknown(start.corpus.vocab, policy):
            done = "it never saw became its unknown symbol (--unknown replace)"
        else:
            why = "skip" if policy == "skip" else "replace: the parent has no unknown symbol"
            done = f"it never saw were left out (--unknown {why})"
        said.append(f"{start.corpus.unknown:,} character(s) {done}, leaving {len(start.corpus.ids):,}")
    return f"fine-tuning from {literal(parent)}: {'; '.join(said)}" if said else None


def print_run_info(model: Path, facts: RunDescription) -> None:
    """The facts of checkpoint.describe as a table."""
    from chargen.vocab import quoted

    out = Console()
    m, corpus, summary, plan = facts.info.model, facts.info.corpus, facts.summary, facts.info.plan
    units = Units(facts.vocab.symbol)
    table = Table(show_header=False, title=literal(model), title_justify="left")
    table.add_row(
        "model",
        f"{m.layers}x{m.hidden} {m.cell}, embedding {m.embed}, "
        f"dropout {m.dropout}, weight drop {m.recurrent_drop}, {facts.parameters:,} parameters",
    )
    if plan:
        speed = f" at {plan.chars_per_sec:,.0f} {units.symbol}s/s measured" if plan.chars_per_sec else ""
        table.add_row(
            "size",
            f"{m.size}: {plan.size}, planned for {plan.chars / 1e6:.1f}M {units.symbol}s "
            f"({plan.epochs:.1f} passes){speed}",
        )
    vocab = facts.vocab
    chars = "".join(getattr(vocab, "chars", None) or [])
    shown = f": {literal(quoted(chars))}" if chars else ""  # a combining mark escaped, not fused
    table.add_row("vocabulary", f"{len(vocab)} {vocab.kind}{shown}")
    # The list's mode as messages say it: a separator quoted, its line breaks and other control
    # characters escaped (\n), so that it cannot break the table or be read as markup ([b]).
    items = facts.info.text.items
    text = {**facts.info.text.to_dict(), "items": items and describe_mode(items)}
    table.add_row("text", literal(", ".join(f"{k} {v}" for k, v in text.items() if v not in (None, False))))
    counts = f"{corpus.tokens:,} symbols, {corpus.unknown:,} unknown"
    table.add_row("corpus", f"{literal(corpus.name)} ({counts}) {literal(corpus.path)}")
    if corpus.items:
        table.add_row(
            "items",
            f"{corpus.items:,} ({literal(text['items'])}), {corpus.held_out_items:,} held out at random "
            f"(seed {corpus.split_seed})",
        )
    parent = facts.info.parent
    if parent:
        table.add_row(
            "started from",
            f"{literal(parent['path'])} ({parent['weights']}, sha256 {parent['weights_sha256'][:16]}...; "
            f"unknown {facts.info.unknown})",
        )
    t = facts.info.train
    table.add_row(
        "training",
        f"batch {t.batch_size}, bptt {t.bptt}, lr {t.lr:g}, clip {t.clip}, "
        f"seed {t.seed}; limits as started: {t.limits()}",
    )
    table.add_row("progress", f"{facts.steps} steps" if facts.steps is not None else "no checkpoint")
    if facts.best:
        after = f"; {summary.chars_per_sec:,.0f} {units.symbol}s/s" if summary else " so far"
        table.add_row(
            "best validation",
            f"{facts.best.bpc:.4f} {units.bits}, perplexity {facts.best.perplexity:.2f} "
            f"(step {facts.best_step}){after}",
        )
    for name, size in facts.files.items():
        table.add_row("file", f"{literal(name)}  {size:,} bytes")
    for problem in facts.problems:
        table.add_row("[bold red]problem[/]", literal(problem))
    out.print(table)


def print_eval(label: str, stats: LossStats, unknown: str, units: Units) -> None:
    table = Table(show_header=False, title=literal(label))
    if stats.items:
        table.add_row("items", f"{stats.items:,}")
        table.add_row(f"{units.symbol}s", f"{stats.chars:,} (each item's end counted as one)")
    else:
        table.add_row(f"{units.symbol}s", f"{stats.chars:,}")
    table.add_row("loss", f"{stats.loss:.4f} nats/{units.short}")
    if stats.items:
        table.add_row("loss per item", f"{stats.loss_per_item:.3f} nats")
    table.add_row("perplexity", f"{stats.perplexity:.3f}")
    table.add_row(f"bits per {units.symbol}", f"{stats.bpc:.4f}")
    table.add_row("speed", f"{stats.chars_per_sec:,.0f} {units.symbol}s/s")
    if stats.unknown:
        done = {"replace": "replaced", "skip": "skipped"}[unknown]
        table.add_row("unknown characters", f"{stats.unknown:,} ({done})")
    Console().print(table)


def print_adapted_eval(label: str, result: AdaptedEvaluation, unknown: str, units: Units) -> None:
    """eval --adapt: the static and the adapted figures side by side, with the time each took."""
    static, adapted, config = result.static, result.adapted, result.config
    table = Table("", "static", "adapted", title=literal(label))
    table.add_row(f"loss (nats/{units.short})", f"{static.loss:.4f}", f"{adapted.loss:.4f}")
    table.add_row("perplexity", f"{static.perplexity:.3f}", f"{adapted.perplexity:.3f}")
    table.add_row(f"bits per {units.symbol}", f"{static.bpc:.4f}", f"{adapted.bpc:.4f}")
    table.add_row("time", f"{static.seconds:.1f} s", f"{adapted.seconds:.1f} s")
    table.add_row(f"{units.symbol}s", f"{static.chars:,}", f"{adapted.chars:,}")
    Console().print(table)
    if static.unknown:
        done = {"replace": "replaced", "skip": "skipped"}[unknown]
        err.print(f"{static.unknown:,} unknown character{'s' * (static.unknown != 1)} {done}")
    err.print(
        f"adapting: lr {config.lr:g}, decay {config.decay:g}, segment {config.segment}; gradient "
        f"scale measured on the {result.scale_source} in {result.scale_seconds:.1f} s",
        soft_wrap=True,
    )


def print_adaptation(path: Path, adapted: FileAdaptation, units: Units) -> None:
    """sample --adapt-on: on stderr, what adapting to the text did on its held-out end."""
    static, after = adapted.static, adapted.adapted
    err.print(
        f"adapted to {path} ({adapted.chars:,} {units.symbol}s, {adapted.seconds:.1f} s); on its last "
        f"{static.chars:,} {units.symbol}s, adapted on the rest: {static.bpc:.3f} {units.bits} before, "
        f"{after.bpc:.3f} after",
        soft_wrap=True,
        markup=False,
    )


def _shown(text: str) -> str:
    """A line as the table prints it: control characters (a lone CR, ESC, NUL, ...; tab aside) as
    escapes such as \\x1b, so that a scored line cannot move the cursor or recolour the terminal.
    --json gives the text exactly."""
    if text.isprintable():
        return text
    return "".join(c if c == "\t" or unicodedata.category(c) != "Cc" else f"\\x{ord(c):02x}" for c in text)


def print_scores(scores: Scores, as_json: bool, unknown: str, units: Units) -> None:
    """A row per line on stdout, written as it is made, then the whole text's figures: after the
    rows, or on stderr with --json, where stdout holds only one JSON object per line of the text."""
    out = sys.stdout
    if as_json:
        for unit in scores:
            out.write(json.dumps(unit.to_dict(), ensure_ascii=False) + "\n")
    else:
        out.write(f"{units.bits:>7} {units.short + 's':>7} {'logprob':>10}  {scores.unit}\n")
        for unit in scores:
            bpc = "-" if unit.bpc is None else f"{unit.bpc:.3f}"
            out.write(f"{bpc:>7} {unit.chars:>7,} {unit.logprob:>10.2f}  {_shown(unit.text)}\n")
    stats = scores.stats
    summary = (
        f"{len(scores):,} {scores.unit}{'s' * (len(scores) != 1)}, {stats.chars:,} "
        f"{units.symbol}{'s' * (stats.chars != 1)}: {stats.bpc:.4f} bits per {units.symbol}, "
        f"loss {stats.loss:.4f} nats/{units.short}, perplexity {stats.perplexity:.3f}"
    )
    if stats.unknown:
        done = {"replace": "replaced", "skip": "skipped"}[unknown]
        summary += f"; {stats.unknown:,} unknown character{'s' * (stats.unknown != 1)} {done}"
    if as_json:
        err.print(summary, markup=False, highlight=False, soft_wrap=True)
    else:
        out.write(summary + "\n")
    out.flush()


def print_novelty(shares: list[float], n: int, units: Units) -> None:
    """On stderr, so stdout stays the generated text alone."""
    if not shares:
        err.print(f"novelty: the sample is shorter than {n} {units.symbol}s; nothing to compare")
        return
    mean = sum(shares) / len(shares)
    err.print(
        f"novelty: {mean:.1%} of the sample's {n}-{units.symbol} sequences occur verbatim in the training "
        "text" + (f" (mean of {len(shares)} samples)" if len(shares) > 1 else "")
    )


def print_gradients(label: str, norms: Any) -> None:
    """The gradient norm k steps back, and how many orders of magnitude it fell since k = 1."""
    table = Table("k steps back", "gradient norm", "orders of magnitude below k = 1", title=literal(label))
    for k in (1, 2, 3, 5, 10, 20, 30, 40, 50, 75, 100, 150, 200):
        if k <= len(norms):
            fall = math.log10(norms[0] / norms[k - 1]) if norms[k - 1] > 0 else math.inf
            table.add_row(str(k), f"{norms[k - 1]:.3e}", f"{fall:.1f}")
    Console().print(table)


def print_corpora(entries: Iterable[Entry], find: Callable[[Entry], Found]) -> None:
    """The catalogue's corpora and where each would come from now; then, on stderr, why loading
    refuses any (a file in $CHARGEN_CORPORA not the catalogue's, or no such directory)."""
    table = Table("name", "what", "size", "licence", "source now")
    refusals = []
    for entry in entries:
        found = find(entry)
        now = f"refused: {found.reason}" if found.refusal else found.kind
        table.add_row(entry.name, entry.title, f"{entry.bytes / 1e6:.1f} MB", entry.licence, now)
        if found.refusal:
            refusals.append(f"{entry.name} cannot be loaded: {found.refusal}")
    Console().print(table)
    for refusal in refusals:
        err.print(literal(refusal), soft_wrap=True)
