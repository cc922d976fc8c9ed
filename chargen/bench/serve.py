"""Serve benchmark: how `chargen serve` scales with clients. The server runs in its own process, as
a user starts it; the clients stream from it over HTTP. It prints the total characters per second
of N clients at once against one alone (the batched loop should make it >= 8 times), and the
median time to the first streamed character for one client, in ms (< 50 ms).

    python -m chargen.bench serve --model runs/tinyshakespeare --clients 32 --chars 2000

Without --model it serves a freshly initialised 2x256 LSTM saved as a run after one training step:
its text is noise, but a step costs what a trained model's does, which is all a speed figure needs.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from chargen.bench import parser as bench_parser
from chargen.bench.machine import describe


def _fresh_run(folder: Path) -> Path:
    """A 2x256 LSTM run on the built-in corpus, one step from its initialisation."""
    from chargen.config import ModelConfig, TrainConfig
    from chargen.corpus import load_corpus
    from chargen.training import train

    config = TrainConfig(batch_size=8, bptt=32, max_steps=1, eval_every=1, eval_chars=2_000, seed=0)
    summary = train(load_corpus(None), ModelConfig(layers=2, hidden=256), config, out=folder / "serve-bench")
    return summary.run_dir


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def _stream(client, url: str, length: int, seed: int) -> tuple[int, float, float]:
    """Characters received, seconds to the first and to the end of one streamed generation."""
    began, first, chars = time.perf_counter(), None, 0
    body = {"prefix": "The ", "length": length, "seed": seed, "stream": True}
    async with client.stream("POST", url + "/v1/generate", json=body, timeout=600) as response:
        response.raise_for_status()
        async for line in response.aiter_lines():
            if line.startswith("data: ") and '"text"' in line:
                chars += len(json.loads(line[6:])["text"])
                if first is None:
                    first = time.perf_counter() - began
    return chars, first or 0.0, time.perf_counter() - began


async def _measure(url: str, clients: int, length: int, firsts: int) -> dict[str, float]:
    import httpx

    limits = httpx.Limits(max_connections=clients + 4, max_keepalive_connections=clients + 4)
    async with httpx.AsyncClient(limits=limits) as client:
        await _stream(client, url, 200, 0)  # warm: the first request pays for kernels and caches
        latencies = [(await _stream(client, url, 20, i))[1] for i in range(firsts)]
        chars, _, seconds = await _stream(client, url, length, 1)
        alone = chars / seconds
        began = time.perf_counter()
        results = await asyncio.gather(*(_stream(client, url, length, 100 + i) for i in range(clients)))
        together = sum(r[0] for r in results) / (time.perf_counter() - began)
    return {"first_ms": 1000 * statistics.median(latencies), "alone": alone, "together": together}


def main(argv: list[str]) -> None:
    parser = bench_parser("serve", __doc__)
    parser.add_argument(
        "--model",
        metavar="RUN_DIR",
        type=Path,
        help="the run to serve (default: a fresh 2x256 LSTM; its text is noise, its speed a trained one's)",
    )
    parser.add_argument(
        "--clients",
        metavar="N",
        type=int,
        default=32,
        help="clients streaming at once (default: %(default)s)",
    )
    parser.add_argument(
        "--chars",
        metavar="N",
        type=int,
        default=2_000,
        help="characters each client asks for (default: %(default)s)",
    )
    parser.add_argument(
        "--firsts",
        metavar="N",
        type=int,
        default=20,
        help="requests of one client timed to their first character; the median is shown (default: "
        "%(default)s)",
    )
    args = parser.parse_args(argv)
    print(describe())
    with tempfile.TemporaryDirectory(prefix="chargen-serve-bench-") as tmp:
        run = args.model or _fresh_run(Path(tmp))
        port = _free_port()
        url = f"http://127.0.0.1:{port}"
        command = [sys.executable, "-m", "chargen", "serve", "--model", str(run), "--port", str(port)]
        command += ["--max-queue", str(args.clients + 8), "--max-length", str(max(args.chars, 10_000))]
        server = subprocess.Popen(command, stderr=subprocess.DEVNULL, env=os.environ.copy())
        try:
            _wait_for(url, server)
            figures = asyncio.run(_measure(url, args.clients, args.chars, args.firsts))
        finally:
            server.send_signal(signal.SIGINT)
            server.wait(30)
    ratio = figures["together"] / figures["alone"]
    print(f"served: {run}")
    print(f"one client alone:        {figures['alone']:9,.0f} characters/s ({args.chars:,} characters)")
    print(f"{args.clients} clients at once:      {figures['together']:9,.0f} characters/s in all")
    print(f"ratio:                   {ratio:9.1f}x (target >= 8x)")
    print(f"first character, median: {figures['first_ms']:9.1f} ms for one client (target < 50 ms)")


def _wait_for(url: str, server: subprocess.Popen) -> None:
    import httpx

    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit("error: the server exited before it was ready")
        try:
            if httpx.get(url + "/healthz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.2)
    raise SystemExit("error: the server did not start in 300 s")
