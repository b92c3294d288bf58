"""Every error class renders to its exact status, OpenAI body and headers."""

from __future__ import annotations

import orjson
import pytest

from policies.outcome import Outcome
from proxy import errors as e


@pytest.mark.parametrize(("exc", "status", "type_", "code"), [
    (e.InvalidRequestError("bad", param="x"), 400, "invalid_request_error", "invalid_value"),
    (e.AuthenticationError("who?"), 401, "invalid_request_error", "invalid_api_key"),
    (e.PermissionDeniedError("no"), 403, "permission_error", "model_not_allowed"),
    (e.NotFoundError("nope"), 404, "invalid_request_error", "not_found"),
    (e.ModelNotFoundError("m"), 404, "invalid_request_error", "model_not_found"),
    (e.MethodNotAllowedError("no"), 405, "invalid_request_error", "method_not_allowed"),
    (e.PayloadTooLargeError("big"), 413, "invalid_request_error", "request_too_large"),
    (e.RateLimitedError("slow"), 429, "rate_limit_error", "rate_limit_exceeded"),
    (e.ServiceUnavailableError("down"), 503, "api_error", "service_unavailable"),
    (e.UpstreamStatusError("5xx", outcome=Outcome.SERVER_ERROR), 502, "api_error", "upstream_error"),
    (e.UpstreamUnavailableError("gone"), 502, "api_error", "upstream_unavailable"),
    (e.UpstreamBrokenStreamError("cut"), 502, "api_error", "upstream_broken_stream"),
    (e.UpstreamTimeoutError("slow"), 504, "api_error", "upstream_timeout"),
    (ValueError("secret detail"), 500, "api_error", "internal_error"),
])
def test_render_error(exc, status, type_, code):
    """Status, type and code follow the tree; the body has exactly OpenAI's four fields."""
    got_status, body, headers = e.render_error(exc)
    error = orjson.loads(body)["error"]
    assert (got_status, error["type"], error["code"]) == (status, type_, code)
    assert set(error) == {"message", "type", "param", "code"}
    assert "secret detail" not in body.decode()


def test_model_not_found_names_param_model():
    """model_not_found carries param "model", as OpenAI's does."""
    assert orjson.loads(e.render_error(e.ModelNotFoundError("x"))[1])["error"]["param"] == "model"


def test_final_gateway_errors_say_do_not_retry():
    """A final 502/504 tells OpenAI SDKs not to retry; a 429 does not."""
    timeout = e.UpstreamTimeoutError("slow")
    timeout.final = True
    assert e.render_error(timeout)[2]["x-should-retry"] == "false"
    limited = e.RateLimitedError("slow", headers={"Retry-After": "2"})
    limited.final = True
    assert e.render_error(limited)[2] == {"Retry-After": "2"}


def test_passthrough_keeps_the_backends_body():
    """An OpenAI-compatible backend's own error body is relayed byte for byte."""
    raw = b'{"error":{"message":"quota","type":"insufficient_quota","param":null,"code":"insufficient_quota"}}'
    exc = e.PassthroughError(429, raw, outcome=Outcome.RATE_LIMITED, backend="cloud")
    assert e.render_error(exc)[:2] == (429, raw)
    assert e.sse_error_event(exc) == b"data: " + raw + b"\n\n"
