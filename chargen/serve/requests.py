"""What `chargen serve` accepts: its limits, the address it may bind, and the JSON bodies of its
requests checked field by field into typed requests. No torch and no web framework here, so the
CLI can refuse a bad address before anything heavy is imported.

Every refusal is a ConfigError naming the field in backquotes (`length`), as the JSON names it.
"""

from __future__ import annotations

import ipaddress
import json
import math
from dataclasses import dataclass, fields
from typing import Any

from chargen.config import (
    ITEM_COUNT,
    UNKNOWN_POLICIES,
    SampleConfig,
    default_max_length,
    require_characters,
    require_run_kind,
)
from chargen.errors import ConfigError


@dataclass(frozen=True)
class Limits:
    """What one request may ask for, and how many may be in the server at once."""

    max_body: int = 256 * 1024  # bytes of a request body, >= 1
    max_length: int = 10_000  # symbols one sample may ask for (`length`; bytes in a byte run), >= 1
    max_n: int = 16  # samples one request may ask for (`n`), >= 1
    max_items: int = 256  # items one request may ask for (`items`, a list's run), >= 1
    max_queue: int = 64  # requests generating or waiting at once; more get 503, >= 1

    def __post_init__(self) -> None:
        for field in fields(self):
            value = getattr(self, field.name)
            if value < 1:
                raise ConfigError(f"`{field.name}` must be at least 1, not {value}", field.name)


LOOPBACK_NAMES = ("localhost",)


def is_loopback(host: str) -> bool:
    """Whether `host` only accepts connections from this machine: 127.0.0.0/8, ::1 or localhost."""
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything


def check_binding(host: str, token: str | None, insecure_no_token: bool) -> None:
    """Refuse to listen beyond this machine without a token, unless told to in as many words."""
    if token is not None and not token.strip():
        raise ConfigError("`token` must not be empty", "token")
    if token is not None and not all("!" <= c <= "~" for c in token):
        # A client sends it in an HTTP header, which carries ASCII (a browser's fetch refuses anything
        # else), and the server strips the spaces around it: any other token could never be matched.
        raise ConfigError(
            "`token` must be printable ASCII without spaces (letters, digits, punctuation): clients "
            "send it in an HTTP header; openssl rand -hex 16 makes one",
            "token",
        )
    if token is not None and insecure_no_token:
        raise ConfigError("`token` and `insecure_no_token` were both given; give one of them", "token")
    if not is_loopback(host) and token is None and not insecure_no_token:
        raise ConfigError(
            f"binding `host={host!r}` lets other machines use the model: give `token` (clients then send "
            "'Authorization: Bearer TOKEN'), or `insecure_no_token` to serve it to anyone",
            "host",
        )


@dataclass(frozen=True)
class GenerateRequest:
    """A POST /v1/generate body, checked. `sample` carries the sampling settings as SampleConfig."""

    sample: SampleConfig
    items: int | None  # a list's run: how many items (None for a text run)
    stream: bool
    alternatives: bool = False  # a stream's pieces carry the five likeliest symbols per character


@dataclass(frozen=True)
class ScoreRequest:
    text: str  # what to score, as given
    unknown: str  # characters the model never saw: error, replace or skip


# JSON field -> (accepted Python types, what to call them in a message). bool is not an int here.
_INT, _NUMBER, _STRING, _BOOL = (
    ((int,), "an integer"),
    ((int, float), "a number"),
    ((str,), "a string"),
    (
        (bool,),
        "true or false",
    ),
)
GENERATE_FIELDS: dict[str, tuple[tuple[type, ...], str]] = {
    "prefix": _STRING,
    "length": _INT,
    "temperature": _NUMBER,
    "top_k": _INT,
    "top_p": _NUMBER,
    "seed": _INT,
    "n": _INT,
    "stop": _STRING,
    "items": _INT,
    "max_length": _INT,
    "unknown": _STRING,
    "stream": _BOOL,
    "alternatives": _BOOL,
}
SCORE_FIELDS: dict[str, tuple[tuple[type, ...], str]] = {"text": _STRING, "unknown": _STRING}
TEXT_ONLY = ("length", "n", "stop", "alternatives")  # fields that make no sense for a list's run
LIST_ONLY = ("items", "max_length")  # and the other way round


def parse_json(body: bytes) -> dict[str, Any]:
    """The body as a JSON object; ConfigError for anything else."""
    try:
        data = json.loads(body.decode("utf-8")) if body.strip() else None
    except UnicodeDecodeError:
        raise ConfigError("the body is not UTF-8; send JSON") from None
    except json.JSONDecodeError as err:
        raise ConfigError(f"the body is not valid JSON ({err.msg} at character {err.pos})") from None
    except (RecursionError, ValueError) as err:  # nested too deep; an integer of over 4,300 digits
        raise ConfigError(f"the body is JSON Python will not read ({err})") from None
    if not isinstance(data, dict):
        raise ConfigError('the body must be a JSON object, such as {"prefix": "The "}')
    return data


def _checked(data: dict[str, Any], known: dict[str, tuple[tuple[type, ...], str]]) -> dict[str, Any]:
    """`data` with every field known and of its type (null counts as leaving it out)."""
    for name, value in data.items():
        if name not in known:
            raise ConfigError(f"unknown field `{name}`; the fields are {', '.join(known)}", name)
        types, what = known[name]
        wrong = isinstance(value, bool) and bool not in types
        if value is not None and (wrong or not isinstance(value, types)):
            raise ConfigError(f"`{name}` must be {what}, not {json.dumps(value)[:40]}", name)
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"`{name}` must be a finite number", name)
        if isinstance(value, str):
            require_characters(value, name)  # JSON's \ud83d escape alone
    return {name: value for name, value in data.items() if value is not None}


def _at_most(data: dict[str, Any], name: str, limit: int, option: str) -> None:
    if name in data and data[name] > limit:
        raise ConfigError(
            f"`{name}` must be at most {limit:,} (the server's {option}), not {data[name]}", name
        )


def parse_generate(data: dict[str, Any], limits: Limits, list_mode: str | None) -> GenerateRequest:
    """A generate body, checked against the limits. `list_mode`: how the run's list was read (its
    TextConfig.items: lines, files, ...), None for a run trained on a text. A list's items are cut
    where `chargen sample` cuts them unless `max_length` says otherwise, and a text's samples are as
    long as `chargen sample` makes them unless `length` says otherwise, but neither past the
    server's `max_length`."""
    listed = list_mode is not None
    data = _checked(data, GENERATE_FIELDS)
    require_run_kind(data, listed, LIST_ONLY, TEXT_ONLY)
    _at_most(data, "length", limits.max_length, "max_length")
    _at_most(data, "max_length", limits.max_length, "max_length")
    _at_most(data, "n", limits.max_n, "max_n")
    _at_most(data, "items", limits.max_items, "max_items")
    if data.get("n", 1) < 1:
        raise ConfigError(f"`n` must be at least 1, not {data['n']}", "n")
    if data.get("items", 1) < 1:
        raise ConfigError(f"`items` must be at least 1, not {data['items']}", "items")
    if "seed" in data and not 0 <= data["seed"] < 2**63:
        raise ConfigError(f"`seed` must be in [0, 2**63), not {data['seed']}", "seed")
    if data.get("alternatives") and not data.get("stream"):
        raise ConfigError(
            "`alternatives` come with a streamed answer: send `stream: true` too", "alternatives"
        )
    settings = {k: v for k, v in data.items() if k not in ("n", "items", "stream", "alternatives")}
    if listed and "max_length" not in settings:
        settings["max_length"] = min(default_max_length(list_mode), limits.max_length)
    if not listed and "length" not in settings:
        settings["length"] = min(SampleConfig.length, limits.max_length)
    try:
        sample = SampleConfig(**settings, num_samples=data.get("n", 1))
    except ConfigError as err:
        raise ConfigError(str(err).replace("`num_samples`", "`n`"), err.field) from None
    items = data.get("items", ITEM_COUNT) if listed else None
    return GenerateRequest(sample, items, data.get("stream", False), data.get("alternatives", False))


def generate_defaults(limits: Limits, list_mode: str | None) -> dict[str, Any]:
    """What a generate request that leaves a field out gets from this server, by field as the JSON
    names it, for the fields of its kind of run (`list_mode` as parse_generate takes it); `seed` is
    drawn afresh each time, so it has none. The playground's controls start here, so that each
    default is written once, where the request is parsed."""
    parsed = parse_generate({}, limits, list_mode)
    sample = parsed.sample
    values = {
        "prefix": sample.prefix,
        "length": sample.length,
        "temperature": sample.temperature,
        "top_k": sample.top_k,
        "top_p": sample.top_p,
        "n": sample.num_samples,
        "stop": sample.stop,
        "items": parsed.items,
        "max_length": sample.max_length,
        "unknown": sample.unknown,
        "stream": parsed.stream,
        "alternatives": parsed.alternatives,
    }
    assert set(values) == set(GENERATE_FIELDS) - {"seed"}, "a field without its default here"
    other = TEXT_ONLY if list_mode is not None else LIST_ONLY
    return {name: value for name, value in values.items() if name not in other}


def parse_score(data: dict[str, Any]) -> ScoreRequest:
    data = _checked(data, SCORE_FIELDS)
    if "text" not in data:
        raise ConfigError("`text` is required: the text to score", "text")
    unknown = data.get("unknown", "error")
    if unknown not in UNKNOWN_POLICIES:
        raise ConfigError(f"`unknown` must be error, replace or skip, not {unknown!r}", "unknown")
    return ScoreRequest(data["text"], unknown)
