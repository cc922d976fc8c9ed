"""Where chargen finds files: the project's own corpora (package data), and the user's cache."""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path


def corpora_dir() -> Path:
    """The folder of the built-in corpus and the catalogue. In the repository it is `corpora/`;
    installed, it is the package `chargen.corpora` (pyproject.toml maps the one onto the other),
    so an editable install and a wheel find it the same way. Run from a checkout that was never
    installed (`python -m chargen` in a clone, where that mapping does not exist), it is the
    checkout's `corpora/`."""
    try:
        folder = resources.files("chargen.corpora")
    except ModuleNotFoundError:
        return Path(__file__).resolve().parent.parent / "corpora"
    # pip unpacks a wheel into plain files, so this is a real folder; a zipped install is not supported.
    assert isinstance(folder, Path), f"chargen.corpora is not a folder on disk: {folder}"
    return folder


def chargen_home() -> Path:
    """Where chargen keeps caches and downloads: $CHARGEN_HOME, else the user's cache directory."""
    if os.environ.get("CHARGEN_HOME"):
        return Path(os.environ["CHARGEN_HOME"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "chargen"
