"""Named corpora: a catalogue written here stands in for the offline directory a user would set;
the real catalogue's public texts are used only where they can be had."""

import hashlib
import json
from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner

from chargen import catalogue
from chargen.cli import app
from chargen.config import TextConfig
from chargen.corpus import load_corpus
from chargen.errors import CorpusError


def _catalogue_of_one(folder: Path, name: str, text: bytes) -> None:
    """A catalogue naming one text of `folder`, with its true checksum and an unreachable source."""
    entry = {
        "title": f"{name}, written by the test",
        "file": f"{name}.txt",
        "url": f"http://127.0.0.1:9/{name}.txt",
        "sha256": hashlib.sha256(text).hexdigest(),
        "bytes": len(text),
        "licence": "none",
        "strip_before": None,
        "strip_after": None,
    }
    (folder / "catalogue.json").write_text(json.dumps({name: entry}))


def test_the_catalogue_lists_the_public_corpora_with_their_checksums() -> None:
    entries = catalogue.entries()
    assert {"timemachine", "tinyshakespeare"} <= set(entries)
    for entry in entries.values():
        assert entry.url.startswith(("http://", "https://")) and len(entry.sha256) == 64 and entry.licence


def test_a_name_resolves_to_the_offline_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    text = b"A text the test wrote, standing in for a public one.\n" * 40
    (tmp_path / "written.txt").write_bytes(text)
    _catalogue_of_one(tmp_path, "written", text)
    monkeypatch.setattr(catalogue, "CATALOGUE", tmp_path / "catalogue.json")
    monkeypatch.setenv("CHARGEN_CORPORA", str(tmp_path))
    corpus = load_corpus("written")
    assert corpus.name == "written" and corpus.path == tmp_path / "written.txt"
    assert corpus.sha256 == catalogue.entries()["written"].sha256


def test_the_time_machine_is_the_d2l_books_text(public_corpus: Callable[[str], Path]) -> None:
    path = public_corpus("timemachine")
    corpus = load_corpus("timemachine")
    assert corpus.name == "timemachine" and corpus.path == path
    assert corpus.sha256 == catalogue.entries()["timemachine"].sha256
    d2l = load_corpus("timemachine", TextConfig(preset="d2l"))
    assert len(d2l.vocab) == 28  # 26 letters, space and the unknown symbol


def test_a_wrong_checksum_is_refused_with_both_hashes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "timemachine.txt").write_text("not the book")
    monkeypatch.setenv("CHARGEN_CORPORA", str(tmp_path))
    expected = catalogue.entries()["timemachine"].sha256
    with pytest.raises(CorpusError, match=rf"its sha256 is [0-9a-f]{{64}}, expected {expected}"):
        load_corpus("timemachine")


@pytest.mark.parametrize(
    ("offline_is", "refusal"),
    [
        (
            "a directory with another text under the name",
            "its sha256 is .*replace it with the catalogue's file",
        ),
        ("not a directory (a typo)", "offline, which is not a directory; set it to the directory"),
    ],
)
def test_the_listing_says_that_an_offline_refusal_is_refused_as_loading_does(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, offline_is: str, refusal: str
) -> None:
    text = b"The text the catalogue names.\n" * 40
    offline, cache = tmp_path / "offline", tmp_path / "home" / "corpora"
    cache.mkdir(parents=True)
    (cache / "written.txt").write_bytes(text)  # a good copy in the cache is not taken instead
    if offline_is.startswith("a directory"):
        offline.mkdir()
        (offline / "written.txt").write_bytes(b"Another text under its name.\n")
    _catalogue_of_one(tmp_path, "written", text)
    monkeypatch.setattr(catalogue, "CATALOGUE", tmp_path / "catalogue.json")
    monkeypatch.setenv("CHARGEN_CORPORA", str(offline))
    monkeypatch.setenv("CHARGEN_HOME", str(tmp_path / "home"))
    with pytest.raises(CorpusError, match=refusal) as refused:
        load_corpus("written")
    result = CliRunner().invoke(app, ["corpora"])
    assert result.exit_code == 0, result.output
    row = next(line for line in result.stdout.splitlines() if line.startswith("│ written"))
    assert "refused" in row and "offline" not in row and "cached" not in row, result.stdout
    assert result.stderr.strip() == f"written cannot be loaded: {refused.value}"  # the same words


def test_offline_with_no_file_says_what_to_do(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _catalogue_of_one(tmp_path, "nowhere", b"a corpus behind a closed port")
    monkeypatch.setattr(catalogue, "CATALOGUE", tmp_path / "catalogue.json")
    monkeypatch.setenv("CHARGEN_CORPORA", str(tmp_path))
    with pytest.raises(CorpusError, match=r"cannot download nowhere.*set CHARGEN_CORPORA"):
        load_corpus("nowhere")
    assert not (catalogue.chargen_home() / "corpora" / "nowhere.txt").exists()


def test_an_unknown_name_lists_the_known_ones() -> None:
    with pytest.raises(CorpusError, match=r"named corpora: .*timemachine"):
        load_corpus("no-such-corpus")


def test_header_and_footer_are_stripped() -> None:
    entry = catalogue.Entry("x", "x", "x.txt", "http://x", "0" * 64, 0, "none", "*** START", "*** END")
    text = b"licence\n*** START OF THE BOOK ***\nthe text\n*** END OF THE BOOK ***\nmore licence\n"
    assert catalogue._strip(entry, text) == b"the text\n"
