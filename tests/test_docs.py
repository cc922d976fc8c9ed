"""The README is a short front door: every command reachable from it, and every link from it and
between the documents it leads to resolves, anchors included."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from chargen.bench import BENCHMARKS
from chargen.cli import app
from chargen.config import ITEM_COUNT

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
DOCUMENTS = [README, REPO / "corpora" / "README.md", *sorted((REPO / "docs").glob("*.md"))]
LINK = re.compile(r"\]\(([^)\s]+)\)")  # the target of [text](target); the text may hold brackets


def _prose(path: Path) -> str:
    """The file without its fenced code blocks, where brackets are code, not links."""
    return re.sub(r"^```.*?^```", "", path.read_text(encoding="utf-8"), flags=re.M | re.S)


def _anchors(path: Path) -> set[str]:
    """The anchors GitHub gives the headings: lowercased, punctuation dropped, spaces to hyphens,
    and -1, -2, ... after a repeated one."""
    anchors: set[str] = set()
    for heading in re.findall(r"^#+ (.+)$", _prose(path), flags=re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        anchor, n = slug, 0
        while anchor in anchors:
            n += 1
            anchor = f"{slug}-{n}"
        anchors.add(anchor)
    return anchors


def _links(path: Path) -> list[str]:
    return [t for t in LINK.findall(_prose(path)) if not t.startswith(("http://", "https://", "mailto:"))]


def test_every_relative_link_resolves_to_a_file_and_anchor() -> None:
    checked = 0
    for document in DOCUMENTS:
        for target in _links(document):
            file, _, anchor = target.partition("#")
            goal = (document.parent / file).resolve() if file else document
            assert goal.is_file(), f"{document.relative_to(REPO)}: {target} is not a file"
            if anchor:
                assert anchor in _anchors(goal), f"{document.relative_to(REPO)}: {target} has no such heading"
            checked += 1
    assert checked > 20


def test_the_readme_is_short_and_leads_to_every_document_and_command() -> None:
    text = README.read_text(encoding="utf-8")
    assert len(text) <= 12_000
    links = set(_links(README))
    for document in (REPO / "docs").glob("*.md"):
        assert f"docs/{document.name}" in links, f"README does not link {document.name}"
    commands = [command.name or command.callback.__name__ for command in app.registered_commands]
    for name in commands:
        assert f"docs/commands.md#chargen-{name}" in links, f"README does not lead to chargen {name}"
    assert "./quickstart" in text and "bash .ci/run" in text


def test_the_option_tables_give_the_defaults_the_commands_have() -> None:
    """A row `| --flag | default | ... |` of docs/commands.md whose default is a plain number or a
    quoted word must be the default of that option in a command that has it."""
    import typer.main

    defaults: dict[str, list[object]] = {}
    for command in typer.main.get_command(app).commands.values():  # type: ignore[attr-defined]
        for param in command.params:
            for name in getattr(param, "opts", []):
                defaults.setdefault(name, []).append(param.default)
    checked = 0
    text = (REPO / "docs" / "commands.md").read_text(encoding="utf-8")
    for flag, default in re.findall(r"^\| `(--[\w-]+)(?: [A-Z_]+)?` \| ([^|]+?) \|", text, flags=re.M):
        literal = re.fullmatch(r"`([\w.-]+)`|([\d,.]+)", default)
        if literal is None:  # off, planned, random, prose: said in words, not checked here
            continue
        assert flag in defaults, f"docs/commands.md documents {flag}, which no command has"
        word, number = literal.groups()
        if flag == "--items" and number is not None:  # sample's: None, which a list's run reads as this
            assert int(number) == ITEM_COUNT, f"docs/commands.md gives --items {number}, not {ITEM_COUNT}"
            checked += 1
            continue
        if number is not None:
            got = [
                d
                for d in defaults[flag]
                if isinstance(d, int | float) and float(number.replace(",", "")) == d
            ]
        else:
            got = [d for d in defaults[flag] if str(d) == word]
        assert got, f"docs/commands.md gives {flag} the default {default}; the commands: {defaults[flag]}"
        checked += 1
    assert checked >= 15, checked


def test_the_docs_name_each_value_as_the_help_does() -> None:
    """A placeholder the docs write after a flag (`--model RUN_DIR`) is that flag's own in `--help`,
    and each command's usage line in docs/commands.md names its arguments as `--help` does."""
    import typer.main

    commands = typer.main.get_command(app).commands  # type: ignore[attr-defined]
    metavars: dict[str, set[str]] = {}
    for command in commands.values():
        for param in command.params:
            for name in getattr(param, "opts", []):
                metavars.setdefault(name, set()).add(param.metavar)
    checked = 0
    for document in (README, REPO / "docs" / "commands.md"):
        for flag, placeholder in re.findall(r"`[^`\n]*?(--[\w-]+) ([A-Z][A-Z_]*)\b", _prose(document)):
            assert placeholder in metavars.get(flag, set()), f"{document.name}: {flag} {placeholder}"
            checked += 1
    assert checked >= 20, checked
    text = (REPO / "docs" / "commands.md").read_text(encoding="utf-8")
    for name, command in commands.items():
        usage = re.search(rf"^## chargen {name}\n\n`(chargen {name}[^`]*)`", text, flags=re.M)
        assert usage, f"docs/commands.md has no usage line for chargen {name}"
        bare = re.sub(r"--[\w-]+ [A-Z][A-Z_]*", "", usage[1])  # the options' placeholders, checked above
        arguments = {p.metavar for p in command.params if p.param_type_name == "argument"}
        assert set(re.findall(r"\b[A-Z][A-Z_]*\b", bare)) == arguments, usage[1]


def _command_sections() -> dict[str, str]:
    """Each command's section of docs/commands.md, by command name; serve's with docs/serve.md."""
    text = (REPO / "docs" / "commands.md").read_text(encoding="utf-8")
    parts = re.split(r"^## chargen (\w+)\n", text, flags=re.M)
    sections = {name: body for name, body in zip(parts[1::2], parts[2::2], strict=True)}
    sections["serve"] += (REPO / "docs" / "serve.md").read_text(encoding="utf-8")
    return sections


def _named(flag: str, text: str) -> bool:
    return re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", text) is not None


def test_every_option_is_named_in_its_commands_section() -> None:
    """Each option of each command appears in that command's section of the docs; for a switch on
    by default (`compare --plot`), the flag that turns it off."""
    import typer.main

    sections = _command_sections()
    checked = 0
    for name, command in typer.main.get_command(app).commands.items():  # type: ignore[attr-defined]
        assert name in sections, f"docs/commands.md has no section for chargen {name}"
        for param in command.params:
            if param.param_type_name != "option":
                continue
            flags = param.secondary_opts if param.is_flag and param.default is True else param.opts
            assert any(_named(flag, sections[name]) for flag in flags), f"chargen {name}: {flags[0]}"
            checked += 1
    assert checked >= 80, checked


def test_a_default_given_in_a_commands_prose_is_that_options_default() -> None:
    """A default written after an option in a command's section, "`--streams` (16)" or "`--model
    RUN_DIR` (default `runs/latest`)", is the default that command gives the option."""
    import typer.main

    sections = _command_sections()
    # `--flag` or `--flag PLACEHOLDER`, then (default `word`...) or (a number followed by ; ) or ,
    written = re.compile(
        r"`(--[\w-]+)(?: [A-Z][A-Z_]*)?`\s+\((?:default )?(?:`([^`]+)`|(\d[\d,]*(?:\.\d+)?)(?=[;),]))"
    )
    checked = 0
    for name, command in typer.main.get_command(app).commands.items():  # type: ignore[attr-defined]
        defaults = {flag: param.default for param in command.params for flag in getattr(param, "opts", [])}
        for flag, word, number in written.findall(sections[name]):
            if flag not in defaults:
                continue  # another command's option, named in passing
            default = defaults[flag]
            given = float(number.replace(",", "")) if number else word
            got = default if number and isinstance(default, int | float) else str(default)
            assert given == got, f"chargen {name} {flag}: the docs say {number or word}, not {default!r}"
            checked += 1
    assert checked >= 15, checked


def test_the_placeholder_paragraph_names_every_placeholder() -> None:
    """docs/commands.md says what each placeholder of `--help` stands for; none is left out."""
    import typer.main

    text = (REPO / "docs" / "commands.md").read_text(encoding="utf-8")
    paragraph = next(p for p in text.split("\n\n") if "placeholder says what to type" in p)
    metavars = {
        param.metavar
        for command in typer.main.get_command(app).commands.values()  # type: ignore[attr-defined]
        for param in command.params
        if param.metavar
    }
    assert {"RUN_DIR", "N", "DURATION", "ADDRESS"} <= metavars
    missing = sorted(m for m in metavars if f"`{m}`" not in paragraph)
    assert not missing, f"docs/commands.md's paragraph on placeholders does not name {missing}"


def test_the_short_text_example_has_the_streams_the_batch_gets(lamp_text: str, tmp_path: Path) -> None:
    """docs/commands.md's `--batch-size` row works an example, "a 400-character poem: 4 streams of
    64": a text of that many characters is given that many streams of that window by default."""
    from chargen.config import TrainConfig
    from chargen.settings import with_batch
    from tests.conftest import corpus_from_text

    text = (REPO / "docs" / "commands.md").read_text(encoding="utf-8")
    example = re.search(r"a ([\d,]+)-character poem: (\d+) streams of (\d+)", text)
    assert example, "docs/commands.md no longer works the example"
    chars, streams, bptt = (int(group.replace(",", "")) for group in example.groups())
    corpus = corpus_from_text(tmp_path, lamp_text[:chars])
    assert len(corpus.ids) == chars
    assert with_batch(TrainConfig(bptt=bptt), corpus).batch_size == streams
    assert bptt == TrainConfig.bptt  # the default window, as the example says "by default"


def test_the_cache_folder_is_where_the_docs_say(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """docs/corpora.md gives the rule for chargen's home, where the corpora, token and step caches
    live: $CHARGEN_HOME, else $XDG_CACHE_HOME/chargen, else ~/.cache/chargen, a variable set but
    empty counting as unset. It used to leave out $XDG_CACHE_HOME."""
    from chargen.paths import chargen_home

    text = " ".join((REPO / "docs" / "corpora.md").read_text(encoding="utf-8").split())
    rule = r"`\$CHARGEN_HOME` where that is set and not empty, else `\$XDG_CACHE_HOME/chargen` where that is"
    assert re.search(rule + r" set and not empty, else `~/\.cache/chargen`", text), "docs/corpora.md"
    monkeypatch.setenv("CHARGEN_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("HOME", str(tmp_path / "user"))
    assert chargen_home() == tmp_path / "home"
    monkeypatch.setenv("CHARGEN_HOME", "")
    assert chargen_home() == tmp_path / "xdg" / "chargen"
    monkeypatch.delenv("CHARGEN_HOME")
    monkeypatch.setenv("XDG_CACHE_HOME", "")
    assert chargen_home() == tmp_path / "user" / ".cache" / "chargen"


@pytest.mark.parametrize("name", list(BENCHMARKS))
def test_every_benchmark_option_is_named_in_the_docs(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    """Each option `python -m chargen.bench NAME --help` lists is named in docs/benchmarks.md (the
    serve benchmark's in docs/serve.md, beside the server). quality's and items' --keep and adapt's
    --text and --chars were not."""
    import importlib

    with pytest.raises(SystemExit):
        importlib.import_module(f"chargen.bench.{name}").main(["--help"])
    options = capsys.readouterr().out.split("\noptions:\n")[1]
    flags = [f for f in re.findall(r"^  (?:-\w, )?(--[\w-]+)", options, flags=re.M) if f != "--help"]
    assert len(flags) >= 3, options
    document = REPO / "docs" / ("serve.md" if name == "serve" else "benchmarks.md")
    text = document.read_text(encoding="utf-8")
    missing = [flag for flag in flags if not _named(flag, text)]
    assert not missing, f"{document.name} does not name the {name} benchmark's {missing}"
