"""The in-memory response store: per-owner keys, and its three bounds (entries, bytes, time to live);
and the gateway using a store it is given."""

from __future__ import annotations

import orjson
import pytest

from proxy.app import create_app
from proxy.config import parse_config
from proxy.handlers.responses import RESPONSES
from proxy.responses_store import MemoryResponseStore, StoredResponse
from proxy.server import start_site
from tests.conftest import one_backend_config


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def entry(text: str = "hi") -> StoredResponse:
    return StoredResponse(response={"id": "x", "output": [{"type": "message", "content": text}]},
                          input_items=[{"id": "msg_1", "type": "message", "role": "user", "content": text}])


async def test_owners_do_not_see_each_other():
    """The same id under two owners is two entries; a get or delete by the wrong owner finds nothing."""
    store = MemoryResponseStore()
    await store.put("alice", "resp_1", entry("a"))
    assert await store.get("bob", "resp_1") is None
    assert await store.delete("bob", "resp_1") is False
    got = await store.get("alice", "resp_1")
    assert got is not None and got.conversation()[-1]["content"] == "a"
    assert await store.delete("alice", "resp_1") is True and await store.get("alice", "resp_1") is None


async def test_get_returns_a_copy():
    """What get returns can be changed without changing what is stored."""
    store = MemoryResponseStore()
    original = entry()
    await store.put("", "resp_1", original)
    original.input_items.append({"id": "late"})
    got = await store.get("", "resp_1")
    assert got is not None and len(got.input_items) == 1
    got.input_items.clear()
    assert len((await store.get("", "resp_1")).input_items) == 1  # type: ignore[union-attr]


async def test_oldest_entries_go_past_max_entries():
    store = MemoryResponseStore(max_entries=3)
    for i in range(5):
        await store.put("", f"resp_{i}", entry())
    assert len(store) == 3
    assert [await store.get("", f"resp_{i}") is not None for i in range(5)] == [False, False, True, True, True]


async def test_oldest_entries_go_past_max_bytes():
    """Bytes count the serialised entry; an entry larger than the whole store is not kept."""
    sample = entry("a" * 100)
    one = len(orjson.dumps({"response": sample.response, "input_items": sample.input_items}))
    store = MemoryResponseStore(max_bytes=3 * one + one // 2)
    for i in range(4):
        await store.put("", f"resp_{i}", entry("a" * 100))
    assert len(store) == 3 and await store.get("", "resp_0") is None
    assert store.size_bytes <= store.max_bytes
    await store.put("", "huge", entry("a" * 10_000))
    assert await store.get("", "huge") is None and len(store) == 3


async def test_entries_expire_after_ttl():
    clock = Clock()
    store = MemoryResponseStore(ttl=60, now=clock)
    await store.put("", "old", entry())
    clock.now += 30
    await store.put("", "new", entry())
    clock.now += 31
    assert await store.get("", "old") is None and await store.get("", "new") is not None
    clock.now += 30
    assert await store.get("", "new") is None and len(store) == 0 and store.size_bytes == 0


async def test_putting_an_id_again_replaces_it():
    store = MemoryResponseStore(max_entries=2)
    await store.put("", "a", entry("1"))
    await store.put("", "a", entry("2"))
    assert len(store) == 1 and (await store.get("", "a")).input_items[0]["content"] == "2"  # type: ignore[union-attr]


@pytest.mark.parametrize("settings", [{"max_entries": 0}, {"ttl": 0}, {"max_bytes": 0}])
def test_bounds_must_be_positive(settings):
    with pytest.raises(ValueError):
        MemoryResponseStore(**settings)


async def test_the_gateway_uses_the_store_of_its_app(fake_ollama):
    """The app's RESPONSES key holds the store: a bounded one set there keeps one response at a time."""
    import openai

    config = parse_config(one_backend_config(fake_ollama.url), {})
    app = create_app(config, health_checks=False)
    app[RESPONSES] = store = MemoryResponseStore(max_entries=1)
    runner, port = await start_site(app, config, host="127.0.0.1", port=0)
    try:
        async with openai.AsyncOpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="k", max_retries=0) as client:
            first = await client.responses.create(model="llama3.2", input="one")
            second = await client.responses.create(model="llama3.2", input="two")
            with pytest.raises(openai.NotFoundError):
                await client.responses.retrieve(first.id)
            assert (await client.responses.retrieve(second.id)).id == second.id
        assert len(store) == 1
    finally:
        await runner.cleanup()
