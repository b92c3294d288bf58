"""The Node openai SDK against the gateway's Responses API (tests/node/responses.mjs): create, stream,
a function-call round trip over previous_response_id, retrieve, input items and delete.

``scripts/test.sh`` installs the SDK (``npm install`` in tests/node); the test is skipped only when
node is not installed at all.
"""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path

import pytest

from tests.fakes import ollama as o

NODE_DIR = Path(__file__).resolve().parent.parent / "node"
NODE = shutil.which("node")

pytestmark = pytest.mark.skipif(NODE is None, reason="node is not installed")


async def test_node_sdk_runs_the_responses_api(fake_ollama, gateway):
    """Each call of the script gets what the fake Ollama was scripted to say, in OpenAI's shapes."""
    assert (NODE_DIR / "node_modules" / "openai").is_dir(), "run: npm install --prefix tests/node"
    fake_ollama.fake.script("/api/chat", o.ok("Hello from Node"), o.ok("one two"),
                            o.ok("", tool_calls=[{"function": {"name": "get_weather", "arguments": {"city": "Paris"}}}]),
                            o.ok("It is sunny."), o.ok("Then more."))
    process = await asyncio.create_subprocess_exec(
        NODE, str(NODE_DIR / "responses.mjs"), cwd=NODE_DIR, env={"GATEWAY_URL": gateway.url + "/v1"},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0, err.decode()
    seen = json.loads(out)
    assert seen["create"]["text"] == "Hello from Node" and seen["create"]["status"] == "completed"
    assert seen["create"]["usage"]["total_tokens"] == 10
    assert seen["stream"] == {"deltas": ["one ", "two"], "text": "one two"}
    assert seen["tool"] == {"name": "get_weather", "arguments": {"city": "Paris"}, "text": "It is sunny."}
    assert seen["continued"] == {"previous": seen["create"]["id"], "text": "Then more."}
    assert seen["state"] == {"retrieved": True, "items": ["message", "message", "message"], "afterDelete": 404}
    tool_turn = fake_ollama.fake.bodies("/api/chat")[3]["messages"]
    assert [m["role"] for m in tool_turn] == ["user", "assistant", "tool"]
    assert tool_turn[2]["content"] == "sunny" and tool_turn[2]["tool_name"] == "get_weather"
