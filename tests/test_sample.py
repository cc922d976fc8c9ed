import random
from collections.abc import Iterator

import pytest
import torch
from typer.testing import CliRunner

from chargen.checkpoint import load_model_weights, load_run
from chargen.cli import app
from chargen.config import SampleConfig
from chargen.device import resolve_device
from chargen.errors import ConfigError, VocabError
from chargen.records import TrainSummary
from chargen.sample import (
    STREAM_CHUNK,
    Picker,
    filter_logits,
    gumbel_noise,
    sample_batch,
    sample_stream,
    until_stop,
)

runner = CliRunner()


@pytest.fixture(scope="module")
def loaded(tiny_run: TrainSummary):
    run = load_run(tiny_run.run_dir)
    return load_model_weights(run), run.vocab


def test_the_same_seed_gives_the_same_sample(loaded) -> None:
    model, vocab = loaded
    config = SampleConfig(prefix="The ", length=80, seed=7)
    first = sample_batch(model, vocab, config)
    assert sample_batch(model, vocab, config) == first
    assert "".join(sample_stream(model, vocab, config)) == first[0]
    assert sample_batch(model, vocab, SampleConfig(prefix="The ", length=80, seed=8)) != first


def test_temperature_zero_is_greedy(loaded) -> None:
    model, vocab = loaded
    text = sample_batch(model, vocab, SampleConfig(prefix="The ", length=30, temperature=0, seed=1))[0]
    # Recompute greedily by hand: each generated character must be the argmax after the text so far.
    context = "\n" + "The "
    for char in text:
        ids = torch.from_numpy(vocab.encode(context).astype("int64")).view(-1, 1)
        with torch.no_grad():
            logits, _ = model(ids)
        assert vocab.chars[int(logits[-1, 0].argmax())] == char
        context += char
    top1 = sample_batch(model, vocab, SampleConfig(prefix="The ", length=30, top_k=1, seed=5))[0]
    assert top1 == text


def test_several_samples_come_from_one_batch(loaded) -> None:
    model, vocab = loaded
    texts = sample_batch(model, vocab, SampleConfig(prefix="I ", length=40, num_samples=4, seed=2))
    assert len(texts) == 4 and all(len(t) == 40 for t in texts)
    assert len(set(texts)) > 1


def test_top_k_and_top_p_keep_the_right_characters() -> None:
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    top_k = filter_logits(logits, 1.0, top_k=2, top_p=1.0)
    assert torch.isfinite(top_k).tolist() == [[True, True, False, False]]
    top_p = filter_logits(logits, 1.0, top_k=None, top_p=0.8)  # 0.5 + 0.3 reaches 0.8
    assert torch.isfinite(top_p).tolist() == [[True, True, False, False]]
    assert torch.isfinite(filter_logits(logits, 1.0, None, 0.1)).tolist() == [[True, False, False, False]]
    # A top_p that float32 rounds to 0 still keeps the likeliest (it dropped every one, and argmax
    # of all -inf took the first symbol), here not the first.
    tiny = filter_logits(logits.flip(-1), 1.0, None, 1e-320)
    assert torch.isfinite(tiny).tolist() == [[False, False, False, True]]


def test_a_prefix_with_an_unknown_character_is_refused(loaded) -> None:
    model, vocab = loaded
    with pytest.raises(VocabError, match="U\\+1F600") as error:
        sample_batch(model, vocab, SampleConfig(prefix="The 😀", length=5))
    # The library names its own argument; the command line says --prefix (test_cli.py).
    assert str(error.value).startswith("`prefix` has 1 character(s)") and "--" not in str(error.value)


def test_the_gumbel_picker_draws_from_the_tempered_softmax() -> None:
    probs = torch.tensor([0.5, 0.3, 0.15, 0.05])
    logits = probs.log().expand(20_000, -1)  # 20,000 streams, one step each
    for temperature in (1.0, 0.5):
        config = SampleConfig(temperature=temperature, seed=0)
        picker = Picker(config, torch.Generator().manual_seed(0), 20_000, 4)
        counts = torch.bincount(picker(logits), minlength=4).float() / 20_000
        expected = probs ** (1 / temperature) / (probs ** (1 / temperature)).sum()
        assert torch.allclose(counts, expected, atol=0.012), (temperature, counts, expected)
    top_2 = Picker(SampleConfig(top_k=2, seed=0), torch.Generator().manual_seed(1), 20_000, 4)
    assert set(top_2(logits).tolist()) == {0, 1}


def test_the_picker_picks_as_torchs_add_and_argmax_would_with_nan_and_inf_cleaned_first() -> None:
    # On a CPU the plain picks are NumPy's add and argmax: they must be the very picks of torch's.
    config = SampleConfig(temperature=0.8, seed=0)
    picker = Picker(config, torch.Generator().manual_seed(3), 3, 50)
    twin, logits_from = torch.Generator().manual_seed(3), torch.Generator().manual_seed(0)
    for step in range(3 * Picker.CHUNK):
        if step % Picker.CHUNK == 0:
            noise = gumbel_noise(picker.shape, twin, config.temperature)
        logits = torch.randn(3, 50, generator=logits_from) * 3
        if step % 7 == 0:
            logits[1, 5] = float("nan")  # a diverged model's
        if step % 11 == 0:
            logits[2, 9] = float("inf")
        clean = torch.nan_to_num(logits, nan=0.0, posinf=1e4, neginf=-1e4)
        assert torch.equal(picker(logits), (clean + noise[step % Picker.CHUNK]).argmax(dim=-1)), step


def _cut(text: str, stop: str) -> str:
    at = text.find(stop)
    return text if at < 0 else text[:at]


def test_a_stop_text_ends_each_sample_just_before_it(loaded) -> None:
    model, vocab = loaded
    full = sample_batch(model, vocab, SampleConfig(prefix="The ", length=300, num_samples=3, seed=4))
    # Text from the middle of the first sample, straddling the stream's first read-back (16 characters).
    stop = full[0][STREAM_CHUNK - 2 : STREAM_CHUNK + 2]
    config = SampleConfig(prefix="The ", length=300, num_samples=3, seed=4, stop=stop)
    cut = sample_batch(model, vocab, config)
    assert cut == [_cut(text, stop) for text in full]
    assert stop not in cut[0] and len(cut[0]) <= STREAM_CHUNK - 2
    streamed = sample_stream(model, vocab, SampleConfig(prefix="The ", length=300, seed=4, stop=stop))
    one = sample_batch(model, vocab, SampleConfig(prefix="The ", length=300, seed=4))[0]
    assert "".join(streamed) == _cut(one, stop)
    never = "\x00never"  # a stop that never comes: the whole length
    assert sample_batch(model, vocab, SampleConfig(length=50, num_samples=2, seed=1, stop=never)) == (
        sample_batch(model, vocab, SampleConfig(length=50, num_samples=2, seed=1))
    )


def test_generation_ends_once_every_stop_text_has_come(loaded) -> None:
    model, vocab = loaded
    # Hundreds of thousands of characters would take minutes; a space comes within a few.
    config = SampleConfig(length=500_000, num_samples=2, temperature=0, stop=" ")
    assert all(" " not in text for text in sample_batch(model, vocab, config))
    config = SampleConfig(length=500_000, temperature=0, stop=" ")
    assert " " not in "".join(sample_stream(model, vocab, config))


def test_a_stop_text_must_not_be_empty() -> None:
    with pytest.raises(ConfigError, match="`stop` must not be empty"):
        SampleConfig(stop="")


def _recorded(pieces: list[str], read: list[str]) -> Iterator[str]:
    for piece in pieces:
        read.append(piece)
        yield piece


def test_a_stream_holds_back_only_what_could_begin_the_stop_text() -> None:
    for seed in range(300):  # random texts over a small alphabet, cut into random pieces
        rng = random.Random(seed)
        text = "".join(rng.choice("ab\n") for _ in range(rng.randrange(0, 40)))
        stop = "".join(rng.choice("ab\n") for _ in range(rng.randrange(1, 5)))
        cuts = sorted(rng.sample(range(len(text) + 1), min(len(text) + 1, rng.randrange(0, 8))))
        pieces = [text[i:j] for i, j in zip([0, *cuts], [*cuts, len(text)], strict=True)]
        read: list[str] = []
        shown = ""
        for piece in until_stop(_recorded(pieces, read), stop):
            assert piece
            shown += piece
            so_far = "".join(read)
            if stop not in so_far:  # all that cannot begin the stop text is out already
                held = so_far[len(shown) :]
                assert so_far.startswith(shown) and len(held) < len(stop) and stop.startswith(held)
        assert shown == _cut(text, stop), (seed, pieces, stop)
        if stop in text:  # nothing is read after the piece that completed it
            assert stop not in "".join(read[:-1]), (seed, pieces, stop)


def test_until_stop_straddling_pieces() -> None:
    assert list(until_stop(iter(["ab", "c\nE", "N", "Dxyz"]), "\nEND")) == ["ab", "c"]
    assert "".join(until_stop(iter(["a\nE", "X", "\nEN"]), "\nEND")) == "a\nEX\nEN"


def _one_line_error(result, code: int) -> str:
    assert result.exit_code == code, result.output
    message = result.stderr.strip()
    assert message.startswith("Error:") and "\n" not in message and result.stdout == "", result.output
    return message


def test_the_command_line_stops_each_sample_before_its_stop_text(tiny_run: TrainSummary) -> None:
    base = ["sample", "--model", str(tiny_run.run_dir), "--prefix", "The ", "--length", "200", "--seed", "3"]
    full = runner.invoke(app, base)
    assert full.exit_code == 0, full.output
    text = full.stdout[len("The ") : -1]
    stop = text[STREAM_CHUNK - 2 : STREAM_CHUNK + 1]
    one = runner.invoke(app, [*base, "--stop", stop])
    assert one.exit_code == 0, one.output
    assert one.stdout == "The " + _cut(text, stop) + "\n"

    several = runner.invoke(app, [*base, "--num-samples", "3", "--stop", stop])
    assert several.exit_code == 0, several.output
    config = SampleConfig(prefix="The ", length=200, seed=3, num_samples=3, stop=stop)
    device = resolve_device("auto")  # the command's own choice: a GPU draws other samples than the CPU
    run = load_run(tiny_run.run_dir)
    texts = sample_batch(load_model_weights(run, device), run.vocab, config, device)
    assert several.stdout == "\n\n".join("The " + t for t in texts) + "\n"

    said = _one_line_error(runner.invoke(app, [*base, "--stop", ""]), code=2)
    assert said == "Error: --stop must not be empty; leave it out to generate --length characters"


def test_the_prefix_comes_from_a_file_or_from_standard_input(tiny_run: TrainSummary, tmp_path) -> None:
    base = ["sample", "--model", str(tiny_run.run_dir), "--length", "40", "--seed", "5"]
    typed = runner.invoke(app, [*base, "--prefix", "The lamp\n"])
    assert typed.exit_code == 0, typed.output
    assert typed.stdout.startswith("The lamp\n")
    (tmp_path / "prefix.txt").write_bytes("\ufeffThe lamp\n".encode())  # a byte-order mark is dropped
    from_file = runner.invoke(app, [*base, "--prefix-file", str(tmp_path / "prefix.txt")])
    assert from_file.exit_code == 0, from_file.output
    assert from_file.stdout == typed.stdout  # the file's text exactly, its final line break included
    piped = runner.invoke(app, [*base, "--prefix", "-"], input=b"The lamp\n")
    assert piped.exit_code == 0, piped.output
    assert piped.stdout == typed.stdout
    (tmp_path / "empty.txt").write_bytes(b"")
    empty = runner.invoke(app, [*base, "--prefix-file", str(tmp_path / "empty.txt")])
    assert empty.stdout == runner.invoke(app, base).stdout  # an empty prefix, as with none


def test_a_prefix_that_cannot_be_read_gets_one_line(tiny_run: TrainSummary, tmp_path) -> None:
    base = ["sample", "--model", str(tiny_run.run_dir), "--length", "10"]
    (tmp_path / "latin1.txt").write_bytes("café".encode("latin-1"))
    (tmp_path / "snow.txt").write_text("snow ☃", encoding="utf-8")
    (tmp_path / "good.txt").write_text("The lamp", encoding="utf-8")
    for args, code, said in (
        (["--prefix-file", str(tmp_path / "missing.txt")], 1, "prefix file not found"),
        (["--prefix-file", str(tmp_path)], 1, "is a directory"),
        (["--prefix-file", str(tmp_path / "latin1.txt")], 1, "latin1.txt is not valid UTF-8 (byte 3)"),
        (["--prefix-file", str(tmp_path / "snow.txt")], 1, "--prefix-file has 1 character(s) the model"),
        (["--prefix", "-", "--prefix-file", str(tmp_path / "good.txt")], 2, "--prefix and --prefix-file"),
        (["--prefix", "", "--prefix-file", str(tmp_path / "good.txt")], 2, "were both given"),
        # Options for a list's run are refused on a text's run, not ignored: a bad setting (exit 2).
        (
            ["--max-length", "5"],
            2,
            "--max-length applies to a run trained on a list, and this one was trained",
        ),
        (
            ["--items", "3"],
            2,
            "Error: --items applies to a run trained on a list, and this one was trained on a text",
        ),
        (["--new"], 2, "Error: --new applies to a run trained on a list"),
        (["--json"], 2, "Error: --json applies to a run trained on a list"),
    ):
        assert said in _one_line_error(runner.invoke(app, [*base, *args]), code), args
    piped = runner.invoke(app, [*base, "--prefix", "-"], input="caf\xe9".encode("latin-1"))
    assert "standard input is not valid UTF-8" in _one_line_error(piped, 1)
    piped = runner.invoke(app, [*base, "--prefix", "-"], input="snow ☃".encode())
    assert "--prefix has 1 character(s)" in _one_line_error(piped, 1)
