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
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np

from chargen import catalogue
from chargen.config import TextConfig
from chargen.errors import CorpusChanged, CorpusError, VocabError
from chargen.items import END, list_files, located_items, require_cuttable, source_pieces
from chargen.paths import chargen_home, corpora_dir
from chargen.text import Preparer, read_chunks
from chargen.vocab import (
    UNKNOWN,
    ByteVocab,
    Tokenizer,
    Vocab,
    count_code_points,
    quoted,
    tokenizer_from_dict,
    unseen_message,
)

DEFAULT_CORPUS = corpora_dir() / "the-lamp-at-pellow-point.txt"
EXCERPT = 40  # characters of the line shown around the first unknown character in an error
# Bump when the cached format or the encoding rules change (2: no empty items; 3: a d2l list's line items
# without the space the fold left at their end).
CACHE_VERSION = 3


@dataclass
class Corpus:
    name: str  # short name for run directories: the file's stem, or the directory's name
    path: Path  # the file, or the directory or first file of several
    sha256: str  # of the file's bytes (of several files: of their hashes), to record what trained
    config: TextConfig  # how the file was read and prepared
    vocab: Tokenizer
    ids: np.ndarray  # (N,) token ids; for a cached corpus a read-only memory map
    unknown: int  # characters that were outside the vocabulary (mapped to the unknown symbol)
    paths: list[Path] = field(default_factory=list)  # every file read, in order

    def decode(self, start: int = 0, stop: int | None = None) -> str:
        return self.vocab.decode(self.ids[start:stop])

    @property
    def end_id(self) -> int | None:
        """The id of the end-of-item symbol in a list, None for one text."""
        return end_id(self.vocab, self.config)


def end_id(vocab: Tokenizer, config: TextConfig) -> int | None:
    """The id of the end-of-item symbol when `config` reads a list, else None."""
    return int(vocab.encode(END)[0]) if config.items is not None else None


def _count_vocab(paths: list[Path], config: TextConfig, what: str) -> Vocab:
    counts = None
    for piece in source_pieces(paths, config, what):
        counts = count_code_points(piece, counts)
    assert counts is not None  # read_chunks refuses an empty file
    vocab = Vocab.from_counts(counts, config.min_count, with_unknown=config.preset == "d2l")
    if not set(vocab.chars) - {UNKNOWN, END}:  # a model of the unknown symbol alone learns nothing
        text_counts = counts.copy()
        text_counts[ord(END)] = 0  # a list's ends, which are kept whatever `min_count` says
        commonest = int(text_counts.argmax())
        raise CorpusError(
            f"`min_count={config.min_count}` leaves no character of {what} {name_paths(paths)} in the "
            f"vocabulary: the commonest, {quoted(chr(commonest))}, occurs "
            f"{int(text_counts[commonest]):,} times; give a smaller one"
        )
    if config.items is not None and END not in vocab.chars:  # kept whatever `min_count` says
        vocab = Vocab([*vocab.chars, END])
    return vocab


def _encode(paths: list[Path], config: TextConfig, vocab: Tokenizer, unknown: str, what: str, sink) -> int:
    """Encode the files piece by piece into `sink` (a binary file or a list); returns the unknowns."""
    n_unknown = 0
    # In a list, an item made only of characters that are dropped would be left as an empty item
    # (END END); it goes, as a blank line does, since no item is empty.
    end = end_id(vocab, config)
    after_end = False  # whether the last id written was END (pieces are cut between items)
    shown = f"{what} {name_paths(paths)}"
    for piece in source_pieces(paths, config, what):
        try:
            ids, missing = vocab.encode_counting(piece, what=shown, unknown=unknown)
        except VocabError:  # named again with where the first of them is, as a user fixing the file needs
            where = first_unseen(paths, config, vocab, what)
            raise VocabError(unseen_message(shown, vocab.unknown_chars(piece), where)) from None
        n_unknown += missing
        if end is not None and missing:
            ends = ids == end
            ids = ids[~(ends & np.concatenate([[after_end], ends[:-1]]))]
        if end is not None and len(ids):
            after_end = bool(ids[-1] == end)
        if isinstance(sink, list):
            sink.append(ids)
        else:
            sink.write(ids.tobytes())
    return n_unknown


def name_paths(paths: list[Path]) -> str:
    """How a message names the files a text was read from: the first, and how many more."""
    return f"{paths[0]}" + (f" and {len(paths) - 1} more file(s)" if len(paths) > 1 else "")


def first_unseen(paths: list[Path], config: TextConfig, vocab: Tokenizer, what: str = "corpus") -> str:
    """Where the first character of `paths` outside `vocab` is, as an error message says it after
    naming the characters: its line (in a list, the item it is in), with a few characters around it;
    "" where none is. Read again from the start: errors are rare, and looking only then keeps
    encoding simple."""
    for path, line, text, at, item in _unseen_lines(paths, config, vocab, what):
        of = f" of {path}" if len(paths) > 1 else ""
        start = max(0, min(at - EXCERPT // 2, len(text) - EXCERPT))
        excerpt = "…" * (start > 0) + text[start : start + EXCERPT] + "…" * (start + EXCERPT < len(text))
        return f"; the first is {f'in item {item}, ' if item else ''}on line {line}{of}: {quoted(excerpt)}"
    return ""  # only the line break put between two files


def _unseen_lines(
    paths: list[Path], config: TextConfig, vocab: Tokenizer, what: str
) -> Iterator[tuple[Path, int, str, int, int | None]]:
    """Each line (prepared) with a character outside `vocab`: its file, its number from 1, its text,
    the index of that character in it, and in a list the item's number from 1."""
    if config.items is not None:
        for number, (path, line, item) in enumerate(located_items(paths, config, what), 1):
            if (at := vocab.first_unknown(item)) is not None:
                begins = item.rfind("\n", 0, at) + 1  # an item of several lines: the one it is on
                ends = len(item) if (end := item.find("\n", at)) < 0 else end + (end == at)
                yield path, line + item.count("\n", 0, at), item[begins:ends], at - begins, number
        return
    for path in paths:
        preparer, line = Preparer(config), 1  # line by line, as the pieces would be prepared
        for piece in read_chunks(path, config, what, empty_ok=True):
            lines = piece.split("\n")
            for k, raw in enumerate(lines):
                text = preparer(raw + "\n" * (k < len(lines) - 1))
                if (at := vocab.first_unknown(text)) is not None:
                    yield path, line + k, text if text[at] == "\n" else text.rstrip("\n"), at, None
            line += piece.count("\n")


Source = Path | str | list[Path] | list[str] | None


def resolve_paths(
    source: Source, progress: catalogue.Progress | None = None, what: str = "corpus"
) -> tuple[list[Path], str, Path]:
    """The files to read, the corpus's name and the path that stands for them (the file, or the
    directory or first file of several): the default corpus for None, a named corpus from the
    catalogue for a name that is not a file, files and directories as they are."""
    if isinstance(source, list):
        if len(source) == 1:
            return resolve_paths(source[0], progress, what)
        if not source:
            return resolve_paths(None, progress, what)
        missing = [str(p) for p in source if not Path(p).exists()]
        if missing:
            raise CorpusError(f"{what} file not found: {missing[0]}")
        paths = [Path(p) for p in source]
        return list_files(paths, what), paths[0].stem, paths[0]
    if source is None:
        if not DEFAULT_CORPUS.exists():
            raise CorpusError(
                f"the default corpus {DEFAULT_CORPUS} is missing: this installation of chargen is "
                "incomplete, so reinstall it; or give a CORPUS file"
            )
        return [DEFAULT_CORPUS], DEFAULT_CORPUS.stem, DEFAULT_CORPUS
    path = Path(source)
    if path.is_dir():
        return list_files([path], what), path.resolve().name, path
    if path.exists():
        return [path], path.stem, path
    named = catalogue.entries()
    if str(path) in named:
        file = catalogue.resolve(str(path), progress)
        return [file], str(path), file
    raise CorpusError(f"{what} file not found: {path} (named corpora: {', '.join(named) or 'none'})")


def resolve_path(
    path: Path | str | None, progress: catalogue.Progress | None = None, what: str = "corpus"
) -> tuple[Path, str]:
    """One text file and its name (see resolve_paths); a directory is refused."""
    if path is not None and Path(path).is_dir():
        raise CorpusError(f"{what} {path} is a directory; give a text file")
    paths, name, _ = resolve_paths(path, progress, what)
    return paths[0], name


def sources_sha256(paths: list[Path]) -> str:
    """The file's sha256, or for several files the sha256 of their hashes in order."""
    hashes = [catalogue.file_sha256(p) for p in paths]
    return hashes[0] if len(hashes) == 1 else hashlib.sha256("\n".join(hashes).encode()).hexdigest()


def load_corpus(
    path: Source = None,
    config: TextConfig | None = None,
    vocab: Tokenizer | None = None,
    unknown: str = "replace",
    cache: bool = True,
    what: str = "corpus",
    progress: catalogue.Progress | None = None,
    sha256: str | None = None,
) -> Corpus:
    """The file's token ids and vocabulary (built from the file, unless `vocab` is given).

    `path` may also name a corpus of the catalogue (`timemachine`), downloaded with `progress`
    reports if need be; with no path, the project's own default corpus; a directory or a list
    stands for the files in it. Characters outside a given vocabulary follow `unknown` ("error",
    "replace" or "skip"). With `cache`, the ids are stored under chargen_home() and memory-mapped.
    With `config.items`, the text is a list of items (see items.py). With `sha256` (a run's record
    of the text it read), the files must still hold that text: CorpusChanged otherwise, before any
    of it is read.
    """
    config = config or TextConfig()
    require_cuttable(config)  # before a named corpus is fetched or a file read
    paths, name, where = resolve_paths(path, progress, what)
    if config.items is not None and isinstance(vocab, Vocab) and END not in vocab.chars:
        raise CorpusError(f"the vocabulary has no end-of-item symbol, so {what} cannot be read as a list")
    recorded, sha256 = sha256, sources_sha256(paths)
    if recorded is not None and sha256 != recorded:
        raise CorpusChanged(
            f"{what} {where} has changed since the run read it: its sha256 is not the recorded one"
        )

    if not cache:
        vocab = vocab or (ByteVocab() if config.tokenizer == "bytes" else _count_vocab(paths, config, what))
        parts: list[np.ndarray] = []
        n_unknown = _encode(paths, config, vocab, unknown, what, parts)
        ids = np.concatenate(parts) if parts else np.zeros(0, dtype=vocab.dtype)
        return Corpus(name, where, sha256, config, vocab, ids, n_unknown, paths)

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
            _write_cache(paths, config, vocab, unknown, what, ids_path, meta_path)
        except OSError:  # no writable cache, or no room in it: work in memory instead
            return load_corpus(path, config, vocab, unknown, cache=False, what=what, sha256=recorded)
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    vocab = tokenizer_from_dict(meta["vocab"])
    size = ids_path.stat().st_size // np.dtype(meta["dtype"]).itemsize
    ids = (
        np.memmap(ids_path, dtype=meta["dtype"], mode="r", shape=(size,))
        if size
        else np.zeros(0, vocab.dtype)
    )
    return Corpus(name, where, sha256, config, vocab, ids, meta["unknown"], paths)


def _write_cache(
    paths: list[Path],
    config: TextConfig,
    vocab: Tokenizer | None,
    unknown: str,
    what: str,
    ids: Path,
    meta: Path,
) -> None:
    """Encode the file into a cache entry: its ids, then the description that marks it complete."""
    vocab = vocab or (ByteVocab() if config.tokenizer == "bytes" else _count_vocab(paths, config, what))
    with _replacing(ids, "wb") as sink:
        n_unknown = _encode(paths, config, vocab, unknown, what, sink)
    # Last, and whole or not at all: it marks the cache entry complete, and several processes
    # (torchrun) may be writing the same entry at once.
    with _replacing(meta, "w") as sink:
        entry = {
            "vocab": vocab.to_dict(),
            "dtype": vocab.dtype.str,
            "unknown": n_unknown,
            "source": [str(p) for p in paths],
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
