"""Writing a file whole or not at all, and saying in one line which file could not be written and
why (a full disk, a read-only or forbidden directory). Knows nothing about runs.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from safetensors import SafetensorError

from chargen.errors import StorageError

_UMASK = os.umask(0)
os.umask(_UMASK)


@contextmanager
def writing(path: Path) -> Iterator[None]:
    """Turn an OSError inside the block, or safetensors' report of one, into a StorageError that
    names `path` and the cause."""
    try:
        yield
    except OSError as err:
        raise StorageError(f"cannot write {path}: {err.strerror or err}") from err
    except SafetensorError as err:
        # safetensors reports an OSError as "I/O error: No space left on device (os error 28)".
        code = re.search(r"os error (\d+)", str(err))
        cause = os.strerror(int(code[1])) if code else str(err).splitlines()[0]
        raise StorageError(f"cannot write {path}: {cause}") from err


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """A temporary path beside `path` that replaces it (fsync, then rename) when the block ends, so
    that a crash or a full disk leaves either the old file or the new one, never half of one."""
    with writing(path):
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.close(fd)
        try:
            yield Path(tmp)
            # mkstemp makes files private, and safetensors writes its own so too; a run's files are
            # ordinary ones, readable as the umask says, like those written in place.
            os.chmod(tmp, 0o666 & ~_UMASK)
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
            os.replace(tmp, path)
        finally:
            with suppress(OSError):
                os.unlink(tmp)  # gone already when the rename happened


def write_bytes_atomic(path: Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_json(path: Path, data: Any) -> None:
    text = json.dumps(data, indent=2, ensure_ascii=False) + "\n"
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def append_line(path: Path, line: str) -> None:
    """Add one line at the end of a text file. A crash can cut the last line short: readers skip it."""
    with writing(path), open(path, "a", encoding="utf-8") as f:
        f.write(line + "\n")
