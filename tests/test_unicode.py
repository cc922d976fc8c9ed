"""Text that is odd as Unicode: lone surrogates given as settings, separators prepared as the text is,
and combining marks shown where they cannot draw themselves onto a quote mark."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from chargen.cli import app
from chargen.config import SampleConfig, TextConfig
from chargen.corpus import load_corpus
from chargen.errors import ConfigError, VocabError
from chargen.items import ItemSpans, located_items, text_items
from chargen.records import TrainSummary
from chargen.serve.requests import Limits, parse_generate, parse_json, parse_score
from chargen.vocab import Vocab, describe_chars, quoted

runner = CliRunner()


def _one_line_error(result, code: int) -> str:  # type: ignore[no-untyped-def]
    assert result.exit_code == code, (result.output, result.exception)
    assert "Traceback" not in result.output and result.stdout == "", result.output
    message = result.stderr.strip()
    assert message.startswith("Error:") and "\n" not in message, message
    return message


def test_a_lone_surrogate_is_refused_in_the_library_and_the_server_alike() -> None:
    """Python makes U+DCFF of a byte 0xFF on a command line, and JSON makes U+D83D of a \\ud83d
    escape alone: neither is a character, and both are refused by one rule, naming the field."""
    for field, text in [("prefix", "ab\udcff"), ("stop", "\ud83d")]:
        with pytest.raises(ConfigError) as caught:
            SampleConfig(**{field: text})
        said = str(caught.value)
        assert caught.value.field == field and said.startswith(f"`{field}` holds U+"), said
        assert f"U+{ord(text[-1]):04X}" in said and "not UTF-8" in said, said
        with pytest.raises(ConfigError) as served:
            parse_generate({field: text}, Limits(), None)
        assert str(served.value) == said  # the server says what the library says
    with pytest.raises(ConfigError) as scored:
        parse_score(parse_json(b'{"text": "ab\\ud83dc"}'))
    assert scored.value.field == "text" and str(scored.value).startswith("`text` holds U+D83D")


def test_sample_refuses_a_prefix_or_stop_that_is_not_valid_unicode(tiny_run: TrainSummary) -> None:
    """Before, such a prefix ended in a traceback when it was printed (with --unknown skip), and such
    a stop text was searched for in vain."""
    base = ["sample", "--model", str(tiny_run.run_dir), "--length", "20", "--seed", "1"]
    prefix = runner.invoke(app, [*base, "--prefix", "The \udcff", "--unknown", "skip"])
    said = _one_line_error(prefix, code=2)
    assert said.startswith("Error: --prefix holds U+DCFF") and "not UTF-8" in said, said
    stop = runner.invoke(app, [*base, "--prefix", "The ", "--stop", "e\udcff"])
    assert _one_line_error(stop, code=2).startswith("Error: --stop holds U+DCFF")


def test_train_refuses_a_separator_that_is_not_valid_unicode_or_empty(tmp_path: Path) -> None:
    """A byte 0xFF in `--items` was searched for in vain, and the run refused with exit 1 for a list
    without its separator; it is a setting no text can hold, refused by the rule the prefix keeps."""
    (tmp_path / "list.txt").write_text("ana%bob%cleo%dora\n", encoding="utf-8")
    for command in ("train", "compare"):
        args = [command, str(tmp_path / "list.txt"), "--max-steps", "1", "--out", str(tmp_path / "run")]
        said = _one_line_error(runner.invoke(app, [*args, "--items", "%\udcff"]), code=2)
        assert said.startswith("Error: --items holds U+DCFF, half of a surrogate pair"), said
        assert "not UTF-8" in said, said
        said = _one_line_error(runner.invoke(app, [*args, "--items", ""]), code=2)
        assert said == "Error: --items must be lines, files, paragraphs or a separator string (not empty)"
        assert not (tmp_path / "run").exists()
    with pytest.raises(ConfigError) as caught:
        TextConfig(items="\ud83d")
    assert caught.value.field == "items" and str(caught.value).startswith("`items` holds U+D83D")


@pytest.mark.parametrize(
    ("config", "text"),
    [
        # A Windows file's separator, as typed: the text's CR LF is read as LF, and so is the separator's.
        (TextConfig(items="\r\n%\r\n"), "ana\r\n%\r\nbob\r\n%\r\ncleo\r\n"),
        # An accent typed decomposed (as macOS gives a file name, say), where NFC composed the text's.
        (TextConfig(items=" | e\u0301 | "), "ana | \u00e9 | bob | e\u0301 | cleo"),
        (TextConfig(items="<END>", lowercase=True), "Ana<END>Bob<END>Cleo"),
        (TextConfig(items=" END ", preset="d2l"), "Ana, END Bob! END Cleo."),  # lowercased, not folded
    ],
)
def test_a_separator_is_prepared_as_the_text_is(config: TextConfig, text: str, tmp_path: Path) -> None:
    path = tmp_path / "list.txt"
    path.write_bytes(text.encode("utf-8"))
    corpus = load_corpus(path, config, cache=False)
    read = ItemSpans.of(corpus.ids, corpus.end_id).texts(corpus.ids, corpus.vocab.decode)
    assert read == ["ana", "bob", "cleo"], read
    assert text_items(text, config) == read  # a text scored against the run is cut as the file was


def test_a_d2l_lists_lines_end_as_its_separated_items_do(tmp_path: Path) -> None:
    """The fold makes a line's last punctuation a space; a line's item ends without it, as an item
    cut at a separator does (before, 'Ana, END Bob!' was 'ana end bob '), and a line of punctuation
    alone, blank once folded, is no item, as a blank line is none (before, it was the item ' ')."""
    text = "Ana, END Bob!\n?!\nCleo.\n"
    config = TextConfig(items="lines", preset="d2l")
    path = tmp_path / "list.txt"
    path.write_text(text, encoding="utf-8")
    corpus = load_corpus(path, config, cache=False)
    read = ItemSpans.of(corpus.ids, corpus.end_id).texts(corpus.ids, corpus.vocab.decode)
    assert read == ["ana end bob", "cleo"], read
    assert text_items(text, config) == read
    assert [line for _, line, _ in located_items([path], config)] == [1, 3]  # each item's own line
    separated = TextConfig(items=" END ", preset="d2l")
    assert text_items("Ana, END Bob!", separated) == ["ana", "bob"]


def test_the_d2l_preset_refuses_a_list_its_fold_leaves_nothing_to_cut_at(tmp_path: Path) -> None:
    """Folded as the text is, '%' would be one space, and every word an item; not folded, it is gone
    from the folded text, as blank lines are, so such a list is refused before anything is read
    (it was refused after reading it, for a separator it had, with exit 1)."""
    config = TextConfig(items="%", preset="d2l")
    assert text_items("Ana % Bob % Cleo", config) == ["ana bob cleo"]  # never cut at every word
    (tmp_path / "list.txt").write_text("Ana % Bob % Cleo\n\nDora\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="the separator '%' would be ' '") as caught:
        load_corpus(tmp_path / "list.txt", config, cache=False)
    assert caught.value.field == "items"
    args = ["train", str(tmp_path / "list.txt"), "--preset", "d2l", "--out", str(tmp_path / "run")]
    for items, said in (
        ("%", "the separator '%' would be ' ' and --items could never cut the text at it"),
        ("\n", "the separator '\\n' would be ' '"),
        ("  ", "the separator '  ' would be ' '"),  # two spaces: the fold leaves one
        ("paragraphs", "--items paragraphs cuts at blank lines, and --preset d2l makes every run"),
    ):
        message = _one_line_error(runner.invoke(app, [*args, "--items", items]), code=2)
        assert said in message, message
        assert not (tmp_path / "run").exists()
    # What the fold keeps is cut at (lowercased, as the text is); lines are cut before the fold.
    for items, found in ((" end ", ["ana", "bob"]), ("lines", ["ana end bob"])):
        (tmp_path / "ok.txt").write_text("Ana, END Bob\n", encoding="utf-8")
        read = load_corpus(tmp_path / "ok.txt", TextConfig(items=items, preset="d2l"), cache=False)
        assert ItemSpans.of(read.ids, read.end_id).texts(read.ids, read.vocab.decode) == found


def test_a_combining_mark_shown_alone_is_escaped() -> None:
    """repr leaves a combining mark as it is, and alone it draws itself onto the quote mark before it."""
    assert quoted("\u0301") == "'\\u0301'" and quoted("q\u20dd\U0001d167") == "'q\\u20dd\\U0001d167'"
    assert quoted("é\t") == "'é\\t'"  # composed characters stay; what repr escapes, it still does
    assert describe_chars(["\u0301", "é"]) == "'\\u0301' (U+0301), 'é' (U+00E9)"
    with pytest.raises(VocabError) as caught:
        Vocab(list("ab")).encode("a\u0301b")
    assert "never seen: '\\u0301' (U+0301);" in str(caught.value), str(caught.value)


def test_the_line_an_unseen_character_is_on_is_quoted_as_the_character_is(
    tiny_run: TrainSummary, tmp_path: Path
) -> None:
    """The excerpt after "the first is on line N" was repr's, which left a lone combining mark to
    draw itself onto the quote mark before it; it is quoted by vocab.quoted, as the character is."""
    text = tmp_path / "accent.txt"
    text.write_text("the lamp\nthe q\u0301 and\tthe sea\n", encoding="utf-8")
    said = _one_line_error(runner.invoke(app, ["eval", "--model", str(tiny_run.run_dir), str(text)]), 1)
    assert "'\\u0301' (U+0301)" in said and "the first is on line 2: 'the q\\u0301 and\\tthe sea';" in said


def test_info_and_sample_escape_a_combining_mark(
    lamp_text: str, tiny_run: TrainSummary, tmp_path: Path
) -> None:
    """A q with an acute accent has no composed form, so NFC keeps the accent a character of its own."""
    corpus = tmp_path / "accents.txt"
    corpus.write_text(lamp_text[:20_000] + " q\u0301" * 20, encoding="utf-8")
    run = tmp_path / "run"
    tiny = ["--hidden", "16", "--embed", "8", "--layers", "1", "--batch-size", "4", "--bptt", "16"]
    trained = runner.invoke(app, ["train", str(corpus), *tiny, "--max-steps", "2", "--out", str(run)])
    assert trained.exit_code == 0, trained.output
    info = runner.invoke(app, ["info", str(run)], env={"COLUMNS": "300"})
    assert info.exit_code == 0, info.output
    assert "\\u0301" in info.stdout and "\u0301" not in info.stdout, info.stdout
    sample = runner.invoke(app, ["sample", "--model", str(tiny_run.run_dir), "--prefix", "q\u0301"])
    said = _one_line_error(sample, code=1)
    assert "--prefix has 1 character(s) the model has never seen: '\\u0301' (U+0301);" in said, said
