"""Invariants of the frozen values in policies.model and the package's public surface."""

from __future__ import annotations

import dataclasses

import pytest

import policies
from policies import Policy, Route, Shadow, Target


@pytest.mark.parametrize(
    ("target", "label"),
    [
        (Target(backends=("gpu1",), model="llama3.2:3b"), "gpu1:llama3.2:3b"),
        (Target(backends=("gpu1", "gpu2"), model=None), "gpu1+gpu2:*"),
    ],
)
def test_target_label(target: Target, label: str) -> None:
    """Labels are built from config only, so metric cardinality stays bounded."""
    assert target.label() == label


@pytest.mark.parametrize(
    "build",
    [
        lambda: Target(backends=(), model=None),
        lambda: Target(backends=("a",), model=None, weight=-1),
        lambda: Target(backends=("a",), model=None, weight=float("nan")),
        lambda: Shadow(target=Target(backends=("a",), model=None), share=0),
        lambda: Shadow(target=Target(backends=("a",), model=None), share=1.01),
        lambda: Route(name="r", models=("*",), targets=()),
    ],
)
def test_invalid_values_raise_at_construction(build: object) -> None:
    """Values that would route strangely cannot be built."""
    with pytest.raises(ValueError):
        build()  # type: ignore[operator]


def test_values_are_frozen_and_options_read_only() -> None:
    """Routes cannot be changed after construction, including their options mapping."""
    route = Route(name="r", models=("*",), targets=(Target(backends=("a",), model=None),), options={"num_ctx": 1})
    with pytest.raises(dataclasses.FrozenInstanceError):
        route.name = "x"  # type: ignore[misc]
    with pytest.raises(TypeError):
        route.options["num_ctx"] = 2  # type: ignore[index]
    assert hash(route) == hash(Route(name="r", models=("*",), targets=route.targets, options={"num_ctx": 1}))
    assert hash(Policy(routes=(route,), backends={"a": "ollama"}))


def test_all_lists_the_public_names() -> None:
    """Every name in policies.__all__ exists, and __all__ has no duplicates."""
    assert len(set(policies.__all__)) == len(policies.__all__)
    for name in policies.__all__:
        assert getattr(policies, name) is not None
