"""Compressed request bodies (``Content-Encoding: gzip`` or ``zstd``, as the Codex CLI sends) on every
model POST endpoint, and compression bombs refused with a 413 once the decoded size passes the limit."""

from __future__ import annotations

import gzip
import resource
import zlib
from typing import Any

import aiohttp
import orjson
import pytest
from backports import zstd

from tests.conftest import one_backend_config

BODIES: dict[str, dict[str, Any]] = {
    "/v1/responses": {"model": "llama3.2", "input": "Hi"},
    "/v1/chat/completions": {"model": "llama3.2", "messages": [{"role": "user", "content": "Hi"}]},
    "/v1/completions": {"model": "llama3.2", "prompt": "Hi"},
    "/v1/embeddings": {"model": "nomic-embed-text", "input": "Hi"},
}
MIB = 1 << 20
ENCODERS = {"gzip": gzip.compress, "zstd": zstd.compress, "deflate": zlib.compress}


async def post(url: str, data: bytes, encoding: str) -> tuple[int, dict[str, Any]]:
    headers = {"Content-Type": "application/json", "Content-Encoding": encoding}
    async with aiohttp.ClientSession() as session, session.post(url, data=data, headers=headers) as resp:
        return resp.status, orjson.loads(await resp.read())


def zeros_zstd(size: int) -> bytes:
    compressor = zstd.ZstdCompressor()
    chunk = bytes(MIB)
    return b"".join(compressor.compress(chunk) for _ in range(size // MIB)) + compressor.flush()


def zeros_gzip(size: int) -> bytes:
    compressor = zlib.compressobj(1, zlib.DEFLATED, 31)  # 31: the gzip container
    chunk = bytes(MIB)
    return b"".join(compressor.compress(chunk) for _ in range(size // MIB)) + compressor.flush()


@pytest.mark.parametrize("encoding", sorted(ENCODERS))
@pytest.mark.parametrize("path", sorted(BODIES))
async def test_compressed_bodies_are_decoded(fake_ollama, gateway, path, encoding):
    """Each endpoint answers a compressed body as it would the plain one; Ollama gets the decoded request."""
    code, answer = await post(gateway.url + path, ENCODERS[encoding](orjson.dumps(BODIES[path])), encoding)
    assert code == 200, answer
    (_, _, sent, _), = fake_ollama.fake.requests
    assert sent["model"] == BODIES[path]["model"]


async def test_a_zstd_bomb_is_a_413_without_decoding_it_whole(fake_ollama, gateway):
    """1 GiB of zeros in 32 KiB of zstd: 413 once the decoded bytes pass the 20 MiB limit, and the
    process never holds anything near the decoded size."""
    bomb = zeros_zstd(1024 * MIB)
    assert len(bomb) < 64 * 1024
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    code, answer = await post(gateway.url + "/v1/responses", bomb, "zstd")
    grown_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert code == 413 and answer["error"]["code"] == "request_too_large"
    assert "once decompressed" in answer["error"]["message"]
    assert grown_mib < 200
    assert fake_ollama.fake.requests == []


@pytest.mark.parametrize("path", sorted(BODIES))
async def test_gzip_bombs_are_413s(fake_ollama, gateway, path):
    """A single gzip stream and many concatenated gzip members, each decoding past the limit: 413."""
    for bomb in (zeros_gzip(64 * MIB), gzip.compress(bytes(MIB)) * 64):
        code, answer = await post(gateway.url + path, bomb, "gzip")
        assert code == 413 and answer["error"]["code"] == "request_too_large"
    assert fake_ollama.fake.requests == []


async def test_a_small_decoded_limit_applies_to_the_decoded_size(fake_ollama, start_gateway):
    """``server.max_body_mb`` counts decoded bytes: a 1.5 MiB body gzipped to a few KiB is refused at 1 MiB."""
    gw = await start_gateway(one_backend_config(fake_ollama.url, server={"max_body_mb": 1}))
    body = orjson.dumps({"model": "llama3.2", "input": "a" * (3 * MIB // 2)})
    code, answer = await post(gw.url + "/v1/responses", gzip.compress(body), "gzip")
    assert code == 413 and answer["error"]["code"] == "request_too_large"
    code, _ = await post(gw.url + "/v1/responses", gzip.compress(orjson.dumps(BODIES["/v1/responses"])), "gzip")
    assert code == 200


@pytest.mark.parametrize(("encoding", "data", "status", "code"), [
    ("zstd", b"not zstd at all", 400, "invalid_body"),
    ("gzip", b"not gzip either", 400, "invalid_body"),
    ("compress", b"{}", 415, "unsupported_content_encoding"),
    ("gzip, zstd", b"{}", 415, "unsupported_content_encoding"),
])
async def test_undecodable_or_unknown_encodings_are_refused(fake_ollama, gateway, encoding, data, status, code):
    """Garbage under a known encoding is a 400 invalid_body; an encoding the gateway cannot decode a 415."""
    got, answer = await post(gateway.url + "/v1/responses", data, encoding)
    assert (got, answer["error"]["code"]) == (status, code)
    assert fake_ollama.fake.requests == []
