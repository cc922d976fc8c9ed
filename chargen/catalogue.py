"""Named corpora: a catalogue of public texts with source and checksum, found offline or in the
cache, else downloaded once. Knows nothing about tokens; hands back a verified local file.

A name resolves to, in order: the file in the directory $CHARGEN_CORPORA names, checked against the
catalogue's sha256 (a mismatch is refused, not passed over); the file in the cache
(chargen_home()/corpora); a download, checked against the sha256 and written atomically into the
cache. `find` is that decision, for loading and listing alike.
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


@dataclass(frozen=True)
class Found:
    """Where a named corpus would come from now: what `resolve` does and `chargen corpora` lists."""

    kind: str  # 'offline', 'cached' or 'download'; 'refused': a wrong offline file, or no such directory
    path: Path | None  # the file it would be read from (the refused one too); None for a download
    refusal: str | None = None  # the error resolving gives, for a refused one
    reason: str | None = None  # that error in a few words, for a listing


def find(entry: Entry) -> Found:
    """Where `resolve` would take the corpus from now. A file in $CHARGEN_CORPORA is checked against
    the catalogue's sha256 here, so listing and loading agree; one that does not match is refused
    rather than passed over for the cache or a download, since the directory was set on purpose; so
    is a $CHARGEN_CORPORA that is not a directory."""
    offline = _offline_dir()
    if offline and not offline.is_dir():  # a typo, most likely: not passed over in silence
        return Found(
            "refused",
            offline,
            f"CHARGEN_CORPORA is {offline}, which is not a directory; set it to the directory that "
            f"holds {entry.file}, or unset it to use the cache or a download",
            "CHARGEN_CORPORA is not a directory",
        )
    if offline and (offline / entry.file).exists():
        path = offline / entry.file
        actual = file_sha256(path)
        if actual != entry.sha256:
            return Found(
                "refused",
                path,
                f"{path} is not the catalogue's {entry.name}: its sha256 is {actual}, expected "
                f"{entry.sha256}; replace it with the catalogue's file, or remove it to use the cache "
                "or a download",
                "wrong sha256",
            )
        return Found("offline", path)
    cached = _cache_dir() / entry.file
    return Found("cached", cached) if cached.exists() else Found("download", None)


def where(entry: Entry) -> str:
    """Where the corpus would come from now: 'offline', 'cached', 'download' or 'refused'."""
    return find(entry).kind


def resolve(name: str, progress: Progress | None = None) -> Path:
    """A verified local file with the named corpus's text, downloading it if need be."""
    entry = entries()[name]
    found = find(entry)
    if found.refusal is not None:
        raise CorpusError(found.refusal)
    if found.path is None:
        return _store(entry, _download(entry, progress))
    if found.kind == "offline" and (entry.strip_before or entry.strip_after):
        return _store(entry, found.path.read_bytes())
    return found.path


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
