import unicodedata
from pathlib import Path

import numpy as np
import pytest

from chargen.config import TextConfig
from chargen.corpus import DEFAULT_CORPUS, chargen_home, load_corpus
from chargen.errors import CorpusError, VocabError
from chargen.items import ItemSpans
from chargen.vocab import UNKNOWN, ByteVocab

# Turkish, Portuguese, CJK, emoji with a ZWJ sequence and skin tones, a keycap, combining marks.
MIXED = (
    "İstanbul'da ığdır şöyle çöp üzüm; ação, pão, coração, é\n"
    "東京と大阪 👩‍👩‍👧‍👦 👍🏽 👋🏿 1️⃣ #️⃣ ❤️ naïve ñ a\u0308\u0301\n"
)
MIXED_NFC = unicodedata.normalize("NFC", MIXED)  # 'a' + diaeresis + acute becomes 'ä' + acute


def _write(tmp_path: Path, content: bytes | str, name: str = "t.txt") -> Path:
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
    return path


def test_reads_utf8_drops_a_byte_order_mark_and_round_trips(tmp_path: Path) -> None:
    corpus = load_corpus(_write(tmp_path, "\ufeff" + MIXED))
    assert corpus.decode().encode() == MIXED_NFC.encode()  # byte-exact after NFC
    assert corpus.name == "t" and corpus.unknown == 0
    assert set(corpus.vocab.chars) == set(MIXED_NFC)


def test_nfc_makes_one_character_of_a_letter_and_its_combining_mark(tmp_path: Path) -> None:
    decomposed = "s\u0327apka e\u0301"  # s + combining cedilla, e + combining acute
    corpus = load_corpus(_write(tmp_path, decomposed))
    assert corpus.decode() == "şapka é"
    raw = load_corpus(_write(tmp_path, decomposed, "raw.txt"), TextConfig(normalize="none"))
    assert raw.decode() == decomposed and "\u0327" in raw.vocab.chars


def test_bytes_tokenizer_has_256_symbols_and_round_trips(tmp_path: Path) -> None:
    corpus = load_corpus(_write(tmp_path, MIXED), TextConfig(tokenizer="bytes"))
    assert isinstance(corpus.vocab, ByteVocab) and len(corpus.vocab) == 256
    assert corpus.ids.tobytes() == MIXED_NFC.encode() and corpus.decode() == MIXED_NFC


def test_lowercase_and_min_count(tmp_path: Path) -> None:
    corpus = load_corpus(_write(tmp_path, "Aaaa bbb cC zz q"), TextConfig(lowercase=True, min_count=2))
    assert corpus.vocab.chars == [" ", "a", "b", "c", "z", UNKNOWN]
    assert corpus.unknown == 1 and corpus.decode().endswith(UNKNOWN)


def test_d2l_preset_keeps_letters_and_one_space(tmp_path: Path) -> None:
    corpus = load_corpus(
        _write(tmp_path, "The Time-Machine, 1895!\n  by H. G. Wells"), TextConfig(preset="d2l")
    )
    assert corpus.decode() == "the time machine by h g wells"
    assert UNKNOWN in corpus.vocab.chars  # as in the book: letters, space and <unk>


def test_the_cache_maps_the_ids_and_is_keyed_by_settings(tmp_path: Path) -> None:
    path = _write(tmp_path, "abc " * 1000)
    first = load_corpus(path)
    assert isinstance(first.ids, np.memmap) and first.ids.dtype == np.uint8
    assert len(list((chargen_home() / "tokens").glob("*.ids"))) >= 1
    again = load_corpus(path)
    assert again.ids.filename == first.ids.filename and np.array_equal(again.ids, first.ids)
    other = load_corpus(path, TextConfig(tokenizer="bytes"))
    assert other.ids.filename != first.ids.filename


def test_a_given_vocabulary_and_unknown_policies(tmp_path: Path) -> None:
    vocab = load_corpus(_write(tmp_path, "abc abc")).vocab
    path = _write(tmp_path, "abz", "other.txt")
    with pytest.raises(VocabError, match=r"'z' \(U\+007A\)"):
        load_corpus(path, vocab=vocab, unknown="error", cache=False)
    skipped = load_corpus(path, vocab=vocab, unknown="skip", cache=False)
    assert skipped.decode() == "ab" and skipped.unknown == 1


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "is empty"),
        (b" \n\t\n", "only white space"),
        (b"abc\x00def", "NUL bytes"),
        ("line one\nbad é".encode("latin-1"), r"not valid utf-8 at line 2, column 5 \(byte 13\)"),
        ("hi".encode("utf-16"), r"NUL bytes .*`encoding='utf-16'`"),
    ],
)
def test_unusable_files_are_refused_with_the_reason(tmp_path: Path, content: bytes, message: str) -> None:
    with pytest.raises(CorpusError, match=message):
        load_corpus(_write(tmp_path, content, "bad.txt"))


def test_other_encodings_and_replacing_bad_bytes(tmp_path: Path) -> None:
    utf16 = _write(tmp_path, "şapka".encode("utf-16"), "u16.txt")
    assert load_corpus(utf16, TextConfig(encoding="utf-16")).decode() == "şapka"
    no_mark = _write(tmp_path, "şapka\n".encode(), "u8.txt")  # read as UTF-16: no byte-order mark
    with pytest.raises(CorpusError, match=r"cannot be read as utf-16 .*give its `encoding`"):
        load_corpus(no_mark, TextConfig(encoding="utf-16"))
    latin = _write(tmp_path, "café".encode("latin-1"), "l1.txt")
    assert load_corpus(latin, TextConfig(errors="replace")).decode() == "caf\ufffd"


def test_missing_file_and_directory(tmp_path: Path) -> None:
    with pytest.raises(CorpusError, match="not found"):
        load_corpus(tmp_path / "nope.txt")
    with pytest.raises(CorpusError, match="has no files"):
        load_corpus(tmp_path)


def test_the_default_corpus_is_the_projects_own_and_large_enough() -> None:
    corpus = load_corpus(None)
    assert corpus.path == DEFAULT_CORPUS and corpus.name == "the-lamp-at-pellow-point"
    assert DEFAULT_CORPUS.stat().st_size >= 80_000
    assert corpus.decode().lower().count("time traveller") >= 100


def test_an_empty_file_among_several_is_no_text_but_all_empty_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "notes"
    folder.mkdir()
    (folder / "a.txt").write_text("şimdi\n", encoding="utf-8")
    (folder / "b.txt").write_text("", encoding="utf-8")  # a note begun and left empty
    (folder / "c.txt").write_text("ação\n", encoding="utf-8")
    assert load_corpus(folder, cache=False).decode() == "şimdi\n\n\nação\n"
    files = load_corpus(folder, TextConfig(items="files"), cache=False)
    spans = ItemSpans.of(files.ids, files.end_id)
    items = [files.vocab.decode(files.ids[a:b]) for a, b in zip(spans.starts, spans.ends, strict=True)]
    assert items == ["şimdi", "ação"]
    for name in ("a.txt", "c.txt"):
        (folder / name).write_text(" \n", encoding="utf-8")
    with pytest.raises(CorpusError, match="has no text: its 3 files are empty"):
        load_corpus(folder, cache=False)


def test_a_windows_line_break_is_read_as_a_line_feed_unless_kept(tmp_path: Path) -> None:
    text = "Çarşı, ação.\r\nİkinci satır\r\n" * 20
    path = _write(tmp_path, text, "crlf.txt")
    read = load_corpus(path, cache=False)
    assert "\r" not in read.vocab.chars and read.decode() == text.replace("\r\n", "\n")
    kept = load_corpus(path, TextConfig(newlines="keep"), cache=False)
    assert "\r" in kept.vocab.chars and kept.decode() == text
    # A run stored before the setting existed read its text as it was: it keeps reading it so.
    assert TextConfig.from_dict({}).newlines == "keep" and TextConfig().newlines == "lf"
    assert TextConfig.from_dict(TextConfig().to_dict()) == TextConfig()
