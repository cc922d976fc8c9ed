"""Lists of items (names, titles, poems): reading them from files, the end-of-item symbol, finding
them again in a run of ids, and holding a seeded random share of them out. No torch here.

An items text is stored as ordinary ids with one extra symbol, END, before the first item and after
each one:

    END e m m a END o l i v i a END a v a END

Read as input, END means "an item begins here" (the model sees it with a fresh state); as a target
it means "the item ends here", which the model learns to predict, so a sample can stop by itself.
END is the NUL character: text.py refuses NUL in every corpus, so it never stands for real text.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from chargen.config import TextConfig
from chargen.errors import ConfigError, CorpusError
from chargen.text import Preparer, prepare, read_chunks, read_text
from chargen.vocab import quoted

END = "\x00"
IGNORE = -100  # a target the loss leaves out: cross_entropy's default ignore_index
SPLIT_SEED = 0  # the held-out items are the same for every run of a list, whatever its seed
_BLANK_LINES = re.compile(r"(\n(?:[ \t\r]*\n)+)")  # grouped: re.split keeps what it cut at


def describe_mode(mode: str) -> str:
    """How a mode reads, for messages: `lines`, `files`, `paragraphs`, or a separator."""
    return mode if mode in ("lines", "files", "paragraphs") else f"separator {quoted(mode)}"


def _clean(item: str) -> str:
    """An item without the line breaks around it or trailing blanks; its inner lines stay as they are."""
    return item.lstrip("\r\n").rstrip()


def _prepared_separator(config: TextConfig) -> str:
    """The separator `config.items` gives, prepared as the text it cuts is, so that it matches what it
    matched in the file: CR LF read as LF, the same normalisation, lowercased where the text is. Of
    the d2l preset only the lowercasing applies: its letters-only fold would make any separator of
    punctuation or line breaks one space, which would cut the text at every word."""
    mode = config.items
    assert mode is not None and mode not in ("lines", "files", "paragraphs"), mode
    lowercase = config.lowercase or config.preset == "d2l"
    return prepare(mode, replace(config, preset=None, lowercase=lowercase))


def require_cuttable(config: TextConfig) -> None:
    """Refuse a list that the d2l preset's fold leaves nothing to cut at: the fold makes every run of
    characters other than A-Z and a-z one space, so blank lines, and a separator holding anything but
    those letters and single spaces, are gone from the prepared text before it is cut. (`lines` cuts
    the text before preparing each line, and `files` cuts nothing.)"""
    mode = config.items
    if config.preset != "d2l" or mode in (None, "lines", "files"):
        return
    if mode == "paragraphs":
        raise ConfigError(
            "`items='paragraphs'` cuts at blank lines, and `preset='d2l'` makes every run of characters "
            "other than A-Z and a-z one space, so none would be left; use `items='lines'` or "
            "`items='files'`, or leave out `preset`",
            "items",
        )
    kept, folded = _prepared_separator(config), prepare(mode, config)
    if folded != kept:
        raise ConfigError(
            f"`preset='d2l'` makes every run of characters other than A-Z and a-z one space, so the "
            f"separator {quoted(kept)} would be {quoted(folded)} and `items` could never cut the text at "
            "it; give a separator of those letters and single spaces (such as ' END '), or leave out "
            "`preset`",
            "items",
        )


def _cut(text: str, config: TextConfig) -> list[tuple[str, str]]:
    """A prepared text cut as `config.items` (not `lines`) cuts it, blank parts included: each part
    with the separator after it ("" after the last)."""
    if config.items == "files":
        return [(text, "")]
    if config.items == "paragraphs":
        pieces = _BLANK_LINES.split(text)  # part, blank lines, part, ..., part
        return list(zip(pieces[::2], [*pieces[1::2], ""], strict=True))
    separator = _prepared_separator(config)
    parts = text.split(separator)
    return [(part, separator) for part in parts[:-1]] + [(parts[-1], "")]


def _part_items(cut: list[tuple[str, str]]) -> Iterator[tuple[int, str]]:
    """The items of a cut text (blank parts left out, the rest cleaned), each with the line it
    begins on, counted from 0."""
    line = 0
    for part, separator in cut:
        if part.strip():
            lead = len(part) - len(part.lstrip("\r\n"))  # the line breaks _clean takes off its start
            yield line + part.count("\n", 0, lead), _clean(part)
        line += part.count("\n") + separator.count("\n")


def _line_items(text: str, config: TextConfig) -> Iterator[tuple[int, str]]:
    """The items of a text (as read, not yet prepared) read as `lines`: each line stripped, prepared,
    then cleaned as a separator's parts are (the d2l preset folds a line's last punctuation into a
    space), with its line counted from 0; a line blank before or after preparing is no item."""
    for k, line in enumerate(text.split("\n")):
        if line.strip() and (item := _clean(prepare(line.strip(), config))):
            yield k, item


def text_items(text: str, config: TextConfig) -> list[str]:
    """The items of one text (as read, not yet prepared), each prepared as a run of `config` reads
    them from a file; blank ones are left out. A text with no separator is one item (a file of a list
    must have one, see item_texts; one text scored against a list's run need not)."""
    mode = config.items
    assert mode is not None
    if mode == "lines":
        return [item for _, item in _line_items(text, config)]
    return [item for _, item in _part_items(_cut(prepare(text, config), config))]


def item_texts(paths: list[Path], config: TextConfig, what: str = "corpus") -> Iterator[str]:
    """The items of `paths`, each prepared as config says, in file order. Blank items are left out.

    `lines` streams the files in chunks; the other modes read one file at a time whole."""
    return (item for _, _, item in located_items(paths, config, what))


def located_items(
    paths: list[Path], config: TextConfig, what: str = "corpus"
) -> Iterator[tuple[Path, int, str]]:
    """The items of `paths` as item_texts gives them, each with its file and the line of that file
    it begins on, counted from 1 (in the prepared text, which has the file's lines but for `preset`)."""
    mode = config.items
    assert mode is not None
    if mode == "files" and len(paths) < 2:
        raise CorpusError(
            f"{what} {paths[0]} is a single file, and `items='files'` makes each file one item: "
            "give a directory or several files"
        )
    found_separator, several = False, len(paths) > 1  # of several files, one may be empty
    for path in paths:
        if mode == "lines":
            line = 1
            for piece in read_chunks(path, config, what, empty_ok=several):  # pieces end at a line break
                for k, item in _line_items(piece, config):
                    yield path, line + k, item
                line += piece.count("\n")
            continue
        cut = _cut(read_text(path, config, what, empty_ok=several), config)
        found_separator = found_separator or len(cut) > 1
        for k, item in _part_items(cut):
            yield path, 1 + k, item
    if mode not in ("lines", "files") and not found_separator:
        missing = "blank line" if mode == "paragraphs" else describe_mode(mode)
        raise CorpusError(
            f"{what} has no {missing} anywhere, so read with `items={quoted(mode)}` it would be one item"
        )


def source_pieces(paths: list[Path], config: TextConfig, what: str = "corpus") -> Iterator[str]:
    """The prepared text of `paths` in pieces, as the vocabulary and the ids are made from it.

    Without items: the files' texts joined by a line break (one file: its text as it is). With
    items: END, then every item followed by END."""
    if config.items is None:
        preparer = Preparer(config)
        for piece in text_pieces(paths, config, what):
            yield preparer(piece)
        return
    yield END
    batch: list[str] = []
    count = 0
    for item in item_texts(paths, config, what):
        if END in item:
            raise CorpusError(f"{what} has a NUL character inside an item; it is not text")
        batch.append(item)
        count += 1
        if len(batch) == 4096:
            yield END.join(batch) + END
            batch = []
    if batch:
        yield END.join(batch) + END
    if count == 0:  # a list to train on needs 2 (split_items holds one out); one to score, 1
        raise CorpusError(f"{what} has no items when read as {describe_mode(config.items)}")


def text_pieces(paths: list[Path], config: TextConfig, what: str = "corpus") -> Iterator[str]:
    """The files' texts as read (decoded, not prepared), joined by a line break, in pieces that end
    at a line break (the last need not): one file's text as it is. Of several files, some may be
    empty or only white space, not all."""
    has_text = False
    for k, path in enumerate(paths):
        if k:
            yield "\n"
        for piece in read_chunks(path, config, what, empty_ok=len(paths) > 1):
            has_text = has_text or not piece.isspace()
            yield piece
    if not has_text:  # one file says so itself; of several, each may be empty but not all
        raise CorpusError(f"{what} has no text: its {len(paths)} files are empty or only white space")


def list_files(paths: Iterable[Path], what: str = "corpus") -> list[Path]:
    """The files to read, in order: each file given, and the files under each directory given
    (recursively, sorted by path, hidden ones left out)."""
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            found = sorted(
                p
                for p in path.rglob("*")
                if p.is_file() and not any(part.startswith(".") for part in p.relative_to(path).parts)
            )
            if not found:
                raise CorpusError(f"{what} directory {path} has no files")
            files.extend(found)
        else:
            files.append(path)
    return files


# --- items in a run of ids ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ItemSpans:
    """Where the items of an END-delimited run of ids are: item k is ids[starts[k]:ends[k]], read
    from the END at starts[k] - 1, and predicting the END at ends[k]."""

    starts: np.ndarray  # (N,) int64
    ends: np.ndarray  # (N,) int64

    def __len__(self) -> int:
        return len(self.starts)

    @property
    def steps(self) -> np.ndarray:
        """(N,) characters each item predicts: its own and its END."""
        return self.ends - self.starts + 1

    def texts(self, ids: np.ndarray, decode: Callable[[np.ndarray], str]) -> list[str]:
        """Every item's text (without its END), decoded by `decode` (a vocabulary's)."""
        return [decode(ids[s:e]) for s, e in zip(self.starts.tolist(), self.ends.tolist(), strict=True)]

    def padded(
        self, ids: np.ndarray, chosen: np.ndarray, length: int, end_id: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """Inputs and targets (length, B) int64 of the `chosen` items side by side, each read from
        its END; past an item's end the input is END and the target IGNORE."""
        ids = np.asarray(ids)
        t = np.arange(length)[:, None]  # (L, 1)
        inside = t < self.steps[chosen][None, :]  # (L, B)
        positions = np.where(inside, self.starts[chosen][None, :] - 1 + t, 0)  # the END, then on
        x = np.where(inside, ids[positions].astype(np.int64), end_id)
        y = np.where(inside, ids[np.where(inside, positions + 1, 0)].astype(np.int64), IGNORE)
        return x, y

    @classmethod
    def of(cls, ids: np.ndarray, end_id: int) -> ItemSpans:
        marks = np.flatnonzero(np.asarray(ids) == end_id)
        if len(marks) < 2 or marks[0] != 0 or marks[-1] != len(ids) - 1:
            raise CorpusError("the ids are not a list of items (END before the first and after each)")
        return cls(starts=marks[:-1] + 1, ends=marks[1:])


def gather(ids: np.ndarray, spans: ItemSpans, chosen: np.ndarray, end_id: int) -> np.ndarray:
    """A new END-delimited run of ids holding the `chosen` items, in that order."""
    starts, ends = spans.starts[chosen], spans.ends[chosen]
    lengths = ends - starts + 1  # each item and the END after it
    # The positions to copy: for item k, starts[k]..ends[k] (its END included), one item after another.
    offsets = np.repeat(np.cumsum(lengths) - lengths, lengths)
    positions = np.repeat(starts, lengths) + np.arange(int(lengths.sum())) - offsets
    out = np.empty(int(lengths.sum()) + 1, dtype=np.asarray(ids).dtype)
    out[0] = end_id
    out[1:] = np.asarray(ids)[positions]
    return out


def split_items(
    ids: np.ndarray, end_id: int, val_fraction: float, seed: int = SPLIT_SEED
) -> tuple[np.ndarray, np.ndarray]:
    """Training and held-out ids: a seeded random `val_fraction` of the items (at least one) is held
    out, the rest trains, each part in the list's order."""
    spans = ItemSpans.of(ids, end_id)
    n = len(spans)
    n_val = min(n - 1, max(1, round(n * val_fraction)))
    if n < 2:
        raise CorpusError(f"the list has {n} item: too few to hold one out for validation")
    held = np.zeros(n, dtype=bool)
    held[np.random.default_rng(seed).permutation(n)[:n_val]] = True
    return gather(ids, spans, np.flatnonzero(~held), end_id), gather(ids, spans, np.flatnonzero(held), end_id)


def first_items(ids: np.ndarray, end_id: int, max_chars: int) -> np.ndarray:
    """The leading whole items of `ids` within `max_chars` ids (at least the first item)."""
    marks = np.flatnonzero(np.asarray(ids[: max_chars + 1]) == end_id)
    cut = marks[-1] if len(marks) > 1 else ItemSpans.of(ids, end_id).ends[0]
    return np.asarray(ids[: cut + 1])
