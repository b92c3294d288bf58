"""The Responses API on the gateway's machinery: fallback, an OpenAI-compatible backend passed through,
auth (each caller sees only its own responses), hosted tools left out, 400s naming the field,
failures after the first event, image URLs, the request log."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import aiohttp
import openai
import orjson
import pytest
from aiohttp import web

from proxy.app import create_app
from proxy.config import parse_config
from proxy.server import start_site
from tests.conftest import one_backend_config
from tests.fakes import ollama as o
from tests.integration.test_routing import backend, closed_port, primary_then, routed
from tests.integration.test_security_ssrf import LOOPBACK_OPEN, SEEN, image_server_app, resolver

CLOUD_RESPONSE = {
    "id": "resp_cloud1", "object": "response", "created_at": 1700000000, "status": "completed", "model": "gpt-5-mini",
    "output": [{"id": "msg_cloud1", "type": "message", "status": "completed", "role": "assistant",
                "content": [{"type": "output_text", "text": "Hello from the cloud", "annotations": []}]}],
    "parallel_tool_calls": True, "tool_choice": "auto", "tools": [],
    "usage": {"input_tokens": 5, "input_tokens_details": {"cached_tokens": 0}, "output_tokens": 4,
              "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": 9},
}
BODIES = web.AppKey("bodies", list)


def cloud_app() -> web.Application:
    """A fake OpenAI Responses endpoint: records each body, answers CLOUD_RESPONSE whole or as events."""
    app = web.Application()
    app[BODIES] = []

    async def responses(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        request.app[BODIES].append((body, dict(request.headers)))
        if not body.get("stream"):
            return web.json_response(CLOUD_RESPONSE)
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        item = CLOUD_RESPONSE["output"][0]  # type: ignore[index]
        part = {"type": "output_text", "text": "", "annotations": []}
        where = {"item_id": "msg_cloud1", "output_index": 0, "content_index": 0}
        events = [("response.created", {"response": {**CLOUD_RESPONSE, "status": "in_progress", "output": []}}),
                  ("response.output_item.added", {"output_index": 0, "item": {**item, "content": []}}),
                  ("response.content_part.added", {**where, "part": part}),
                  ("response.output_text.delta", {**where, "delta": "Hello from the cloud", "logprobs": []}),
                  ("response.output_item.done", {"output_index": 0, "item": item}),
                  ("response.completed", {"response": CLOUD_RESPONSE})]
        for seq, (kind, fields) in enumerate(events):
            data = orjson.dumps({"type": kind, **fields, "sequence_number": seq})
            await resp.write(b"event: " + kind.encode() + b"\ndata: " + data + b"\n\n")
        await resp.write_eof()
        return resp

    app.router.add_post("/v1/responses", responses)
    return app


async def post(url: str, body: object, headers: dict[str, str] | None = None,
               path: str = "/v1/responses") -> tuple[int, Any, dict[str, str]]:
    async with aiohttp.ClientSession() as session, session.post(url + path, json=body, headers=headers) as resp:
        raw = await resp.read()
        return resp.status, orjson.loads(raw) if raw.startswith(b"{") else raw, dict(resp.headers)


async def test_falls_back_to_the_next_ollama_before_the_first_event(start_fake, start_gateway):
    """A primary that fails before answering is skipped: the stream comes whole from the fallback."""
    primary, backup = await start_fake(), await start_fake()
    primary.fake.script("/api/chat", o.status(500, "boom"))
    backup.fake.script("/api/chat", o.ok("from backup"))
    gw = await start_gateway(routed([backend("a", primary.url), backend("b", backup.url)], primary_then("a", "b")))
    async with gw.client() as client:
        async with client.responses.stream(model="llama3.2", input="Hi") as stream:
            final = await stream.get_final_response()
        whole = await client.responses.with_raw_response.create(model="llama3.2", input="Hi")
    assert final.output_text == "from backup"
    assert whole.parse().output_text == "from backup" and whole.headers["x-gateway-backend"] == "b"
    assert len(primary.fake.bodies("/api/chat")) == 2


async def test_an_openai_backend_gets_the_body_unchanged_but_the_model(start_gateway, aiohttp_server):
    """A cloud backend: POST {base}/responses with the route's model; its answer and stream pass through."""
    cloud = await aiohttp_server(cloud_app())
    gw = await start_gateway(routed([backend("cloud", str(cloud.make_url("/v1")), "openai", api_key="${KEY}")],
                                    {"targets": [{"backend": "cloud", "model": "gpt-5-mini"}]}),
                             environ={"KEY": "sk-cloud"})
    request = {"input": "Hi", "tools": [{"type": "web_search"}], "reasoning": {"effort": "low"},
               "previous_response_id": "resp_cloud0"}
    async with gw.client() as client:
        whole = await client.responses.with_raw_response.create(model="llama3.2", **request)
        async with client.responses.stream(model="llama3.2", **request) as stream:
            deltas = [e.delta async for e in stream if e.type == "response.output_text.delta"]
            final = await stream.get_final_response()
    assert whole.parse().output_text == "Hello from the cloud" and whole.headers["x-gateway-backend"] == "cloud"
    assert "x-gateway-ignored-tools" not in whole.headers  # the cloud got web_search
    assert deltas == ["Hello from the cloud"] and final.id == "resp_cloud1"
    (sent, headers), (streamed, _) = cloud.app[BODIES]
    assert sent == {"model": "gpt-5-mini", **request}  # the cloud's own previous_response_id passed on
    assert streamed == {"model": "gpt-5-mini", **request, "stream": True}
    assert headers["Authorization"] == "Bearer sk-cloud"


async def test_a_cloud_fallback_gets_a_locally_stored_conversation_in_full(start_fake, start_gateway,
                                                                            aiohttp_server):
    """After a turn stored here, the cloud fallback gets the conversation as input, not our id."""
    local = await start_fake()
    local.fake.script("/api/chat", o.ok("Hi Ada."), o.status(500, "down"))
    cloud = await aiohttp_server(cloud_app())
    gw = await start_gateway(routed([backend("local", local.url), backend("cloud", str(cloud.make_url("/v1")), "openai")],
                                    {"targets": [{"backend": "local"}], "fallback": [{"backend": "cloud"}]}))
    async with gw.client() as client:
        first = await client.responses.create(model="llama3.2", input="I am Ada.")
        second = await client.responses.create(model="llama3.2", input="Who am I?", previous_response_id=first.id)
    assert second.output_text == "Hello from the cloud"
    ((sent, _),) = cloud.app[BODIES]
    assert "previous_response_id" not in sent
    assert [(item["role"], item["content"][0]["text"]) for item in sent["input"]] == [
        ("user", "I am Ada."), ("assistant", "Hi Ada."), ("user", "Who am I?")]


async def test_each_caller_sees_only_its_own_responses(fake_ollama, start_gateway):
    """With auth on, another credential's response id is a 404 for retrieve, delete, input items and continuing."""
    auth = {"credentials": [{"name": "alice", "api_key": "${A}"}, {"name": "bob", "api_key": "${B}"}]}
    gw = await start_gateway(one_backend_config(fake_ollama.url, auth=auth), environ={"A": "sk-a", "B": "sk-b"})
    async with gw.client("sk-a") as alice, gw.client("sk-b") as bob:
        mine = await alice.responses.create(model="llama3.2", input="Hi")
        for attempt in (bob.responses.retrieve(mine.id), bob.responses.delete(mine.id),
                        bob.responses.input_items.list(mine.id),
                        bob.responses.create(model="llama3.2", input="x", previous_response_id=mine.id)):
            with pytest.raises(openai.NotFoundError):
                await attempt
        assert (await alice.responses.retrieve(mine.id)).id == mine.id
    async with gw.client("sk-wrong") as stranger:
        with pytest.raises(openai.AuthenticationError):
            await stranger.responses.retrieve(mine.id)


async def test_hosted_tools_are_left_out_and_named_in_a_header(fake_ollama, gateway):
    """web_search and file_search never reach Ollama; x-gateway-ignored-tools names them, streamed or not."""
    tools = [{"type": "web_search"}, {"type": "function", "name": "f", "parameters": {"type": "object"}},
             {"type": "file_search", "vector_store_ids": ["vs_1"]}]
    code, answer, headers = await post(gateway.url, {"model": "llama3.2", "input": "Hi", "tools": tools})
    assert code == 200 and headers["x-gateway-ignored-tools"] == "web_search,file_search"
    assert answer["tools"] == tools  # echoed as sent, as OpenAI does
    code, _, headers = await post(gateway.url, {"model": "llama3.2", "input": "Hi", "tools": tools, "stream": True})
    assert code == 200 and headers["x-gateway-ignored-tools"] == "web_search,file_search"
    for sent in fake_ollama.fake.bodies("/api/chat"):
        assert [t["function"]["name"] for t in sent["tools"]] == ["f"]
    _, _, headers = await post(gateway.url, {"model": "llama3.2", "input": "Hi"})
    assert "x-gateway-ignored-tools" not in headers


@pytest.mark.parametrize(("field", "value", "param"), [
    ("background", True, "background"),
    ("conversation", "conv_1", "conversation"),
    ("prompt", {"id": "pmpt_1"}, "prompt"),
    ("temperature", "hot", "temperature"),
    ("input", [{"type": "item_reference", "id": "msg_1"}], "input[0].type"),
    ("input", [{"role": "user", "content": [{"type": "input_file", "file_id": "f"}]}], "input[0].content[0].type"),
    ("tools", [{"type": "custom", "name": "x"}], "tools[0].type"),
    ("reasoning", {"effort": "extreme"}, "reasoning.effort"),
    ("previous_response_id", 7, "previous_response_id"),
])
async def test_unsupported_fields_are_400s_naming_them(fake_ollama, gateway, field, value, param):
    """Each field the gateway cannot honour: a 400 in OpenAI's shape naming it; Ollama never called."""
    code, answer, _ = await post(gateway.url, {"model": "llama3.2", "input": "Hi", field: value})
    assert code == 400 and answer["error"]["param"] == param and answer["error"]["type"] == "invalid_request_error"
    async with gateway.client() as client:
        with pytest.raises(openai.BadRequestError) as info:
            await client.responses.create(model="llama3.2", input="Hi", extra_body={field: value})
    assert info.value.body["param"] == param  # type: ignore[index]
    assert fake_ollama.fake.requests == []


async def test_unknown_model_is_a_404_in_openai_shape(start_gateway, fake_ollama):
    """A model no route serves: 404 model_not_found, as for chat."""
    gw = await start_gateway(routed([backend("local", fake_ollama.url)], {"targets": [{"backend": "local"}]}))
    code, answer, _ = await post(gw.url, {"model": "gpt-unknown", "input": "Hi"})
    assert (code, answer["error"]["code"], answer["error"]["param"]) == (404, "model_not_found", "model")


async def test_a_failure_after_the_first_event_ends_with_response_failed(fake_ollama, gateway):
    """Ollama's error line mid-stream: an error event then response.failed; the SDK has no final response;
    nothing is stored."""
    fake_ollama.fake.script("/api/chat", o.error_line_after(2))
    code, raw, _ = await post(gateway.url, {"model": "llama3.2", "input": "Hi", "stream": True})
    assert code == 200
    events = [orjson.loads(block.split(b"\ndata: ", 1)[1]) for block in raw.strip().split(b"\n\n")]
    assert [e["type"] for e in events][-3:] == ["response.output_item.done", "error", "response.failed"]
    failed = events[-1]["response"]
    assert failed["status"] == "failed" and failed["error"]["code"] == "server_error"
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    async with gateway.client() as client:
        async with client.responses.stream(model="llama3.2", input="Hi") as stream:
            kinds = [event.type async for event in stream]
            assert kinds[-2:] == ["error", "response.failed"]
            with pytest.raises(RuntimeError, match="response.completed"):  # as with OpenAI's own failed streams
                await stream.get_final_response()
        with pytest.raises(openai.NotFoundError):
            await client.responses.retrieve(failed["id"])


async def test_a_truncated_ollama_stream_is_a_failed_response(fake_ollama, gateway):
    """Ollama dropping the connection mid-answer: response.failed after the text sent so far."""
    fake_ollama.fake.script("/api/chat", o.truncate_after(2))
    code, raw, _ = await post(gateway.url, {"model": "llama3.2", "input": "Hi", "stream": True})
    assert code == 200 and raw.endswith(b"\n\n")
    assert b"event: response.failed\n" in raw and b"response.completed" not in raw


async def test_image_urls_are_fetched_after_validation(fake_ollama, aiohttp_server):
    """With image fetching on, an invalid body fetches nothing; a valid one sends Ollama the image's bytes."""
    images = await aiohttp_server(image_server_app())
    raw = one_backend_config(fake_ollama.url, image_fetch={"enabled": True, "allow_hosts": ["images.test"],
                                                            "deny_networks": LOOPBACK_OPEN})
    config = parse_config(raw, {})
    app = create_app(config, health_checks=False, image_resolver=resolver({"images.test": ["127.0.0.1"]}))
    serving, port = await start_site(app, config, host="127.0.0.1", port=0)
    url = f"http://127.0.0.1:{port}"
    body = {"model": "llama3.2", "input": [{"role": "user", "content": [
        {"type": "input_text", "text": "what is this?"},
        {"type": "input_image", "image_url": f"http://images.test:{images.port}/cat.png"}]}]}
    try:
        code, answer, _ = await post(url, {**body, "temperature": "hot"})
        assert (code, answer["error"]["param"]) == (400, "temperature")
        assert images.app[SEEN] == [] and fake_ollama.fake.requests == []
        code, answer, _ = await post(url, {**body, "input": [{"role": "user", "content": [
            {"type": "input_image", "image_url": "http://elsewhere.test/x.png"}]}]})
        assert (code, answer["error"]["param"]) == (400, "input[0].content[0].image_url")
        code, _, _ = await post(url, body)
        assert code == 200 and images.app[SEEN] == ["/cat.png"]
        (message,) = fake_ollama.fake.bodies("/api/chat")[0]["messages"]
        assert message["content"] == "what is this?" and len(message["images"]) == 1
        assert message["images"][0] != "iVBORw0KGgo="
    finally:
        await serving.cleanup()


async def test_image_urls_are_a_400_when_fetching_is_off(fake_ollama, gateway):
    """Image fetching off (the default): an http(s) image URL is a 400 naming the part."""
    code, answer, _ = await post(gateway.url, {"model": "llama3.2", "input": [{"role": "user", "content": [
        {"type": "input_image", "image_url": "https://images.example.com/cat.png"}]}]})
    assert code == 400 and answer["error"]["param"] == "input[0].content[0].image_url"


async def test_the_request_log_counts_tokens(start_fake, start_gateway, tmp_path: Path):
    """Whole and streamed responses each give a log line with the route, backend and Ollama's token counts."""
    local = await start_fake()
    local.fake.script("/api/chat", o.ok("sun moon star"))
    raw = routed([backend("local", local.url)], {"targets": [{"backend": "local"}]})
    raw["logging"] = {"requests": True, "file": str(tmp_path / "requests.log")}
    gw = await start_gateway(raw)
    async with gw.client() as client:
        await client.responses.create(model="llama3.2", input="Hi")
        async with client.responses.stream(model="llama3.2", input="Hi") as stream:
            await stream.get_final_response()
    path = tmp_path / "requests.log"
    deadline = time.monotonic() + 5
    while len(path.read_text().splitlines() if path.exists() else []) < 2:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.01)
    records = [orjson.loads(line) for line in path.read_text().splitlines()]
    assert [(r["path"], r["stream"], r["route"], r["backend"], r["prompt_tokens"], r["completion_tokens"])
            for r in records] == [("/v1/responses", False, "chat", "local", 7, 3),
                                  ("/v1/responses", True, "chat", "local", 7, 3)]


async def test_a_dead_only_backend_is_a_502_before_any_event(start_gateway):
    """Nothing reachable: an OpenAI-shaped 502 (not a stream), streamed or not."""
    gw = await start_gateway(routed([backend("dead", f"http://127.0.0.1:{closed_port()}")],
                                    {"targets": [{"backend": "dead"}]}))
    for stream in (False, True):
        code, answer, _ = await post(gw.url, {"model": "llama3.2", "input": "Hi", "stream": stream})
        assert code == 502 and answer["error"]["type"] == "api_error"


async def test_a_shadow_backend_gets_a_non_streamed_copy(start_fake, start_gateway):
    """A route's shadow receives the translated request, not streamed; the client sees the primary's answer."""
    primary, candidate = await start_fake(), await start_fake()
    primary.fake.script("/api/chat", o.ok("primary"))
    raw = routed([backend("primary", primary.url), backend("candidate", candidate.url)],
                 {"targets": [{"backend": "primary"}], "shadow": {"backend": "candidate", "share": 1.0}})
    gw = await start_gateway(raw)
    async with gw.client() as client:
        async with client.responses.stream(model="llama3.2", input="Hi", instructions="Be brief.") as stream:
            assert (await stream.get_final_response()).output_text == "primary"
    deadline = time.monotonic() + 5
    while not candidate.fake.requests:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.01)
    (sent,) = candidate.fake.bodies("/api/chat")
    assert sent["stream"] is False and sent["messages"] == primary.fake.bodies("/api/chat")[0]["messages"]


@pytest.mark.parametrize(("query", "param"), [("limit=0", "limit"), ("limit=101", "limit"), ("limit=ten", "limit"),
                                              ("order=up", "order"), ("after=msg_nope", "after")])
async def test_bad_input_items_queries_are_400s(fake_ollama, gateway, query, param):
    """Each bad list parameter is a 400 naming it."""
    _, stored, _ = await post(gateway.url, {"model": "llama3.2", "input": "Hi"})
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{gateway.url}/v1/responses/{stored['id']}/input_items?{query}") as resp:
            assert resp.status == 400 and (await resp.json())["error"]["param"] == param
        async with session.get(f"{gateway.url}/v1/responses/{stored['id']}?stream=true") as resp:
            assert resp.status == 400 and (await resp.json())["error"]["param"] == "stream"
        async with session.put(f"{gateway.url}/v1/responses") as resp:
            assert resp.status == 405 and (await resp.json())["error"]["type"] == "invalid_request_error"
