"""Pictures of training: bits per character, the gradient norm before clipping, and the learning
rate, against characters seen, for one run or several overlaid. Needs matplotlib (the `plot`
extra), imported only here and only when a plot is drawn.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from chargen.checkpoint import METRICS, load_run
from chargen.errors import ChargenError


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    """The records of metrics.jsonl; a last line cut short by a crash is skipped."""
    path = run_dir / METRICS
    records = []
    for line in path.read_text(encoding="utf-8").splitlines() if path.exists() else []:
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


def plot_runs(run_dirs: list[Path], out: Path) -> Path:
    """Draw the runs' training curves into one PNG with three panels; returns its path."""
    try:
        import matplotlib

        matplotlib.use("Agg")  # files only: no display needed
        import matplotlib.pyplot as plt
    except ImportError:
        raise ChargenError(
            "plotting needs matplotlib: pip install 'chargen[plot]' (or pip install matplotlib)"
        ) from None

    fig, (loss_ax, grad_ax, lr_ax) = plt.subplots(3, 1, figsize=(9, 10), sharex=True)
    for run_dir in run_dirs:
        run = load_run(run_dir)
        records = read_metrics(run.path)
        train = [r for r in records if r["kind"] == "train"]
        evals = [r for r in records if r["kind"] == "eval" and "seen" in r]
        name = run.path.name
        (line,) = loss_ax.plot(
            [r["chars"] for r in train], [r["bpc"] for r in train], label=f"{name} training"
        )
        loss_ax.plot(
            [r["seen"] for r in evals],
            [r["bpc"] for r in evals],
            "o--",
            color=line.get_color(),
            label=f"{name} validation",
        )
        grad_ax.plot(
            [r["chars"] for r in train], [r["grad_norm"] for r in train], color=line.get_color(), label=name
        )
        if run.train_config.clip > 0:
            grad_ax.axhline(
                run.train_config.clip, color=line.get_color(), linestyle=":", label=f"{name} clip threshold"
            )
        lr_ax.plot([r["chars"] for r in train], [r["lr"] for r in train], color=line.get_color(), label=name)

    loss_ax.set_ylabel("bits per character")
    loss_ax.set_title("loss")
    grad_ax.set_ylabel("gradient norm before clipping")
    grad_ax.set_yscale("log")
    grad_ax.set_title("gradient norm")
    lr_ax.set_ylabel("learning rate")
    lr_ax.set_title("learning rate")
    lr_ax.set_xlabel("characters seen")
    for ax in (loss_ax, grad_ax, lr_ax):
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
