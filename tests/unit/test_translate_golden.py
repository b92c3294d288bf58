"""Golden vectors: each tests/fixtures/golden/*.json pairs a translator input with its reviewed output."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from proxy.translate.chat_answer import ollama_chat_to_openai
from proxy.translate.chat_tools import forced_tool_of
from proxy.translate.responses_answer import ollama_chat_to_response
from proxy.translate.responses_request import responses_request_to_ollama
from proxy.translate.responses_stream import ResponsesStream
from proxy.translate.stream import ChatStream
from tests.unit.golden import PINNED, run

CASES = sorted((Path(__file__).parent.parent / "fixtures" / "golden").glob("*.json"))
RESPONSE_PINNED = {"response_id": "resp_test", "created_at": 1700000000, "model": "client-model"}


def counting_ids() -> Any:
    """An id factory that numbers ids in order of creation: ``msg_test1``, ``fc_test2``, ..."""
    made = [0]

    def new_id(prefix: str) -> str:
        made[0] += 1
        return f"{prefix}test{made[0]}"

    return new_id


def run_case(case: dict[str, Any]) -> Any:
    """``golden.run``, plus the answer kinds that need the request they answer (``"request"``)."""
    kind, given, kwargs = case["kind"], case["input"], case.get("kwargs", {})
    if kind == "chat_response" and "request" in case:
        return ollama_chat_to_openai(given, **PINNED, forced=forced_tool_of(case["request"]), **kwargs)
    if kind == "chat_stream" and "request" in case:
        stream = ChatStream(**PINNED, forced=forced_tool_of(case["request"]), **kwargs)
        return [stream.feed(line).decode() for line in given]
    if kind == "responses_request":
        request = responses_request_to_ollama(given, **kwargs)
        return {"native": request.native, "left_out": list(request.left_out),
                "forced": list(request.forced.names) if request.forced else None}
    if kind in ("responses_response", "responses_stream"):
        request = responses_request_to_ollama({"model": "client-model", **case["request"]}, model="m")
        if kind == "responses_response":
            return ollama_chat_to_response(given, request=request, **RESPONSE_PINNED, new_id=counting_ids(), **kwargs)
        stream = ResponsesStream(request=request, **RESPONSE_PINNED, new_id=counting_ids(), **kwargs)
        return [stream.feed(line).decode() for line in given]
    return run(case)


@pytest.mark.parametrize("path", CASES, ids=[p.stem for p in CASES])
def test_golden_vector(path: Path) -> None:
    """The translator's output equals the reviewed expected output."""
    case = json.loads(path.read_text())
    assert run_case(case) == case["expected"]


def test_there_are_vectors_for_every_translator() -> None:
    """Every translator kind has at least one golden vector."""
    kinds = {json.loads(p.read_text())["kind"] for p in CASES}
    assert kinds == {"chat_request", "completion_request", "embedding_request", "chat_response",
                     "completion_response", "embedding_response", "chat_stream", "completion_stream",
                     "responses_request", "responses_response", "responses_stream"}
