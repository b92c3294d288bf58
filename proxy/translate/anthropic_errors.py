"""Anthropic's error shape, ``{"type": "error", "error": {"type", "message"}}``: bodies, rendering, the SSE event.

Pure. ``proxy.translate.anthropic_request`` documents the whole API.

- ``render_anthropic_error(exc) -> (status, body, headers)``: every error on the Messages routes.
- ``anthropic_error_event(exc)``: the ``event: error`` that ends a stream after its first byte
  (``MessagesStream.fail`` and ``AnthropicStreamTally.fail`` give it).
- ``anthropic_error_type(status)`` / ``anthropic_error_body(status, message)``: the pieces.

An Anthropic backend's own error body (already in this shape) is relayed unchanged; another
backend's error keeps its message.
"""

from __future__ import annotations

from collections.abc import Mapping

from proxy.errors import PassthroughError, ProxyError, error_body, render_error
from proxy.jsonio import JSONDecodeError, dumps, loads
from proxy.translate.anthropic_answer import anthropic_event

__all__ = [
    "anthropic_error_type",
    "anthropic_error_body",
    "anthropic_error_event",
    "render_anthropic_error",
]

_ERROR_TYPES: Mapping[int, str] = {
    400: "invalid_request_error", 401: "authentication_error", 403: "permission_error", 404: "not_found_error",
    413: "request_too_large", 429: "rate_limit_error", 503: "overloaded_error", 529: "overloaded_error",
}


def anthropic_error_type(status: int) -> str:
    """Anthropic's error ``type`` for an HTTP status (other 4xx: invalid_request_error; 5xx: api_error)."""
    return _ERROR_TYPES.get(status) or ("invalid_request_error" if 400 <= status < 500 else "api_error")


def anthropic_error_body(status: int, message: str, *, request_id: str | None = None) -> dict[str, object]:
    """The error body Anthropic clients parse: ``{"type": "error", "error": {"type", "message"}}``."""
    body: dict[str, object] = {"type": "error", "error": {"type": anthropic_error_type(status), "message": message}}
    if request_id is not None:
        body["request_id"] = request_id
    return body


def _passed(exc: BaseException) -> object:
    if not isinstance(exc, PassthroughError):
        return None
    try:
        return loads(exc.raw_body)
    except JSONDecodeError:
        return None


def _is_anthropic_error(body: object) -> bool:
    return (isinstance(body, dict) and body.get("type") == "error" and isinstance(body.get("error"), dict)
            and isinstance(body["error"].get("type"), str))


def _message_of(exc: BaseException) -> str:
    if isinstance(exc, PassthroughError):  # a backend's own body: keep its message
        raw = _passed(exc)
        error = raw.get("error") if isinstance(raw, dict) else None
        message = error.get("message") if isinstance(error, dict) else error
        if isinstance(message, str) and message:
            return message
    detail = error_body(exc)["error"]
    return str(detail["message"]) if isinstance(detail, Mapping) else "internal error"


def render_anthropic_error(exc: BaseException, *, request_id: str | None = None) -> tuple[int, bytes, dict[str, str]]:
    """Status, Anthropic JSON body and headers for ``exc``.

    Status and headers are those of the OpenAI rendering (``Retry-After``, ``WWW-Authenticate``,
    ``x-should-retry: false`` once every fallback failed, which anthropic-python honours too). An
    Anthropic backend's own error body (already in this shape) is relayed unchanged.
    """
    status, raw, headers = render_error(exc)
    if _is_anthropic_error(_passed(exc)):
        return status, raw, headers
    return status, dumps(anthropic_error_body(status, _message_of(exc), request_id=request_id)), headers


def anthropic_error_event(exc: BaseException) -> bytes:
    """The SSE ``error`` event that ends a stream after its first byte (the status is already 200)."""
    status = exc.status if isinstance(exc, ProxyError) else 500
    passed = _passed(exc)
    if _is_anthropic_error(passed):
        return anthropic_event("error", passed)  # type: ignore[arg-type]
    return anthropic_event("error", anthropic_error_body(status, _message_of(exc)))
