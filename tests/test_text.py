import random
from pathlib import Path

import pytest

from chargen.config import TextConfig
from chargen.text import Preparer, prepare, read_chunks


@pytest.mark.parametrize(
    "config", [TextConfig(), TextConfig(preset="d2l"), TextConfig(normalize="nfkc", lowercase=True)]
)
def test_chunked_preparation_equals_whole_text_preparation(tmp_path: Path, config: TextConfig) -> None:
    rng = random.Random(0)
    pieces = ["a", "B", " ", "\n", ",", "é", "e\u0301", "ş", "😀", "ﬁ", "--"]
    text = "".join(rng.choice(pieces) for _ in range(20_000))
    path = tmp_path / "t.txt"
    path.write_text(text, encoding="utf-8")
    preparer = Preparer(config)
    chunks = list(read_chunks(path, config, chunk_bytes=1000))
    assert len(chunks) > 10 and all(c.endswith("\n") for c in chunks[:-1])
    assert "".join(preparer(c) for c in chunks) == prepare(text, config)


def test_turkish_lowercasing_is_pythons_not_turkish() -> None:
    # Documented limitation: Python maps 'I' to 'i' (Turkish wants 'ı') and 'İ' to 'i' + a dot.
    assert prepare("IŞIK İzmir", TextConfig(lowercase=True)) == "işik i\u0307zmir"
