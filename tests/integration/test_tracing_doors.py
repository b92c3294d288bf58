"""Traces of the other doors and of failures: the operation and model of embeddings, Anthropic's
Messages and Ollama's native API, and a request every backend failed (status error, 502)."""

from __future__ import annotations

from typing import Any

import aiohttp
import anthropic
import openai
import pytest
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from tests.fakes import ollama as fol
from tests.integration.test_routing import HI, backend, closed_port
from tests.integration.test_tracing import Receiver, _attributes


async def _traced(aiohttp_server: Any, start_fake: Any, start_gateway: Any) -> tuple[Receiver, Any, Any]:
    receiver = Receiver()
    server = await aiohttp_server(receiver.app)
    local = await start_fake()
    gw = await start_gateway({"backends": [backend("local", local.url)], "logging": {"requests": False},
                              "tracing": {"enabled": True, "endpoint": str(server.make_url("/v1/traces")),
                                          "export_interval": 0.05}})
    return receiver, local, gw


def _by_kind(spans: list[Span]) -> tuple[Span, list[Span]]:
    (server,) = [s for s in spans if s.kind == Span.SPAN_KIND_SERVER]
    return server, [s for s in spans if s.kind == Span.SPAN_KIND_CLIENT]


async def test_embeddings_messages_and_native_chat_name_their_operations(aiohttp_server, start_fake, start_gateway):
    """/v1/embeddings is ``embeddings``, /v1/messages and /api/chat are ``chat``, each with its usage."""
    receiver, _, gw = await _traced(aiohttp_server, start_fake, start_gateway)
    async with gw.client() as client:
        vectors = await client.embeddings.create(model="nomic-embed-text", input=["a", "b"])
    assert len(vectors.data) == 2
    server, (attempt,) = _by_kind(await receiver.wait_for(2))
    attributes = _attributes(server.attributes)
    assert (server.name, attempt.name) == ("embeddings nomic-embed-text", "embeddings nomic-embed-text")
    assert (attributes["gen_ai.operation.name"], attributes["gen_ai.usage.input_tokens"],
            attributes["gen_ai.usage.output_tokens"], attributes["http.route"]) == ("embeddings", 8, 0, "/v1/embeddings")

    receiver.spans.clear()
    async with anthropic.AsyncAnthropic(base_url=gw.url, api_key="sk-test", max_retries=0, timeout=20) as claude:
        message = await claude.messages.create(model="llama3.2", max_tokens=64, messages=HI)
    assert message.content[0].text == "Hello world"  # type: ignore[union-attr]
    server, (attempt,) = _by_kind(await receiver.wait_for(2))
    attributes = _attributes(server.attributes)
    assert (server.name, attributes["gen_ai.operation.name"], attributes["gen_ai.provider.name"],
            attributes["gen_ai.usage.input_tokens"], attributes["gen_ai.usage.output_tokens"]) == (
        "chat llama3.2", "chat", "ollama", message.usage.input_tokens, message.usage.output_tokens)
    assert attempt.parent_span_id == server.span_id

    receiver.spans.clear()
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{gw.url}/api/chat", json={"model": "llama3.2", "messages": HI, "stream": False}) as r:
            assert r.status == 200
    server, (attempt,) = _by_kind(await receiver.wait_for(2))
    assert (server.name, _attributes(server.attributes)["http.route"]) == ("chat llama3.2", "/api/chat")


async def test_a_request_every_backend_failed_is_an_error_span(aiohttp_server, start_fake, start_gateway):
    """A 5xx from the only backend: the attempt and the request spans have status error and ``error.type``."""
    receiver, local, gw = await _traced(aiohttp_server, start_fake, start_gateway)
    local.fake.script("/api/chat", fol.status(500, "model runner crashed"))
    async with gw.client() as client:
        with pytest.raises(openai.InternalServerError):
            await client.chat.completions.create(model="llama3.2", messages=HI)
    server, (attempt,) = _by_kind(await receiver.wait_for(2))
    attributes = _attributes(server.attributes)
    assert (server.status.code, attributes["http.response.status_code"], attributes["gateway.outcome"],
            attributes["error.type"]) == (Status.STATUS_CODE_ERROR, 502, "5xx", "5xx")
    assert (attempt.status.code, _attributes(attempt.attributes)["error.type"]) == (Status.STATUS_CODE_ERROR, "5xx")


async def test_unknown_paths_and_models_get_a_span_without_model_attributes(aiohttp_server, start_fake,
                                                                            start_gateway):
    """A 404 path is named by its method only (no client text in span names); probes make no span."""
    receiver, _, gw = await _traced(aiohttp_server, start_fake, start_gateway)
    async with aiohttp.ClientSession() as session:
        for path in ("/healthz", "/readyz", "/v1/no-such-thing-" + "x" * 50):
            async with session.get(gw.url + path) as r:
                await r.read()
        await receiver.wait_for(1)
        async with session.get(gw.url + "/v1/models") as r:
            assert r.status == 200
    span, listing = await receiver.wait_for(2)
    assert len(receiver.spans) == 2  # nothing for the probes
    attributes = _attributes(span.attributes)
    assert (span.name, listing.name) == ("GET", "GET /v1/models")
    assert (attributes["http.response.status_code"], "http.route" in attributes,
            "gen_ai.operation.name" in attributes) == (404, False, False)


async def test_an_unreachable_collector_does_not_touch_requests(start_fake, start_gateway):
    """Spans for a collector that refuses connections are dropped by the exporter; every answer is still 200."""
    local = await start_fake()
    gw = await start_gateway({"backends": [backend("local", local.url)], "logging": {"requests": False},
                              "tracing": {"enabled": True, "endpoint": f"http://127.0.0.1:{closed_port()}/v1/traces",
                                          "export_interval": 0.05, "timeout": 1}})
    async with gw.client() as client:
        answers = [await client.chat.completions.create(model="llama3.2", messages=HI) for _ in range(3)]
    assert [a.choices[0].message.content for a in answers] == ["Hello world"] * 3
    assert len([r for r in local.fake.requests if r[1] == "/api/chat"]) == 3
