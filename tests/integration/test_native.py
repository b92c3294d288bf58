"""Ollama's native API in front, on the wire: routing, NDJSON pass-through, errors in Ollama's shape,
the merged model lists and the version, through the running gateway and fake backends."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import orjson
import pytest

from proxy.background.health import check_all
from tests.fakes import ollama as o
from tests.integration.test_observability import eventually, scrape, series
from tests.integration.test_observability_logs import log_lines
from tests.integration.test_routing import HI, backend, closed_port, routed

CHAT = {"model": "llama3.2", "messages": HI}


async def call(url: str, path: str, body: Any = None, *, method: str = "POST", raw: bytes | None = None,
               headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    async with aiohttp.ClientSession() as session:
        kwargs: dict[str, Any] = {"headers": headers or {}}
        if raw is not None:
            kwargs["data"] = raw
        elif body is not None:
            kwargs["json"] = body
        async with session.request(method, url + path, **kwargs) as resp:
            return resp.status, dict(resp.headers), await resp.read()


def lines(raw: bytes) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in raw.splitlines() if line]


async def test_chat_streams_by_default_with_the_asked_name_in_every_line(start_fake, start_gateway):
    """No ``stream`` field: Ollama's default, a stream; each line says the alias, the final line counts tokens."""
    local = await start_fake()
    local.fake.script("/api/chat", o.ok("a b"))
    gw = await start_gateway(routed([backend("local", local.url)],
                                    {"models": ["assistant"], "targets": [{"backend": "local", "model": "llama3.2"}],
                                     "options": {"num_ctx": 8192, "temperature": 0.1}, "keep_alive": "30m"}))
    status, headers, raw = await call(gw.url, "/api/chat", {"model": "assistant", "messages": HI,
                                                            "options": {"temperature": 0.7}, "think": False})
    assert status == 200
    assert headers["Content-Type"] == "application/x-ndjson"
    assert (headers["x-gateway-backend"], headers["x-gateway-model"], headers["x-gateway-route"]) == (
        "local", "llama3.2", "chat")
    got = lines(raw)
    assert [line["message"]["content"] for line in got] == ["a ", "b", ""]
    assert {line["model"] for line in got} == {"assistant"}
    assert got[-1]["done"] is True and got[-1]["eval_count"] == 2
    assert local.fake.bodies("/api/chat") == [{"model": "llama3.2", "messages": HI, "think": False,
                                               "options": {"num_ctx": 8192, "temperature": 0.7},
                                               "keep_alive": "30m"}]


async def test_ollama_timings_and_tokens_are_counted(start_fake, start_gateway):
    local = await start_fake()
    local.fake.script("/api/generate", o.ok("a b c d", load_ns=250_000_000), o.ok("x y"))
    gw = await start_gateway(routed([backend("local", local.url)], {"targets": [{"backend": "local"}]}))
    await call(gw.url, "/api/generate", {"model": "llama3.2", "prompt": "hi"})
    await call(gw.url, "/api/generate", {"model": "llama3.2", "prompt": "hi", "stream": False})
    bm = {"backend": "local", "model": "llama3.2"}
    await eventually(lambda: scrape(gw).get(series("proxy_ollama_load_duration_seconds_count", **bm)) == 2.0)
    s = scrape(gw)
    assert s[series("proxy_ollama_cold_starts_total", **bm)] == 1.0
    assert s[series("proxy_tokens_total", route="chat", **bm, kind="prompt")] == 14.0
    assert s[series("proxy_tokens_total", route="chat", **bm, kind="completion")] == 6.0


async def test_whole_answers_are_passed_through_renamed(start_fake, start_gateway):
    local = await start_fake()
    gw = await start_gateway(routed([backend("local", local.url)],
                                    {"models": ["embedder"], "targets": [{"backend": "local",
                                                                          "model": "nomic-embed-text"}]}))
    status, _, raw = await call(gw.url, "/api/embed", {"model": "embedder", "input": "x", "truncate": True})
    answer = orjson.loads(raw)
    assert (status, answer["model"], len(answer["embeddings"]), answer["prompt_eval_count"]) == (200, "embedder", 1, 4)
    assert local.fake.bodies("/api/embed") == [{"model": "nomic-embed-text", "input": "x", "truncate": True}]
    status, _, raw = await call(gw.url, "/api/show", {"name": "embedder"})  # older clients say "name"
    assert (status, orjson.loads(raw)["capabilities"]) == (200, ["completion"])
    assert local.fake.bodies("/api/show") == [{"model": "nomic-embed-text"}]


async def test_falls_back_to_the_next_ollama_backend(start_fake, start_gateway):
    gpu1, gpu2 = await start_fake(), await start_fake()
    gpu1.fake.script("/api/chat", o.status(500, "CUDA error"))
    gw = await start_gateway(routed([backend("gpu1", gpu1.url), backend("gpu2", gpu2.url)],
                                    {"targets": [{"backend": "gpu1"}], "fallback": [{"backend": "gpu2"}]}))
    status, headers, raw = await call(gw.url, "/api/chat", {**CHAT, "stream": False})
    assert (status, headers["x-gateway-backend"], orjson.loads(raw)["message"]["content"]) == (
        200, "gpu2", "Hello world")
    assert len(gpu1.fake.bodies("/api/chat")) == 1


async def test_openai_targets_are_skipped_for_native_calls(start_fake, start_openai, start_gateway):
    """The cloud primary is left out (no translation exists): the Ollama fallback serves; the cloud sees nothing."""
    local = await start_fake()
    cloud, cloud_url = await start_openai()
    gw = await start_gateway(routed([backend("cloud", cloud_url, "openai"), backend("local", local.url)],
                                    {"targets": [{"backend": "cloud", "model": "gpt-4o-mini"}],
                                     "fallback": [{"backend": "local"}]}))
    status, headers, _ = await call(gw.url, "/api/chat", {**CHAT, "stream": False})
    assert (status, headers["x-gateway-backend"]) == (200, "local")
    assert cloud.requests == []


async def test_a_split_arm_on_a_cloud_is_replaced_by_an_ollama_arm(start_fake, start_openai, start_gateway):
    local = await start_fake()
    cloud, cloud_url = await start_openai()
    gw = await start_gateway(routed([backend("cloud", cloud_url, "openai"), backend("local", local.url)],
                                    {"targets": [{"backend": "cloud", "weight": 99}, {"backend": "local", "weight": 1}],
                                     "sticky": []}))
    statuses = [(await call(gw.url, "/api/chat", {**CHAT, "stream": False}))[0] for _ in range(5)]
    assert statuses == [200] * 5
    assert len(local.fake.bodies("/api/chat")) == 5 and cloud.requests == []


async def test_a_route_only_on_clouds_answers_a_clear_400(start_openai, start_gateway):
    cloud, cloud_url = await start_openai()
    gw = await start_gateway(routed([backend("cloud", cloud_url, "openai")], {"targets": [{"backend": "cloud"}]}))
    status, headers, raw = await call(gw.url, "/api/chat", CHAT)
    assert status == 400
    assert headers["Content-Type"].startswith("application/json")
    assert orjson.loads(raw) == {"error": "The model 'llama3.2' is served only by OpenAI-compatible backends (cloud); "
                                          "Ollama's native API cannot reach them. Use /v1/chat/completions or "
                                          "/v1/embeddings for this model."}
    assert cloud.requests == []


@pytest.mark.parametrize("raw, error", [
    (b"{not json", "We could not parse the JSON body of your request. The body must be valid UTF-8 JSON."),
    (b"[1, 2]", "The request body must be a JSON object."),
    (b'{"messages": []}', "Missing required parameter: 'model'."),
    (b'{"model": 7}', "Invalid type for 'model': expected a string, but got number."),
    (b'{"model": "llama3.2", "stream": "yes"}', "Invalid type for 'stream': expected a boolean."),
    (b'{"model": "llama3.2", "options": [1]}', "Invalid type for 'options': expected an object, but got array."),
])
async def test_bad_bodies_are_400_in_ollama_shape(gateway, fake_ollama, raw, error):
    status, _, body = await call(gateway.url, "/api/chat", raw=raw, headers={"Content-Type": "application/json"})
    assert (status, orjson.loads(body)) == (400, {"error": error})
    assert fake_ollama.fake.bodies("/api/chat") == []


async def test_unknown_model_and_backend_down_in_ollama_shape(start_fake, start_gateway):
    local = await start_fake()
    gw = await start_gateway(routed([backend("local", local.url), backend("down", f"http://127.0.0.1:{closed_port()}")],
                                    {"targets": [{"backend": "local"}]},
                                    ))
    status, _, raw = await call(gw.url, "/api/chat", {"model": "nobody", "messages": HI})
    assert (status, orjson.loads(raw)) == (404, {"error": "The model 'nobody' does not exist or you do not have "
                                                          "access to it."})
    status, _, raw = await call(gw.url, "/api/chat", {"model": "llama3.2", "messages": HI})
    assert status == 200
    gw2 = await start_gateway(routed([backend("down", f"http://127.0.0.1:{closed_port()}")],
                                     {"targets": [{"backend": "down"}]}))
    status, headers, raw = await call(gw2.url, "/api/generate", {"model": "llama3.2", "prompt": "x"})
    assert (status, orjson.loads(raw)) == (502, {"error": "backend down is unreachable (connection refused)"})
    assert headers["x-should-retry"] == "false"
    status, _, raw = await call(gw.url, "/api/chat", method="GET")
    assert (status, orjson.loads(raw)) == (405, {"error": "Method GET is not allowed on /api/chat"})
    status, _, raw = await call(gw.url, "/api/blobs/sha256:abc", method="HEAD")
    assert (status, raw) == (404, b"")
    status, _, raw = await call(gw.url, "/api/blobs/sha256:abc", {})
    assert (status, orjson.loads(raw)) == (404, {"error": "Unknown path: POST /api/blobs/sha256:abc"})


async def test_a_failure_after_the_first_line_ends_with_an_error_line(start_fake, start_gateway):
    local = await start_fake()
    local.fake.script("/api/generate", o.truncate_after(2))
    gw = await start_gateway(routed([backend("local", local.url)], {"targets": [{"backend": "local"}]}))
    status, _, raw = await call(gw.url, "/api/generate", {"model": "llama3.2", "prompt": "x"})
    got = lines(raw)
    assert status == 200
    assert [line.get("response") for line in got[:2]] == ["t0 ", "t1 "]
    assert got[2:] == [{"error": "backend local closed the answer before it was complete"}]


async def test_a_client_leaving_mid_stream_closes_the_backend_stream(start_fake, start_gateway):
    local = await start_fake()
    local.fake.script("/api/chat", o.stream_forever(0.02))
    gw = await start_gateway(routed([backend("local", local.url)], {"targets": [{"backend": "local"}]}))
    async with aiohttp.ClientSession() as session:
        async with session.post(gw.url + "/api/chat", json=CHAT) as resp:
            assert orjson.loads(await resp.content.readline())["message"]["content"] == "tok "
    await eventually(lambda: local.fake.disconnects == 1)


async def test_root_answers_as_ollama_does(gateway):
    status, headers, raw = await call(gateway.url, "/", method="GET")
    assert (status, raw, headers["Content-Type"]) == (200, b"Ollama is running", "text/plain; charset=utf-8")
    status, _, raw = await call(gateway.url, "/", method="HEAD")
    assert (status, raw) == (200, b"")


async def test_version_is_the_lowest_among_the_ollama_backends(start_fake, start_gateway):
    new, old = await start_fake(version="0.33.10"), await start_fake(version="0.33.9")
    gw = await start_gateway(routed([backend("new", new.url), backend("old", old.url),
                                     backend("down", f"http://127.0.0.1:{closed_port()}")],
                                    {"targets": [{"backend": "new"}]}))
    status, _, raw = await call(gw.url, "/api/version", method="GET")
    assert (status, orjson.loads(raw)) == (200, {"version": "0.33.9"})


async def test_tags_merge_backends_once_each_and_skip_what_no_route_serves(start_fake, start_openai, start_gateway):
    gpu1 = await start_fake(models=["llama3.2:latest", "qwen2.5:7b"])
    gpu2 = await start_fake(models=["qwen2.5:7b", "phi4:14b", "secret:1b"])
    _, cloud_url = await start_openai()
    gw = await start_gateway({
        "backends": [backend("gpu1", gpu1.url), backend("gpu2", gpu2.url), backend("cloud", cloud_url, "openai")],
        "routes": [
            {"name": "fast", "models": ["fast"], "targets": [{"backend": "gpu1", "model": "phi4:14b"}],
             "fallback": [{"backend": "gpu2", "model": "phi4:14b"}]},  # listed: its fallback has the model
            {"name": "ghost", "models": ["ghost"], "targets": [{"backend": "gpu1", "model": "nothing-here"}]},
            {"name": "cloudy", "models": ["gpt-4o", "secret*"], "targets": [{"backend": "cloud"}]},
            {"name": "rest", "models": ["llama3*", "qwen*", "phi*"], "targets": [{"backend": ["gpu1", "gpu2"]}]},
        ], "logging": {"requests": False}})
    status, _, raw = await call(gw.url, "/api/tags", method="GET")
    models = orjson.loads(raw)["models"]
    assert status == 200
    assert [(m["name"], m["model"]) for m in models] == [
        ("fast", "fast"), ("llama3.2:latest", "llama3.2:latest"), ("qwen2.5:7b", "qwen2.5:7b"),
        ("phi4:14b", "phi4:14b")]
    assert models[0]["details"] == {"family": "llama", "parameter_size": "3B", "quantization_level": "Q4_K_M"}


async def test_tags_and_ps_fail_only_when_no_backend_answers(start_fake, start_gateway):
    up = await start_fake(running=["llama3.2:latest"])
    down = f"http://127.0.0.1:{closed_port()}"
    gw = await start_gateway(routed([backend("up", up.url), backend("down", down)],
                                    {"models": ["*"], "targets": [{"backend": ["up", "down"]}]}))
    status, _, raw = await call(gw.url, "/api/ps", method="GET")
    assert (status, [m["model"] for m in orjson.loads(raw)["models"]]) == (200, ["llama3.2:latest"])
    gw_down = await start_gateway(routed([backend("down", down)], {"models": ["*"], "targets": [{"backend": "down"}]}))
    for path in ("/api/tags", "/api/ps", "/api/version"):
        status, _, raw = await call(gw_down.url, path, method="GET")
        assert (status, orjson.loads(raw)) == (502, {"error": "backend down is unreachable (connection refused)"})


async def test_concurrent_streams_each_get_their_own_lines(start_fake, start_gateway):
    local = await start_fake()
    local.fake.script("/api/chat", o.ok("one two three", delay=0.01))
    gw = await start_gateway(routed([backend("local", local.url)], {"targets": [{"backend": "local"}]}))
    results = await asyncio.gather(*(call(gw.url, "/api/chat", CHAT) for _ in range(8)))
    assert [[line["message"]["content"] for line in lines(raw)] for _, _, raw in results] == \
        [["one ", "two ", "three", ""]] * 8


async def test_native_calls_are_in_the_request_log_with_timings_and_text(start_fake, start_gateway, tmp_path):
    """A streamed chat and a whole generate: one record each, with the fallback path, Ollama's timings and tokens."""
    local = await start_fake()
    local.fake.script("/api/chat", o.ok("sun moon", load_ns=300_000_000))
    local.fake.script("/api/generate", o.ok("star"))
    raw = routed([backend("dead", f"http://127.0.0.1:{closed_port()}"), backend("local", local.url)],
                 {"targets": [{"backend": "dead"}], "fallback": [{"backend": "local"}]})
    raw["logging"] = {"requests": True, "file": str(tmp_path / "requests.log"), "include_prompts": True}
    gw = await start_gateway(raw)
    await call(gw.url, "/api/chat", CHAT)
    await call(gw.url, "/api/generate", {"model": "llama3.2", "prompt": "shine", "stream": False})
    chat, generate = (orjson.loads(line) for line in await log_lines(tmp_path / "requests.log", 2))
    assert {k: chat[k] for k in ("path", "route", "model", "backend", "status", "outcome", "stream", "fallback_path",
                                 "load_ms", "prompt_tokens", "completion_tokens", "prompt", "answer")} == {
        "path": "/api/chat", "route": "chat", "model": "llama3.2", "backend": "local", "status": 200, "outcome": "ok",
        "stream": True, "fallback_path": ["dead:llama3.2", "local:llama3.2"], "load_ms": 300.0, "prompt_tokens": 7,
        "completion_tokens": 2, "prompt": orjson.dumps(HI).decode(), "answer": "sun moon"}
    assert (generate["stream"], generate["prompt"], generate["answer"], generate["completion_tokens"]) == (
        False, '"shine"', "star", 1)


async def test_a_pool_prefers_the_host_with_the_model_loaded(start_fake, start_gateway):
    cold, warm = await start_fake(), await start_fake(running=["llama3.2:latest"])
    gw = await start_gateway(routed([backend("cold", cold.url), backend("warm", warm.url)],
                                    {"targets": [{"backend": ["cold", "warm"]}]}))
    await check_all(gw.backends)
    served = [(await call(gw.url, "/api/chat", {**CHAT, "stream": False}))[1]["x-gateway-backend"] for _ in range(3)]
    assert served == ["warm"] * 3
    assert cold.fake.bodies("/api/chat") == []


async def test_a_sticky_header_keeps_a_session_on_one_split_arm(start_fake, start_gateway):
    a, b = await start_fake(), await start_fake()
    gw = await start_gateway(routed([backend("a", a.url), backend("b", b.url)],
                                    {"targets": [{"backend": "a", "weight": 50}, {"backend": "b", "weight": 50}],
                                     "sticky": ["header:X-Session-Id"]}))

    async def served(session: str) -> str:
        _, headers, _ = await call(gw.url, "/api/generate", {"model": "llama3.2", "prompt": "x", "stream": False},
                                   headers={"X-Session-Id": session})
        return headers["x-gateway-backend"]

    for session in ("s1", "s2", "s3"):
        assert len({await served(session) for _ in range(4)}) == 1
    assert {await served(f"session-{i}") for i in range(24)} == {"a", "b"}


async def test_per_credential_limits_answer_429_in_ollama_shape(fake_ollama, start_gateway):
    gw = await start_gateway({"backends": [backend("local", fake_ollama.url)], "logging": {"requests": False},
                              "auth": {"credentials": [{"name": "tight", "api_key": "sk-tight-0001",
                                                        "requests_per_minute": 1}]}})
    headers = {"Authorization": "Bearer sk-tight-0001"}
    first = await call(gw.url, "/api/chat", {**CHAT, "stream": False}, headers=headers)
    status, answer_headers, raw = await call(gw.url, "/api/chat", {**CHAT, "stream": False}, headers=headers)
    assert (first[0], status, set(orjson.loads(raw))) == (200, 429, {"error"})
    assert int(answer_headers["Retry-After"]) > 0
