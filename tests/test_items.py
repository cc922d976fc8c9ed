"""Lists of items: reading them, holding a random share out, batches that start every item afresh,
scoring items each on its own, sampling whole and new items, resuming and bad input."""

from __future__ import annotations

import json
import queue
import re
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from typer.testing import CliRunner

from chargen.checkpoint import load_model_weights, load_run
from chargen.cli import app
from chargen.config import ModelConfig, SampleConfig, TextConfig, TrainConfig
from chargen.corpus import load_corpus
from chargen.data import IGNORE, ItemBatches
from chargen.errors import TrainingInterrupted, VocabError
from chargen.evaluate import evaluate_ids, evaluate_items, item_losses
from chargen.item_sample import generate_items
from chargen.items import END, ItemSpans, split_items, text_items
from chargen.model import CharRNN
from chargen.reports import StepReport
from chargen.serve.engine import Engine
from chargen.serve.requests import Limits, parse_generate
from chargen.training import resume, train
from chargen.vocab import Tokenizer, Vocab
from tests.conftest import corpus_from_text
from tests.test_durability import _train_records, _weights, load_file_metadata

SMALL = ["--hidden", "32", "--embed", "16", "--layers", "1", "--batch-size", "8", "--seed", "0"]
MODEL = ModelConfig(hidden=32, embed=16, layers=1, dropout=0.0)


@pytest.fixture(scope="module")
def words(lamp_text: str) -> list[str]:
    """A list as users bring them: the distinct words of the built-in corpus, in order of appearance."""
    seen = dict.fromkeys(w.lower() for w in re.findall(r"[A-Za-z]{3,}", lamp_text))
    return list(seen)


@pytest.fixture()
def word_file(words: list[str], tmp_path: Path) -> Path:
    path = tmp_path / "words.txt"
    # blank lines and surrounding blanks are not items
    path.write_text("\n".join(words[:1500]) + "\n\n  \n", encoding="utf-8")
    return path


def _items_of(ids: np.ndarray, end: int, decode) -> list[str]:
    spans = ItemSpans.of(ids, end)
    return [decode(ids[s:e]) for s, e in zip(spans.starts, spans.ends, strict=True)]


def test_lines_become_items_with_an_end_symbol_and_blank_lines_are_left_out(tmp_path: Path) -> None:
    path = tmp_path / "list.txt"
    path.write_text("  ayşe \n\nçağrı\r\n   \nİbrahim\n", encoding="utf-8")
    corpus = load_corpus(path, TextConfig(items="lines"), cache=False)
    assert "".join(corpus.vocab.chars[i] for i in corpus.ids) == f"{END}ayşe{END}çağrı{END}İbrahim{END}"
    assert corpus.end_id == 0 and END in corpus.vocab.chars


def test_separators_paragraphs_and_files(tmp_path: Path) -> None:
    text = "one\nline<|endoftext|>two\n<|endoftext|>\nthree"
    (tmp_path / "sep.txt").write_text(text, encoding="utf-8")
    sep = load_corpus(tmp_path / "sep.txt", TextConfig(items="<|endoftext|>"), cache=False)
    assert _items_of(sep.ids, sep.end_id, sep.vocab.decode) == ["one\nline", "two", "three"]
    (tmp_path / "par.txt").write_text("a poem\n  indented\n\n \n\nanother\n", encoding="utf-8")
    par = load_corpus(tmp_path / "par.txt", TextConfig(items="paragraphs"), cache=False)
    assert _items_of(par.ids, par.end_id, par.vocab.decode) == ["a poem\n  indented", "another"]
    folder = tmp_path / "poems"
    (folder / "deep").mkdir(parents=True)
    (folder / "a.txt").write_text("first\npoem\n", encoding="utf-8")
    (folder / "deep" / "b.txt").write_text("şiir, ikinci\n", encoding="utf-8")
    (folder / ".hidden").write_text("not read\n", encoding="utf-8")
    files = load_corpus(folder, TextConfig(items="files"), cache=False)
    assert _items_of(files.ids, files.end_id, files.vocab.decode) == ["first\npoem", "şiir, ikinci"]
    whole = load_corpus(folder, cache=False)  # without items: one text, files joined by a line break
    assert whole.decode() == "first\npoem\n\nşiir, ikinci\n" and whole.name == "poems"


def test_one_text_cut_into_items_as_a_file_of_the_list_would_be(tmp_path: Path) -> None:
    """text_items (what `chargen serve` scores a text against a list's run with) cuts one text as
    load_corpus cuts a file, in every mode, blank items left out; with no separator it is one item."""
    cases = {
        "lines": "  ayşe \n\nçağrı\r\n   \nİbrahim\n",
        "paragraphs": "a poem\n  indented\n\n \n\nanother\n",
        "<|endoftext|>": "one\nline<|endoftext|>two\n<|endoftext|>\nthree",
    }
    for mode, text in cases.items():
        config = TextConfig(items=mode, normalize="nfkc")
        (tmp_path / "list.txt").write_text(text, encoding="utf-8")
        corpus = load_corpus(tmp_path / "list.txt", config, cache=False)
        assert text_items(text, config) == _items_of(corpus.ids, corpus.end_id, corpus.vocab.decode), mode
    assert text_items("just one poem\nof two lines\n", TextConfig(items="paragraphs")) == [
        "just one poem\nof two lines"
    ]
    assert text_items("a whole file\n", TextConfig(items="files")) == ["a whole file"]
    assert text_items("\n  \n", TextConfig(items="lines")) == []


def test_the_held_out_items_are_a_seeded_random_tenth(words: list[str], tmp_path: Path) -> None:
    path = tmp_path / "sorted.txt"
    path.write_text("\n".join(sorted(words[:1000])), encoding="utf-8")
    corpus = load_corpus(path, TextConfig(items="lines"), cache=False)
    train_ids, held_ids = split_items(corpus.ids, corpus.end_id, 0.1)
    trained = _items_of(train_ids, corpus.end_id, corpus.vocab.decode)
    held = _items_of(held_ids, corpus.end_id, corpus.vocab.decode)
    assert len(held) == 100 and sorted(trained + held) == sorted(words[:1000])
    assert held != sorted(words[:1000])[-100:]  # not the last tenth of a sorted list
    assert min(held) < sorted(words[:1000])[100]  # drawn from all over it
    again = split_items(corpus.ids, corpus.end_id, 0.1)[1]
    assert np.array_equal(again, held_ids)  # the same every time


def test_batches_start_every_item_afresh_and_pad_without_counting(tmp_path: Path) -> None:
    items = ["ab", "cdefgh", "ijklmnopqrstu", "v", "wxyz", "abc", "de", "fghij"]
    ids = np.array([0] + [x for item in items for x in [*(ord(c) - 96 for c in item), 0]], dtype=np.uint8)
    batches = ItemBatches(ids, end_id=0, batch_size=2, bptt=5)
    windows = list(batches.epoch(7))
    assert len(windows) == batches.windows_per_epoch
    assert sum(w.targets for w in windows) == batches.chars_per_epoch == sum(len(i) + 1 for i in items)
    rebuilt: list[str] = []
    for w in windows:
        assert (w.y != IGNORE).sum() == w.targets
        if w.fresh is not None:  # a batch begins: every stream reads an END from a zero state
            assert (w.fresh == 0).all() and (w.x[0] == 0).all()
            rebuilt += ["", ""]
        for col in range(2):
            kept = w.y[:, col][w.y[:, col] != IGNORE].tolist()
            # targets are the inputs shifted by one, within an item
            assert w.x[1 : len(kept), col].tolist() == kept[:-1]
            rebuilt[-2 + col] += "".join(chr(96 + t) if t else "|" for t in kept)
    assert sorted(rebuilt) == sorted(item + "|" for item in items)
    # the longest item spans three windows of 5: only the first of a batch starts afresh
    assert any(w.fresh is None for w in windows)
    # resuming mid-epoch gives the same windows from there
    later = list(batches.epoch(7, start_window=2))
    assert all(
        torch.equal(a.x, b.x) and torch.equal(a.y, b.y) for a, b in zip(windows[2:], later, strict=True)
    )
    # two processes' shares side by side are the whole batch
    halves = [ItemBatches(ids, 0, 2, 5, streams=s) for s in (slice(0, 1), slice(1, 2))]
    for w, a, b in zip(windows, *(h.epoch(7) for h in halves), strict=True):
        assert torch.equal(w.x, torch.cat([a.x, b.x], 1)) and a.targets == b.targets == w.targets


def test_every_item_of_a_short_list_is_trained_on_within_a_few_epochs() -> None:
    """48 items in batches of 32: 16 sit out each epoch. Cut after the sort by length they were
    always the 16 longest, which a small list (a user's own names) then never learned."""
    ids = [0]
    for length in range(1, 49):
        ids += [1] * length + [0]
    batches = ItemBatches(np.array(ids, dtype=np.uint8), end_id=0, batch_size=32, bptt=64)
    seen: set[int] = set()
    for seed in range(20):
        plan = batches._plan(seed)
        assert len(plan) == 1 and len(set(plan[0].tolist())) == 32
        seen.update(plan[0].tolist())
    assert seen == set(range(48))


def test_items_are_scored_each_from_a_zero_state(tmp_path: Path) -> None:
    torch.manual_seed(0)
    items = ["abc", "defghij", "k", "lmnopqrstuvw", "xy"] * 3
    ids = np.array([0] + [x for item in items for x in [*(ord(c) - 96 for c in item), 0]], dtype=np.uint8)
    model = CharRNN(ModelConfig(vocab_size=27, hidden=16, embed=8, layers=2, dropout=0.0))
    losses = item_losses(model, ids, 0, batch=4, window=5)  # batched, padded, cut into windows
    alone = [
        evaluate_ids(model, np.array([0, *(ord(c) - 96 for c in item), 0], dtype=np.uint8)).loss
        * (len(item) + 1)
        for item in items
    ]
    assert np.allclose(losses, alone, atol=1e-4)
    stats = evaluate_items(model, ids, 0)
    assert stats.items == len(items) and stats.chars == sum(len(i) + 1 for i in items)
    assert stats.loss == pytest.approx(sum(alone) / stats.chars, abs=1e-5)


def test_train_sample_new_items_and_eval_from_the_command_line(
    word_file: Path, words: list[str], tmp_path: Path
) -> None:
    runner = CliRunner()
    run = tmp_path / "run"
    args = ["train", str(word_file), "--items", "lines", "--max-steps", "40", "--out", str(run), *SMALL]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    info = json.loads((run / "run.json").read_text())["corpus"]
    assert (info["items"], info["held_out_items"], info["split_seed"]) == (1500, 150, 0)

    result = runner.invoke(app, ["sample", "--model", str(run), "--items", "40", "--new", "--seed", "1"])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert len(lines) == 40 and len(set(lines)) == 40 and all(lines)
    assert not set(lines) & set(words[:1500])
    assert "were not in the training list" in result.stderr

    result = runner.invoke(
        app, ["sample", "--model", str(run), "--items", "5", "--prefix", "th", "--json", "--seed", "2"]
    )
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(rows) == 5 and all(r["text"].startswith("th") and r["logprob"] < 0 for r in rows)
    described = runner.invoke(app, ["sample", "--help"], env={"COLUMNS": "300"}).stdout
    json_help = next(line for line in described.splitlines() if "--json" in line)
    assert all(key in json_help for key in rows[0]), (json_help, rows[0])  # --help names every key

    test = tmp_path / "test.txt"
    test.write_text("\n".join(words[1500:1700]), encoding="utf-8")
    result = runner.invoke(app, ["eval", "--model", str(run), str(test), "--json"])
    assert result.exit_code == 0, result.output
    stats = json.loads(result.stdout)
    assert stats["items"] == 200 and stats["chars"] == sum(len(w) + 1 for w in words[1500:1700])
    result = runner.invoke(app, ["score", "--model", str(run), str(test), "--json"])
    assert result.exit_code == 0, result.output
    scored = [json.loads(line) for line in result.stdout.splitlines()]
    assert [s["text"] for s in scored] == words[1500:1700] and all(
        s["chars"] == len(s["text"]) + 1 for s in scored
    )
    mean = -sum(s["logprob"] for s in scored) / sum(s["chars"] for s in scored)
    assert mean == pytest.approx(stats["loss"], rel=0.005)
    test.write_text(words[1500] + "\n", encoding="utf-8")  # one item: nothing is held out to score it
    for command in ("score", "eval"):
        result = runner.invoke(app, [command, "--model", str(run), str(test), "--json"])
        assert result.exit_code == 0, result.output
        assert command == "eval" or result.stderr.startswith("1 item, "), result.stderr
    assert json.loads(result.stdout)["items"] == 1
    # A list whose every item is made of characters the model never saw has none left once they
    # are skipped: the message says so, not that the text is too short.
    test.write_text("☃\n☃☃\n", encoding="utf-8")
    for command in ("score", "eval"):
        result = runner.invoke(app, [command, "--model", str(run), str(test), "--unknown", "skip"])
        assert result.exit_code == 1 and not result.stdout, result.output
        assert "has no items left once the 3 character(s) the model has never seen" in result.stderr

    # Options for a text's run are refused on a list's run (a bad setting, exit 2), not ignored; and a
    # prefix longer than --max-length (which counts it) would make only cut-off items.
    list_run = "applies to a run trained on a text, and this one was trained on a list"
    refused = {
        ("--length", "50"): f"Error: --length {list_run}",
        ("--stop", "a"): f"Error: --stop {list_run}",
        ("--num-samples", "2"): f"Error: --num-samples {list_run}",
        ("--novelty",): f"Error: --novelty {list_run}",
        ("--adapt-on", str(test)): f"Error: --adapt-on {list_run}",
        ("--max-length", "1", "--prefix", "th"): "--prefix has 2 characters, more than the 1 --max-length",
    }
    for args, message in refused.items():
        result = runner.invoke(app, ["sample", "--model", str(run), "--items", "3", *args])
        assert result.exit_code == 2 and message in result.output, (args, result.output)
        assert len(result.output.strip().splitlines()) == 1 and not result.stdout.strip(), result.output
    adapted = runner.invoke(app, ["eval", "--model", str(run), str(test), "--adapt"])
    assert adapted.exit_code == 2 and adapted.stderr.strip() == f"Error: --adapt {list_run}", adapted.output


def test_a_folder_of_files_trains_as_items_or_as_one_text(tmp_path: Path, lamp_text: str) -> None:
    folder = tmp_path / "letters"
    folder.mkdir()
    paragraphs = [p for p in lamp_text.split("\n\n") if len(p) > 200][:12]
    for k, text in enumerate(paragraphs):
        (folder / f"{k:02}.txt").write_text(text + "\n", encoding="utf-8")
    (folder / "tr.txt").write_text("Çalıkuşu: Feride, ığdır ve şöyle güzel bir gün.\n" * 3, encoding="utf-8")
    runner = CliRunner()
    args = ["train", str(folder), "--max-steps", "6", "--eval-every", "3", *SMALL]
    result = runner.invoke(
        app, [*args, "--items", "files", "--out", str(tmp_path / "items"), "--batch-size", "4"]
    )
    assert result.exit_code == 0, result.output
    result = runner.invoke(
        app,
        ["sample", "--model", str(tmp_path / "items"), "--items", "3", "--max-length", "300", "--json"],
    )
    assert result.exit_code == 0, result.output
    # three whole documents (as text they stand a blank line apart, but one may hold blank lines too)
    documents = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(documents) == 3 and all(0 < len(d["text"]) <= 300 for d in documents)
    result = runner.invoke(app, [*args, "--out", str(tmp_path / "text")])
    assert result.exit_code == 0, result.output
    info = json.loads((tmp_path / "text" / "run.json").read_text())["corpus"]
    assert info["items"] == 0 and info["name"] == "letters"


def test_items_with_the_byte_tokenizer(word_file: Path, tmp_path: Path) -> None:
    corpus = load_corpus(word_file, TextConfig(items="lines", tokenizer="bytes"))
    summary = train(
        corpus, MODEL, TrainConfig(batch_size=8, max_steps=10, eval_every=5, seed=0), out=tmp_path / "b"
    )
    assert summary.best.items == 150
    model = CharRNN(summary_model(tmp_path / "b"))
    made = list(
        generate_items(model, corpus.vocab, SampleConfig(seed=0, max_length=20), 3, text_config=corpus.config)
    )
    assert len(made) == 3 and all(item.chars <= 21 for item in made)  # 20 bytes and the end


def _own_logprob(model: CharRNN, vocab: Tokenizer, text: str, ended: bool) -> float:
    """The model's log-probability of `text` after the end symbol that begins an item, and of the
    end after it if `ended`: one pass over the whole item, as scoring reads it."""
    end = int(vocab.encode(END)[0])
    ids = torch.tensor([end, *vocab.encode(text).tolist(), *([end] if ended else [])])
    with torch.no_grad():
        logits, _ = model(ids[:-1].view(-1, 1))  # (T, 1, V)
    return float(F.log_softmax(logits[:, 0].double(), -1).gather(1, ids[1:].view(-1, 1)).sum())


def test_a_cut_off_item_scores_exactly_its_characters_in_sample_and_serve(tmp_path: Path) -> None:
    """An item cut off at `max_length` reports the log-probability of the characters it has (not of
    the one drawn after them to see whether it ends) and counts no end; an ended item, its
    characters and its end. So one text has one logprob however it was drawn, and the server's
    items are `chargen sample`'s, logprob included."""
    names = ["emma", "olivia", "ava", "mia", "sofia", "luna", "ella", "aria", "mila", "camila"] * 4
    corpus = corpus_from_text(tmp_path, "\n".join(names), "names", TextConfig(items="lines"))
    steps = TrainConfig(batch_size=8, bptt=16, max_steps=30, eval_every=30, log_every=10, seed=1)
    run = load_run(train(corpus, MODEL, steps, out=tmp_path / "run").run_dir)
    model = load_model_weights(run)
    config = SampleConfig(prefix="em", max_length=4, seed=1)
    items = list(generate_items(model, run.vocab, config, 200, text_config=corpus.config))

    cut = [item for item in items if not item.ended]
    assert len(cut) >= 20 and len(cut) < len(items)  # some of each
    for item in items:
        assert len(item.text) <= 4 and item.chars == len(item.text) + item.ended
        assert item.logprob == pytest.approx(_own_logprob(model, run.vocab, item.text, item.ended), abs=1e-4)
    by_text: dict[str, set[float]] = {}
    for item in cut:
        assert len(item.text) == 4
        by_text.setdefault(item.text, set()).add(round(item.logprob, 6))
    assert any(len([i for i in cut if i.text == text]) > 1 for text in by_text)  # repeats to compare
    assert all(len(logprobs) == 1 for logprobs in by_text.values()), by_text

    engine = Engine(model, run.vocab, corpus.config)
    engine.start()
    events: queue.SimpleQueue[tuple[str, dict]] = queue.SimpleQueue()
    try:
        body = {"items": 200, "prefix": "em", "max_length": 4, "seed": 1}
        engine.submit(parse_generate(body, Limits(), "lines"), lambda name, data: events.put((name, data)))
        name, done = events.get(timeout=60)
    finally:
        engine.close()
    assert name == "done", done
    served = done["items"]
    assert [(s["text"], s["chars"], s["ended"]) for s in served] == [
        (i.text, i.chars, i.ended) for i in items
    ]
    assert all(s["logprob"] == pytest.approx(i.logprob, abs=1e-4) for s, i in zip(served, items, strict=True))


def summary_model(run_dir: Path) -> ModelConfig:
    from chargen.checkpoint import load_run

    return load_run(run_dir).model_config


def test_stopped_and_resumed_list_run_equals_the_uninterrupted_one(word_file: Path, tmp_path: Path) -> None:
    corpus = load_corpus(word_file, TextConfig(items="lines"))
    config = TrainConfig(
        batch_size=8, bptt=6, max_steps=30, eval_every=10, log_every=5, seed=3, precision="fp32"
    )
    whole = train(corpus, MODEL, config, out=tmp_path / "whole")
    stop = threading.Event()

    def stop_at_15(report: object) -> None:
        if isinstance(report, StepReport) and report.step == 15:
            stop.set()

    with pytest.raises(TrainingInterrupted):
        train(corpus, MODEL, config, out=tmp_path / "halves", report=stop_at_15, stop=stop)
    assert json.loads(load_file_metadata(tmp_path / "halves"))["step"] == 15
    resumed = resume(tmp_path / "halves")
    assert resumed.steps == whole.steps == 30
    a, b = _weights(tmp_path / "whole"), _weights(tmp_path / "halves")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert _train_records(tmp_path / "halves") == _train_records(tmp_path / "whole")


@pytest.mark.parametrize(
    ("content", "extra", "phrase"),
    [
        ("", [], "is empty"),
        ("  \n\n \t\n", [], "only white space"),
        ("one\ntwo\n", ["--items", "files"], "a single file"),
        (
            "one\ntwo\n",
            ["--items", "<|endoftext|>"],
            "has no separator '<|endoftext|>' anywhere, so read with --items <|endoftext|> it would be",
        ),
        (
            "one\ntwo\n",
            ["--items", "paragraphs"],
            "has no blank line anywhere, so read with --items paragraphs",
        ),
        # A backquote in the separator once ended the setting the message names (--items '` it
        # would be); a space made the flag's value two words. Both keep their quotes.
        ("one\ntwo\n", ["--items", "`"], "no separator '`' anywhere, so read with --items '`' it would be"),
        (
            "one\ntwo\n",
            ["--items", " END "],
            "no separator ' END ' anywhere, so read with --items ' END ' it",
        ),
        (
            "one\ntwo\n",
            ["--items", "a`b"],
            "no separator 'a`b' anywhere, so read with --items 'a`b' it would",
        ),
        # A combining mark alone is escaped, as vocab.quoted escapes it everywhere, not drawn on a quote.
        (
            "one\ntwo\n",
            ["--items", "\u0301"],
            "no separator '\\u0301' anywhere, so read with --items \\u0301",
        ),
        ("only\n", [], "1 item: too few to hold one out"),
    ],
    ids=[
        "empty",
        "blank",
        "files-on-one-file",
        "no-separator",
        "no-blank-line",
        "backquote",
        "spaces",
        "inner-backquote",
        "combining",
        "one-item",
    ],
)
def test_bad_lists_are_one_line_errors_and_write_nothing(
    tmp_path: Path, content: str, extra: list[str], phrase: str
) -> None:
    path = tmp_path / "list.txt"
    path.write_text(content, encoding="utf-8")
    args = ["train", str(path), "--out", str(tmp_path / "run"), "--max-steps", "2", *SMALL]
    result = CliRunner().invoke(app, [*args, *(extra or ["--items", "lines"])])
    assert result.exit_code != 0 and "Traceback" not in result.output
    message = result.stderr.strip()
    assert message.startswith("Error:") and "\n" not in message and phrase in message, message
    assert not (tmp_path / "run").exists()


def test_asking_for_more_new_items_than_the_model_finds_is_one_line(word_file: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    result = CliRunner().invoke(
        app, ["train", str(word_file), "--items", "lines", "--max-steps", "3", "--out", str(run), *SMALL]
    )
    assert result.exit_code == 0, result.output
    # at temperature 0 every item is the same one: there can be one new item at most
    result = CliRunner().invoke(
        app, ["sample", "--model", str(run), "--items", "5", "--new", "--temperature", "0"]
    )
    assert result.exit_code == 1 and result.stdout == ""
    assert result.stderr.startswith("Error: found only") and result.stderr.count("\n") == 1
    result = CliRunner().invoke(app, ["sample", "--model", str(run), "--items", "0"])
    assert result.exit_code != 0 and "--items" in result.stderr


def test_long_items_are_scored_in_smaller_groups() -> None:
    from chargen.evaluate import _groups

    steps = np.array([5] * 10 + [1000] * 10)
    order = np.argsort(steps, kind="stable")
    groups = _groups(order, steps, batch=8, cells=4000)
    assert sorted(np.concatenate(groups).tolist()) == list(range(20))  # every item once
    assert all(len(g) * steps[g].max() <= 4000 or len(g) == 1 for g in groups)
    assert max(len(g) for g in groups) == 8  # short ones still side by side


@pytest.mark.parametrize("unknown", ["skip", "replace"])
def test_an_item_of_only_dropped_characters_is_no_item(tmp_path: Path, unknown: str) -> None:
    """Read with a parent's vocabulary that lacks Ö, Ü, Ğ and Ç (and has no unknown symbol, so
    replace drops them too), 'ÖÜ' and 'ĞÇ' would be empty items; they go, as blank lines do."""
    config = TextConfig(items="lines")
    (tmp_path / "parent.txt").write_text("emma\nava\nmia\n", encoding="utf-8")
    vocab = load_corpus(tmp_path / "parent.txt", config).vocab
    (tmp_path / "mine.txt").write_text("ÖÜ\nemma\nĞÇ\nÖava\nmia\n", encoding="utf-8")
    corpus = load_corpus(tmp_path / "mine.txt", config, vocab=vocab, unknown=unknown, cache=False)
    assert "".join(vocab.chars[i] for i in corpus.ids) == f"{END}emma{END}ava{END}mia{END}"
    assert corpus.unknown == 5


@pytest.mark.parametrize(
    ("mode", "files", "where"),
    [
        ("lines", {"a.txt": "emma\n\nava\n  mia zoë \nliam\n"}, "in item 3, on line 4: 'mia zoë'"),
        (
            "paragraphs",
            {"a.txt": "emma ava\nmia\n\n \n\nliam\nnoah zoë\n"},
            "in item 2, on line 7: 'noah zoë'",
        ),
        ("<|>", {"a.txt": "emma<|>ava\nmia<|>\nliam\nzoë<|>noah"}, "in item 3, on line 4: 'zoë'"),
        (
            "files",
            {"a.txt": "emma\n", "b.txt": "ava\nmia zoë\n"},
            "in item 2, on line 2 of {dir}/b.txt: 'mia zoë'",
        ),
        (None, {"a.txt": "emma\nava\n\nmia zoë\n"}, "on line 4: 'mia zoë'"),
    ],
)
def test_an_unknown_character_is_named_with_the_item_and_line_it_is_first_in(
    tmp_path: Path, mode: str | None, files: dict[str, str], where: str
) -> None:
    """A user fixing a list needs to find the character: the error names the item and the line of
    the file it is first on, and shows that line (a running text's error, the line)."""
    folder = tmp_path / "list"
    folder.mkdir()
    for name, text in files.items():
        (folder / name).write_text(text, encoding="utf-8")
    vocab = Vocab([*"emavilnoh \n", END])  # no z or ë
    source = folder if len(files) > 1 else folder / "a.txt"
    with pytest.raises(VocabError) as error:
        load_corpus(source, TextConfig(items=mode), vocab=vocab, unknown="error", cache=False)
    message = str(error.value)
    assert "2 character(s) the model has never seen: 'z' (U+007A), 'ë' (U+00EB)" in message, message
    assert f"; the first is {where.format(dir=folder)}; remove them" in message, message


def test_a_long_line_is_shown_around_its_unknown_character(tmp_path: Path) -> None:
    path = tmp_path / "long.txt"
    path.write_text("ab\n" + "a" * 100 + "z" + "b" * 100 + "\n", encoding="utf-8")
    with pytest.raises(VocabError) as error:
        load_corpus(path, TextConfig(items="lines"), vocab=Vocab([*"ab", END]), unknown="error", cache=False)
    assert f"in item 2, on line 2: '…{'a' * 20}z{'b' * 19}…'" in str(error.value)


def test_eval_on_a_list_names_the_item_with_an_unknown_character(word_file: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    args = ["train", str(word_file), "--items", "lines", "--max-steps", "1", "--out", str(run), *SMALL]
    assert CliRunner().invoke(app, args).exit_code == 0
    test = tmp_path / "test.txt"
    test.write_text("lamp\n\nlight\nthe 3rd lamp\n", encoding="utf-8")
    result = CliRunner().invoke(app, ["eval", "--model", str(run), str(test)])
    message = result.stderr.strip()
    assert result.exit_code == 1 and "\n" not in message, message
    assert (
        "the first is in item 3, on line 4: 'the 3rd lamp'; remove them, or pass --unknown replace" in message
    )


def test_eval_and_score_name_the_runs_items_setting_as_its_flag(tmp_path: Path) -> None:
    """A text that the run's list setting cannot read: the message names that setting as the flag the
    run was trained with (eval and score have no --items of their own), not as Python's `items='files'`."""
    folder = tmp_path / "poems"
    folder.mkdir()
    for k in range(12):
        (folder / f"{k}.txt").write_text(f"poem {k}<|>line {k}\n", encoding="utf-8")
    runs = {"files": tmp_path / "files", "<|>": tmp_path / "separated"}
    for mode, run in runs.items():
        args = ["train", str(folder), "--items", mode, "--max-steps", "1", "--out", str(run), *SMALL]
        trained = CliRunner().invoke(app, args)
        assert trained.exit_code == 0, trained.output
    one = tmp_path / "one.txt"
    one.write_text("poem 1 line 1\n", encoding="utf-8")
    said = {
        "files": f"text {one} is a single file, and the run's --items files makes each file one item: "
        "give a directory or several files",
        "<|>": "text has no separator '<|>' anywhere, so read with the run's --items <|> it would be one "
        "item",
    }
    for mode, run in runs.items():
        for command in ("eval", "score"):
            result = CliRunner().invoke(app, [command, "--model", str(run), str(one)])
            message = result.stderr.strip()
            assert result.exit_code == 1 and message == f"Error: {said[mode]}", message
