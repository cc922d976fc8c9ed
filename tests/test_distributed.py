"""Several processes (torchrun, gloo on the CPU) train what one process trains, and only rank 0 writes."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from chargen import checkpoint as ckpt
from chargen.cli import app
from chargen.config import ModelConfig, TextConfig, TrainConfig
from chargen.corpus import load_corpus
from chargen.distributed import World
from chargen.records import TrainSummary
from chargen.training import resume, train

# Dropout 0: each process draws its own dropout masks, so only without dropout can the runs agree.
# fp32: in bf16, 2 streams and 4 streams round differently, and the runs agree only to about 1e-4.
# The CPU (gloo), named: with auto on a machine with one GPU, torchrun's second process (LOCAL_RANK 1)
# asks for a GPU of its own that is not there, and the run fails before its first step.
MODEL = ModelConfig(hidden=32, embed=16, layers=2, dropout=0.0)
CONFIG = TrainConfig(
    batch_size=4, bptt=16, max_steps=40, eval_every=10, seed=0, precision="fp32", device="cpu"
)
SAME_ON_THE_COMMAND_LINE = [
    *("--hidden", "32", "--embed", "16", "--layers", "2", "--dropout", "0", "--precision", "fp32"),
    *("--device", "cpu"),
    *("--batch-size", "4", "--bptt", "16", "--max-steps", "40", "--eval-every", "10", "--seed", "0"),
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _eval_losses(run_dir: Path) -> dict[int, float]:
    records = [json.loads(line) for line in (run_dir / ckpt.METRICS).read_text().splitlines()]
    evals = [r for r in records if r["kind"] == "eval"]
    assert len({r["step"] for r in evals}) == len(evals), "each evaluation recorded once: one writer"
    return {r["step"]: r["loss"] for r in evals}


def test_two_processes_follow_the_validation_losses_of_one(lamp_text: str, tmp_path: Path) -> None:
    corpus = tmp_path / "lamp.txt"
    corpus.write_text(lamp_text[:30_000], encoding="utf-8")
    command = [
        *(sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2"),
        *("--master_port", str(_free_port()), "-m", "chargen", "train", str(corpus)),
        *("--out", str(tmp_path / "two"), *SAME_ON_THE_COMMAND_LINE),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    two = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    one = train(load_corpus(corpus), MODEL, CONFIG, out=tmp_path / "one")  # meanwhile, in this process
    _, stderr = two.communicate(timeout=300)
    assert two.returncode == 0, stderr

    a, b = _eval_losses(tmp_path / "one"), _eval_losses(tmp_path / "two")
    assert list(a) == list(b) == [10, 20, 30, 40]
    assert all(abs(a[step] - b[step]) <= 1e-4 for step in a), (a, b)
    # Rank 0 alone reports: one start line and one summary.
    assert stderr.count(f"run {tmp_path / 'two'}") == 1 and stderr.count("training finished") == 1, stderr
    assert json.loads((tmp_path / "two" / ckpt.RUN_JSON).read_text())["processes"] == 2

    # The checkpoint holds the carried state of all 4 streams, in order, gathered from both processes...
    saved_one, saved_two = (
        load_file(str(one.run_dir / ckpt.CHECKPOINT)),
        load_file(str(tmp_path / "two" / ckpt.CHECKPOINT)),
    )
    for name in ("state.0", "state.1"):
        assert saved_two[name].shape == (2, 4, 32)
        assert torch.allclose(saved_one[name], saved_two[name], atol=1e-4)
    # ... so one process can carry on from where the two stopped, as from its own run.
    more = {"max_steps": 50}
    on_one: TrainSummary = resume(one.run_dir, settings=more)
    on_two: TrainSummary = resume(tmp_path / "two", settings=more)
    assert on_one.steps == on_two.steps == 50
    assert abs(on_one.final.loss - on_two.final.loss) <= 1e-4


def test_a_batch_that_does_not_split_evenly_is_refused_in_one_line(
    lamp_text: str, tmp_path: Path, tiny_run: TrainSummary
) -> None:
    corpus = tmp_path / "lamp.txt"
    corpus.write_text(lamp_text[:20_000], encoding="utf-8")
    three = {"WORLD_SIZE": "3", "RANK": "0", "LOCAL_RANK": "0"}  # as torchrun --nproc_per_node 3 would
    out = tmp_path / "run"
    result = CliRunner().invoke(
        app, ["train", str(corpus), "--out", str(out), "--batch-size", "4", "--max-steps", "2"], env=three
    )
    assert result.exit_code == 2, result.output
    message = result.stderr.strip()
    assert "\n" not in message and "--batch-size 4" in message and "3 processes" in message, message
    assert not out.exists()
    # Resuming with a number of processes that does not divide the run's batch (8) is refused too.
    result = CliRunner().invoke(
        app, ["train", "--resume", str(tiny_run.run_dir), "--max-steps", "70"], env=three
    )
    assert result.exit_code == 2 and "--batch-size 8" in result.stderr, result.output


def test_the_shares_of_the_streams_tile_them_in_rank_order() -> None:
    for n, size in ((8, 2), (4, 4), (7, 3), (2, 3)):
        shares = [range(n)[World(rank=r, size=size).share(n)] for r in range(size)]
        assert [i for share in shares for i in share] == list(range(n))
        assert max(map(len, shares)) - min(map(len, shares)) <= 1


def test_two_processes_train_a_list_as_one_does(lamp_text: str, tmp_path: Path) -> None:
    """Items split the same way in every process (the held-out tenth, the batches), each process
    takes its share of every batch's items, and the losses follow those of one process."""
    words = list(dict.fromkeys(w.lower() for w in lamp_text.split() if w.isalpha()))[:1200]
    names = tmp_path / "words.txt"
    names.write_text("\n".join(words), encoding="utf-8")
    command = [
        *(sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2"),
        *("--master_port", str(_free_port()), "-m", "chargen", "train", str(names), "--items", "lines"),
        *("--out", str(tmp_path / "two"), *SAME_ON_THE_COMMAND_LINE, "--bptt", "6"),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    two = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    config = TrainConfig(**{**CONFIG.to_dict(), "bptt": 6})
    train(load_corpus(names, TextConfig(items="lines")), MODEL, config, out=tmp_path / "one")
    _, stderr = two.communicate(timeout=300)
    assert two.returncode == 0, stderr
    a, b = _eval_losses(tmp_path / "one"), _eval_losses(tmp_path / "two")
    assert list(a) == list(b) == [10, 20, 30, 40]
    assert all(abs(a[step] - b[step]) <= 1e-4 for step in a), (a, b)
    info_one, info_two = (
        json.loads((tmp_path / d / ckpt.RUN_JSON).read_text())["corpus"] for d in ("one", "two")
    )
    assert info_one["held_out_items"] == info_two["held_out_items"] == 120
    assert info_one["train_tokens"] == info_two["train_tokens"]
