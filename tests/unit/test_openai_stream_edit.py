"""OpenAIStreamEdit: an OpenAI-compatible backend's SSE renamed and its usage counted, however it is chunked."""

from __future__ import annotations

import orjson
import pytest

from proxy.relay import OpenAIStreamEdit

CHUNK = {"id": "c", "object": "chat.completion.chunk", "model": "qwen2.5:0.5b",
         "choices": [{"index": 0, "delta": {"content": "hi"}, "finish_reason": None}]}
USAGE = {**CHUNK, "choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}}


def sse(*events: object, sep: bytes = b"\n") -> bytes:
    return b"".join(b"data: " + (e if isinstance(e, bytes) else orjson.dumps(e)) + sep + sep for e in events)


def run(raw: bytes, size: int, keep_usage: bool) -> tuple[bytes, OpenAIStreamEdit]:
    edit = OpenAIStreamEdit(model="gpt-4o-mini", client_wants_usage=keep_usage)
    out = b"".join(edit.feed(raw[i:i + size]) for i in range(0, len(raw), size)) + edit.close()
    return out, edit


@pytest.mark.parametrize("size", [1, 7, 64, 10_000])
@pytest.mark.parametrize("sep", [b"\n", b"\r\n"])
def test_chunking_does_not_change_the_edit(size, sep):
    """Split anywhere, LF or CRLF: the model is renamed, the usage chunk dropped and counted, [DONE] kept."""
    out, edit = run(sse(CHUNK, USAGE, b"[DONE]", sep=sep), size, keep_usage=False)
    events = [e for e in out.replace(b"\r", b"").split(b"\n\n") if e]
    assert events == [b"data: " + orjson.dumps({**CHUNK, "model": "gpt-4o-mini"}), b"data: [DONE]"]
    assert (edit.prompt_tokens, edit.completion_tokens) == (5, 2)


def test_the_usage_chunk_stays_when_the_client_asked_for_it():
    """With include_usage from the client the usage chunk is relayed, renamed."""
    out, _ = run(sse(CHUNK, USAGE, b"[DONE]"), 10_000, keep_usage=True)
    assert b'"usage":{"prompt_tokens":5' in out and out.count(b'"model":"gpt-4o-mini"') == 2


def test_comments_events_and_non_json_data_pass_untouched():
    """SSE comments, event lines and data that is not a JSON object are relayed as they came."""
    raw = b": keep-alive\n\nevent: ping\ndata: not json\n\n"
    assert run(raw, 3, keep_usage=False)[0] == raw
