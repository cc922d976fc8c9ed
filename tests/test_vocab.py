import numpy as np
import pytest

from chargen.errors import VocabError
from chargen.vocab import ByteVocab, Vocab, tokenizer_from_dict

MIXED = "İstanbul'da ığdır şöyle çüş; ação, pão e coração; 東京 😀👍🏽 e\u0301 end\n"


def test_round_trip_is_exact_for_mixed_unicode() -> None:
    vocab = Vocab.from_text(MIXED)
    ids = vocab.encode(MIXED)
    assert vocab.decode(ids) == MIXED
    assert len(ids) == len(MIXED)  # one id per code point, astral emoji included


def test_ids_follow_code_point_order_and_use_a_compact_dtype() -> None:
    vocab = Vocab.from_text("cab")
    assert vocab.chars == ["a", "b", "c"]
    assert vocab.encode("abc").tolist() == [0, 1, 2]
    assert vocab.encode("abc").dtype == np.uint8
    assert Vocab([chr(0x4E00 + i) for i in range(300)]).dtype == np.uint16


def test_unknown_characters_are_named() -> None:
    vocab = Vocab.from_text("hello")
    with pytest.raises(VocabError, match=r"'z' \(U\+007A\)") as info:
        vocab.encode("hello z", what="the prefix")
    assert "the prefix" in str(info.value)
    assert vocab.unknown_chars("hi zé") == [" ", "i", "z", "é"]


def test_serialisation_round_trip() -> None:
    vocab = Vocab.from_text(MIXED)
    assert tokenizer_from_dict(vocab.to_dict()) == vocab


def test_byte_stream_decoding_never_emits_a_partial_character() -> None:
    vocab = ByteVocab()
    decoder = vocab.decoder()
    pieces = [decoder.decode([b]) for b in "ş😀".encode()]  # 2 + 4 bytes, fed one at a time
    assert pieces == ["", "ş", "", "", "", "😀"]
    assert decoder.decode([0xFF, 0x41]) == "\ufffdA"  # an invalid byte becomes U+FFFD
    assert decoder.decode([0xE2, 0x82]) == "" and decoder.decode([], final=True) == "\ufffd"


def test_unknown_symbol_policies() -> None:
    vocab = Vocab.from_text("abc", with_unknown=True)
    assert vocab.decode(vocab.encode("abz", unknown="replace")) == "ab\ufffd"
    assert vocab.decode(vocab.encode("abz", unknown="skip")) == "ab"
    ids, unknown = vocab.encode_counting("zzab", unknown="replace")
    assert unknown == 2 and len(ids) == 4
