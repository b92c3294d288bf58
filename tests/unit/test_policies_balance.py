"""Choosing a backend from a pool with policies.balance.choose_backend."""

from __future__ import annotations

import pytest

from policies import choose_backend

POOL = ("a", "b", "c")
LLAMA = "llama3.2:3b"


@pytest.mark.parametrize(
    ("model", "outstanding", "loaded", "unavailable", "expected"),
    [
        (LLAMA, {}, {}, (), "a"),  # all equal: candidate order
        (LLAMA, {"a": 2, "b": 1, "c": 1}, {}, (), "b"),  # none loaded: least outstanding, first of ties
        (LLAMA, {"a": 0, "b": 9}, {"b": frozenset({LLAMA})}, (), "b"),  # loaded beats idle
        (LLAMA, {"b": 5, "c": 3}, {"b": frozenset({LLAMA}), "c": frozenset({LLAMA})}, (), "c"),
        (LLAMA, {}, {"b": frozenset({LLAMA})}, ("b",), "a"),  # loaded but unavailable
        ("llama3", {}, {"c": frozenset({"llama3:latest"})}, (), "c"),  # name == name:latest
        ("llama3:latest", {}, {"b": frozenset({"llama3"})}, (), "b"),
        ("llama3", {}, {"b": frozenset({"llama3:8b"})}, (), "a"),  # a different tag is not loaded
        (LLAMA, {}, {}, ("a", "b", "c"), None),  # nothing usable
        (LLAMA, {"a": 1}, {"zzz": frozenset({LLAMA})}, (), "b"),  # loaded sets of strangers are ignored
    ],
)
def test_choose_backend_table(
    model: str,
    outstanding: dict[str, int],
    loaded: dict[str, frozenset[str]],
    unavailable: tuple[str, ...],
    expected: str | None,
) -> None:
    """Loaded beats unloaded, then fewest outstanding, then candidate order; unavailable never wins."""
    got = choose_backend(POOL, model=model, outstanding=outstanding, loaded=loaded, unavailable=unavailable)
    assert got == expected


def test_choose_backend_with_no_candidates_returns_none() -> None:
    """An empty pool yields None rather than raising."""
    assert choose_backend((), model=LLAMA, outstanding={}, loaded={}) is None
