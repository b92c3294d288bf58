"""Route lookup, weighted arms, stickiness and attempt lists from policies.plan."""

from __future__ import annotations

import pytest

from policies import Attempt, Policy, Route, Shadow, Target, pick_arm, plan, resolve_route
from policies import sticky_key, sticky_roll

GPU1 = Target(backends=("gpu1",), model="llama3.2:3b")
CLOUD = Target(backends=("cloud",), model="gpt-4o-mini")


def route(name: str, *models: str, **kw: object) -> Route:
    kw.setdefault("targets", (Target(backends=(f"{name}-backend",), model=None),))
    return Route(name=name, models=models, **kw)  # type: ignore[arg-type]


POLICY = Policy(
    routes=(
        route("fallthrough", "*"),
        route("gpt", "gpt-4o-*", "gpt-4o"),
        route("llama", "llama3*", "gpt-4o-mini"),
        route("qwen", "qwen?.5", "[ab]-model"),
    )
)


@pytest.mark.parametrize(
    ("model", "expected"),
    [
        ("gpt-4o", "gpt"),  # exact
        ("gpt-4o-mini", "llama"),  # exact in a later route beats an earlier route's glob
        ("gpt-4o-2024-08-06", "gpt"),  # glob
        ("llama3.2:3b", "llama"),  # glob in route order
        ("qwen2.5", "qwen"),  # ? glob
        ("b-model", "qwen"),  # [..] glob
        ("mistral", "fallthrough"),  # "*" is tried last even though it is listed first
        ("GPT-4O", "fallthrough"),  # matching is case-sensitive
    ],
)
def test_resolve_route_prefers_exact_then_globs_then_default(model: str, expected: str) -> None:
    """Exact names win across routes, then globs in order, then the catch-all route."""
    found = resolve_route(POLICY, model)
    assert found is not None and found.name == expected


def test_resolve_route_without_default_returns_none() -> None:
    """A model no route claims resolves to None when there is no catch-all."""
    policy = Policy(routes=POLICY.routes[1:])
    assert resolve_route(policy, "mistral") is None
    assert plan(policy, "mistral", key=None, roll=0.5) is None


@pytest.mark.parametrize(
    ("weights", "roll", "arm"),
    [
        ((50, 50), 0.0, 0),
        ((50, 50), 0.49, 0),
        ((50, 50), 0.5, 1),
        ((50, 50), 0.999, 1),
        ((95, 5), 0.949, 0),
        ((95, 5), 0.95, 1),
        ((1,), 0.999, 0),
        ((1, 2, 1), 0.25, 1),
        ((1, 2, 1), 0.75, 2),
        ((0, 1), 0.0, 1),  # a zero weight is never chosen
        ((1, 0), 0.999, 0),
    ],
)
def test_pick_arm_uses_cumulative_weights(weights: tuple[float, ...], roll: float, arm: int) -> None:
    """The roll lands in the arm whose slice of the cumulative weight contains it."""
    assert pick_arm(weights, roll) == arm


@pytest.mark.parametrize(("weights", "roll"), [((), 0.5), ((1,), 1.0), ((1,), -0.1), ((0, 0), 0.5)])
def test_pick_arm_rejects_bad_input(weights: tuple[float, ...], roll: float) -> None:
    """Empty or all-zero weights and rolls outside [0, 1) are programming errors."""
    with pytest.raises(ValueError):
        pick_arm(weights, roll)


def test_sticky_roll_is_stable_and_in_range() -> None:
    """The same route and key always give the same roll, which lies in [0, 1)."""
    first = sticky_roll("chat", "user:alice")
    assert first == sticky_roll("chat", "user:alice")
    assert 0.0 <= first < 1.0
    assert first != sticky_roll("chat", "user:bob")
    assert first != sticky_roll("other", "user:alice")


def test_sticky_roll_is_pinned_across_processes() -> None:
    """The roll is a function of SHA-256 only, so a known input has a known value on every replica."""
    # sha256(b"chat\x00user:alice") starts with these 8 bytes; shifting keeps the top 53 bits.
    import hashlib

    digest = hashlib.sha256(b"chat\x00user:alice").digest()
    assert sticky_roll("chat", "user:alice") == (int.from_bytes(digest[:8], "big") >> 11) / 2**53


@pytest.mark.parametrize(("weights", "tolerance"), [((95, 5), 0.015), ((50, 50), 0.015)])
def test_sticky_split_matches_weights_over_many_keys(weights: tuple[int, int], tolerance: float) -> None:
    """Over 10,000 distinct keys each arm's share is within 1.5 percentage points of its weight."""
    keys = [f"user:{i}" for i in range(10_000)]
    arms = [pick_arm(weights, sticky_roll("chat", key)) for key in keys]
    share = arms.count(0) / len(arms)
    assert abs(share - weights[0] / sum(weights)) <= tolerance
    assert arms == [pick_arm(weights, sticky_roll("chat", key)) for key in keys]


SPLIT = Policy(
    routes=(
        Route(
            name="chat",
            models=("chat",),
            targets=(GPU1, Target(backends=("gpu2",), model="llama3.2:3b")),
            fallback=(CLOUD, GPU1, Target(backends=("gpu2",), model="llama3.2:3b")),
            shadow=Shadow(target=Target(backends=("gpu3",), model=None), share=0.1),
        ),
    )
)


@pytest.mark.parametrize(
    ("roll", "arm", "backends"),
    [
        (0.0, 0, [("gpu1",), ("cloud",), ("gpu2",)]),
        (0.49, 0, [("gpu1",), ("cloud",), ("gpu2",)]),
        (0.5, 1, [("gpu2",), ("cloud",), ("gpu1",)]),
        (0.999, 1, [("gpu2",), ("cloud",), ("gpu1",)]),
    ],
)
def test_plan_with_explicit_rolls(roll: float, arm: int, backends: list[tuple[str, ...]]) -> None:
    """The roll picks the arm; fallbacks follow in order with repeats of earlier attempts dropped."""
    result = plan(SPLIT, "chat", key=None, roll=roll)
    assert result is not None
    assert result.arm == arm
    assert [a.target.backends for a in result.attempts] == backends
    assert [a.role for a in result.attempts] == ["primary", "fallback", "fallback"]
    assert result.shadow is None


def test_plan_resolves_pass_through_model_names() -> None:
    """A target without a model gets the client's model name; one with a model gets its own."""
    policy = Policy(routes=(route("any", "*", fallback=(CLOUD,)),))
    result = plan(policy, "mistral:7b", key=None, roll=0.3)
    assert result is not None
    assert [a.model for a in result.attempts] == ["mistral:7b", "gpt-4o-mini"]


def test_plan_with_sticky_key_ignores_roll() -> None:
    """With a key the arm comes from sticky_roll, whatever random roll the caller passed."""
    arms = {plan(SPLIT, "chat", key="user:alice", roll=r).arm for r in (0.0, 0.5, 0.999)}  # type: ignore[union-attr]
    assert arms == {pick_arm((1, 1), sticky_roll("chat", "user:alice"))}


@pytest.mark.parametrize(("shadow_roll", "shadowed"), [(0.0, True), (0.099, True), (0.1, False), (1.0, False)])
def test_plan_shadows_a_share_of_requests(shadow_roll: float, shadowed: bool) -> None:
    """A shadow attempt is included exactly when shadow_roll < share."""
    result = plan(SPLIT, "chat", key=None, roll=0.0, shadow_roll=shadow_roll)
    assert result is not None
    expected = Attempt(target=Target(backends=("gpu3",), model=None), model="chat", role="shadow")
    assert result.shadow == (expected if shadowed else None)


STICKY = route("s", "s", sticky=("header:X-Session-Id", "user", "api_key"))


@pytest.mark.parametrize(
    ("api_key", "user", "headers", "expected"),
    [
        ("sk-1", "bob", {"x-session-id": "abc"}, "header:x-session-id:abc"),
        ("sk-1", "bob", {"X-SESSION-ID": "abc"}, "header:x-session-id:abc"),
        ("sk-1", "bob", {}, "user:bob"),
        ("sk-1", None, {"Other": "x"}, "api_key:sk-1"),
        ("sk-1", "", {"X-Session-Id": ""}, "api_key:sk-1"),  # empty values count as absent
        (None, None, {}, None),
    ],
)
def test_sticky_key_takes_the_first_present_source(
    api_key: str | None, user: str | None, headers: dict[str, str], expected: str | None
) -> None:
    """Sources are tried in the route's order; header names are case-insensitive."""
    assert sticky_key(STICKY, api_key=api_key, user=user, headers=headers) == expected


def test_sticky_key_with_empty_sticky_list_is_random() -> None:
    """A route with sticky: [] never returns a key, so every request rolls."""
    assert sticky_key(route("r", "r", sticky=()), api_key="sk", user="u", headers={}) is None


def test_a_reloaded_policy_plans_with_its_own_targets() -> None:
    """Plans are made once per (route, model, arm) and shared, but a new policy with the same route
    name and different targets (a reload) plans with the new targets, even once the old one is gone."""
    import gc

    for round_ in range(50):
        target = Target(backends=(f"gpu{round_}",), model=None)
        policy = Policy(routes=(Route(name="chat", models=("*",), targets=(target,)),))
        first = plan(policy, "llama3", key="api_key:team", roll=0.5)
        again = plan(policy, "llama3", key="api_key:team", roll=0.5)
        assert first is not None and again == first
        assert first.attempts == (Attempt(target=target, model="llama3", role="primary"),)
        del policy, first, again
        gc.collect()


def test_plans_for_any_client_model_stay_right_past_the_memo_size() -> None:
    """A glob route answers for whatever model name a client sends: 10,000 different names, and one
    of 100,000 characters, each get their own model in the attempt, and the same arm for a sticky key."""
    policy = Policy(routes=(Route(name="any", models=("*",), targets=(
        Target(backends=("a",), model=None, weight=1), Target(backends=("b",), model=None, weight=1))),))
    arms = {plan(policy, f"m{i}", key="user:u1", roll=0.0).arm for i in range(10_000)}  # type: ignore[union-attr]
    assert arms == {0 if sticky_roll("any", "user:u1") < 0.5 else 1}
    long_name = "m" * 100_000
    made = plan(policy, long_name, key=f"user:{long_name}", roll=0.0)
    assert made is not None and made.attempts[0].model == long_name
    assert made.arm == (0 if sticky_roll("any", f"user:{long_name}") < 0.5 else 1)
    assert plan(policy, "m7", key=None, roll=0.75).attempts[0].target.backends == ("b",)  # type: ignore[union-attr]
