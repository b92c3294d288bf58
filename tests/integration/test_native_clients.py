"""Ollama's native API in front, driven by the clients that speak it: the official ``ollama`` Python
client and LangChain's ``ChatOllama``, with HTTP Basic auth as they send it to a secured remote Ollama."""

from __future__ import annotations

import asyncio
import base64
from typing import Any

import httpx
import ollama
import pytest
from langchain_core.messages import AIMessage, AIMessageChunk
from langchain_ollama import ChatOllama

from tests.conftest import one_backend_config
from tests.fakes.ollama import error_line_after, ok

ENV = {"ALICE_PW": "alice-password-0001", "ADMIN_PW": "admin-password-0002", "BOB_PW": "bob-password-0003"}
MESSAGES = [{"role": "user", "content": "hi"}]


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


ALICE = basic("alice", ENV["ALICE_PW"])
ADMIN = basic("admin", ENV["ADMIN_PW"])
BOB = basic("bob", ENV["BOB_PW"])  # no allow-list


def secured_config(url: str, **extra: Any) -> dict[str, Any]:
    return one_backend_config(url, auth={
        "credentials": [{"name": "alice", "username": "alice", "password": "${ALICE_PW}",
                         "models": ["llama3.2*", "nomic-embed-text*", "assistant"]},
                        {"name": "bob", "username": "bob", "password": "${BOB_PW}"},
                        {"name": "keyed", "api_key": "${BOB_PW}-key", "models": ["llama3.2*"]}],
        "admin": {"username": "admin", "password": "${ADMIN_PW}"},
    }, routes=[
        {"name": "assistant", "models": ["assistant"], "targets": [{"backend": "local", "model": "llama3.2:latest"}]},
        {"name": "default", "models": ["*"], "targets": [{"backend": "local"}]},
    ], **extra)


@pytest.fixture
async def secured(fake_ollama, start_gateway):
    return await start_gateway(secured_config(fake_ollama.url), environ=ENV)


_OPEN: list[ollama.AsyncClient] = []


@pytest.fixture(autouse=True)
async def _close_clients() -> Any:
    """Every client a test made is closed at its end (httpx warns about sockets left open)."""
    yield
    while _OPEN:
        await _OPEN.pop()._client.aclose()


def client(gateway: Any, headers: dict[str, str] | None = None, **kwargs: Any) -> ollama.AsyncClient:
    made = ollama.AsyncClient(host=gateway.url, headers=headers, timeout=20, **kwargs)
    _OPEN.append(made)
    return made


def chat_ollama(**kwargs: Any) -> ChatOllama:
    llm = ChatOllama(**kwargs)
    _OPEN.append(llm._async_client)
    return llm


async def test_chat_with_a_basic_auth_header(secured, fake_ollama):
    """A whole chat answer comes back under the name asked for; the backend got the body natively."""
    answer = await client(secured, ALICE).chat(model="assistant", messages=MESSAGES, options={"num_ctx": 2048})
    assert answer.message.content == "Hello world"
    assert answer.model == "assistant"
    assert (answer.prompt_eval_count, answer.eval_count, answer.done_reason) == (7, 2, "stop")
    sent = fake_ollama.fake.bodies("/api/chat")[-1]
    assert sent == {"model": "llama3.2:latest", "messages": MESSAGES, "stream": False, "options": {"num_ctx": 2048},
                    "tools": []}
    assert "authorization" not in {k.lower() for k in fake_ollama.fake.requests[-1][3]}


async def test_chat_with_httpx_basic_auth(secured):
    """``auth=(user, password)`` (httpx's own Basic auth, passed through by the client) works as well."""
    answer = await client(secured, auth=("alice", ENV["ALICE_PW"])).chat(model="llama3.2", messages=MESSAGES)
    assert (answer.message.content, answer.model) == ("Hello world", "llama3.2")


async def test_a_bearer_key_works_as_ollama_api_key_sends_it(secured):
    answer = await client(secured, {"Authorization": f"Bearer {ENV['BOB_PW']}-key"}).chat(model="llama3.2",
                                                                                          messages=MESSAGES)
    assert answer.message.content == "Hello world"


async def test_the_root_needs_a_credential_too(secured):
    async with httpx.AsyncClient(base_url=secured.url) as http:
        refused, served = await http.get("/"), await http.get("/", headers=ALICE)
    assert (refused.status_code, refused.headers["WWW-Authenticate"]) == (401, 'Basic realm="ollama-gateway", '
                                                                              'charset="UTF-8"')
    assert (served.status_code, served.text) == (200, "Ollama is running")


async def test_streamed_chat_arrives_line_by_line_under_the_asked_name(secured, fake_ollama):
    fake_ollama.fake.script("/api/chat", ok("one two three"))
    parts = [part async for part in await client(secured, ALICE).chat(model="assistant", messages=MESSAGES,
                                                                        stream=True)]
    assert [p.message.content for p in parts] == ["one ", "two ", "three", ""]
    assert {p.model for p in parts} == {"assistant"}
    assert [p.done for p in parts] == [False, False, False, True]
    assert (parts[-1].prompt_eval_count, parts[-1].eval_count) == (7, 3)


async def test_a_stream_failing_midway_raises_response_error(secured, fake_ollama):
    fake_ollama.fake.script("/api/chat", error_line_after(2, "model runner crashed"))
    seen = []
    with pytest.raises(ollama.ResponseError) as info:
        async for part in await client(secured, ALICE).chat(model="llama3.2", messages=MESSAGES, stream=True):
            seen.append(part.message.content)
    assert seen == ["t0 ", "t1 "]
    assert info.value.error == "backend local failed: model runner crashed"


async def test_generate_streamed_and_not(secured, fake_ollama):
    fake_ollama.fake.script("/api/generate", ok("Why is the sky blue"))
    c = client(secured, ALICE)
    whole = await c.generate(model="llama3.2", prompt="Q?")
    assert (whole.response, whole.model, whole.done) == ("Why is the sky blue", "llama3.2", True)
    parts = [p.response async for p in await c.generate(model="llama3.2", prompt="Q?", stream=True)]
    assert "".join(parts) == "Why is the sky blue"
    assert fake_ollama.fake.bodies("/api/generate")[-1]["stream"] is True


async def test_embed_and_legacy_embeddings(secured, fake_ollama):
    c = client(secured, ALICE)
    embedded = await c.embed(model="nomic-embed-text", input=["a", "b"])
    assert (embedded.model, len(embedded.embeddings), len(embedded.embeddings[0])) == ("nomic-embed-text", 2, 768)
    legacy = await c.embeddings(model="nomic-embed-text", prompt="a")
    assert len(legacy.embedding) == 768
    assert fake_ollama.fake.bodies("/api/embeddings")[-1] == {"model": "nomic-embed-text", "prompt": "a"}


async def test_list_shows_the_alias_and_what_the_credential_may_use(fake_ollama, start_gateway):
    fake_ollama.fake.models.append("qwen2.5:7b")
    gateway = await start_gateway(secured_config(fake_ollama.url), environ=ENV)
    listed = await client(gateway, ALICE).list()
    assert [m.model for m in listed.models] == ["assistant", "llama3.2:latest", "nomic-embed-text:latest"]
    assert listed.models[0].details.parameter_size == "3B"  # the entry of the model the alias maps to
    assert [m.model for m in (await client(gateway, BOB).list()).models] == [
        "assistant", "llama3.2:latest", "nomic-embed-text:latest", "qwen2.5:7b"]


async def test_ps_lists_the_running_models(start_fake, start_gateway):
    backend = await start_fake(running=["llama3.2:latest", "qwen2.5:7b"])
    gateway = await start_gateway(secured_config(backend.url), environ=ENV)
    running = await client(gateway, ALICE).ps()
    assert [(m.model, m.context_length) for m in running.models] == [("assistant", 4096), ("llama3.2:latest", 4096)]


async def test_show_is_routed_by_model(secured, fake_ollama):
    shown = await client(secured, ALICE).show("assistant")
    assert shown.capabilities == ["completion"]
    assert fake_ollama.fake.bodies("/api/show")[-1] == {"model": "llama3.2:latest"}


async def test_pull_needs_the_admin_credential(secured, fake_ollama):
    with pytest.raises(ollama.ResponseError) as refused:
        await client(secured, ALICE).pull("phi4:14b")
    assert (refused.value.status_code, refused.value.error) == (403, "/api/pull needs the admin credential.")
    with pytest.raises(ollama.ResponseError) as anonymous:
        await client(secured).pull("phi4:14b")
    assert (anonymous.value.status_code, anonymous.value.error) == (401, "Admin credentials are required.")
    assert fake_ollama.fake.bodies("/api/pull") == []


async def test_pull_with_the_admin_credential_streams_progress(secured, fake_ollama):
    c = client(secured, ADMIN)
    progress = [p async for p in await c.pull("phi4:14b", stream=True)]
    assert progress[0].status == "pulling manifest"
    assert progress[-1].status == "success"
    assert any(p.total == 100 and p.completed == 100 for p in progress)
    assert fake_ollama.fake.bodies("/api/pull") == [{"model": "phi4:14b", "stream": True}]
    assert (await c.pull("phi4:14b")).status == "success"  # stream=False: one object once it is done
    assert "phi4:14b" in [m.model for m in (await client(secured, BOB).list()).models]


async def test_errors_arrive_as_response_errors_with_status(secured, fake_ollama):
    c = client(secured, ALICE)
    with pytest.raises(ollama.ResponseError) as missing:
        await c.chat(model="llama3.2:404", messages=MESSAGES)
    assert (missing.value.status_code, missing.value.error) == (404, "model 'llama3.2:404' not found")
    with pytest.raises(ollama.ResponseError) as forbidden:
        await c.chat(model="qwen2.5:7b", messages=MESSAGES)
    assert (forbidden.value.status_code, forbidden.value.error) == (
        403, "The credential 'alice' may not use the model 'qwen2.5:7b'.")
    with pytest.raises(ollama.ResponseError) as unauthenticated:
        await client(secured, basic("alice", "wrong")).list()
    assert unauthenticated.value.status_code == 401


async def test_chat_ollama_invoke_and_stream(secured, fake_ollama):
    """LangChain's ChatOllama with the Basic header in ``client_kwargs``; its credentials in the URL work too."""
    fake_ollama.fake.script("/api/chat", ok("Hello from the gateway"))
    llm = chat_ollama(model="assistant", base_url=secured.url, client_kwargs={"headers": ALICE})
    reply = await llm.ainvoke("hi")
    assert isinstance(reply, AIMessage)
    assert reply.content == "Hello from the gateway"
    assert reply.usage_metadata is not None and reply.usage_metadata["input_tokens"] == 7
    chunks = [chunk async for chunk in llm.astream("hi")]
    assert all(isinstance(c, AIMessageChunk) for c in chunks)
    assert "".join(str(c.content) for c in chunks) == "Hello from the gateway"
    in_url = secured.url.replace("http://", f"http://alice:{ENV['ALICE_PW']}@")
    assert (await chat_ollama(model="llama3.2", base_url=in_url).ainvoke("hi")).content == "Hello from the gateway"


async def test_chat_ollama_without_credentials_gets_401(secured):
    with pytest.raises(ollama.ResponseError) as info:
        await chat_ollama(model="llama3.2", base_url=secured.url).ainvoke("hi")
    assert info.value.status_code == 401


def test_httpx_is_what_the_client_sends_with():
    """The client forwards its keyword arguments to httpx (so ``auth=`` and ``headers=`` reach the wire)."""
    with ollama.Client(host="http://127.0.0.1:1", auth=("a", "b")) as made:
        assert isinstance(made._client, httpx.Client)
        assert isinstance(made._client.auth, httpx.BasicAuth)


async def test_the_blocking_clients_work_too(secured, fake_ollama):
    """``ollama.Client`` and ChatOllama's ``invoke``/``stream`` (run in a worker thread beside the gateway)."""
    fake_ollama.fake.script("/api/chat", ok("Hello from the gateway"))

    def blocking() -> tuple[str, list[str], str, list[str]]:
        with ollama.Client(host=secured.url, auth=("alice", ENV["ALICE_PW"]), timeout=20) as sync:
            whole = sync.chat(model="assistant", messages=MESSAGES).message.content or ""
            parts = [p.message.content or "" for p in sync.chat(model="assistant", messages=MESSAGES, stream=True)]
        llm = ChatOllama(model="assistant", base_url=secured.url, client_kwargs={"headers": ALICE})
        try:
            reply = str(llm.invoke("hi").content)
            chunks = [str(c.content) for c in llm.stream("hi")]
        finally:
            llm._client._client.close()
            _OPEN.append(llm._async_client)
        return whole, parts, reply, chunks

    whole, parts, reply, chunks = await asyncio.to_thread(blocking)
    assert (whole, "".join(parts), reply, "".join(chunks)) == ("Hello from the gateway",) * 4
