"""Named corpora: the shared corpora stand in for the offline directory a user would set."""

import json
from pathlib import Path

import pytest

from chargen import catalogue
from chargen.config import TextConfig
from chargen.corpus import load_corpus
from chargen.errors import CorpusError
from tests.conftest import SHARED_CORPORA


def test_the_catalogue_lists_the_shared_corpora_with_their_checksums() -> None:
    entries = catalogue.entries()
    assert {"timemachine", "tinyshakespeare"} <= set(entries)
    for entry in entries.values():
        assert entry.url.startswith(("http://", "https://")) and len(entry.sha256) == 64 and entry.licence


def test_a_name_resolves_to_the_offline_directory(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHARGEN_CORPORA", str(SHARED_CORPORA))
    corpus = load_corpus("timemachine")
    assert corpus.name == "timemachine" and corpus.path == SHARED_CORPORA / "timemachine.txt"
    assert corpus.sha256 == catalogue.entries()["timemachine"].sha256


def test_d2l_preset_gives_the_books_28_symbols(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHARGEN_CORPORA", str(SHARED_CORPORA))
    corpus = load_corpus("timemachine", TextConfig(preset="d2l"))
    assert len(corpus.vocab) == 28  # 26 letters, space and the unknown symbol


def test_a_wrong_checksum_is_refused_with_both_hashes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "timemachine.txt").write_text("not the book")
    monkeypatch.setenv("CHARGEN_CORPORA", str(tmp_path))
    expected = catalogue.entries()["timemachine"].sha256
    with pytest.raises(CorpusError, match=rf"its sha256 is [0-9a-f]{{64}}, expected {expected}"):
        load_corpus("timemachine")


def test_offline_with_no_file_says_what_to_do(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    unreachable = {
        "nowhere": {
            "title": "a corpus behind a closed port",
            "file": "nowhere.txt",
            "url": "http://127.0.0.1:9/nowhere.txt",
            "sha256": "0" * 64,
            "bytes": 10,
            "licence": "none",
            "strip_before": None,
            "strip_after": None,
        }
    }
    (tmp_path / "catalogue.json").write_text(json.dumps(unreachable))
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
