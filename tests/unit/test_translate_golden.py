"""Golden vectors: each tests/fixtures/golden/*.json pairs a translator input with its reviewed output."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from proxy.translate.chat import forced_tool_of, ollama_chat_to_openai
from proxy.translate.stream import ChatStream
from tests.unit.golden import PINNED, run

CASES = sorted((Path(__file__).parent.parent / "fixtures" / "golden").glob("*.json"))


def run_case(case: dict[str, Any]) -> Any:
    """``golden.run``, plus the answer kinds that need the request they answer (``"request"``)."""
    kind, given, kwargs = case["kind"], case["input"], case.get("kwargs", {})
    if kind == "chat_response" and "request" in case:
        return ollama_chat_to_openai(given, **PINNED, forced=forced_tool_of(case["request"]), **kwargs)
    if kind == "chat_stream" and "request" in case:
        stream = ChatStream(**PINNED, forced=forced_tool_of(case["request"]), **kwargs)
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
                     "completion_response", "embedding_response", "chat_stream", "completion_stream"}
