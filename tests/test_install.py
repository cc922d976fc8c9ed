"""chargen installed from a wheel, as `pip install .`, pipx or `pip install git+URL` install it: the
built-in corpus and the catalogue come with it, and it runs from a folder far from any checkout."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import torch

from chargen import checkpoint as ckpt

REPO = Path(__file__).resolve().parents[1]
# What a clone holds besides the sources: environments, caches and build leftovers stay behind, so
# the wheel is built from the sources alone and nothing is written into the checkout.
LEFT_BEHIND = shutil.ignore_patterns(
    ".git", ".venv*", "build", "dist", "*.egg-info", "runs", "__pycache__", ".pytest_cache", ".ruff_cache"
)


def _run(command: list[str | Path], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [str(part) for part in command], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, f"{command}\n{result.stdout}\n{result.stderr}"
    return result


def test_a_wheel_installed_in_a_fresh_environment_trains_on_its_built_in_corpus(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "CHARGEN_CORPORA", "VIRTUAL_ENV")}
    env |= {"CHARGEN_HOME": str(tmp_path / "home"), "COLUMNS": "200", "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    source, wheels, venv = tmp_path / "source", tmp_path / "wheels", tmp_path / "venv"
    shutil.copytree(REPO, source, ignore=LEFT_BEHIND)
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", wheels, source], tmp_path, env)
    (wheel,) = wheels.glob("chargen-*.whl")

    # A fresh environment gets the wheel alone (--no-deps --no-index: nothing is downloaded)...
    _run([sys.executable, "-m", "venv", venv], tmp_path, env)
    python, chargen = venv / "bin" / "python", venv / "bin" / "chargen"
    _run([python, "-m", "pip", "install", "--no-deps", "--no-index", wheel], tmp_path, env)
    # ... then sees this environment's packages (torch above all) after its own, through a .pth
    # file. Written only now, or pip would take this environment's chargen for the one to replace.
    purelib = "import sysconfig; print(sysconfig.get_path('purelib'))"
    site = Path(_run([python, "-c", purelib], tmp_path, env).stdout.strip())
    torch_site = str(Path(torch.__file__).parents[1])
    ours = {sysconfig.get_path("purelib"), sysconfig.get_path("platlib"), torch_site}
    (site / "outer-environment.pth").write_text("\n".join(sorted(ours)) + "\n", encoding="utf-8")

    elsewhere = tmp_path / "elsewhere"  # no checkout here or above
    elsewhere.mkdir()
    where = "import chargen.paths, torch; print(chargen.paths.corpora_dir()); print(torch.__file__)"
    corpora, torch_file = _run([python, "-c", where], elsewhere, env).stdout.split()
    assert Path(corpora).resolve().is_relative_to(venv.resolve()), corpora  # the wheel's package data
    assert Path(torch_file) == Path(torch.__file__), torch_file  # this environment's torch, reused

    listed = _run([chargen, "corpora"], elsewhere, env).stdout
    assert "timemachine" in listed and "tinyshakespeare" in listed, listed

    train = [chargen, "train", "--max-steps", "5", "--eval-every", "5", "--out", "run"]
    trained = _run(train, elsewhere, env)
    assert "best validation" in trained.stderr, trained.stderr
    run = json.loads((elsewhere / "run" / ckpt.RUN_JSON).read_text(encoding="utf-8"))
    assert run["corpus"]["name"] == "the-lamp-at-pellow-point"
    assert Path(run["corpus"]["path"]).is_relative_to(venv.resolve()), run["corpus"]
    assert (elsewhere / "run" / ckpt.BEST).is_file()


def test_an_uninstalled_checkout_finds_its_own_corpora() -> None:
    """`python -m chargen` run in a clone that was never installed (as on a GPU machine with no
    network) has no `chargen.corpora` package; the corpora are the checkout's own folder. `-S`
    leaves out site-packages, and with them any installed chargen."""
    code = "from chargen.paths import corpora_dir; print(corpora_dir())"
    done = subprocess.run(
        [sys.executable, "-S", "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    folder = Path(done.stdout.strip())
    assert folder == REPO / "corpora"
    assert (folder / "catalogue.json").is_file()
