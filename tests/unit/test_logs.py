"""Request log lines (JSON and text), prompt redaction, app logging setup and URL redaction."""

from __future__ import annotations

import asyncio
import enum
import io
import logging
from collections.abc import Iterator

import orjson
import pytest

from proxy.telemetry.logs import RequestLog, configure_logging, redact_url

NOW = 1_700_000_000.5  # 2023-11-14T22:13:20.500Z
RECORD: dict[str, object] = {
    "request_id": "4f2a9c1e", "credential": "app", "route": "default", "model": "llama3",
    "backend": "ollama", "status": 200, "outcome": "ok", "fallback_path": ["cloud:gpt-4o", "ollama:llama3"],
    "total_ms": 812.4, "load_ms": 2.0, "prompt_eval_ms": 30.0, "eval_ms": 700.0, "upstream_ms": 810.0,
    "prompt_tokens": 12, "completion_tokens": 57, "tokens_per_s": 81.43, "stream": True,
    "method": "POST", "path": "/v1/chat/completions", "prompt": "What is 2+2?", "answer": "4",
}


class _Outcome(enum.Enum):
    TIMEOUT = "timeout"


def _json_lines(buf: io.StringIO | io.BytesIO) -> list[dict[str, object]]:
    raw = buf.getvalue()
    text = raw.decode() if isinstance(raw, bytes) else raw
    assert text.endswith("\n")
    return [orjson.loads(line) for line in text.splitlines()]


def test_json_line_parses_and_carries_every_field() -> None:
    """A JSON record is one line with ts first and every field the handler filled."""
    buf = io.StringIO()
    RequestLog(buf, fmt="json", clock=lambda: NOW).write(RECORD)
    (line,) = _json_lines(buf)
    assert line["ts"] == "2023-11-14T22:13:20.500Z"
    assert next(iter(line)) == "ts"
    expected = {k: v for k, v in RECORD.items() if k not in ("prompt", "answer")}
    assert {k: v for k, v in line.items() if k != "ts"} == expected


def test_prompts_are_dropped_unless_enabled() -> None:
    """prompt/answer never reach the log unless include_prompts=True."""
    off, on = io.StringIO(), io.StringIO()
    RequestLog(off, fmt="json", clock=lambda: NOW).write(RECORD)
    RequestLog(on, fmt="json", include_prompts=True, clock=lambda: NOW).write(RECORD)
    assert "prompt" not in _json_lines(off)[0] and "answer" not in _json_lines(off)[0]
    assert "What is 2+2?" not in off.getvalue()
    assert (_json_lines(on)[0]["prompt"], _json_lines(on)[0]["answer"]) == ("What is 2+2?", "4")


def test_text_line_drops_prompts_unless_enabled() -> None:
    """The text format follows the same rule and keeps an enabled prompt on one line."""
    off, on = io.StringIO(), io.StringIO()
    RequestLog(off, fmt="text", clock=lambda: NOW).write(RECORD)
    RequestLog(on, fmt="text", include_prompts=True, clock=lambda: NOW).write({**RECORD, "prompt": "a\nb"})
    assert "2+2" not in off.getvalue()
    assert 'prompt="a\\nb"' in on.getvalue() and on.getvalue().count("\n") == 1


def test_text_line_is_readable() -> None:
    """Text lines start with time, request id, status and route/model@backend, then the numbers."""
    buf = io.StringIO()
    RequestLog(buf, fmt="text", clock=lambda: NOW).write(RECORD)
    line = buf.getvalue()
    assert line.startswith("2023-11-14T22:13:20.500Z  4f2a9c1e ")
    for part in ("200 ok", "default/llama3@ollama", "POST /v1/chat/completions", "total=812ms",
                 "upstream=810ms", "load=2ms", "eval=700ms", "81.4tok/s", "tokens=12+57", "stream",
                 "via=cloud:gpt-4o>ollama:llama3"):
        assert part in line, part
    assert line.count("\n") == 1


def test_text_columns_align_across_records() -> None:
    """The fixed columns (id, status/outcome, target) line up from one request to the next."""
    buf = io.StringIO()
    log = RequestLog(buf, fmt="text", clock=lambda: NOW)
    log.write(RECORD)
    log.write({"request_id": "x", "status": 401, "outcome": "rejected", "method": "GET", "path": "/v1/models"})
    first, second = buf.getvalue().splitlines()
    assert first.index("POST") == second.index("GET")


def test_text_line_shows_missing_values_as_dash() -> None:
    """None or absent route/model/backend (a request rejected before routing) read as "-"."""
    buf = io.StringIO()
    RequestLog(buf, fmt="text", clock=lambda: NOW).write({"request_id": "r1", "status": 401, "route": None,
                                                          "model": None, "backend": None, "ttft_ms": 41.6})
    line = buf.getvalue()
    assert "-/-@-" in line and "None" not in line and "ttft=42ms" in line


def test_record_time_and_enums_are_used() -> None:
    """A ts in the record wins over the clock; Enum values are written as their value."""
    buf = io.StringIO()
    RequestLog(buf, fmt="json", clock=lambda: 0.0).write({"ts": NOW + 1, "outcome": _Outcome.TIMEOUT})
    assert _json_lines(buf) == [{"ts": "2023-11-14T22:13:21.500Z", "outcome": "timeout"}]


def test_binary_stream_gets_bytes() -> None:
    """A bytes stream (e.g. sys.stdout.buffer) receives encoded lines."""
    buf = io.BytesIO()
    log = RequestLog(buf, fmt="json", clock=lambda: NOW)
    log.write({"status": 200})
    log.write({})
    assert _json_lines(buf) == [{"ts": "2023-11-14T22:13:20.500Z", "status": 200},
                                {"ts": "2023-11-14T22:13:20.500Z"}]


def test_unknown_format_is_rejected() -> None:
    """A typo in the format fails at construction."""
    with pytest.raises(ValueError, match="json"):
        RequestLog(io.StringIO(), fmt="yaml")  # type: ignore[arg-type]


@pytest.fixture
def root_logger() -> Iterator[logging.Logger]:
    """The root logger, restored after the test."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield root
    root.handlers[:] = handlers
    root.setLevel(level)


def test_configure_logging_json(root_logger: logging.Logger) -> None:
    """App log records become JSON lines with level, logger, message and exception text."""
    buf = io.StringIO()
    configure_logging("INFO", "json", stream=buf)
    logging.getLogger("proxy.test").debug("hidden")
    logging.getLogger("proxy.test").info("hello %s", "world")
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        logging.getLogger("proxy.test").exception("failed")
    first, second = (orjson.loads(line) for line in buf.getvalue().splitlines())
    assert (first["level"], first["logger"], first["msg"]) == ("INFO", "proxy.test", "hello world")
    assert second["level"] == "ERROR" and "RuntimeError: boom" in second["exc"]


def test_configure_logging_text_replaces_its_own_handler(root_logger: logging.Logger) -> None:
    """Calling configure_logging twice leaves one handler of ours, in the latest format."""
    before = len(root_logger.handlers)
    configure_logging("debug", "json", stream=io.StringIO())
    buf = io.StringIO()
    configure_logging("debug", "text", stream=buf)
    assert len(root_logger.handlers) == before + 1
    logging.getLogger("proxy.test").debug("plain")
    assert buf.getvalue().rstrip().endswith("DEBUG proxy.test: plain")


@pytest.mark.parametrize(("url", "expected"), [
    ("http://user:pass@ollama:11434/api/chat", "http://ollama:11434/api/chat"),
    ("https://u%40x:p%3Aw@[::1]:8443/v1", "https://[::1]:8443/v1"),
    ("https://api.example.com/v1?api_key=s3cret&model=x", "https://api.example.com/v1?api_key=REDACTED&model=x"),
    ("https://h/p?Token=a&X-Amz-Signature=b&page=2", "https://h/p?Token=REDACTED&X-Amz-Signature=REDACTED&page=2"),
    ("https://h/cb#access_token=abc&state=1", "https://h/cb#access_token=REDACTED&state=1"),
    ("http://ollama:11434", "http://ollama:11434"),
])
def test_redact_url_strips_userinfo_and_secret_parameters(url: str, expected: str) -> None:
    """Credentials in userinfo and secret-looking query parameters never reach a log line."""
    assert redact_url(url) == expected


def test_redact_url_survives_unparseable_input() -> None:
    """A malformed URL still loses its userinfo and query instead of raising."""
    assert redact_url("http://user:pw@[broken/x?key=1") == "http://[broken/x"


async def test_no_scheduled_flush_after_the_last_flush() -> None:
    # lines close together schedule one coalesced flush; the final flush (at shutdown, before the
    # file is closed) cancels it, so no timer flushes a closed file afterwards
    loop = asyncio.get_running_loop()
    errors: list[dict] = []
    loop.set_exception_handler(lambda _loop, ctx: errors.append(ctx))
    stream = io.BytesIO()
    log = RequestLog(stream, fmt="json", loop=loop)
    log.write({"path": "/a"})
    log.write({"path": "/b"})  # within the flush interval: a flush is scheduled
    log.flush()
    data = stream.getvalue()
    stream.close()
    await asyncio.sleep(0.3)
    assert errors == []
    assert data.count(b"\n") == 2
