from pathlib import Path

import pytest

from chargen.corpus import load_corpus
from chargen.errors import CorpusError


def test_reads_utf8_and_drops_a_byte_order_mark(tmp_path: Path) -> None:
    path = tmp_path / "t.txt"
    path.write_bytes("\ufeffşapka ação".encode())
    corpus = load_corpus(path)
    assert corpus.text == "şapka ação" and corpus.name == "t"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "is empty"),
        (b" \n\t\n", "only white space"),
        (b"abc\x00def", "NUL bytes"),
        ("line one\nbad é".encode("latin-1"), r"not valid UTF-8 at line 2, column 5"),
        ("hi".encode("utf-16"), "NUL bytes|not valid UTF-8"),
    ],
)
def test_unusable_files_are_refused_with_the_reason(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "bad.txt"
    path.write_bytes(content)
    with pytest.raises(CorpusError, match=message):
        load_corpus(path)


def test_missing_file_and_directory(tmp_path: Path) -> None:
    with pytest.raises(CorpusError, match="not found"):
        load_corpus(tmp_path / "nope.txt")
    with pytest.raises(CorpusError, match="is a directory"):
        load_corpus(tmp_path)
