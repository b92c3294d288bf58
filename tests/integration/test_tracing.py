"""OpenTelemetry traces through real seams: the gateway exports OTLP/HTTP to a loopback receiver
that decodes every batch (protobuf), and the fake backends record the ``traceparent`` they got."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from typing import Any

import pytest

from aiohttp import web
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from proxy.config import ConfigError, parse_config
from proxy.keys import ROUTER
from proxy.middleware import gateway_middleware
from tests.conftest import one_backend_config
from tests.fakes import ollama as fol
from tests.integration.test_routing import HI, backend

CLIENT_TRACE = "0af7651916cd43dd8448eb211c80319c"
CLIENT_SPAN = "b7ad6b7169203331"
TRACEPARENT = f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01"


class Receiver:
    """An OTLP/HTTP trace receiver: POST /v1/traces, protobuf in, every span kept with its resource."""

    def __init__(self) -> None:
        self.spans: list[Span] = []
        self.resources: list[dict[str, Any]] = []
        self.content_types: list[str] = []
        self.arrived = asyncio.Event()
        self.app = web.Application()
        self.app.router.add_post("/v1/traces", self._traces)

    async def _traces(self, request: web.Request) -> web.Response:
        self.content_types.append(request.content_type)
        batch = ExportTraceServiceRequest.FromString(await request.read())
        for resource_spans in batch.resource_spans:
            self.resources.append(_attributes(resource_spans.resource.attributes))
            for scope_spans in resource_spans.scope_spans:
                self.spans.extend(scope_spans.spans)
        self.arrived.set()
        return web.Response(body=ExportTraceServiceResponse().SerializeToString(),
                            content_type="application/x-protobuf")

    async def wait_for(self, count: int) -> list[Span]:
        """The spans once ``count`` have arrived (a 10 s ceiling: a missing span fails, never hangs)."""
        async with asyncio.timeout(10):
            while len(self.spans) < count:
                self.arrived.clear()
                await self.arrived.wait()
        return self.spans


def _value(any_value: Any) -> Any:
    return getattr(any_value, any_value.WhichOneof("value"))


def _attributes(pairs: Any) -> dict[str, Any]:
    return {kv.key: _value(kv.value) for kv in pairs}


def _config(receiver_url: str, backends: list[dict[str, Any]], route: dict[str, Any]) -> dict[str, Any]:
    return {"backends": backends, "logging": {"requests": False},
            "routes": [{"name": "assistant", "models": ["gpt-4o-mini"], **route}],
            "tracing": {"enabled": True, "endpoint": f"{receiver_url}/v1/traces", "service_name": "gw-under-test",
                        "export_interval": 0.05, "headers": {"Authorization": "Bearer ${COLLECTOR_TOKEN}"}}}


async def _receiver(aiohttp_server: Any) -> tuple[Receiver, str]:
    receiver = Receiver()
    server = await aiohttp_server(receiver.app)
    return receiver, str(server.make_url("")).rstrip("/")


async def test_request_and_attempt_spans_join_the_clients_trace(aiohttp_server, start_fake, start_gateway):
    """One server span (child of the client's traceparent) and one attempt span, with the GenAI attributes;
    Ollama receives the attempt span's context as traceparent."""
    receiver, url = await _receiver(aiohttp_server)
    local = await start_fake()
    gw = await start_gateway(_config(url, [backend("local", local.url)],
                                     {"targets": [{"backend": "local", "model": "llama3.2:latest"}]}),
                             environ={"COLLECTOR_TOKEN": "tok-1"})
    async with gw.client() as client:
        answer = await client.chat.completions.create(model="gpt-4o-mini", messages=HI,
                                                      extra_headers={"traceparent": TRACEPARENT})
    assert answer.choices[0].message.content == "Hello world"
    assert answer.usage is not None
    assert (answer.usage.prompt_tokens, answer.usage.completion_tokens) == (7, 2)
    server, attempt = sorted(await receiver.wait_for(2), key=lambda s: s.kind)
    assert len(receiver.spans) == 2
    assert receiver.content_types == ["application/x-protobuf"] * len(receiver.content_types)
    assert receiver.resources[0]["service.name"] == "gw-under-test"

    assert server.name == "chat gpt-4o-mini"
    assert server.kind == Span.SPAN_KIND_SERVER
    assert server.trace_id.hex() == CLIENT_TRACE
    assert server.parent_span_id.hex() == CLIENT_SPAN
    attributes = _attributes(server.attributes)
    request_id = attributes.pop("gateway.request_id")
    assert request_id.startswith("req_")
    assert attributes == {
        "http.request.method": "POST", "url.path": "/v1/chat/completions", "http.route": "/v1/chat/completions",
        "http.response.status_code": 200, "gateway.outcome": "ok", "gateway.route": "assistant",
        "gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt-4o-mini",
        "gen_ai.response.model": "llama3.2:latest", "gen_ai.provider.name": "ollama", "gateway.backend": "local",
        "gen_ai.usage.input_tokens": 7, "gen_ai.usage.output_tokens": 2,
    }
    assert server.status.code == Status.STATUS_CODE_UNSET

    assert attempt.name == "chat llama3.2:latest"
    assert attempt.kind == Span.SPAN_KIND_CLIENT
    assert attempt.trace_id.hex() == CLIENT_TRACE
    assert attempt.parent_span_id == server.span_id
    assert _attributes(attempt.attributes) == {
        "gen_ai.operation.name": "chat", "gen_ai.request.model": "llama3.2:latest",
        "gen_ai.response.model": "llama3.2:latest", "gen_ai.provider.name": "ollama",
        "gateway.backend": "local", "gateway.retry": 0, "gateway.outcome": "ok",
    }
    (_, path, _, headers), = [r for r in local.fake.requests if r[1] == "/api/chat"]
    assert headers["traceparent"] == f"00-{CLIENT_TRACE}-{attempt.span_id.hex()}-01"


async def test_retries_and_a_cloud_fallback_are_one_span_each(aiohttp_server, start_fake, start_openai,
                                                              start_gateway):
    """A retried failing Ollama then the cloud: three attempt spans under one request span, each backend
    receiving its own attempt's traceparent; a malformed client traceparent is ignored (the trace starts here)."""
    receiver, url = await _receiver(aiohttp_server)
    local = await start_fake()
    local.fake.script("/api/chat", fol.status(500, "model runner crashed"))
    cloud, cloud_url = await start_openai(models=("gpt-4o-mini-2024-07-18",))
    gw = await start_gateway(_config(url, [backend("local", local.url), backend("cloud", cloud_url, "openai")],
                                     {"targets": [{"backend": "local", "model": "llama3.2:latest"}],
                                      "fallback": [{"backend": "cloud", "model": "gpt-4o-mini-2024-07-18"}],
                                      "retry": {"attempts": 1, "base_delay": 0.01}}),
                             environ={"COLLECTOR_TOKEN": "tok-1"})
    async with gw.client() as client:
        stream = await client.chat.completions.create(model="gpt-4o-mini", messages=HI, stream=True,
                                                      stream_options={"include_usage": True},
                                                      extra_headers={"traceparent": "00-not-a-trace-id-01"})
        chunks = [chunk async for chunk in stream]
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Hello from the cloud"
    spans = await receiver.wait_for(4)
    assert len(spans) == 4
    (server,) = [s for s in spans if s.kind == Span.SPAN_KIND_SERVER]
    attempts = sorted((s for s in spans if s.kind == Span.SPAN_KIND_CLIENT), key=lambda s: s.start_time_unix_nano)
    assert server.parent_span_id == b""  # no valid client traceparent: the trace starts at the gateway
    assert {s.trace_id for s in spans} == {server.trace_id}
    assert [s.parent_span_id for s in attempts] == [server.span_id] * 3
    summary = [(a.name, _attributes(a.attributes)["gateway.backend"], _attributes(a.attributes)["gateway.retry"],
                _attributes(a.attributes)["gateway.outcome"], _attributes(a.attributes)["gen_ai.provider.name"],
                a.status.code) for a in attempts]
    assert summary == [
        ("chat llama3.2:latest", "local", 0, "5xx", "ollama", Status.STATUS_CODE_ERROR),
        ("chat llama3.2:latest", "local", 1, "5xx", "ollama", Status.STATUS_CODE_ERROR),
        ("chat gpt-4o-mini-2024-07-18", "cloud", 0, "ok", "openai", Status.STATUS_CODE_UNSET),
    ]
    attributes = _attributes(server.attributes)
    assert (attributes["gen_ai.request.model"], attributes["gen_ai.response.model"],
            attributes["gen_ai.provider.name"], attributes["gateway.backend"], attributes["gateway.fallbacks"],
            attributes["http.response.status_code"], attributes["gateway.outcome"]) == (
        "gpt-4o-mini", "gpt-4o-mini-2024-07-18", "openai", "cloud", 1, 200, "ok")
    sent = [headers["traceparent"] for _, path, _, headers in local.fake.requests if path == "/api/chat"]
    # the SDK marks the trace ids it makes as random (W3C trace context level 2): flags 03, sampled
    assert sent == [f"00-{server.trace_id.hex()}-{a.span_id.hex()}-03" for a in attempts[:2]]
    (_, _, _, cloud_headers), = [r for r in cloud.requests if r[1].endswith("/chat/completions")]
    assert cloud_headers["traceparent"] == f"00-{server.trace_id.hex()}-{attempts[2].span_id.hex()}-03"


async def test_tracing_is_off_by_default_and_sends_no_traceparent(start_fake, start_gateway):
    """Without a tracing section: the plain middleware, no tracer in the router, no traceparent to Ollama."""
    local = await start_fake()
    gw = await start_gateway(one_backend_config(local.url))
    assert list(gw.app.middlewares) == [gateway_middleware]
    assert gw.app[ROUTER].tracer is None
    async with gw.client() as client:
        await client.chat.completions.create(model="llama3.2", messages=HI, extra_headers={"traceparent": TRACEPARENT})
    (_, _, _, headers), = [r for r in local.fake.requests if r[1] == "/api/chat"]
    assert "traceparent" not in {name.lower() for name in headers}


def test_tracing_off_loads_neither_the_sdk_nor_the_exporter():
    """Building the app with tracing off loads no OpenTelemetry SDK tracing or exporter module and starts
    no export thread (the redis client imports the OpenTelemetry API for its own use when installed)."""
    code = ("import sys, threading; from proxy.app import create_app; from proxy.config import parse_config; "
            "create_app(parse_config({}, {}), health_checks=False); "
            "print(sorted(m for m in sys.modules if m.startswith(('opentelemetry.sdk.trace', "
            "'opentelemetry.exporter')))); print(threading.active_count())")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert result.stdout.split("\n")[:2] == ["[]", "1"]


def test_tracing_enabled_without_the_sdk_is_a_config_error(monkeypatch: pytest.MonkeyPatch):
    """With the OpenTelemetry SDK absent, ``tracing.enabled: true`` names the key and the extra to install."""
    monkeypatch.setitem(sys.modules, "opentelemetry.sdk.trace", None)  # what an uninstalled package looks like to find_spec
    with pytest.raises(ConfigError) as caught:
        parse_config({"tracing": {"enabled": True}}, {})
    assert str(caught.value).splitlines() == [
        "tracing.enabled: needs the OpenTelemetry SDK and its OTLP/HTTP exporter: "
        "pip install 'ollama-gateway[tracing]'"]


def test_tracing_section_errors_name_their_keys():
    """Bad values in the tracing section are reported with their dotted paths; a header from an unset variable too."""
    with pytest.raises(ConfigError) as caught:
        parse_config({"tracing": {"enabled": "yes", "endpoint": "collector:4318", "sample_ratio": 1.5,
                                  "headers": {"Authorization": "Bearer ${COLLECTOR_TOKEN}"}, "exporter": "grpc"}}, {})
    assert str(caught.value).splitlines() == [
        "tracing.enabled: must be true or false (got 'yes')",
        "tracing.endpoint: must be an http:// or https:// URL, e.g. http://collector:4318/v1/traces",
        "tracing.sample_ratio: must be a number <= 1 (got 1.5)",
        "tracing.headers.Authorization: environment variable COLLECTOR_TOKEN is not set",
        "tracing.exporter: unknown key",
    ]
