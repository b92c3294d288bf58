"""The request log written to ``logging.file``: one JSON object per request, prompts only when asked for."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import openai
import orjson
import pytest

from tests.fakes import ollama as o
from tests.integration.test_routing import backend, closed_port, routed

SECRET_PROMPT = "purple-walrus-4471 tell me about quasars"
ASK = [{"role": "user", "content": SECRET_PROMPT}]
AUTH = {"credentials": [{"name": "team-a", "api_key": "${KEY}"}]}
ENV = {"KEY": "sk-test"}


def config(tmp_path: Path, local_url: str, **logging: Any) -> dict[str, Any]:
    raw = routed([backend("dead", f"http://127.0.0.1:{closed_port()}"), backend("local", local_url)],
                 {"targets": [{"backend": "dead"}], "fallback": [{"backend": "local"}]}, auth=AUTH)
    raw["logging"] = {"requests": True, "file": str(tmp_path / "requests.log"), **logging}
    return raw


async def log_lines(path: Path, count: int, timeout: float = 5.0) -> list[str]:
    """The log's lines once it holds ``count`` of them (a line is written just after the last byte)."""
    deadline = time.monotonic() + timeout
    while True:
        lines = path.read_text().splitlines() if path.exists() else []
        if len(lines) >= count:
            assert len(lines) == count, lines
            return lines
        assert time.monotonic() < deadline, f"{len(lines)} of {count} log lines after {timeout}s"
        await asyncio.sleep(0.01)


async def test_json_log_has_every_field_and_no_prompt_by_default(start_fake, start_gateway, tmp_path):
    """A non-stream and a stream request each give one JSON line with ids, routing, timings and tokens only."""
    local = await start_fake()
    local.fake.script("/api/chat", o.ok("sun moon star", load_ns=300_000_000))
    gw = await start_gateway(config(tmp_path, local.url), environ=ENV)
    async with gw.client() as client:
        plain = await client.chat.completions.with_raw_response.create(model="llama3.2", messages=ASK)
        stream = await client.chat.completions.create(model="llama3.2", messages=ASK, stream=True)
        async for _chunk in stream:
            pass
    text = "\n".join(await log_lines(tmp_path / "requests.log", 2))
    assert "purple-walrus" not in text and "quasars" not in text
    assert "sun moon" not in text
    first, second = (orjson.loads(line) for line in text.splitlines())
    assert first["request_id"] == plain.headers["x-request-id"]
    expected = {"credential": "team-a", "route": "chat", "model": "llama3.2", "backend": "local", "status": 200,
                "outcome": "ok", "fallback_path": ["dead:llama3.2", "local:llama3.2"], "load_ms": 300.0,
                "prompt_eval_ms": 20.0, "eval_ms": 200.0, "prompt_tokens": 7, "completion_tokens": 3,
                "tokens_per_s": 15.0}
    for record in (first, second):
        assert {k: record.get(k) for k in expected} == expected
        assert record["request_id"].startswith("req_")
        assert record["total_ms"] >= record["upstream_ms"] >= 0
        assert "prompt" not in record and "answer" not in record
        assert record["ts"].endswith("Z")
    assert first["stream"] is False and first["ttft_ms"] is None
    assert second["stream"] is True and 0 < second["ttft_ms"] <= second["total_ms"]
    assert first["request_id"] != second["request_id"]


async def test_json_log_of_an_error_names_outcome_and_status(start_fake, start_gateway, tmp_path):
    """An Ollama 500 after the fallback logs status 502, outcome 5xx and both attempts."""
    local = await start_fake()
    local.fake.script("/api/chat", o.status(500, "CUDA error"))
    gw = await start_gateway(config(tmp_path, local.url), environ=ENV)
    async with gw.client() as client:
        with pytest.raises(openai.InternalServerError) as caught:
            await client.chat.completions.create(model="llama3.2", messages=ASK)
    assert caught.value.status_code == 502
    (line,) = await log_lines(tmp_path / "requests.log", 1)
    record = orjson.loads(line)
    assert (record["status"], record["outcome"], record["backend"]) == (502, "5xx", "local")
    assert record["fallback_path"] == ["dead:llama3.2", "local:llama3.2"]
    assert "purple-walrus" not in line


async def test_prompts_are_logged_only_with_include_prompts(start_fake, start_gateway, tmp_path):
    """With ``logging.include_prompts: true`` the prompt and the answer are in the record."""
    local = await start_fake()
    local.fake.script("/api/chat", o.ok("sun moon star"))
    gw = await start_gateway(config(tmp_path, local.url, include_prompts=True), environ=ENV)
    async with gw.client() as client:
        await client.chat.completions.create(model="llama3.2", messages=ASK)
        stream = await client.chat.completions.create(model="llama3.2", messages=ASK, stream=True)
        async for _chunk in stream:
            pass
    for line in await log_lines(tmp_path / "requests.log", 2):
        record = orjson.loads(line)
        assert SECRET_PROMPT in record["prompt"]
        assert record["answer"] == "sun moon star"


async def test_text_format_writes_one_readable_line(start_fake, start_gateway, tmp_path):
    """``logging.format: text`` gives a single line with status, outcome, route/model@backend and timings."""
    local = await start_fake()
    local.fake.script("/api/chat", o.ok("sun moon star"))
    gw = await start_gateway(config(tmp_path, local.url, format="text"), environ=ENV)
    async with gw.client() as client:
        await client.chat.completions.create(model="llama3.2", messages=ASK)
    (line,) = await log_lines(tmp_path / "requests.log", 1)
    assert not line.startswith("{")
    for part in ("200 ok", "chat/llama3.2@local", "/v1/chat/completions", "total=", "eval=200ms",
                 "tokens=7+3", "cred=team-a", "via=dead:llama3.2>local:llama3.2", "15.0tok/s"):
        assert part in line, (part, line)
    assert "purple-walrus" not in line
