"""The HTTP side of `chargen serve`: a Starlette app over the generation loop (engine.py), and
uvicorn to run it. Knows nothing about torch.

Starlette, not FastAPI: five routes need no pydantic, dependency injection or generated schema, and
Starlette is a small pure-Python package (with anyio) that FastAPI itself is built on. Bodies are
checked by requests.py, field by field, so an error names the field as the JSON does.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import errno
import hmac
import json
import re
import socket
from collections.abc import AsyncIterator, Callable
from importlib import resources
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response, StreamingResponse
from starlette.routing import Route

from chargen.errors import NAMED_SETTING, ChargenError, ConfigError, ServerBusy
from chargen.serve.engine import Engine, Job
from chargen.serve.requests import Limits, generate_defaults, parse_generate, parse_json, parse_score

RETRY_AFTER = "1"  # seconds a client told the server is full should wait


class Refused(Exception):
    """A request answered with an HTTP error and a JSON body naming the problem."""

    def __init__(self, status: int, message: str, field: str | None = None, headers: dict | None = None):
        super().__init__(message)
        self.status, self.field, self.headers = status, field, headers or {}


def _json(data: Any, status: int = 200, headers: dict | None = None) -> Response:
    body = json.dumps(data, ensure_ascii=False, allow_nan=False, default=str)
    return Response(body, status, headers, media_type="application/json")


def _error(status: int, message: str, field: str | None = None, headers: dict | None = None) -> Response:
    return _json({"error": message, **({"field": field} if field else {})}, status, headers)


def playground() -> str:
    return resources.files("chargen.serve").joinpath("playground.html").read_text(encoding="utf-8")


def create_app(engine: Engine, description: dict[str, Any], token: str | None, limits: Limits) -> Starlette:
    """The app: the playground at /, /healthz, and the API under /v1 (which needs `token` if given)."""
    page = playground()

    def authorise(request: Request) -> None:
        if token is None:
            return
        given = request.headers.get("authorization", "")
        scheme, _, value = given.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(value.strip().encode(), token.encode()):
            raise Refused(
                401,
                "send the server's token as 'Authorization: Bearer TOKEN'",
                None,
                {"WWW-Authenticate": "Bearer"},
            )

    async def body(request: Request) -> dict[str, Any]:
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limits.max_body:
            raise Refused(413, f"the body is over the server's `max_body`, {limits.max_body:,} bytes")
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limits.max_body:
                raise Refused(413, f"the body is over the server's `max_body`, {limits.max_body:,} bytes")
            chunks.append(chunk)
        return parse_json(b"".join(chunks))

    def answering(handler: Callable[[Request], Any]) -> Callable[[Request], Any]:
        """Turn refusals and the library's errors into 4xx/503 answers with a JSON body."""

        async def endpoint(request: Request) -> Response:
            try:
                if request.url.path.startswith("/v1/"):
                    authorise(request)
                return await handler(request)
            except Refused as err:
                return _error(err.status, str(err), err.field, err.headers)
            except ServerBusy as err:
                return _error(503, str(err), None, {"Retry-After": RETRY_AFTER})
            except ConfigError as err:
                return _error(422 if err.field else 400, _in_json(str(err)), err.field)
            except ChargenError as err:  # a prefix with characters the model never saw, say
                return _error(422, _in_json(str(err)), _field_named(str(err)))

        return endpoint

    async def home(request: Request) -> Response:
        return HTMLResponse(page, headers={"Cache-Control": "no-store"})

    async def health(request: Request) -> Response:
        return _json(
            {
                "status": "ok",
                "queue": engine.waiting,
                "steps": engine.steps,
                "alive": engine.thread.is_alive(),
            }
        )

    # The run's description, what one request may ask of this server (the playground's sliders stop
    # there), and what a request gets for a field it leaves out (the playground's controls start there).
    described = {
        **description,
        "limits": {"max_length": limits.max_length, "max_n": limits.max_n, "max_items": limits.max_items},
        "defaults": generate_defaults(limits, engine.text_config.items),
    }

    async def model(request: Request) -> Response:
        return _json(described)

    async def generate(request: Request) -> Response:
        parsed = parse_generate(await body(request), limits, engine.text_config.items)
        events = Events()
        job = events.job = engine.submit(parsed, events)
        if not parsed.stream:
            answer = asyncio.ensure_future(events.get())
            gone = asyncio.ensure_future(_disconnected(request))
            try:
                await asyncio.wait({answer, gone}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                job.cancelled = True  # the answer is in, or the client went away: either way it is over
                gone.cancel()
                answer.cancel()
            if not answer.done() or answer.cancelled():
                return Response(status_code=499)  # nobody reads it: the client has gone
            name, data = answer.result()
            return (
                _json(data)
                if name == "done"
                else _error(503, data["error"], None, {"Retry-After": RETRY_AFTER})
            )

        async def stream() -> AsyncIterator[str]:
            try:
                while True:
                    name, data = await events.get()
                    yield f"event: {name}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n"
                    if name in ("done", "error"):
                        return
            finally:
                job.cancelled = True  # a client gone mid-stream frees its rows at the next step

        headers = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}
        return StreamingResponse(stream(), media_type="text/event-stream", headers=headers)

    async def score(request: Request) -> Response:
        parsed = parse_score(await body(request))
        events = Events()
        engine.submit_score(parsed, events)
        name, data = await events.get()
        if name == "error":  # said by the library, in its terms: the advice names the JSON field
            return _error(422, _in_json(data["error"]), data.get("field") or "text")
        return _json(data)

    async def not_found(request: Request, exc: Exception) -> Response:
        status = exc.status_code if isinstance(exc, HTTPException) else 500
        detail = exc.detail if isinstance(exc, HTTPException) else "internal error"
        return _error(status, f"{detail}: {request.method} {request.url.path}")

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        engine.start()
        yield
        engine.close()

    routes = [
        Route("/", answering(home), methods=["GET"]),
        Route("/healthz", answering(health), methods=["GET"]),
        Route("/v1/model", answering(model), methods=["GET"]),
        Route("/v1/generate", answering(generate), methods=["POST"]),
        Route("/v1/score", answering(score), methods=["POST"]),
    ]
    return Starlette(routes=routes, lifespan=lifespan, exception_handlers={HTTPException: not_found})


class Events:
    """One request's events: the engine's thread puts them in (calling it as its sink), the event
    loop takes them out. A stream whose client falls MAX_BEHIND characters behind (reading nothing,
    say) is dropped, its job cancelled, so that no client can make the server hold text without
    bound: with the alternatives a waiting character takes about half a kilobyte."""

    MAX_BEHIND = 20_000  # characters told and not yet taken; a reading client keeps a few hundred

    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.queue: asyncio.Queue[tuple[str, dict[str, Any]]] = asyncio.Queue()
        self.job: Job | None = None  # a generate request's, to cancel
        self.told = 0  # characters put in, counted by the engine's thread only...
        self.taken = 0  # ...and taken out, by the event loop's only

    def __call__(self, name: str, data: dict[str, Any]) -> None:
        if self.job is not None and self.job.cancelled:
            return
        if self.job is not None and self.told - self.taken > self.MAX_BEHIND:
            self.job.cancelled = True  # it leaves at the next step; the stream ends with this
            name, data = "error", {"error": f"the client fell over {self.MAX_BEHIND:,} characters behind"}
        self.told += len(data.get("text", "")) if name == "piece" else 0
        self.loop.call_soon_threadsafe(self.queue.put_nowait, (name, data))

    async def get(self) -> tuple[str, dict[str, Any]]:
        name, data = await self.queue.get()
        self.taken += len(data.get("text", "")) if name == "piece" else 0
        return name, data


async def _disconnected(request: Request) -> None:
    """Returns when the client has gone (after the body, all the server receives is that)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


def _in_json(message: str) -> str:
    """The library's message as the API says it: a setting it names with a string value in Python's
    terms (`unknown='replace'`) as the request's JSON field (`"unknown": "replace"`)."""

    def field(match: re.Match[str]) -> str:
        value = match[2] or ""
        quoted = len(value) >= 2 and value[0] == value[-1] == "'" and "'" not in value[1:-1]
        return f'`"{match[1]}": "{value[1:-1]}"`' if quoted else match[0]

    return NAMED_SETTING.sub(field, message)


def _field_named(message: str) -> str | None:
    """The first field a library message names in backquotes (`prefix`), if any."""
    start = message.find("`")
    end = message.find("`", start + 1)
    return message[start + 1 : end].split("=")[0].split(" ")[0] if 0 <= start < end else None


def log_config() -> dict[str, Any]:
    """uvicorn's logging, every line to stderr (stdout is for results, here as everywhere)."""
    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    for handler in config["handlers"].values():
        handler["stream"] = "ext://sys.stderr"
    return config


def run_server(
    run_dir: str,
    host: str = "127.0.0.1",
    port: int = 8000,
    token: str | None = None,
    insecure_no_token: bool = False,
    limits: Limits | None = None,
    started: Callable[[str], None] | None = None,
) -> None:
    """Serve a run until Ctrl-C or SIGTERM: the run loaded once, its model in one generation loop.
    On stopping, streams still running end with an error event."""
    import torch
    import uvicorn

    from chargen.checkpoint import describe, load_model_weights, load_run
    from chargen.device import resolve_precision
    from chargen.serve.requests import check_binding

    check_binding(host, token, insecure_no_token)
    sock = listen(host, port)  # before the model loads: a port in use is told at once
    port = sock.getsockname()[1]  # the one the system chose, for port 0
    limits = limits or Limits()
    run = load_run(run_dir)
    cpu = torch.device("cpu")  # the loop's tensors live on the CPU (docs/serve.md)
    autocast = resolve_precision(run.train_config.precision, cpu, recorded=True)
    engine = Engine(load_model_weights(run, cpu), run.vocab, run.text_config, limits, autocast)
    app = create_app(engine, describe(run).to_dict(), token, limits)

    class Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame: Any) -> None:
            engine.close(wait=0)  # streams end with an error event, so the graceful shutdown is quick
            super().handle_exit(sig, frame)

    config = uvicorn.Config(app, host=host, port=port, log_config=log_config(), timeout_graceful_shutdown=5)
    server = Server(config)
    if started is not None:
        started(f"http://{f'[{host}]' if ':' in host else host}:{port}/")
    server.run(sockets=[sock])


def listen(host: str, port: int) -> socket.socket:
    """A socket bound to `host` and `port` (0: any free port), for uvicorn to serve on; ConfigError
    naming `port` or `host` where it cannot be had."""
    if not 0 <= port <= 65535:
        raise ConfigError(f"`port` must be in 0-65535 (0: any free one), not {port}", "port")
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except (socket.gaierror, UnicodeError) as error:
        raise ConfigError(f"`host` {host!r} is not an address of this machine ({error})", "host") from None
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does: a restart need not wait
    try:
        sock.bind(address)
    except OSError as error:
        sock.close()
        if error.errno == errno.EADDRINUSE:
            why = "is in use (another server?): stop it, or give another `port`"
        elif error.errno == errno.EACCES:
            why = "needs privileges this user lacks (below 1024, say): give another `port`"
        else:
            why = f"cannot be listened on ({error.strerror}): check `host`"
        raise ConfigError(f"{host} port {port} {why}", "port" if "`port`" in why else "host") from None
    sock.set_inheritable(True)
    return sock
