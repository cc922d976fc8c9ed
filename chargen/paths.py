"""Where chargen finds files: the project's own corpora, and the user's cache directory."""

from __future__ import annotations

import os
from pathlib import Path

CORPORA_DIR = Path(__file__).resolve().parent.parent / "corpora"  # present in a source checkout


def chargen_home() -> Path:
    """Where chargen keeps caches and downloads: $CHARGEN_HOME, else the user's cache directory."""
    if os.environ.get("CHARGEN_HOME"):
        return Path(os.environ["CHARGEN_HOME"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "chargen"
