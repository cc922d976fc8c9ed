"""The benchmarks' handling of bad input: one line and a non-zero exit, before any training."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest


def _bench(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "chargen.bench", *args], capture_output=True, text=True, timeout=120, env=env
    )


def test_quality_refuses_a_keep_folder_that_already_holds_a_run_before_training(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("a short text\n" * 2000, encoding="utf-8")
    keep = tmp_path / "runs"
    (keep / "60s-seed1").mkdir(parents=True)
    args = ["quality", "--corpus", str(corpus), "--budgets", "1m", "--seeds", "0,1"]
    result = _bench(*args, "--keep", str(keep))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "already holds 60s-seed1" in result.stderr.splitlines()[-1]
    assert [p.name for p in keep.iterdir()] == ["60s-seed1"]  # seed 0 was not trained either


def test_items_refuses_a_keep_folder_that_already_holds_a_run_before_training(tmp_path: Path) -> None:
    """As quality does: before, items trained seed 0 into the folder, then seed 1 into the run
    already there, mixing two benchmarks' runs."""
    corpus = tmp_path / "names.txt"
    corpus.write_text("".join(f"{a}{b}na\n" for a in "bdklmnrst" for b in "aeiou"), encoding="utf-8")
    keep = tmp_path / "runs"
    (keep / "1s-seed1").mkdir(parents=True)
    args = ["items", "--corpus", str(corpus), "--budgets", "1s", "--seeds", "0,1"]
    result = _bench(*args, "--keep", str(keep))
    assert result.returncode == 2 and "Traceback" not in result.stderr and result.stdout == ""
    assert "already holds 1s-seed1; choose another directory" in result.stderr.splitlines()[-1]
    assert [p.name for p in keep.iterdir()] == ["1s-seed1"]  # seed 0 was not trained either


def test_a_missing_corpus_is_one_line_not_a_traceback(tmp_path: Path) -> None:
    result = _bench("quality", "--corpus", str(tmp_path / "missing.txt"), "--budgets", "1s", "--seeds", "0")
    assert result.returncode == 1 and result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(
        f"error: corpus file not found: {tmp_path / 'missing.txt'}"
    )


def test_the_gpu_check_without_a_cuda_device_is_one_line_and_a_failure() -> None:
    # No CUDA device even where the machine has one: there the check would run in full (minutes).
    result = _bench("gpu", env={**os.environ, "CUDA_VISIBLE_DEVICES": ""})
    assert result.returncode == 1 and result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: no CUDA device")


def test_quality_trains_the_plain_reference_beside_chargen_and_prints_the_lead(tmp_path: Path) -> None:
    from chargen.corpus import DEFAULT_CORPUS

    out = tmp_path / "figures.json"
    args = ["quality", "--corpus", str(DEFAULT_CORPUS), "--budgets", "2s", "--seeds", "0"]
    result = _bench(*args, "--precision", "fp32", "--threads", "1", "--set", "size=small", "--json", str(out))
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("machine: ") and "1 threads" in result.stdout.splitlines()[0]
    assert "chargen's lead over the reference" in result.stdout
    [figures] = json.loads(out.read_text())
    assert figures["size"].startswith("2x256") and figures["reference_steps"] > 0
    assert figures["lead"] == pytest.approx(figures["reference"] - figures["carried"])
    assert (
        figures["adapted"] is not None and abs(figures["adapted"] - figures["carried"]) < 1.0
    )  # eval --adapt's


def test_the_speed_bench_alternates_the_order_of_its_turns_and_pairs_the_ratios() -> None:
    from chargen.bench.speed import paired_ratio, turns

    order: list[str] = []

    def work(name: str):
        def run() -> int:
            order.append(name)
            return 1000

        return run

    rates = turns({"a": work("a"), "b": work("b")}, repeats=4)
    warm_ups, taken = order[:2], order[2:]
    assert warm_ups == ["a", "b"] and taken == ["a", "b", "b", "a", "a", "b", "b", "a"]
    assert all(len(r) == 4 and min(r) > 0 for r in rates.values())
    # each turn's ratio, then their median: one slow turn for both works leaves it be
    assert paired_ratio([10.0, 2.0, 11.0], [10.0, 2.0, 10.0]) == 1.0
    assert paired_ratio([12.0, 2.0, 11.0], [10.0, 2.0, 10.0]) == 1.1


def test_the_speed_bench_times_chargen_beside_the_d2l_reference_and_with_the_reference_optimiser() -> None:
    import numpy as np

    from chargen.bench.speed import bench_training
    from chargen.config import ModelConfig

    ids = np.random.default_rng(0).integers(0, 12, 5000)
    config = ModelConfig(vocab_size=12, embed=8, hidden=16, layers=2, dropout=0.0)
    ceilings = {"fp32": 1.0, "bf16": 1.0}
    rows = bench_training("tiny", config, ids, 4, 8, ceilings, reference=True, sgd_too=True)
    what = "train, B=4 T=8 dropout 0"
    assert [r.what for r in rows] == [
        f"{what}, d2l-style reference",
        f"{what}, fp32",
        f"{what}, fp32, SGD in AdamW's place",
    ]
    assert all(r.chars_per_sec > 0 for r in rows)
    assert rows[0].paired is None and all(r.paired and r.reference for r in rows[1:])


def test_the_bench_help_lists_every_benchmark_and_a_wrong_name_is_refused() -> None:
    """`python -m chargen.bench --help` used to be the speed benchmark's help, listing no other."""
    from chargen.bench import BENCHMARKS

    result = _bench("--help", env={**os.environ, "COLUMNS": "100"})
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: python -m chargen.bench [BENCHMARK] [OPTIONS]")
    assert all(f"\n  {name} " in result.stdout for name in BENCHMARKS) and "--corpus" not in result.stdout
    wrong = _bench("qualty")
    assert wrong.returncode == 2 and "invalid choice: 'qualty'" in wrong.stderr.splitlines()[-1]
    alone = _bench("--threads", "0")  # options alone are the speed benchmark's, checked before it runs
    assert alone.returncode == 1 and alone.stderr.strip() == "error: --threads must be at least 1, not 0"


@pytest.mark.parametrize("name", ["speed", "quality", "items", "adapt", "serve", "gpu"])
def test_each_benchmark_says_what_it_measures_its_options_and_an_example(
    name: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import importlib

    monkeypatch.setenv("COLUMNS", "100")
    with pytest.raises(SystemExit) as exited:
        importlib.import_module(f"chargen.bench.{name}").main(["--help"])
    assert exited.value.code == 0
    text = capsys.readouterr().out
    assert text.startswith(f"usage: python -m chargen.bench {name} ")
    assert "It prints" in text  # what the figures are, with their units
    example = text.split("\nexample:\n")[1].strip()
    assert example.startswith(f"python -m chargen.bench {name} --") and "[" not in example
    lines = text.split("\noptions:\n")[1].split("\n\n")[0].splitlines()
    for k, line in enumerate(lines):
        if line.startswith("  -"):  # its help beside it, or on the next line
            assert re.search(r"\S  +\S", line.strip()) or lines[k + 1].startswith(" " * 20), line
        for flag, metavar in re.findall(r"--([\w-]+) ([A-Z][A-Z_]*)\b", line):
            assert metavar != flag.upper().replace("-", "_"), line  # --json JSON says nothing
