"""Logging: one structured line per request (``RequestLog``), the app log setup, URL redaction.

``RequestLog.write`` is on the hot path: no ``logging`` record or formatter per request, one
``orjson.dumps`` (or one f-string) and one ``write`` on the stream. Prompts and answers are dropped
unless the log was built with ``include_prompts=True``.

Record fields (the handlers fill them; all optional): ``ts`` (epoch seconds; else the injected
clock), request_id, credential, route, model, backend, status, outcome, fallback_path (list of
"backend:model"), total_ms, load_ms, prompt_eval_ms, eval_ms, upstream_ms, prompt_tokens,
completion_tokens, tokens_per_s, stream, method, path, and ``prompt``/``answer``. Other keys
(e.g. ttft_ms, backend_model) are written as given in JSON.
"""

from __future__ import annotations


import asyncio
import io
import logging
import re
import sys
import time
from collections.abc import Callable, Mapping
from datetime import datetime, timezone
from enum import Enum
from typing import IO, Literal
from urllib.parse import unquote_plus, urlsplit, urlunsplit

import orjson

__all__ = ["LogFormat", "RequestLog", "configure_logging", "redact_url"]

LogFormat = Literal["json", "text"]
_PRIVATE = frozenset({"prompt", "answer"})
_SECRET_PARAM = re.compile(r"key|token|secret|passw|pwd|auth|sig|credential|session", re.IGNORECASE)
_USERINFO = re.compile(r"(?<=//)[^/@?#]*@")
_REDACTED = "REDACTED"


def _iso(ts: float) -> str:
    """Epoch seconds -> ``2025-01-02T03:04:05.678Z``."""
    return datetime.fromtimestamp(ts, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _default(value: object) -> object:
    """orjson fallback for values it does not know (Enum subclasses of str are handled natively)."""
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    return str(value)


_FLUSH_EVERY = 0.05  # seconds


class RequestLog:
    """Writes one line per finished request to ``stream`` as JSON (orjson) or aligned text."""

    def __init__(self, stream: IO[str] | IO[bytes], *, fmt: LogFormat, include_prompts: bool = False,
                 flush: bool = True, clock: Callable[[], float] = time.time,
                 loop: asyncio.AbstractEventLoop | None = None) -> None:
        if fmt not in ("json", "text"):
            raise ValueError(f"log format must be 'json' or 'text', got {fmt!r}")
        self._stream = stream
        self._binary = not isinstance(stream, io.TextIOBase)
        self._fmt = fmt
        self._include_prompts = include_prompts
        self._flush = flush
        # With a loop, flushes are coalesced: a line is flushed at once when the last flush is older
        # than _FLUSH_EVERY (light load: lines appear immediately), else one flush is scheduled for
        # then (heavy load: at most 1/_FLUSH_EVERY write syscalls a second, not one per request).
        self._loop = loop
        self._scheduled_flush: asyncio.TimerHandle | None = None  # the scheduled flush, if any
        self._last_flush = 0.0
        self._clock = clock
        self._second, self._prefix = -1, ""  # formatted-second cache: one strftime per second

    def write(self, record: Mapping[str, object]) -> None:
        """Write ``record`` as one line; ``prompt``/``answer`` are dropped unless prompts are enabled."""
        ts = record.get("ts")
        stamp = self._stamp(ts if isinstance(ts, (int, float)) and not isinstance(ts, bool) else self._clock())
        if not self._include_prompts and not _PRIVATE.isdisjoint(record):
            record = {k: v for k, v in record.items() if k not in _PRIVATE}
        if self._fmt == "json":
            if "ts" in record:
                record = {k: v for k, v in record.items() if k != "ts"}
            body = orjson.dumps(record, default=_default, option=orjson.OPT_APPEND_NEWLINE)
            # Splice "ts" in front rather than copying the record into a new dict.
            self._emit(b'{"ts":"' + stamp.encode() + (b'",' if len(body) > 3 else b'"') + body[1:])
        else:
            self._emit(_text_line(stamp, record).encode())
        if self._loop is not None:
            if self._scheduled_flush is None:
                if self._loop.time() - self._last_flush >= _FLUSH_EVERY:
                    self.flush()
                else:
                    self._scheduled_flush = self._loop.call_at(self._last_flush + _FLUSH_EVERY, self.flush)
        elif self._flush:
            self._stream.flush()

    def flush(self) -> None:
        """Push buffered lines out (a scheduled flush is then not needed: a stream closed after this
        call is never flushed by a timer)."""
        if self._scheduled_flush is not None:
            self._scheduled_flush.cancel()
            self._scheduled_flush = None
        if self._loop is not None:
            self._last_flush = self._loop.time()
        self._stream.flush()

    def _stamp(self, ts: float) -> str:
        """ISO-8601 UTC with milliseconds, reusing the formatted second."""
        second = int(ts)
        if second != self._second:
            self._second = second
            self._prefix = datetime.fromtimestamp(second, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")
        return f"{self._prefix}.{int((ts - second) * 1000):03d}Z"

    def _emit(self, data: bytes) -> None:
        if self._binary:
            self._stream.write(data)  # type: ignore[arg-type]
        else:
            self._stream.write(data.decode())  # type: ignore[arg-type]


_TEXT_NUMBERS = (  # (record key, label, unit, decimals), in display order
    ("total_ms", "total", "ms", 0), ("upstream_ms", "upstream", "ms", 0), ("ttft_ms", "ttft", "ms", 0),
    ("load_ms", "load", "ms", 0), ("prompt_eval_ms", "prompt_eval", "ms", 0), ("eval_ms", "eval", "ms", 0),
    ("tokens_per_s", "", "tok/s", 1),
)


def _text_line(stamp: str, r: Mapping[str, object]) -> str:
    """A readable line with fixed columns first, then the optional fields that are present.

    ``2025-01-02T03:04:05.678Z  4f2a9c1e  200 ok          default/llama3@ollama  total=812ms ...``
    """
    def field(key: str) -> str:
        value = r.get(key)
        return "-" if value is None or value == "" else str(value.value if isinstance(value, Enum) else value)

    target = f"{field('route')}/{field('model')}@{field('backend')}"
    parts = [stamp, f"{field('request_id'):<12}", f"{field('status'):>3} {field('outcome'):<14}", f"{target:<36}"]
    parts += [f"{r.get('method') or ''} {r.get('path') or ''}".strip() or "-"]
    for key, label, unit, digits in _TEXT_NUMBERS:
        value = r.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            parts.append(f"{label}{'=' if label else ''}{value:.{digits}f}{unit}")
    if "prompt_tokens" in r or "completion_tokens" in r:
        parts.append(f"tokens={r.get('prompt_tokens', 0)}+{r.get('completion_tokens', 0)}")
    if r.get("stream"):
        parts.append("stream")
    if r.get("credential"):
        parts.append(f"cred={r['credential']}")
    path = r.get("fallback_path")
    if isinstance(path, (list, tuple)) and len(path) > 1:
        parts.append("via=" + ">".join(map(str, path)))
    for key in ("prompt", "answer"):
        if key in r:  # only present when prompts are enabled; JSON quoting keeps it on one line
            parts.append(f"{key}={orjson.dumps(r[key], default=_default).decode()}")
    return "  ".join(parts) + "\n"


class _JsonFormatter(logging.Formatter):
    """App log records as one orjson object per line."""

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, object] = {
            "ts": _iso(record.created), "level": record.levelname, "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.exc_info:
            data["exc"] = self.formatException(record.exc_info)
        if record.stack_info:
            data["stack"] = self.formatStack(record.stack_info)
        return orjson.dumps(data, default=_default).decode()


class _TextFormatter(logging.Formatter):
    """``2025-01-02T03:04:05.678Z INFO  proxy.app: message``."""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802
        return _iso(record.created)


def configure_logging(level: str | int, fmt: LogFormat, *, stream: IO[str] | None = None) -> logging.Handler:
    """Send the root logger to ``stream`` (stderr) as JSON or text; replaces a handler set here before."""
    if fmt not in ("json", "text"):
        raise ValueError(f"log format must be 'json' or 'text', got {fmt!r}")
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.set_name("proxy.telemetry.logs")
    handler.setFormatter(_JsonFormatter() if fmt == "json"
                         else _TextFormatter("%(asctime)s %(levelname)-5s %(name)s: %(message)s"))
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == "proxy.telemetry.logs"]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper() if isinstance(level, str) else level)
    return handler


def redact_url(url: str) -> str:
    """Drop ``user:pass@`` and blank out secret-looking query values (``?api_key=...``) for log lines."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return _USERINFO.sub("", url.split("?", 1)[0])
    netloc = parts.netloc.rpartition("@")[2]
    return urlunsplit((parts.scheme, netloc, parts.path, _redact_pairs(parts.query), _redact_pairs(parts.fragment)))


def _redact_pairs(text: str) -> str:
    """``a=1&api_key=s`` -> ``a=1&api_key=REDACTED`` (fragments too: OAuth puts tokens there)."""
    if "=" not in text:
        return text
    out = []
    for pair in text.split("&"):
        name, sep, _ = pair.partition("=")
        out.append(f"{name}={_REDACTED}" if sep and _SECRET_PARAM.search(unquote_plus(name)) else pair)
    return "&".join(out)
