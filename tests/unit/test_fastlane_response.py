"""The fast lane's response serialisation (proxy.fastlane.request.response_bytes): parsed back with httptools."""

from __future__ import annotations

import httptools
import pytest
from aiohttp import web

from proxy.fastlane.request import response_bytes


def parse(raw: bytes) -> tuple[int, dict[str, str], bytes]:
    got: dict[str, object] = {"headers": {}, "body": b""}

    class Sink:
        def on_header(self, name: bytes, value: bytes) -> None:
            got["headers"][name.decode()] = value.decode()  # type: ignore[index]

        def on_body(self, body: bytes) -> None:
            got["body"] += body  # type: ignore[operator]

        def on_message_complete(self) -> None:
            got["complete"] = True

    parser = httptools.HttpResponseParser(Sink())
    parser.feed_data(raw)
    assert got.get("complete"), raw
    return parser.get_status_code(), got["headers"], got["body"]  # type: ignore[return-value]


@pytest.mark.parametrize(("status", "close", "reason"), [
    (200, False, b"OK"),
    (201, False, b"Created"),
    (404, True, b"Not Found"),
    (429, False, b"Too Many Requests"),
    (503, True, b"Service Unavailable"),
])
def test_a_response_round_trips(status, close, reason):
    response = web.Response(body=b'{"a":1}', status=status, content_type="application/json",
                            headers={"X-Request-ID": "req_1", "Retry-After": "2"})
    raw = response_bytes(response, close=close)
    assert raw.startswith(b"HTTP/1.1 %d %s\r\n" % (status, reason))
    code, headers, body = parse(raw)
    assert (code, body) == (status, b'{"a":1}')
    assert headers["Content-Type"] == "application/json" and headers["Content-Length"] == "7"
    assert headers["X-Request-ID"] == "req_1" and headers["Retry-After"] == "2"
    assert headers["Date"].endswith(" GMT")
    assert headers.get("Connection") == ("close" if close else None)


def test_framing_headers_of_the_response_object_are_not_repeated():
    response = web.Response(body=b"abc", headers={"Content-Length": "99", "Connection": "keep-alive",
                                                  "Transfer-Encoding": "chunked"})
    raw = response_bytes(response, close=False)
    assert raw.count(b"Content-Length") == 1 and b"chunked" not in raw and b"keep-alive" not in raw
    assert parse(raw)[2] == b"abc"


@pytest.mark.parametrize("value", ["a\r\nX-Evil: 1", "a\nX-Evil: 1", "a\rb"])
def test_a_header_with_a_line_break_is_refused(value):
    """No header injection: a value carrying client text with a line break is never written."""
    with pytest.raises(ValueError, match="line break"):
        response_bytes(web.Response(body=b"{}", headers={"x-gateway-model": value}), close=False)


def test_a_non_ascii_header_value_is_sent_as_utf8_like_aiohttp():
    """A model name is client text and may be any Unicode (x-gateway-model echoes it)."""
    raw = response_bytes(web.Response(body=b"{}", headers={"x-gateway-model": "modèle-模型"}), close=False)
    assert "x-gateway-model: modèle-模型\r\n".encode() in raw
