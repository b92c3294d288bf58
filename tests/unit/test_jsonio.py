"""``dumps_kept``: bytes that outlive a request take their own size in memory, not orjson's buffer."""

from __future__ import annotations

import tracemalloc

import orjson

from proxy.jsonio import dumps, dumps_kept

BODY = {"model": "llama3.2", "messages": [{"role": "user", "content": "hi"}], "stream": True}


def _kept_bytes_each(make, n: int = 200) -> float:
    tracemalloc.start()
    try:
        before = tracemalloc.take_snapshot()
        kept = [make() for _ in range(n)]
        after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    assert len(kept) == n
    return sum(stat.size_diff for stat in after.compare_to(before, "filename")) / n


def test_kept_bytes_use_their_length_not_the_serialiser_buffer() -> None:
    size = len(dumps(BODY))
    assert dumps_kept(BODY) == dumps(BODY) and orjson.loads(dumps_kept(BODY)) == BODY
    # the bytes object's header and its length; orjson 3.12's own result holds 4 KiB
    assert _kept_bytes_each(lambda: dumps_kept(BODY)) < size + 64


def test_non_string_keys_as_dumps() -> None:
    assert dumps_kept({1: "a"}) == dumps({1: "a"}) == b'{"1":"a"}'
