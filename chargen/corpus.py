"""Turning a text file into token ids, with a memory-mapped cache so a second run starts at once.

A corpus is read in chunks twice: once to count its characters (for the vocabulary), once to
encode it straight into a file of ids that is then memory-mapped, so memory never holds the
whole text. The cache is keyed by the file's content hash and every setting that changes the ids.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np

from chargen import catalogue
from chargen.config import TextConfig
from chargen.errors import CorpusError
from chargen.paths import chargen_home, corpora_dir
from chargen.text import Preparer, read_chunks
from chargen.vocab import ByteVocab, Tokenizer, Vocab, count_code_points, tokenizer_from_dict

DEFAULT_CORPUS = corpora_dir() / "the-lamp-at-pellow-point.txt"
CACHE_VERSION = 1  # bump when the cached format or the encoding rules change


@dataclass
class Corpus:
    name: str  # short name for run directories: the file's stem
    path: Path
    sha256: str  # of the file's bytes, so a run records exactly what it was trained on
    config: TextConfig  # how the file was read and prepared
    vocab: Tokenizer
    ids: np.ndarray  # (N,) token ids; for a cached corpus a read-only memory map
    unknown: int  # characters that were outside the vocabulary (mapped to the unknown symbol)

    def decode(self, start: int = 0, stop: int | None = None) -> str:
        return self.vocab.decode(self.ids[start:stop])


def _count_vocab(path: Path, config: TextConfig, what: str) -> Vocab:
    counts = None
    prepare = Preparer(config)
    for piece in read_chunks(path, config, what):
        counts = count_code_points(prepare(piece), counts)
    assert counts is not None  # read_chunks refuses an empty file
    return Vocab.from_counts(counts, config.min_count, with_unknown=config.preset == "d2l")


def _encode_file(path: Path, config: TextConfig, vocab: Tokenizer, unknown: str, what: str, sink) -> int:
    """Encode the file piece by piece into `sink` (a binary file or a list); returns the unknowns."""
    prepare, n_unknown = Preparer(config), 0
    for piece in read_chunks(path, config, what):
        ids, missing = vocab.encode_counting(prepare(piece), what=f"{what} {path}", unknown=unknown)
        n_unknown += missing
        if isinstance(sink, list):
            sink.append(ids)
        else:
            sink.write(ids.tobytes())
    return n_unknown


def resolve_path(
    path: Path | str | None, progress: catalogue.Progress | None = None, what: str = "corpus"
) -> tuple[Path, str]:
    """The file to read and the corpus's name: the default corpus for None, a named corpus from the
    catalogue for a name that is not a file, else the path itself."""
    if path is None:
        if not DEFAULT_CORPUS.exists():
            raise CorpusError(
                f"the default corpus {DEFAULT_CORPUS} is missing: this installation of chargen is "
                "incomplete, so reinstall it; or give a CORPUS file"
            )
        return DEFAULT_CORPUS, DEFAULT_CORPUS.stem
    path = Path(path)
    if path.is_dir():
        raise CorpusError(f"{what} {path} is a directory; give a text file")
    if path.exists():
        return path, path.stem
    named = catalogue.entries()
    if str(path) in named:
        return catalogue.resolve(str(path), progress), str(path)
    raise CorpusError(f"{what} file not found: {path} (named corpora: {', '.join(named) or 'none'})")


def load_corpus(
    path: Path | str | None = None,
    config: TextConfig | None = None,
    vocab: Tokenizer | None = None,
    unknown: str = "replace",
    cache: bool = True,
    what: str = "corpus",
    progress: catalogue.Progress | None = None,
) -> Corpus:
    """The file's token ids and vocabulary (built from the file, unless `vocab` is given).

    `path` may also name a corpus of the catalogue (`timemachine`), downloaded with `progress`
    reports if need be; with no path, the project's own default corpus. Characters outside a
    given vocabulary follow `unknown` ("error", "replace" or "skip"). With `cache`, the ids are
    stored under chargen_home() and memory-mapped.
    """
    config = config or TextConfig()
    path, name = resolve_path(path, progress, what)
    sha256 = catalogue.file_sha256(path)

    if not cache:
        vocab = vocab or (ByteVocab() if config.tokenizer == "bytes" else _count_vocab(path, config, what))
        parts: list[np.ndarray] = []
        n_unknown = _encode_file(path, config, vocab, unknown, what, parts)
        ids = np.concatenate(parts) if parts else np.zeros(0, dtype=vocab.dtype)
        return Corpus(name, path, sha256, config, vocab, ids, n_unknown)

    key_source = {
        "version": CACHE_VERSION,
        "sha256": sha256,
        "text": config.to_dict(),
        "vocab": vocab.to_dict() if vocab else None,
        "unknown": unknown if vocab else None,
    }
    key = hashlib.sha256(json.dumps(key_source, sort_keys=True).encode()).hexdigest()[:32]
    folder = chargen_home() / "tokens"
    ids_path, meta_path = folder / f"{key}.ids", folder / f"{key}.json"
    if not meta_path.exists():
        try:
            folder.mkdir(parents=True, exist_ok=True)
            _write_cache(path, config, vocab, unknown, what, ids_path, meta_path)
        except OSError:  # no writable cache, or no room in it: work in memory instead
            return load_corpus(path, config, vocab, unknown, cache=False, what=what)
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    vocab = tokenizer_from_dict(meta["vocab"])
    size = ids_path.stat().st_size // np.dtype(meta["dtype"]).itemsize
    ids = (
        np.memmap(ids_path, dtype=meta["dtype"], mode="r", shape=(size,))
        if size
        else np.zeros(0, vocab.dtype)
    )
    return Corpus(name, path, sha256, config, vocab, ids, meta["unknown"])


def _write_cache(
    path: Path, config: TextConfig, vocab: Tokenizer | None, unknown: str, what: str, ids: Path, meta: Path
) -> None:
    """Encode the file into a cache entry: its ids, then the description that marks it complete."""
    vocab = vocab or (ByteVocab() if config.tokenizer == "bytes" else _count_vocab(path, config, what))
    with _replacing(ids, "wb") as sink:
        n_unknown = _encode_file(path, config, vocab, unknown, what, sink)
    # Last, and whole or not at all: it marks the cache entry complete, and several processes
    # (torchrun) may be writing the same entry at once.
    with _replacing(meta, "w") as sink:
        entry = {
            "vocab": vocab.to_dict(),
            "dtype": vocab.dtype.str,
            "unknown": n_unknown,
            "source": str(path),
        }
        json.dump(entry, sink, ensure_ascii=False)


@contextmanager
def _replacing(path: Path, mode: str) -> Iterator[IO[Any]]:
    """A temporary file beside `path` that replaces it when the block ends, and is gone if it fails."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    try:
        with os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as sink:
            yield sink
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
