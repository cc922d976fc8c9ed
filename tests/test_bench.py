"""The benchmarks' handling of bad input: one line and a non-zero exit, before any training."""

import subprocess
import sys
from pathlib import Path


def _bench(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "chargen.bench", *args], capture_output=True, text=True, timeout=120
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


def test_a_missing_corpus_is_one_line_not_a_traceback(tmp_path: Path) -> None:
    result = _bench("quality", "--corpus", str(tmp_path / "missing.txt"), "--budgets", "1s", "--seeds", "0")
    assert result.returncode == 1 and result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(
        f"error: corpus file not found: {tmp_path / 'missing.txt'}"
    )
