"""The command line end to end, on a tiny model: train -> sample -> eval, and bad input."""

import json
import re
import subprocess
import sys
import unicodedata
from pathlib import Path

import pytest
from typer.testing import CliRunner

from chargen import checkpoint as ckpt
from chargen.cli import app
from chargen.records import TrainSummary
from tests.conftest import words

runner = CliRunner()
TINY = ["--hidden", "32", "--embed", "16", "--layers", "1", "--batch-size", "4", "--bptt", "16"]


@pytest.fixture
def corpus_file(lamp_text: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)  # runs/ is made in the working directory
    path = tmp_path / "small.txt"
    path.write_text(lamp_text[:30_000], encoding="utf-8")
    return path


def test_train_sample_eval(corpus_file: Path) -> None:
    result = runner.invoke(
        app, ["train", str(corpus_file), *TINY, "--max-steps", "20", "--eval-every", "10", "--seed", "0"]
    )
    assert result.exit_code == 0, result.output
    assert (Path("runs/latest") / ckpt.BEST).is_file()
    assert "best validation" in result.stderr

    result = runner.invoke(app, ["sample", "--prefix", "The Time", "--length", "50", "--seed", "1"])
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("The Time") and len(result.stdout) == len("The Time") + 50 + 1
    again = runner.invoke(app, ["sample", "--prefix", "The Time", "--length", "50", "--seed", "1"])
    assert again.stdout == result.stdout

    result = runner.invoke(app, ["sample", "--length", "20", "--num-samples", "3", "--seed", "1"])
    assert result.exit_code == 0, result.output
    assert len(result.stdout.split("\n\n")) == 3

    result = runner.invoke(app, ["eval", "--json"])
    assert result.exit_code == 0, result.output
    figures = json.loads(result.stdout)
    assert {"chars", "loss", "perplexity", "bpc", "chars_per_sec"} <= set(figures)
    summary = json.loads((Path("runs/latest") / ckpt.SUMMARY).read_text())
    assert abs(figures["bpc"] - summary["best"]["bpc"]) < 1e-4

    result = runner.invoke(app, ["eval", str(corpus_file), "--model", "runs/latest"])
    assert result.exit_code == 0, result.output
    assert "bits per character" in result.stdout


def _one_line_error(result, code: int = 1) -> str:
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    message = result.stderr.strip()
    assert message.startswith("Error:") and "\n" not in message, message
    assert result.stdout == ""
    return message


def test_bad_input_gets_one_clear_line(corpus_file: Path, tmp_path: Path) -> None:
    (tmp_path / "empty.txt").write_text("")
    assert "not found" in _one_line_error(runner.invoke(app, ["train", "missing.txt"]))
    assert "empty" in _one_line_error(runner.invoke(app, ["train", "empty.txt"]))
    assert not Path("runs").exists()  # nothing half-written
    assert "not found" in _one_line_error(runner.invoke(app, ["sample", "--model", "nope"]))
    assert "not found" in _one_line_error(runner.invoke(app, ["eval", "--model", "nope"]))
    assert "--temperature" in _one_line_error(runner.invoke(app, ["sample", "--temperature", "-1"]), code=2)
    assert "--max-time" in _one_line_error(runner.invoke(app, ["train", "--max-time", "soon"]), code=2)
    huge = runner.invoke(app, ["train", str(corpus_file), "--layers", "1", "--hidden", "10000000"])  # 1.5 PiB
    assert "not enough memory for what was asked" in _one_line_error(huge) and not Path("runs").exists()
    unknown = runner.invoke(app, ["train", str(corpus_file), "--unknown", "skip"])  # it is --init's
    assert "give --init" in _one_line_error(unknown, code=2) and not Path("runs").exists()

    trained = runner.invoke(app, ["train", str(corpus_file), *TINY, "--max-steps", "2", "--eval-every", "2"])
    assert trained.exit_code == 0, trained.output
    message = _one_line_error(runner.invoke(app, ["sample", "--prefix", "Zoë ☃"]))
    assert "'☃' (U+2603)" in message and "--prefix" in message


def test_help_has_examples() -> None:
    commands = [command.name or command.callback.__name__ for command in app.registered_commands]
    assert {"train", "sample", "eval", "compare", "corpora"} <= set(commands)
    for command in ["", *commands]:  # chargen --help's own too
        result = runner.invoke(app, [*filter(None, [command]), "--help"])
        assert result.exit_code == 0 and "Example" in result.output, command


def _helps() -> dict[str, str]:
    """Every --help, by command ("" for chargen's own), at 100 columns."""
    commands = [command.name or command.callback.__name__ for command in app.registered_commands]
    helps = {}
    for command in ["", *commands]:
        result = runner.invoke(app, [*filter(None, [command]), "--help"], env={"COLUMNS": "100"})
        assert result.exit_code == 0, result.output
        helps[command] = result.output
    return helps


def test_a_flag_reads_as_a_flag_in_help() -> None:
    """Typer shows a flag's value column as `<bool>`, as if `--json <bool>` took a value."""
    for command, text in _helps().items():
        assert "<bool>" not in text, command
        assert re.search(r"^│ --help\b", text, flags=re.M), command
        for flag in ("--help", "--json", "--version", "--new", "--adapt"):
            for row in [line for line in text.splitlines() if re.match(rf"│ {flag}\b(?!-)", line)]:
                assert re.search(rf"{flag}\s+(-h\s+)?[A-Z][a-z]", row), row  # its help, no placeholder


# What each kind of value is called in help and docs (chargen/cli/options.py says why).
METAVARS = {"RUN_DIR", "DIR", "FILE", "TEXT_FILE", "CORPUS", "N", "X", "CHOICE", "TEXT"}
METAVARS |= {"DURATION", "ENCODING", "MODE", "LIST", "ADDRESS", "TOKEN"}


def test_every_value_has_a_placeholder_of_one_style() -> None:
    """Each argument and valued option names what to type in capitals from one short list: N for
    a whole number, X for any other, a path by its kind; none is left to Typer's `<int>`,
    `<list[str]>` or `[model]`. An argument's row in --help is its placeholder, then its help."""
    import typer.main

    group = typer.main.get_command(app)
    arguments: dict[str, list[tuple[str, str]]] = {}  # by command: placeholder, first word of help
    for name, command in group.commands.items():  # type: ignore[attr-defined]
        for param in command.params:
            if getattr(param, "is_flag", False):
                continue
            assert param.metavar in METAVARS, (name, param.name, param.metavar)
            if param.param_type_name == "argument":
                arguments.setdefault(name, []).append((param.metavar, param.help.split()[0]))
            kind = param.type_descriptor.annotation
            if kind is int:
                assert param.metavar == "N", (name, param.name)
            if kind is float:
                assert param.metavar == "X", (name, param.name)
    assert {"train", "compare", "plot", "eval", "score", "info"} <= set(arguments)
    for command, text in _helps().items():
        assert not re.search(r"<[A-Za-z][\w\[\], ]*>", text), command  # <int>, <path>, <list[str]>
        usage = next(line for line in text.splitlines() if "Usage:" in line)
        assert not re.search(r"[\[{][a-z_]+[\]}]", usage), usage  # [model], {text_file}
        for placeholder, word in arguments.get(command, []):
            assert re.search(rf"^│ [* ]\s+{placeholder} +{re.escape(word)} ", text, flags=re.M), text


MIXED = (
    "İstanbul'da ığdır şöyle çöp üzüm; ação, pão, coração, é. 東京と大阪. "
    "👩‍👩‍👧‍👦 👍🏽 👋🏿 1️⃣ #️⃣ ❤️ naïve ñ a\u0308\u0301\n"
) * 60


@pytest.mark.parametrize("tokenizer", ["chars", "bytes"])
def test_any_unicode_text_round_trips_through_train_sample_eval(
    tokenizer: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    Path("mixed.txt").write_text(MIXED, encoding="utf-8")
    args = ["train", "mixed.txt", *TINY, "--max-steps", "20", "--eval-every", "10", "--out", "run"]
    result = runner.invoke(app, [*args, "--tokenizer", tokenizer, "--seed", "0"])
    assert result.exit_code == 0, result.output
    vocab = json.loads(Path("run/vocab.json").read_text(encoding="utf-8"))
    if tokenizer == "chars":
        assert set(vocab["chars"]) == set(unicodedata.normalize("NFC", MIXED))

    result = runner.invoke(app, ["eval", "mixed.txt", "--model", "run", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["unknown"] == 0

    for extra in ([], ["--num-samples", "3"]):
        result = runner.invoke(
            app, ["sample", "--model", "run", "--prefix", "şöyle 👍🏽", "--length", "300", *extra]
        )
        assert result.exit_code == 0, result.output
        assert result.stdout_bytes.decode("utf-8")  # valid UTF-8, strictly
        assert result.stdout.startswith("şöyle 👍🏽")


def test_a_resumed_runs_header_gives_its_limits_now_not_its_first_plan(
    lamp_text: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    Path("small.txt").write_text(lamp_text[:6_000], encoding="utf-8")
    first = runner.invoke(app, ["train", "small.txt", *TINY, "--max-steps", "4", "--out", "run"])
    assert first.exit_code == 0, first.output
    assert " passes)" in words(first.stderr)  # a new run's header gives the plan
    resumed = runner.invoke(app, ["train", "--resume", "run", "--max-steps", "6"])
    assert resumed.exit_code == 0, resumed.output
    header = words(resumed.stderr)
    assert "resumed at step 4, limits now: steps 6 |" in header, header
    assert "planned when the run began)" in header and " passes)" not in header


# A run's unit, its short form, and its bits per one, as the output names them.
UNITS = {"chars": ("character", "char", "bpc"), "bytes": ("byte", "byte", "bpb")}


@pytest.mark.parametrize("tokenizer", ["chars", "bytes"])
def test_the_output_names_the_unit_the_run_models(
    tokenizer: str, lamp_text: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A byte run's figures are per byte and train, eval, score, info and sample --adapt-on say so; a
    character run's say characters. The JSON keeps its keys either way."""
    symbol, short, bits = UNITS[tokenizer]
    other = UNITS["bytes" if tokenizer == "chars" else "chars"]
    monkeypatch.chdir(tmp_path)
    Path("small.txt").write_text("Ağaç dalları şöyle.\n" * 20 + lamp_text[:4_000], encoding="utf-8")
    args = ["train", "small.txt", *TINY, "--max-steps", "4", "--eval-every", "2", "--seed", "0"]
    result = runner.invoke(app, [*args, "--tokenizer", tokenizer, "--out", "run"])
    assert result.exit_code == 0, result.output
    progress, summary = words(result.stderr).split("training finished")
    assert f"validation {symbol}s |" in progress and f"nats/{short}, perplexity" in progress
    assert f"{bits} (best)" in progress
    assert f" {bits}, " in summary and f"nats/{short}, perplexity" in summary
    assert f"{symbol}s/s over" in summary and other[2] not in summary and f"nats/{other[1]}" not in summary

    result = runner.invoke(app, ["eval", "--model", "run"])
    assert result.exit_code == 0, result.output
    table = words(result.stdout)
    assert f"bits per {symbol}" in table and f"nats/{short}" in table and f"{symbol}s/s" in table
    assert f"bits per {other[0]}" not in table
    result = runner.invoke(app, ["eval", "--model", "run", "--json"])
    assert result.exit_code == 0, result.output
    assert {"chars", "bpc", "chars_per_sec"} <= set(json.loads(result.stdout))

    text = "Ağaç dalları.\nhello\n"
    Path("two.txt").write_text(text, encoding="utf-8")
    size = len(text.encode()) if tokenizer == "bytes" else len(text)  # its first is not scored
    result = runner.invoke(app, ["score", "two.txt", "--model", "run"])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].split() == [bits, f"{short}s", "logprob", "line"]
    assert lines[-1].startswith(f"2 lines, {size - 1} {symbol}s: ") and f" bits per {symbol}, " in lines[-1]
    assert f"nats/{short}, perplexity" in lines[-1]

    result = runner.invoke(app, ["info", "run"])
    assert result.exit_code == 0, result.output
    assert f" {bits}, perplexity" in words(result.stdout) and f"{symbol}s/s" in words(result.stdout)

    result = runner.invoke(app, ["sample", "--model", "run", "--adapt-on", "two.txt", "--length", "5"])
    assert result.exit_code == 0, result.output
    said = words(result.stderr)
    assert f"({size} {symbol}s, " in said and f"{bits} before" in said


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("line one\nbad é".encode("latin-1"), "not valid utf-8 at line 2, column 5"),
        ("şapka".encode("utf-16"), "pass --encoding utf-16"),
        (b"text\x00more", "NUL bytes"),
        (b"", "is empty"),
        (b"  \n\n \t", "only white space"),
    ],
)
def test_bad_corpus_files_get_one_line_and_no_run(
    content: bytes, message: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    Path("bad.txt").write_bytes(content)
    error = _one_line_error(runner.invoke(app, ["train", "bad.txt", "--out", "run"]))
    assert "bad.txt" in error and message in error
    assert not Path("run").exists() and not Path("runs").exists()


def test_unknown_characters_in_an_eval_text(corpus_file: Path, tmp_path: Path) -> None:
    trained = runner.invoke(app, ["train", str(corpus_file), *TINY, "--max-steps", "2", "--eval-every", "2"])
    assert trained.exit_code == 0, trained.output
    Path("odd.txt").write_text("The Time Traveller ☃☃ smiled.\n", encoding="utf-8")
    assert "'☃' (U+2603)" in _one_line_error(runner.invoke(app, ["eval", "odd.txt"]))
    result = runner.invoke(app, ["eval", "odd.txt", "--unknown", "skip", "--json"])
    assert result.exit_code == 0, result.output
    figures = json.loads(result.stdout)
    assert figures["unknown"] == 2 and figures["chars"] == len("The Time Traveller  smiled.\n") - 1


def test_info_describes_a_run(tiny_run) -> None:
    result = runner.invoke(app, ["info", str(tiny_run.run_dir), "--json"])
    assert result.exit_code == 0, result.output
    facts = json.loads(result.stdout)
    assert facts["model"]["hidden"] == 48 and facts["steps"] == 60
    assert facts["summary"]["best_step"] == tiny_run.best_step
    assert {"run.json", "best.safetensors", "checkpoint.safetensors"} <= set(facts["files"])
    table = runner.invoke(app, ["info", str(tiny_run.run_dir)])
    assert table.exit_code == 0 and "parameters" in table.stdout
    assert "run directory not found" in _one_line_error(runner.invoke(app, ["info", "nope"]))


def test_train_with_no_corpus_uses_the_built_in_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["train", *TINY, "--max-steps", "2", "--eval-every", "2"])
    assert result.exit_code == 0, result.output
    assert Path("runs/latest").resolve().name.startswith("the-lamp-at-pellow-point-")
    result = runner.invoke(app, ["sample", "--prefix", "time traveller", "--length", "30", "--seed", "0"])
    assert result.exit_code == 0 and result.stdout.startswith("time traveller")


def test_an_error_naming_a_file_with_brackets_prints_it_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert "my[notes].txt" in _one_line_error(runner.invoke(app, ["train", "my[notes].txt"]))


def test_size_auto_plans_the_model_from_the_time_budget(corpus_file: Path) -> None:
    from chargen.config import ModelConfig
    from chargen.model import CharRNN
    from chargen.recipe import dropout_for

    args = ["train", str(corpus_file), "--max-time", "2s", "--seed", "0", "--out", "auto"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    run = json.loads((Path("auto") / ckpt.RUN_JSON).read_text())
    plan, model = run["plan"], run["model"]
    # Two seconds of training is far too little for a larger size than the smallest.
    assert plan["size"] == "small" and (model["layers"], model["hidden"]) == (2, 256)
    assert plan["chars_per_sec"] > 0 and plan["chars"] == pytest.approx(2 * plan["chars_per_sec"])
    parameters = CharRNN(ModelConfig.from_dict(model)).num_parameters()
    assert model["dropout"] == dropout_for(plan["epochs"], parameters)
    assert model["weight_drop"] is None  # the same as the dropout
    assert "2x256 lstm" in result.stderr and "size small" in result.stderr
    info = runner.invoke(app, ["info", "auto"])
    assert info.exit_code == 0 and "auto: small, planned for" in info.stdout


def test_version_is_the_installed_packages() -> None:
    from importlib.metadata import version

    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0, result.output
    assert result.stdout == f"chargen {version('chargen')}\n"


def test_shell_completion_is_offered_and_installs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The shell is named, not detected: detection looks for a known shell among the test's parent
    # processes, and under `timeout` or a job runner there may be none.
    monkeypatch.setenv("_TYPER_COMPLETE_TEST_DISABLE_SHELL_DETECTION", "1")
    result = runner.invoke(app, ["--show-completion", "bash"], prog_name="chargen")
    assert result.exit_code == 0, result.output
    assert "_CHARGEN_COMPLETE=complete_bash" in result.stdout
    result = runner.invoke(
        app, ["--install-completion", "bash"], prog_name="chargen", env={"HOME": str(tmp_path)}
    )
    assert result.exit_code == 0, result.output
    assert "_CHARGEN_COMPLETE" in (tmp_path / ".bash_completions" / "chargen.sh").read_text()
    assert ".bash_completions/chargen.sh" in (tmp_path / ".bashrc").read_text()


def test_help_does_not_import_torch() -> None:
    """`chargen --help` and completion stay instant: torch is imported inside the commands only."""
    code = (
        "import sys; from chargen.cli import app; from typer.testing import CliRunner; "
        "assert CliRunner().invoke(app, ['train', '--help']).exit_code == 0; "
        "assert 'torch' not in sys.modules, 'torch was imported'"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(
    ("command", "read_first"),
    [
        (["sample", "--length", "200000", "--seed", "0"], 100),  # streamed: the reader goes mid-way
        (["info"], 0),  # a rich table, to a reader gone before it is printed
        (["score", "--json", "TEXT"], 0),
    ],
)
def test_output_cut_short_by_its_reader_ends_quietly_as_cat_does(
    command: list[str], read_first: int, tiny_run: TrainSummary
) -> None:
    """`chargen sample --length 200000 | head -c 100`: no traceback or other noise on stderr, and
    exit status 141 (128 + SIGPIPE), what the shell reports for cat there; it used to be 1."""
    text = tiny_run.run_dir.parent / "lamp-small.txt"
    args = [str(text) if arg == "TEXT" else arg for arg in command]
    run = ["--model", str(tiny_run.run_dir)] if command[0] != "info" else [str(tiny_run.run_dir)]
    process = subprocess.Popen(
        [sys.executable, "-m", "chargen", *args, *run], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert process.stdout is not None and process.stderr is not None
    assert len(process.stdout.read(read_first)) == read_first
    process.stdout.close()  # as head does once it has what it wants
    stderr = process.stderr.read().decode()
    assert process.wait(timeout=120) == 141 and stderr == "", stderr


def test_a_command_whose_stderr_reader_goes_ends_quietly_as_on_stdout(lamp_text: str, tmp_path: Path) -> None:
    """`chargen train ... 2>&1 >/dev/null | head -c 1`: training ends at its next line on stderr,
    quietly and with exit status 141, as where stdout's reader goes (and as a C or Go program would
    end, killed by SIGPIPE). It used to be 1, as for an error; the run is left resumable either way."""
    corpus = tmp_path / "small.txt"
    corpus.write_text(lamp_text[:30_000], encoding="utf-8")
    run_dir = tmp_path / "run"
    command = [sys.executable, "-m", "chargen", "train", str(corpus), *TINY, "--out", str(run_dir)]
    command += ["--max-steps", "100000", "--eval-every", "2"]  # a line on stderr every second step
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        assert process.stderr is not None
        assert process.stderr.read(1)  # once the run has started: the line that says so
        process.stderr.close()  # as head does once it has what it wants
        assert process.wait(timeout=120) == 141
    finally:
        process.kill()
    ckpt.load_checkpoint(run_dir / ckpt.CHECKPOINT)  # what --resume continues from


def test_a_command_started_without_stderr_or_stdout_runs_as_usual(lamp_text: str, tmp_path: Path) -> None:
    """`chargen train ... 2>&-` stopped at its first progress line with an AttributeError (Python
    has sys.stderr None then) and exit status 1; it trains as it would with stderr going nowhere,
    and only a real error exits 1. `>&-` failed alike, at once, in main()."""
    corpus = tmp_path / "small.txt"
    corpus.write_text(lamp_text[:30_000], encoding="utf-8")
    run_dir = tmp_path / "run"

    def without_stderr(*args: str) -> subprocess.CompletedProcess[str]:
        shell = 'exec "$0" -m chargen "$@" 2>&-'  # the shell closes the command's stderr
        return subprocess.run(["sh", "-c", shell, sys.executable, *args], capture_output=True, text=True)

    trained = without_stderr("train", str(corpus), *TINY, "--out", str(run_dir), "--max-steps", "4")
    assert trained.returncode == 0 and trained.stdout == ""
    assert json.loads((run_dir / ckpt.SUMMARY).read_text())["steps"] == 4
    sampled = without_stderr("sample", "--model", str(run_dir), "--length", "20", "--seed", "0")
    assert sampled.returncode == 0 and len(sampled.stdout) == 21
    assert without_stderr("sample", "--model", str(tmp_path / "none")).returncode == 1
    # So with stdout closed: what it would print goes nowhere, as Python's print() does then.
    shell = 'exec "$0" -m chargen "$@" >&-'
    for args in (["sample", "--model", str(run_dir), "--length", "20"], ["--help"]):
        closed = subprocess.run(["sh", "-c", shell, sys.executable, *args], capture_output=True, text=True)
        assert closed.returncode == 0 and closed.stderr == "", closed.stderr


def test_a_bad_value_names_the_keyword_in_the_library_and_the_flag_on_the_command_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from chargen import TrainConfig
    from chargen.errors import ConfigError

    monkeypatch.chdir(tmp_path)
    for keyword, value, flag, message in (
        ("lr", -1, "--lr", "must be positive, not -1"),
        ("max_time", "soon", "--max-time", "must be a duration such as 90, 90s, 3m or 1h30m, not 'soon'"),
    ):
        with pytest.raises(ConfigError) as error:
            TrainConfig(**{keyword: value})
        assert str(error.value) == f"`{keyword}` {message}" and error.value.field == keyword
        assert flag not in str(error.value)
        said = _one_line_error(runner.invoke(app, ["train", flag, str(value)]), code=2)
        assert said.startswith(f"Error: {flag} must be") and "`" not in said, said
