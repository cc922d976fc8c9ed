"""Named corpora: a catalogue of public texts with source and checksum, found offline or in the
cache, else downloaded once. Knows nothing about tokens; hands back a verified local file.

A name resolves to, in order: the file in the directory $CHARGEN_CORPORA names; the file in the
cache (chargen_home()/corpora); a download, checked against the catalogue's sha256 and written
atomically into the cache.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from chargen.errors import CorpusError
from chargen.paths import chargen_home, corpora_dir

CATALOGUE = corpora_dir() / "catalogue.json"
DOWNLOAD_TIMEOUT = 30.0  # seconds without an answer before a download is given up
Progress = Callable[[int, int], None]  # bytes done, bytes expected


@dataclass
class Entry:
    name: str
    title: str
    file: str  # the file's name, in $CHARGEN_CORPORA and in the cache
    url: str
    sha256: str
    bytes: int
    licence: str
    strip_before: str | None  # drop everything up to and including this line (a header)
    strip_after: str | None  # drop this line and everything after it (a footer)


def entries() -> dict[str, Entry]:
    if not CATALOGUE.exists():  # it is package data: only a broken installation lacks it
        raise CorpusError(f"the corpus catalogue {CATALOGUE} is missing: reinstall chargen")
    data = json.loads(CATALOGUE.read_text(encoding="utf-8"))
    return {name: Entry(name=name, **fields) for name, fields in data.items()}


def _cache_dir() -> Path:
    return chargen_home() / "corpora"


def _offline_dir() -> Path | None:
    value = os.environ.get("CHARGEN_CORPORA")
    return Path(value) if value else None


def file_sha256(path: Path) -> str:
    """The sha256 of a file's bytes, read in blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 22):
            digest.update(block)
    return digest.hexdigest()


def _strip(entry: Entry, data: bytes) -> bytes:
    """The text without the header and footer the catalogue names (a Gutenberg licence, say)."""
    if entry.strip_before and (at := data.find(entry.strip_before.encode())) >= 0:
        data = data[data.index(b"\n", at) + 1 :]
    if entry.strip_after and (at := data.find(entry.strip_after.encode())) >= 0:
        data = data[:at]
    return data


def where(entry: Entry) -> str:
    """Where the corpus would come from now: 'offline', 'cached' or 'download'."""
    offline = _offline_dir()
    if offline and (offline / entry.file).exists():
        return "offline"
    return "cached" if (_cache_dir() / entry.file).exists() else "download"


def resolve(name: str, progress: Progress | None = None) -> Path:
    """A verified local file with the named corpus's text, downloading it if need be."""
    entry = entries()[name]
    offline = _offline_dir()
    if offline and (offline / entry.file).exists():
        source = offline / entry.file
        actual = file_sha256(source)
        if actual != entry.sha256:
            raise CorpusError(
                f"{source} is not the catalogue's {name}: its sha256 is {actual}, expected {entry.sha256}"
            )
        if not (entry.strip_before or entry.strip_after):
            return source
        return _store(entry, source.read_bytes())
    cached = _cache_dir() / entry.file
    if cached.exists():
        return cached
    return _store(entry, _download(entry, progress))


def _download(entry: Entry, progress: Progress | None) -> bytes:
    chunks, done = [], 0
    try:
        with urllib.request.urlopen(entry.url, timeout=DOWNLOAD_TIMEOUT) as response:
            total = int(response.headers.get("Content-Length") or entry.bytes)
            while block := response.read(1 << 16):
                chunks.append(block)
                done += len(block)
                if progress:
                    progress(done, total)
    except (urllib.error.URLError, OSError) as err:
        reason = getattr(err, "reason", err)
        raise CorpusError(
            f"cannot download {entry.name} from {entry.url} ({reason}); without a network, put "
            f"{entry.file} in a directory and set CHARGEN_CORPORA to it, or copy it to {_cache_dir()}"
        ) from err
    data = b"".join(chunks)
    actual = hashlib.sha256(data).hexdigest()
    if actual != entry.sha256:
        raise CorpusError(
            f"the download of {entry.name} from {entry.url} has sha256 {actual}, expected "
            f"{entry.sha256}; it was not saved"
        )
    return data


def _store(entry: Entry, data: bytes) -> Path:
    """Write the text into the cache atomically: a crash never leaves half a corpus there."""
    folder = _cache_dir()
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(_strip(entry, data))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, folder / entry.file)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return folder / entry.file
