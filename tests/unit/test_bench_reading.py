"""The benchmark's readers of raw answers: a cell that miscounts tokens would report a false figure."""

from __future__ import annotations

import pytest

from bench.clients import BenchError, Target, _dechunk, _tokens_in


def _chunked(*pieces: bytes) -> bytes:
    return b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces) + b"0\r\n\r\n"


SSE = [b'data: {"choices":[{"delta":{"role":"assistant","content":"Hello"}}]}\n\n',
       b'data: {"choices":[{"delta":{"content":" w1"}}]}\n\n',
       b'data: {"choices":[{"delta":{},"finish_reason":"stop"}]}\n\ndata: [DONE]\n\n']
HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"


def test_dechunk_whole_and_cut_short() -> None:
    body = _chunked(b"abc", b"de")
    assert _dechunk(body) == b"abcde"
    assert _dechunk(body[:-5]) is None
    assert _dechunk(b"3\r\nab") is None


@pytest.mark.parametrize("split", [3, 10, 40])
def test_tokens_counted_across_chunk_boundaries(split: int) -> None:
    # a relay may cut an event anywhere: the count is taken on the decoded body
    joined = b"".join(SSE)
    pieces = [joined[i:i + split] for i in range(0, len(joined), split)]
    assert _tokens_in(HEAD + _chunked(*pieces)) == (2, True)


def test_stream_without_end_marker_or_with_error_status() -> None:
    assert _tokens_in(HEAD + _chunked(*SSE[:2])) == (2, False)
    with pytest.raises(BenchError):
        _tokens_in(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")
    with pytest.raises(BenchError):
        _tokens_in(HEAD + _chunked(*SSE)[:-10])


def test_native_lines_and_responses_events() -> None:
    ndjson = (b'{"message":{"role":"assistant","content":"Hi"},"done":false}\n'
              b'{"message":{"role":"assistant","content":""},"done":true}\n')
    assert _tokens_in(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + _chunked(ndjson)) == (1, True)
    gateway = Target("gateway", "http://127.0.0.1:1", "/v1/chat/completions", sse=True)
    resp = gateway.variant("responses")
    assert resp.path == "/v1/responses"
    assert resp.text_of({"type": "response.output_text.delta", "delta": "Hi"}) == ("Hi", False)
    assert resp.text_of({"type": "response.completed", "response": {}}) == (None, True)
    with pytest.raises(BenchError):
        resp.text_of({"type": "response.failed"})
    native = Target("direct", "http://127.0.0.1:1", "/api/chat", sse=False).variant("completions")
    assert native.path == "/api/generate"
    assert native.text_of({"response": "Hi", "done": False}) == ("Hi", False)
    assert gateway.variant("completions").text_of({"choices": [{"text": "Hi"}]}) == ("Hi", False)
