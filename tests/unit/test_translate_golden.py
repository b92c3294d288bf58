"""Golden vectors: each tests/fixtures/golden/*.json pairs a translator input with its reviewed output."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.unit.golden import run

CASES = sorted((Path(__file__).parent.parent / "fixtures" / "golden").glob("*.json"))


@pytest.mark.parametrize("path", CASES, ids=[p.stem for p in CASES])
def test_golden_vector(path: Path) -> None:
    """The translator's output equals the reviewed expected output."""
    case = json.loads(path.read_text())
    assert run(case) == case["expected"]


def test_there_are_vectors_for_every_translator() -> None:
    """Every translator kind has at least one golden vector."""
    kinds = {json.loads(p.read_text())["kind"] for p in CASES}
    assert kinds == {"chat_request", "completion_request", "embedding_request", "chat_response",
                     "completion_response", "embedding_response", "chat_stream", "completion_stream"}
