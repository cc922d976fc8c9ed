"""chargen serve: the real server (uvicorn, in its own process, on a free loopback port), exercised
with httpx over HTTP: every endpoint, streaming, the same seed alone and under load, a bounded load
test with bad bodies and clients that leave mid-stream, tokens, Ctrl-C, and the playground in a
headless Chromium."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from typer.testing import CliRunner

from chargen.cli import app
from chargen.config import ITEM_COUNT, SampleConfig, default_max_length
from chargen.errors import ConfigError
from chargen.records import TrainSummary
from chargen.serve.requests import Limits, check_binding, is_loopback, parse_generate

httpx = pytest.importorskip("httpx")
pytest.importorskip("uvicorn")
pytest.importorskip("starlette")

REPO = Path(__file__).resolve().parents[1]
TOKEN = "s3cret-token"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Served:
    """`chargen serve` in a subprocess, as a user starts it."""

    def __init__(self, run: Path, *args: str) -> None:
        self.port = _free_port()
        self.interrupted = False
        self.url = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        command = [
            sys.executable,
            "-m",
            "chargen",
            "serve",
            "--model",
            str(run),
            "--port",
            str(self.port),
            *args,
        ]
        self.process = subprocess.Popen(
            command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"the server exited: {self.process.stderr.read()}")  # type: ignore[union-attr]
            try:
                if httpx.get(self.url + "/healthz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.2)
        self.stop()
        raise AssertionError("the server did not start in 120 s")

    def rss(self) -> int:
        """Resident memory of the server process, in kB."""
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise AssertionError("no VmRSS")

    def interrupt(self) -> None:
        """Ctrl-C, once: a second one would make uvicorn quit without finishing its shutdown."""
        if self.process.poll() is None and not self.interrupted:
            self.process.send_signal(signal.SIGINT)
            self.interrupted = True

    def stop(self) -> tuple[int, str]:
        self.interrupt()
        try:
            _, err = self.process.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            _, err = self.process.communicate()
        return self.process.returncode, err


@pytest.fixture(scope="module")
def server(tiny_run: TrainSummary) -> Iterator[Served]:
    served = Served(tiny_run.run_dir, "--max-queue", "48", "--max-n", "4", "--max-length", "100000")
    yield served
    served.stop()


def sse(response: httpx.Response) -> Iterator[tuple[str, dict]]:
    """The (event, data) pairs of a Server-Sent Events response, as they arrive."""
    name, data = "message", ""
    for line in response.iter_lines():
        if line.startswith("event: "):
            name = line[7:]
        elif line.startswith("data: "):
            data += line[6:]
        elif line == "" and data:
            yield name, json.loads(data)
            name, data = "message", ""


def generate(url: str, body: dict, **kw) -> httpx.Response:
    return httpx.post(url + "/v1/generate", json=body, timeout=60, **kw)


def streamed(url: str, body: dict) -> tuple[str, list[dict], dict]:
    """Row 0's text, its piece events and the final event of a streamed generation."""
    pieces, final = [], {}
    with httpx.stream("POST", url + "/v1/generate", json={**body, "stream": True}, timeout=60) as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        for name, data in sse(response):
            if name == "piece":
                pieces.append(data)
            else:
                final = {"event": name, **data}
    return "".join(p["text"] for p in pieces if p["row"] == 0), pieces, final


# --- requests, no server ------------------------------------------------------------------------


def test_requests_are_checked_field_by_field() -> None:
    limits = Limits(max_length=100, max_n=2)
    ok = parse_generate({"prefix": "a", "length": 5, "temperature": 1, "n": 2, "stream": True}, limits, None)
    assert ok.sample.num_samples == 2 and ok.stream and ok.items is None
    for body, field in [
        ({"length": 101}, "length"),
        ({"n": 3}, "n"),
        ({"n": 0}, "n"),
        ({"length": "5"}, "length"),
        ({"length": True}, "length"),
        ({"temperature": -1}, "temperature"),
        ({"top_p": 0}, "top_p"),
        ({"prefix": 5}, "prefix"),
        ({"file": "/etc/passwd"}, "file"),
        ({"model": "runs/other"}, "model"),
        ({"items": 3}, "items"),
        ({"stop": ""}, "stop"),
        ({"alternatives": "yes", "stream": True}, "alternatives"),
        ({"alternatives": 1, "stream": True}, "alternatives"),
        ({"alternatives": True}, "alternatives"),  # they come only with a stream
        ({"prefix": "ab\ud83dc"}, "prefix"),  # JSON's "\ud83d" alone: half a pair, no character
    ]:
        with pytest.raises(ConfigError) as caught:
            parse_generate(body, limits, None)
        assert caught.value.field == field and f"`{field}`" in str(caught.value), (body, str(caught.value))
    with pytest.raises(ConfigError, match="`n`"):
        parse_generate({"n": 2}, limits, "lines")
    with pytest.raises(ConfigError, match="`alternatives`"):
        parse_generate({"alternatives": True, "stream": True}, limits, "lines")
    asked = parse_generate({"stream": True, "alternatives": True}, limits, None)
    assert asked.alternatives and not parse_generate({"stream": True}, limits, None).alternatives


def test_a_lists_items_are_cut_where_chargen_sample_cuts_them_within_the_servers_limit() -> None:
    """Unless a request says otherwise, a list's run gives as many items, each cut as long, as
    `chargen sample --items` gives: a line's length for a list of lines, a document's for the
    others (before, every list's items were cut at a line's). Never past the server's --max-length."""
    from chargen.config import DOCUMENT_LENGTH, LINE_LENGTH

    for mode, length in [("lines", LINE_LENGTH), ("paragraphs", DOCUMENT_LENGTH), ("files", DOCUMENT_LENGTH)]:
        parsed = parse_generate({}, Limits(), mode)
        assert (parsed.items, parsed.sample.max_length) == (ITEM_COUNT, length), mode
    assert parse_generate({}, Limits(max_length=300), "paragraphs").sample.max_length == 300
    assert parse_generate({"max_length": 50}, Limits(max_length=300), "@@").sample.max_length == 50
    assert parse_generate({}, Limits(), None).items is None


def test_a_texts_length_left_out_is_chargen_samples_within_the_servers_limit(tiny_run: TrainSummary) -> None:
    """A text's run without `length` generates as many characters as `chargen sample` does, but never
    more than the server's --max-length: before, it generated 500 under --max-length 60, past the
    limit that a request naming `length` was held to."""
    assert parse_generate({}, Limits(), None).sample.length == SampleConfig.length
    assert parse_generate({}, Limits(max_length=60), None).sample.length == 60
    assert parse_generate({"length": 7}, Limits(max_length=60), None).sample.length == 7
    served = Served(tiny_run.run_dir, "--max-length", "60")
    try:
        whole = generate(served.url, {"prefix": "The ", "n": 2, "seed": 1})
        assert whole.status_code == 200, whole.text
        assert whole.json()["chars"] == 2 * 60 and all(len(t) == 60 for t in whole.json()["texts"])
        text, _, final = streamed(served.url, {"seed": 1})
        assert final["event"] == "done" and final["chars"] == len(text) == 60, final
    finally:
        served.stop()


def test_only_loopback_binds_without_a_token() -> None:
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.2") and not is_loopback("example.org")
    check_binding("127.0.0.1", None, False)
    check_binding("0.0.0.0", "t", False)
    check_binding("0.0.0.0", None, True)
    with pytest.raises(ConfigError, match="`token"):
        check_binding("0.0.0.0", None, False)
    check_binding("0.0.0.0", "a-Z_0.9~+/=!", False)
    for token in ("pässwörd", " secret", "two words", "tab\there"):  # no client could ever send these
        with pytest.raises(ConfigError, match="`token` must be printable ASCII"):
            check_binding("0.0.0.0", token, False)


def test_a_token_a_client_could_not_send_is_refused_in_one_line(tiny_run: TrainSummary) -> None:
    with socket.socket() as taken:  # were the token let through, the port in use would end it
        taken.bind(("127.0.0.1", 0))
        port = str(taken.getsockname()[1])
        args = ["serve", "--model", str(tiny_run.run_dir), "--port", port, "--token", "pässwörd"]
        result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("Error: --token must be printable ASCII"), result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_the_cli_refuses_a_public_address_without_a_token(tiny_run: TrainSummary) -> None:
    result = CliRunner().invoke(app, ["serve", "--model", str(tiny_run.run_dir), "--host", "0.0.0.0"])
    assert result.exit_code == 2, result.output
    assert "--token" in result.output and "--insecure-no-token" in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_a_port_in_use_or_out_of_range_and_an_unknown_host_are_one_line(tiny_run: TrainSummary) -> None:
    run = str(tiny_run.run_dir)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        cases = [
            (["--port", str(busy)], f"port {busy} is in use"),
            (["--port", "70000"], "--port must be in 0-65535"),
            (["--port", "-1"], "--port must be in 0-65535"),
            (["--host", "no-such-host.invalid", "--token", "t"], "--host 'no-such-host.invalid' is not"),
        ]
        for args, message in cases:
            result = CliRunner().invoke(app, ["serve", "--model", run, *args])
            assert result.exit_code == 2 and message in result.output, (args, result.output)
            assert len(result.output.strip().splitlines()) == 1, result.output


# --- the real server ----------------------------------------------------------------------------


def test_health_model_and_page(server: Served, tiny_run: TrainSummary) -> None:
    assert httpx.get(server.url + "/healthz").json()["status"] == "ok"
    described = httpx.get(server.url + "/v1/model").json()
    info = CliRunner().invoke(app, ["info", str(tiny_run.run_dir), "--json"])
    expected = json.loads(info.output)
    assert described["model"] == expected["model"] and described["vocab"] == expected["vocab"]
    # What a request leaving a field out gets, told field by field (a text's run: no list's fields):
    # asking for every one of them gives what asking for none does.
    defaults = described["defaults"]
    assert defaults["length"] == SampleConfig.length and defaults["temperature"] == SampleConfig.temperature
    assert "seed" not in defaults and "items" not in defaults and "max_length" not in defaults
    given, left_out = generate(server.url, {**defaults, "seed": 5}), generate(server.url, {"seed": 5})
    assert given.status_code == 200, given.text
    assert given.json()["texts"] == left_out.json()["texts"]
    page = httpx.get(server.url + "/")
    assert page.status_code == 200 and "<title>chargen playground</title>" in page.text
    assert "http://" not in page.text and "https://" not in page.text  # nothing from elsewhere
    missing = httpx.get(server.url + "/v1/nothing")
    assert missing.status_code == 404 and "error" in missing.json()


def test_generate_matches_chargen_sample(server: Served, tiny_run: TrainSummary) -> None:
    body = {"prefix": "The ", "length": 80, "temperature": 0.9, "seed": 7, "n": 3}
    answer = generate(server.url, body)
    assert answer.status_code == 200, answer.text
    data = answer.json()
    assert len(data["texts"]) == 3 and all(len(t) == 80 for t in data["texts"]) and data["seed"] == 7
    assert data["chars"] == 240
    again = generate(server.url, body).json()
    assert again["texts"] == data["texts"]
    result = CliRunner().invoke(
        app,
        [
            "sample",
            "--model",
            str(tiny_run.run_dir),
            "--prefix",
            "The ",
            "--length",
            "80",
            "--temperature",
            "0.9",
            "--seed",
            "7",
            "--num-samples",
            "3",
        ],
    )
    assert result.exit_code == 0, result.output
    # chargen sample prints each sample after the prefix; the server's picks come from the same
    # generator and noise, so the texts agree (the batched arithmetic may differ in the last bit
    # only for 1-3 rows, which padding avoids; here 3 rows in both).
    for text in data["texts"]:
        assert text in result.output


def test_stop_and_top_k(server: Served) -> None:
    data = generate(server.url, {"prefix": "The", "length": 400, "seed": 1, "stop": "e", "n": 2}).json()
    assert all("e" not in text and len(text) < 400 for text in data["texts"]), data
    greedy = generate(server.url, {"prefix": "The", "length": 50, "temperature": 0}).json()["texts"][0]
    assert (
        generate(server.url, {"prefix": "The", "length": 50, "temperature": 0, "seed": 9}).json()["texts"][0]
        == greedy
    )
    top1 = generate(
        server.url, {"prefix": "The", "length": 50, "top_k": 1, "seed": 4, "temperature": 1.5}
    ).json()
    assert top1["texts"][0] == greedy


def test_streaming_sends_pieces_with_probabilities_then_counts(server: Served) -> None:
    body = {"prefix": "The ", "length": 100, "temperature": 0.8, "seed": 11}
    text, pieces, final = streamed(server.url, body)
    assert final["event"] == "done" and final["chars"] == 100 and final["first_char_seconds"] >= 0
    assert len(pieces) >= 2 and pieces[0]["text"]  # the first character comes at once, the rest in pieces
    assert text == generate(server.url, body).json()["texts"][0]
    for piece in pieces:  # no alternatives unless asked for: a bot does not pay for them
        assert len(piece["probs"]) == len(piece["text"]) and "top" not in piece
    probs = [p for piece in pieces for p in piece["probs"]]
    # Asked for, the alternatives come beside the same text and probabilities.
    text_too, pieces, final = streamed(server.url, {**body, "alternatives": True})
    assert text_too == text and [p for piece in pieces for p in piece["probs"]] == probs
    assert final["event"] == "done" and final["chars"] == 100
    for piece in pieces:
        assert len(piece["probs"]) == len(piece["text"]) == len(piece["top"])
        for char, p, top in zip(piece["text"], piece["probs"], piece["top"], strict=True):
            assert 0 < p <= 1 and len(top) == 5
            probs = [q for _, q in top]
            assert probs == sorted(probs, reverse=True) and p <= probs[0] + 1e-6
            if char in [c for c, _ in top]:
                assert abs(dict(top)[char] - p) < 1e-4


def test_score_gives_per_character_logprobs_as_chargen_score(
    server: Served, tiny_run: TrainSummary, tmp_path: Path
) -> None:
    text = "The lamp at the point\nwas lit at dusk.\n"
    data = httpx.post(server.url + "/v1/score", json={"text": text}).json()
    assert data["chars"] == len(text) - 1 and len(data["symbols"]) == len(text) - 1
    assert abs(sum(lp for _, lp in data["symbols"]) - data["logprob"]) < 1e-3
    (tmp_path / "t.txt").write_text(text)
    result = CliRunner().invoke(
        app, ["score", "--model", str(tiny_run.run_dir), str(tmp_path / "t.txt"), "--json"]
    )
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.output.splitlines() if line.startswith("{")]
    for ours, theirs in zip(data["lines"], lines, strict=True):
        assert ours["chars"] == theirs["chars"] and abs(ours["logprob"] - theirs["logprob"]) < 1e-3
    # Only a line feed ends a line, as in a file: not a form feed (replaced, being unknown here).
    text = "The lamp\x0cat the point\nwas lit.\n"
    data = httpx.post(server.url + "/v1/score", json={"text": text, "unknown": "replace"}).json()
    (tmp_path / "f.txt").write_text(text, newline="")
    result = CliRunner().invoke(
        app,
        [
            "score",
            "--model",
            str(tiny_run.run_dir),
            str(tmp_path / "f.txt"),
            "--unknown",
            "replace",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.output.splitlines() if line.startswith("{")]
    assert [u["chars"] for u in data["lines"]] == [u["chars"] for u in lines] and len(lines) == 2
    half = httpx.post(server.url + "/v1/score", content=b'{"text": "ab\\ud83dc", "unknown": "skip"}')
    assert half.status_code == 422 and half.json()["field"] == "text", half.text  # was a 500
    bad = httpx.post(server.url + "/v1/score", json={"text": "\u4e00\u4e01"})
    assert bad.status_code == 422 and bad.json()["field"] == "text"
    # The advice names the request's own field, in JSON, as generate's does.
    said = bad.json()["error"]
    assert '`"unknown": "replace"`' in said and "unknown='replace'" not in said, said
    # Two characters, one of them unseen and skipped: what is left is too short, and it says so.
    short = httpx.post(server.url + "/v1/score", json={"text": "a\u4e00", "unknown": "skip"})
    assert short.status_code == 422 and "1 character(s) left once the 1" in short.json()["error"], short.text


def test_bad_requests_are_refused_naming_the_problem(server: Served) -> None:
    cases = [
        ({"length": 100001}, 422, "length"),
        ({"n": 5}, 422, "n"),
        ({"temperature": "hot"}, 422, "temperature"),
        ({"path": "/etc/passwd"}, 422, "path"),
        ({"prefix": "\u4e00"}, 422, "prefix"),
    ]
    for body, status, field in cases:
        answer = generate(server.url, body)
        assert answer.status_code == status and answer.json()["field"] == field, (body, answer.text)
    # An unseen character's advice names the request's own field, in JSON, which then works.
    said = generate(server.url, {"prefix": "snow \u2603"}).json()["error"]
    assert '`"unknown": "replace"`' in said and "unknown='replace'" not in said, said
    replaced = generate(server.url, {"prefix": "snow \u2603", "unknown": "replace", "length": 5})
    assert replaced.status_code == 200, replaced.text
    deep, digits = b"[" * 5000 + b"]" * 5000, b'{"seed": ' + b"9" * 5000 + b"}"  # Python refuses both
    for raw in [b"{", b"[1, 2]", b"\xff\xfe", b"", deep, digits]:
        answer = httpx.post(server.url + "/v1/generate", content=raw)
        assert answer.status_code == 400 and "error" in answer.json(), raw
    huge = httpx.post(server.url + "/v1/score", json={"text": "a" * 300_000})
    assert huge.status_code == 413 and "max_body" in huge.json()["error"]
    assert httpx.get(server.url + "/v1/generate").status_code == 405
    assert httpx.get(server.url + "/healthz").json()["status"] == "ok"


def test_the_same_seed_gives_the_same_text_alone_and_under_load(server: Served) -> None:
    body = {"prefix": "The lamp ", "length": 300, "temperature": 1.0, "top_p": 0.95, "seed": 1234}
    alone = generate(server.url, body).json()["texts"][0]
    # A request with `stop` goes character by character, one without from arrays: both alone and
    # beside each other, streamed or not, with the alternatives or without.
    stopped = {"prefix": "at ", "length": 400, "seed": 77, "stop": "qz", "n": 2}
    stopped_alone = generate(server.url, stopped).json()["texts"]
    others = [
        {"prefix": p, "length": 200 + 37 * i, "temperature": 0.7 + 0.1 * (i % 4), "seed": i, "n": 1 + i % 3}
        for i, p in enumerate(["a", "The ", "", "was ", "at ", "he "] * 2)
    ]
    for i, other in enumerate(others[::3]):
        other["stop"] = "th" if i % 2 else "e "
    with ThreadPoolExecutor(16) as pool:
        background = [pool.submit(generate, server.url, b) for b in others]
        background += [pool.submit(streamed, server.url, {**b, "alternatives": True}) for b in others[:4]]
        time.sleep(0.05)
        loaded = [pool.submit(streamed, server.url, body) for _ in range(2)]
        loaded.append(pool.submit(streamed, server.url, {**body, "alternatives": True}))
        loaded_stopped = pool.submit(generate, server.url, stopped)
        texts = [f.result()[0] for f in loaded]
        assert all(isinstance(f.result(), tuple) or f.result().status_code == 200 for f in background)
        assert loaded_stopped.result().json()["texts"] == stopped_alone
    assert texts == [alone] * 3


def _one(url: str, i: int) -> tuple[str, object]:
    """One request of the load test: good, bad, or leaving mid-stream, by i."""
    kind = i % 5
    if kind == 0:
        answer = generate(url, {"prefix": "The ", "length": 60, "seed": i, "n": 2})
        ok = answer.status_code == 200 and [len(t) for t in answer.json()["texts"]] == [60, 60]
        return "good", ok or answer.text
    if kind == 1:
        text, _, final = streamed(url, {"prefix": "at ", "length": 80, "seed": i})
        return "good", (len(text) == 80 and final["event"] == "done") or final
    if kind == 2:
        body = [{"length": -1}, {"n": "two"}, {"seed": 1.5}, {"colour": 1}][i % 4]
        answer = generate(url, body)
        field = next(iter(body))
        return "bad", (answer.status_code == 422 and answer.json().get("field") == field) or answer.text
    if kind == 3:
        with httpx.stream(
            "POST", url + "/v1/generate", json={"length": 3000, "stream": True, "seed": i}, timeout=60
        ) as r:
            for name, _ in sse(r):
                if name == "piece":
                    break  # leave mid-stream: the server must free the rows
        return "left", True
    answer = httpx.post(url + "/v1/score", json={"text": "The lamp was lit.\nAt dusk.\n"}, timeout=60)
    return "good", (answer.status_code == 200 and answer.json()["chars"] > 0) or answer.text


def test_bounded_load_answers_all_and_keeps_memory_flat(server: Served) -> None:
    def round_(start: int) -> list[tuple[str, object]]:
        with ThreadPoolExecutor(32) as pool:
            return list(pool.map(lambda i: _one(server.url, i), range(start, start + 100)))

    first = round_(0)
    rss_first = server.rss()
    second = round_(100)
    rss_second = server.rss()
    results = first + second
    assert len(results) == 200
    failures = [(kind, result) for kind, result in results if result is not True]
    assert not failures, failures[:5]
    # Every slot freed, clients that left included: the queue drains to nothing.
    deadline = time.monotonic() + 10
    while httpx.get(server.url + "/healthz").json()["queue"] and time.monotonic() < deadline:
        time.sleep(0.1)
    health = httpx.get(server.url + "/healthz").json()
    assert health == {**health, "status": "ok", "queue": 0, "alive": True}
    assert rss_second - rss_first < 20_000, (rss_first, rss_second)  # kB: no growth beyond noise


def test_a_client_that_goes_or_stops_reading_leaves_at_once(server: Served) -> None:
    """A whole answer's client that gives up, and a stream's that reads nothing, free their rows
    long before their 100,000 characters are made."""

    def drained(within: float) -> dict:
        deadline = time.monotonic() + within
        while (health := httpx.get(server.url + "/healthz").json())["queue"] and time.monotonic() < deadline:
            time.sleep(0.1)
        return health

    began = drained(10)["steps"]
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(server.url + "/v1/generate", json={"length": 100_000, "n": 4}, timeout=0.5)
    health = drained(10)
    assert health["queue"] == 0 and health["steps"] - began < 50_000, health
    body = json.dumps({"length": 100_000, "n": 4, "stream": True, "alternatives": True}).encode()
    head = b"POST /v1/generate HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n" % len(body)
    with socket.create_connection(("127.0.0.1", server.port)) as stalled:
        stalled.sendall(head + body)  # and never reads while it runs
        began = health["steps"]
        time.sleep(0.5)
        health = drained(60)
        assert health["queue"] == 0 and health["steps"] - began < 100_000, health
        stalled.settimeout(10)
        received = b""
        while b"event: error" not in received and (chunk := stalled.recv(1 << 16)):
            received += chunk
        assert b"characters behind" in received[received.index(b"event: error") :]


def test_a_full_queue_answers_503_with_retry_after(tiny_run: TrainSummary) -> None:
    served = Served(tiny_run.run_dir, "--max-queue", "2", "--token", TOKEN, "--max-length", "100000")
    try:
        auth = {"Authorization": f"Bearer {TOKEN}"}
        # tokens: none, wrong, right
        assert httpx.get(served.url + "/v1/model").status_code == 401
        wrong = httpx.get(served.url + "/v1/model", headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401 and "error" in wrong.json()
        assert generate(served.url, {"length": 5}).status_code == 401
        assert httpx.get(served.url + "/v1/model", headers=auth).status_code == 200
        # two long streams fill the queue; a third is told to come back
        streams = [
            httpx.stream(
                "POST",
                served.url + "/v1/generate",
                json={"length": 100000, "stream": True},
                headers=auth,
                timeout=60,
            )
            for _ in range(2)
        ]
        responses = [s.__enter__() for s in streams]
        events = [sse(r) for r in responses]  # one reader each: dropping one would close its stream
        for each in events:
            next(each)
        busy = generate(served.url, {"length": 5}, headers=auth)
        assert busy.status_code == 503 and busy.headers["retry-after"] == "1"
        # Ctrl-C: the streams end with an error event, and the server exits
        served.interrupt()
        for each in events:
            names = [name for name, _ in each]
            assert names[-1] == "error", names[-3:]
        for s in streams:
            s.__exit__(None, None, None)
    finally:
        code, err = served.stop()
    assert code in (0, 130), err
    assert "Traceback" not in err, err


# --- the playground in a browser ----------------------------------------------------------------


def _browser():  # type: ignore[no-untyped-def]
    """Headless Chromium driven by selenium, logging its requests; skips where either is missing."""
    if not (shutil.which("chromium") or shutil.which("chromium-browser")) or not shutil.which("chromedriver"):
        pytest.skip("chromium and chromedriver are not installed (apt-get install chromium chromium-driver)")
    webdriver = pytest.importorskip("selenium.webdriver")
    options = webdriver.ChromeOptions()
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        options.add_argument(flag)
    options.binary_location = shutil.which("chromium") or shutil.which("chromium-browser") or ""
    options.set_capability("goog:loggingPrefs", {"performance": "ALL", "browser": "ALL"})
    service = webdriver.ChromeService(executable_path=shutil.which("chromedriver"))
    return webdriver.Chrome(options=options, service=service)


def test_the_playground_streams_coloured_text_and_stops(server: Served) -> None:
    browser = _browser()
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        browser.get(server.url + "/")
        wait = WebDriverWait(browser, 30)
        wait.until(lambda b: "parameters" in b.find_element(By.ID, "model").text)
        assert not browser.find_element(By.ID, "token-box").is_displayed()  # this server needs none
        # Each control starts at the server's default for its field, and its number shows it (before,
        # the page had its own copies: a length of 300, where a request left without one gets 500).
        defaults = httpx.get(server.url + "/v1/model").json()["defaults"]
        for field in ("temperature", "top_p", "length"):
            shown = browser.find_element(By.ID, field).get_attribute("value")
            assert float(shown) == defaults[field], (field, shown)
            assert browser.find_element(By.ID, f"{field}-v").text == shown
        assert browser.find_element(By.ID, "unknown").get_attribute("value") == defaults["unknown"]
        browser.find_element(By.ID, "prefix").send_keys("The lamp ")
        # long enough to be stopped long before its end, however fast the machine
        browser.execute_script("const e = document.getElementById('length'); e.max = 1e5; e.value = 1e5")
        browser.find_element(By.ID, "generate").click()
        wait.until(lambda b: len(b.find_elements(By.CSS_SELECTOR, "#out span.c")) >= 20)
        first = browser.find_elements(By.CSS_SELECTOR, "#out span.c")[0]
        assert first.get_attribute("style").startswith("background")
        assert "likeliest" in first.get_attribute("title")
        browser.find_element(By.ID, "stop").click()
        wait.until(lambda b: b.find_element(By.ID, "status").text == "stopped")
        count = len(browser.find_elements(By.CSS_SELECTOR, "#out span.c"))
        assert 20 <= count < 100000
        time.sleep(0.5)
        assert len(browser.find_elements(By.CSS_SELECTOR, "#out span.c")) == count  # nothing more came
        assert browser.find_element(By.ID, "generate").is_enabled()
        urls = set()
        for entry in browser.get_log("performance"):
            message = json.loads(entry["message"])["message"]
            if message["method"] == "Network.requestWillBeSent":
                urls.add(message["params"]["request"]["url"])
        assert urls and all(u.startswith(server.url) for u in urls), urls
        errors = [e["message"] for e in browser.get_log("browser") if e["level"] == "SEVERE"]
        assert not errors, errors  # no script errors, and no request for a missing favicon
    finally:
        browser.quit()


def test_the_playground_keeps_to_max_length_and_replaces_unknown_characters(tiny_run: TrainSummary) -> None:
    """Under --max-length 255 the slider's end is a length the server accepts: before, it ran to
    2,000 and Generate at its end got a 422. A prefix with a character the model never saw is
    refused, naming `unknown`, until the page's control says replace."""
    served = Served(tiny_run.run_dir, "--max-length", "255")
    browser = _browser()
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.select import Select
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        limits = httpx.get(served.url + "/v1/model").json()["limits"]
        assert limits["max_length"] == 255 and limits["max_n"] >= 1 and limits["max_items"] >= 1
        browser.get(served.url + "/")
        wait = WebDriverWait(browser, 30)
        wait.until(lambda b: "parameters" in b.find_element(By.ID, "model").text)
        slider = browser.find_element(By.ID, "length")
        # the server's default length, 500 held to its --max-length, is where the slider starts
        assert slider.get_attribute("max") == "255" and slider.get_attribute("value") == "255"
        browser.execute_script("const e = document.getElementById('length'); e.value = e.max")  # the end
        assert int(slider.get_attribute("value")) <= 255
        browser.find_element(By.ID, "generate").click()
        wait.until(lambda b: " in " in b.find_element(By.ID, "status").text)
        status = browser.find_element(By.ID, "status").text
        assert "characters in" in status and "error" not in status, status

        browser.find_element(By.ID, "prefix").send_keys("snow \u2603 ")
        browser.find_element(By.ID, "generate").click()
        wait.until(lambda b: "refused" in b.find_element(By.ID, "status").text)
        assert '"unknown": "replace"' in browser.find_element(By.ID, "status").text
        Select(browser.find_element(By.ID, "unknown")).select_by_value("replace")
        browser.find_element(By.ID, "generate").click()
        wait.until(lambda b: "characters in" in b.find_element(By.ID, "status").text)
    finally:
        browser.quit()
        served.stop()


def test_the_playground_of_a_list_run_behind_a_token(tmp_path: Path) -> None:
    """The token box shows, the first Generate after typing the token works (the page learns the
    run is a list first), and the items shown are as many as the slider says, in the answer's order,
    each growing from the prefix piece by piece as it is generated before it is shown whole."""
    from chargen.config import TextConfig, TrainConfig
    from chargen.training import train
    from tests.conftest import TINY_MODEL, corpus_from_text

    browser = _browser()
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    names = "\n".join(["emma", "olivia", "ava", "mia", "sophia", "isabella", "amelia", "harper"] * 30)
    corpus = corpus_from_text(tmp_path, names, "names", TextConfig(items="lines"))
    steps = TrainConfig(batch_size=8, bptt=32, max_steps=10, eval_every=10, seed=0)
    served = Served(train(corpus, TINY_MODEL, steps, out=tmp_path / "run").run_dir, "--token", TOKEN)
    try:
        browser.get(served.url + "/")
        wait = WebDriverWait(browser, 30)
        wait.until(lambda b: "needs its token" in b.find_element(By.ID, "model").text)
        assert browser.find_element(By.ID, "token-box").is_displayed()
        browser.find_element(By.ID, "token").send_keys(TOKEN)
        browser.find_element(By.ID, "seed").send_keys("3")
        browser.find_element(By.ID, "prefix").send_keys("a")
        # Every text an item's list entry gains, in order: a piece appended, or (`whole`) the entry
        # set to the finished item.
        browser.execute_script(
            "window.gained = []; new MutationObserver((records) => { for (const r of records) {"
            "  if (r.target.tagName !== 'LI') continue;"
            "  const index = Array.prototype.indexOf.call(r.target.parentNode.children, r.target);"
            "  const whole = r.removedNodes.length > 0;"
            "  for (const node of r.addedNodes) window.gained.push([index, node.data, whole]);"
            "} }).observe(document.getElementById('items'), {childList: true, subtree: true});"
        )
        browser.find_element(By.ID, "generate").click()  # at once, as a person would
        wait.until(lambda b: "characters in" in b.find_element(By.ID, "status").text)
        assert browser.find_element(By.ID, "length-v").text == str(ITEM_COUNT)  # the server's default
        shown = [
            li.get_attribute("textContent") for li in browser.find_elements(By.CSS_SELECTOR, "#items li")
        ]
        asked = httpx.post(
            served.url + "/v1/generate",
            json={"items": 10, "seed": 3, "temperature": 0.8, "top_p": 1.0, "prefix": "a"},
            headers={"Authorization": f"Bearer {TOKEN}"},
        ).json()
        assert shown == [item["text"] for item in asked["items"]]
        gained = browser.execute_script("return window.gained")
        for index, item in enumerate(asked["items"]):
            *pieces, last = [(text, whole) for i, text, whole in gained if i == index]
            assert pieces and not any(whole for _, whole in pieces), (index, gained)  # it grew first...
            assert "a" + "".join(text for text, _ in pieces) == item["text"], (index, gained)
            assert last == (item["text"], True), (index, gained)  # ...then was shown whole
    finally:
        browser.quit()
        served.stop()


def test_a_list_run_serves_items_as_chargen_sample_makes_them(tmp_path: Path) -> None:
    from chargen.config import TextConfig, TrainConfig
    from chargen.training import train
    from tests.conftest import TINY_MODEL, corpus_from_text

    names = "\n".join(["emma", "olivia", "ava", "mia", "sophia", "isabella", "amelia", "harper"] * 30)
    corpus = corpus_from_text(tmp_path, names, "names", TextConfig(items="lines"))
    steps = TrainConfig(batch_size=8, bptt=32, max_steps=20, eval_every=20, log_every=10, seed=0)
    run = train(corpus, TINY_MODEL, steps, out=tmp_path / "names-run").run_dir
    served = Served(run)
    try:
        defaults = httpx.get(served.url + "/v1/model").json()["defaults"]  # a list's fields, not a text's
        assert (defaults["items"], defaults["max_length"]) == (ITEM_COUNT, default_max_length("lines"))
        assert "length" not in defaults and "n" not in defaults and "stop" not in defaults
        answer = generate(served.url, {"items": 6, "seed": 5, "prefix": "a"})
        assert answer.status_code == 200, answer.text
        items = answer.json()["items"]
        result = CliRunner().invoke(
            app, ["sample", "--model", str(run), "--items", "6", "--seed", "5", "--prefix", "a", "--json"]
        )
        assert result.exit_code == 0, result.output
        expected = [json.loads(line) for line in result.output.splitlines() if line.startswith("{")]
        assert [i["text"] for i in items] == [i["text"] for i in expected]
        assert all(i["text"].startswith("a") for i in items)
        # A stream grows each item in `piece` events keyed by its index (the characters after the
        # prefix, each with its probability), then ends it with an `item` event.
        body = {"items": 3, "stream": True, "prefix": "a", "seed": 5}
        with httpx.stream("POST", served.url + "/v1/generate", json=body) as response:
            events = list(sse(response))
        assert [name for name, _ in events].count("item") == 3 and events[-1][0] == "done"
        grown: dict[int, str] = {}
        ended: list[dict] = []
        for name, data in events[:-1]:
            assert data["index"] not in {item["index"] for item in ended}, (
                name,
                data,
            )  # nothing after its end
            if name == "piece":
                assert "row" not in data and len(data["probs"]) == len(data["text"]) >= 1, data
                assert all(0 < p <= 1 for p in data["probs"]), data
                grown[data["index"]] = grown.get(data["index"], "") + data["text"]
            else:
                assert name == "item" and data["index"] in grown, (name, data)  # grown before it ended
                assert "a" + grown[data["index"]] == data["text"], (grown, data)
                ended.append(data)
        assert sorted(item["index"] for item in ended) == [0, 1, 2]
        in_order = sorted(ended, key=lambda item: item["index"])
        assert [item["text"] for item in events[-1][1]["items"]] == [item["text"] for item in in_order]
        # Items cut and cleaned as `chargen score` reads a file of the list: a blank line is no item,
        # blanks around a name are not part of it.
        text = "emma\n\n  ava  \n"
        scored = httpx.post(served.url + "/v1/score", json={"text": text}).json()
        assert [u["chars"] for u in scored["items"]] == [5, 4] and len(scored["symbols"]) == 9
        (tmp_path / "some.txt").write_text(text)
        result = CliRunner().invoke(app, ["score", "--model", str(run), str(tmp_path / "some.txt"), "--json"])
        assert result.exit_code == 0, result.output
        rows = [json.loads(line) for line in result.output.splitlines() if line.startswith("{")]
        assert [(u["text"], u["chars"]) for u in scored["items"]] == [(u["text"], u["chars"]) for u in rows]
        assert all(
            abs(a["logprob"] - b["logprob"]) < 1e-3 for a, b in zip(scored["items"], rows, strict=True)
        )
        assert generate(served.url, {"n": 2}).json()["field"] == "n"
        too_long = generate(served.url, {"items": 2, "prefix": "emm", "max_length": 2})
        assert too_long.status_code == 422 and too_long.json()["field"] == "max_length", too_long.text
    finally:
        served.stop()


def test_a_list_of_paragraphs_serves_items_as_long_as_chargen_sample_makes_them(
    lamp_text: str, tmp_path: Path
) -> None:
    """A run on a list of long paragraphs, which it learns rarely end: the server's items, asked for
    without `max_length`, are `chargen sample --items`'s, run past a line's length (where the server
    cut them before) up to a document's."""
    import re

    from chargen.config import DOCUMENT_LENGTH, LINE_LENGTH, TextConfig, TrainConfig
    from chargen.training import train
    from tests.conftest import TINY_MODEL, corpus_from_text

    chunks = [re.sub(r"\n\s*\n", "\n", lamp_text[k : k + 3_000]).strip() for k in range(0, 24_000, 3_000)]
    corpus = corpus_from_text(tmp_path, "\n\n".join(chunks), "paragraphs", TextConfig(items="paragraphs"))
    steps = TrainConfig(batch_size=4, bptt=32, max_steps=30, eval_every=30, log_every=10, seed=0)
    run = train(corpus, TINY_MODEL, steps, out=tmp_path / "run").run_dir
    served = Served(run)
    try:
        answer = generate(served.url, {"items": 3, "seed": 2})
        assert answer.status_code == 200, answer.text
        items = answer.json()["items"]
    finally:
        served.stop()
    result = CliRunner().invoke(app, ["sample", "--model", str(run), "--items", "3", "--seed", "2", "--json"])
    assert result.exit_code == 0, result.output
    expected = [json.loads(line) for line in result.output.splitlines() if line.startswith("{")]
    assert [(i["text"], i["ended"]) for i in items] == [(i["text"], i["ended"]) for i in expected]
    assert max(len(i["text"]) for i in items) > LINE_LENGTH
    assert all(len(i["text"]) <= DOCUMENT_LENGTH for i in items)


def test_a_byte_run_streams_whole_characters_as_chargen_sample_makes_them(
    lamp_text: str, tmp_path: Path
) -> None:
    """A byte vocabulary goes pick by pick through its decoder (a character may take several
    picks); its text is the same alone, streamed beside other requests, and from `chargen sample`."""
    from chargen.config import TextConfig, TrainConfig
    from chargen.training import train
    from tests.conftest import TINY_MODEL, corpus_from_text

    text = lamp_text[:20_000].replace("the", "thé")  # two-byte characters for the model to learn
    corpus = corpus_from_text(tmp_path, text, "bytes", TextConfig(tokenizer="bytes"))
    steps = TrainConfig(batch_size=8, bptt=32, max_steps=30, eval_every=30, log_every=10, seed=0)
    run = train(corpus, TINY_MODEL, steps, out=tmp_path / "bytes-run").run_dir
    served = Served(run)
    try:
        body = {"prefix": "thé ", "length": 120, "seed": 3, "temperature": 0.9}
        alone = generate(served.url, body).json()["texts"][0]
        with ThreadPoolExecutor(4) as pool:
            others = [pool.submit(generate, served.url, {"length": 300, "seed": i, "n": 2}) for i in range(3)]
            text_streamed, pieces, final = pool.submit(
                streamed, served.url, {**body, "alternatives": True}
            ).result()
            assert all(f.result().status_code == 200 for f in others)
        assert text_streamed == alone and final["texts"][0] == alone
        for piece in pieces:
            assert len(piece["probs"]) == len(piece["text"]) == len(piece["top"])
        result = CliRunner().invoke(
            app,
            [
                "sample",
                "--model",
                str(run),
                "--prefix",
                "thé ",
                "--length",
                "120",
                "--seed",
                "3",
                "--temperature",
                "0.9",
            ],
        )
        assert result.exit_code == 0, result.output
        assert alone in result.output
    finally:
        served.stop()


def test_a_byte_run_counts_and_names_bytes_as_chargen_sample_and_score_do(tmp_path: Path) -> None:
    """In a byte run `length` is bytes, as `chargen sample --length` counts them, and so is every
    answer's `chars`, as `chargen score` counts them (with `stop` too); a byte that is only part of
    a character is named by its value, <0xC4>, not the U+FFFD it decodes to alone."""
    import re

    from chargen.config import ModelConfig, TextConfig, TrainConfig
    from chargen.training import train
    from tests.conftest import corpus_from_text

    line = "Ağaç dalları çiçekli. São João é lá.\n"
    corpus = corpus_from_text(tmp_path, line * 300, "tr", TextConfig(tokenizer="bytes"))
    model = ModelConfig(hidden=64, embed=16, layers=1, dropout=0.0)  # learns the line in a second
    steps = TrainConfig(batch_size=16, bptt=48, max_steps=300, eval_every=300, log_every=10, lr=0.01, seed=0)
    run = train(corpus, model, steps, out=tmp_path / "tr-run").run_dir
    served = Served(run)
    try:
        sampled = generate(served.url, {"prefix": "Ağaç ", "length": 60, "seed": 2, "n": 2}).json()
        assert any(len(text.encode()) > len(text) for text in sampled["texts"]), sampled  # several bytes
        assert sampled["chars"] == 2 * 60, sampled
        greedy = {"prefix": "Ağaç ", "length": 60, "temperature": 0}
        stopped = generate(served.url, {**greedy, "stop": "."}).json()
        assert stopped["texts"] == ["dalları çiçekli"] and stopped["chars"] == len("dalları çiçekli".encode())
        text, pieces, final = streamed(served.url, {**greedy, "alternatives": True})
        result = CliRunner().invoke(
            app,
            ["sample", "--model", str(run), "--prefix", "Ağaç ", "--length", "60", "--temperature", "0"],
        )
        assert result.exit_code == 0, result.output
        assert result.output == "Ağaç " + text + "\n" and len(text.encode()) == final["chars"] == 60
        named = {label for piece in pieces for top in piece["top"] for label, _ in top}
        byte = re.compile(r"[\x00-\x7f]|<0x[89A-F][0-9A-F]>")  # an ASCII byte's character, or the value
        assert named and all(byte.fullmatch(label) for label in named), named

        scored_text = "Ağaç dalları.\n"
        scored = httpx.post(served.url + "/v1/score", json={"text": scored_text}).json()
        encoded = scored_text.encode()
        assert [label for label, _ in scored["symbols"]] == [
            chr(b) if b < 0x80 else f"<0x{b:02X}>" for b in encoded[1:]
        ]
        (tmp_path / "t.txt").write_text(scored_text, encoding="utf-8")
        result = CliRunner().invoke(app, ["score", "--model", str(run), str(tmp_path / "t.txt"), "--json"])
        assert result.exit_code == 0, result.output
        lines = [json.loads(line) for line in result.output.splitlines() if line.startswith("{")]
        assert [u["chars"] for u in scored["lines"]] == [u["chars"] for u in lines] == [len(encoded) - 1]
        assert scored["chars"] == len(scored["symbols"]) == len(encoded) - 1
    finally:
        served.stop()
