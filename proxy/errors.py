"""The gateway's one error tree, and the one place it is turned into OpenAI's error body.

Pure: imports neither aiohttp nor yaml. ``render_error`` is called by exactly one middleware
(and ``sse_error_event`` by the stream relay once the response has started).

    ProxyError                       500 api_error              internal_error (details only in logs)
    ├── InvalidRequestError          400 invalid_request_error  invalid_json | invalid_type | invalid_value |
    │                                                           missing_field | unsupported_parameter (param set)
    ├── AuthenticationError          401 invalid_request_error  invalid_api_key; WWW-Authenticate: Basic realm=..
    ├── PermissionDeniedError        403 permission_error       model_not_allowed
    ├── NotFoundError                404 invalid_request_error  not_found (unknown path)
    │   └── ModelNotFoundError       404 invalid_request_error  model_not_found, param "model"
    ├── MethodNotAllowedError        405 invalid_request_error  method_not_allowed
    ├── PayloadTooLargeError         413 invalid_request_error  request_too_large
    ├── RateLimitedError             429 rate_limit_error       rate_limit_exceeded; Retry-After
    ├── ServiceUnavailableError      503 api_error              service_unavailable
    └── UpstreamError                502 api_error              upstream_error   (.outcome, .backend)
        ├── UpstreamStatusError      502/503 api_error          upstream_error | queue_full (backend 5xx, 401/403)
        ├── UpstreamUnavailableError 502 api_error              upstream_unavailable (refused, reset, DNS)
        ├── UpstreamBrokenStreamError 502 api_error             upstream_broken_stream (truncated body)
        ├── UpstreamStreamError      502 api_error              upstream_stream_error (error line in a stream)
        ├── UpstreamTimeoutError     504 api_error              upstream_timeout
        └── PassthroughError         any                        an OpenAI-compatible backend's own error body,
                                                                relayed unchanged
    ConfigError / SchemaError        startup only; never rendered to HTTP

Any error raised from an upstream call carries ``.outcome`` (a ``policies.Outcome``) and ``.backend``
(the backend's *name*, never its URL or credentials), whatever its class, so fallback rules can act on
a 404 or a 429 as well as on 5xx. An upstream failure that reaches the renderer is final: the router
has already retried and fallen back as the route says (it sets ``final`` when every attempt failed,
and raises at once an outcome the route does not fall back on). Such a 5xx, 408 or 409, relayed
backend answers included, carries ``x-should-retry: false`` so OpenAI SDKs do not multiply load on a
failing backend (openai-python retries those twice by default); a 429 never does, so clients back off
with ``Retry-After``.
"""

from __future__ import annotations

from collections.abc import Mapping

from policies.outcome import Outcome
from proxy.jsonio import dumps

__all__ = [
    "ProxyError",
    "InvalidRequestError",
    "AuthenticationError",
    "PermissionDeniedError",
    "NotFoundError",
    "ModelNotFoundError",
    "MethodNotAllowedError",
    "PayloadTooLargeError",
    "RateLimitedError",
    "ServiceUnavailableError",
    "UpstreamError",
    "UpstreamStatusError",
    "UpstreamUnavailableError",
    "UpstreamBrokenStreamError",
    "UpstreamStreamError",
    "UpstreamTimeoutError",
    "PassthroughError",
    "render_error",
    "error_body",
    "sse_error_event",
    "render_ollama_error",
]


class ProxyError(Exception):
    """Base of every error the gateway renders; unknown exceptions render as a generic 500."""

    status = 500
    type = "api_error"
    code: str | None = "internal_error"

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        status: int | None = None,
        headers: Mapping[str, str] | None = None,
        outcome: Outcome | None = None,
        backend: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status
        self.headers: dict[str, str] = dict(headers or {})
        self.outcome = outcome
        self.backend = backend
        self.final = False

    def body(self) -> dict[str, object]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


class InvalidRequestError(ProxyError):
    status = 400
    type = "invalid_request_error"
    code = "invalid_value"


class AuthenticationError(ProxyError):
    status = 401
    type = "invalid_request_error"
    code = "invalid_api_key"


class PermissionDeniedError(ProxyError):
    status = 403
    type = "permission_error"
    code = "model_not_allowed"


class NotFoundError(ProxyError):
    status = 404
    type = "invalid_request_error"
    code = "not_found"


class ModelNotFoundError(NotFoundError):
    code = "model_not_found"

    def __init__(self, model: str, **kwargs: object) -> None:
        message = kwargs.pop("message", None) or f"The model '{model}' does not exist or you do not have access to it."
        kwargs.setdefault("param", "model")
        super().__init__(str(message), **kwargs)  # type: ignore[arg-type]
        self.model = model


class MethodNotAllowedError(ProxyError):
    status = 405
    type = "invalid_request_error"
    code = "method_not_allowed"


class PayloadTooLargeError(ProxyError):
    status = 413
    type = "invalid_request_error"
    code = "request_too_large"


class RateLimitedError(ProxyError):
    status = 429
    type = "rate_limit_error"
    code = "rate_limit_exceeded"


class ServiceUnavailableError(ProxyError):
    status = 503
    type = "api_error"
    code = "service_unavailable"


class UpstreamError(ProxyError):
    status = 502
    type = "api_error"
    code = "upstream_error"


class UpstreamStatusError(UpstreamError):
    pass


class UpstreamUnavailableError(UpstreamError):
    code = "upstream_unavailable"


class UpstreamBrokenStreamError(UpstreamError):
    code = "upstream_broken_stream"


class UpstreamStreamError(UpstreamError):
    code = "upstream_stream_error"


class UpstreamTimeoutError(UpstreamError):
    status = 504
    code = "upstream_timeout"


class PassthroughError(UpstreamError):
    """An OpenAI-compatible backend's error, relayed to the client with its own status and body."""

    def __init__(self, status: int, raw_body: bytes, *, outcome: Outcome, backend: str,
                 headers: Mapping[str, str] | None = None) -> None:
        super().__init__(f"backend {backend} answered {status}", status=status, outcome=outcome,
                         backend=backend, headers=headers)
        self.raw_body = raw_body


_INTERNAL = ProxyError("The gateway had an internal error; see its logs with the request id.")
_SDK_RETRIED = frozenset({408, 409})  # besides 5xx, what openai-python retries unless told not to


def _is_final(exc: ProxyError) -> bool:
    """True when the gateway's answer is final: no SDK retry should follow it."""
    if not (exc.final or exc.outcome is not None):
        return False
    return exc.status >= 500 or exc.status in _SDK_RETRIED


def error_body(exc: BaseException) -> dict[str, object]:
    """The OpenAI error object for ``exc`` (a generic one for anything that is not a ProxyError)."""
    return (exc if isinstance(exc, ProxyError) else _INTERNAL).body()


def render_error(exc: BaseException) -> tuple[int, bytes, dict[str, str]]:
    """Status, JSON body and extra headers for ``exc``: the only renderer of error responses."""
    if not isinstance(exc, ProxyError):
        exc = _INTERNAL
    headers = dict(exc.headers)
    if _is_final(exc):
        headers["x-should-retry"] = "false"
    if isinstance(exc, PassthroughError):
        return exc.status, exc.raw_body, headers
    return exc.status, dumps(exc.body()), headers


def render_ollama_error(exc: BaseException) -> tuple[int, bytes, dict[str, str]]:
    """Status, body and headers for ``exc`` in Ollama's own shape, ``{"error": "message"}``.

    What the ``ollama`` clients, Open WebUI and LangChain's ``ChatOllama`` parse on the native door
    (``/api/*``); status and headers are those of ``render_error``.
    """
    status, _, headers = render_error(exc)
    message = (exc if isinstance(exc, ProxyError) else _INTERNAL).message
    return status, dumps({"error": message}), headers


def sse_error_event(exc: BaseException) -> bytes:
    """The SSE event that ends a stream after its first byte: ``data: {"error": {...}}``."""
    if isinstance(exc, PassthroughError):
        return b"data: " + exc.raw_body.strip() + b"\n\n"
    return b"data: " + dumps(error_body(exc)) + b"\n\n"
