"""Text that is odd as Unicode: lone surrogates given as settings, separators prepared as the text is,
and combining marks shown where they cannot draw themselves onto a quote mark."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from chargen.cli import app
from chargen.config import SampleConfig
from chargen.errors import ConfigError
from chargen.records import TrainSummary
from chargen.serve.requests import Limits, parse_generate, parse_json, parse_score

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
            parse_generate({field: text}, Limits(), listed=False)
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
