"""Deciding where one request goes: route lookup, the weighted arm, sticky keys, the attempt list.

Every function is pure and deterministic: randomness arrives as a ``roll`` in [0, 1) drawn by the
caller, and stickiness comes from a SHA-256 of the route name and the client's key, so the same key
lands on the same arm in every process, after restarts, and on every replica. Stdlib only.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Mapping, Sequence
from fnmatch import fnmatchcase

from policies.model import Attempt, Plan, Policy, Route, Target

__all__ = ["is_glob", "pick_arm", "plan", "resolve_route", "sticky_key", "sticky_roll"]

_GLOB_CHARS = frozenset("*?[")


def is_glob(pattern: str) -> bool:
    """Return True when a route's model entry is an fnmatch pattern rather than an exact name."""
    return not _GLOB_CHARS.isdisjoint(pattern)


def resolve_route(policy: Policy, model: str) -> Route | None:
    """Return the route serving ``model``, or None when no route claims it.

    Exact names win over globs whatever the route order. Globs are then tried in route order,
    except that a route listing the catch-all ``"*"`` is tried after every other route. Matching
    is case-sensitive, like Ollama's model names.
    """
    for route in policy.routes:
        if model in route.models:
            return route
    catch_all: list[Route] = []
    for route in policy.routes:
        if "*" in route.models:
            catch_all.append(route)
        elif any(is_glob(p) and fnmatchcase(model, p) for p in route.models):
            return route
    for route in catch_all:
        if any(is_glob(p) and fnmatchcase(model, p) for p in route.models):
            return route
    return None


def sticky_roll(route_name: str, key: str) -> float:
    """Map ``(route_name, key)`` to a stable number in [0, 1) from SHA-256 of ``name NUL key``."""
    digest = hashlib.sha256(f"{route_name}\0{key}".encode()).digest()
    # 53 bits: every value is an exact double, and the result is strictly below 1.0.
    return (int.from_bytes(digest[:8], "big") >> 11) / float(1 << 53)


def pick_arm(weights: Sequence[float], roll: float) -> int:
    """Return the index whose slice of the cumulative weights contains ``roll`` (in [0, 1))."""
    if not weights:
        raise ValueError("pick_arm needs at least one weight")
    if not 0.0 <= roll < 1.0:
        raise ValueError(f"roll must be in [0, 1) (got {roll!r})")
    total = sum(weights)
    if total <= 0 or any(w < 0 for w in weights):
        raise ValueError(f"weights must be >= 0 with a positive sum (got {list(weights)!r})")
    point = roll * total
    cumulative = 0.0
    last = 0
    for index, weight in enumerate(weights):
        if weight > 0:
            last = index
        cumulative += weight
        if point < cumulative:
            return index
    return last  # rounding left point == total: the top of the range belongs to the last real arm


def sticky_key(
    route: Route,
    *,
    api_key: str | None,
    user: str | None,
    headers: Mapping[str, str],
) -> str | None:
    """Return the first present key named by ``route.sticky``, or None to use a random roll.

    Entries are ``api_key``, ``user`` (the OpenAI ``user`` field) and ``header:<Name>`` (looked up
    case-insensitively). The key is prefixed with its source so a user id and an API key with the
    same text do not collide. It may contain a credential: hash it, never log it.
    """
    for entry in route.sticky:
        if entry == "api_key":
            value = api_key
        elif entry == "user":
            value = user
        elif entry.startswith("header:"):
            value = _header(headers, entry[len("header:") :])
            entry = entry.lower()
        else:
            continue
        if value:
            return f"{entry}:{value}"
    return None


def _header(headers: Mapping[str, str], name: str) -> str | None:
    value = headers.get(name)  # a case-insensitive mapping (aiohttp's CIMultiDict) answers here
    if value is not None:
        return value
    wanted = name.lower()
    for key, candidate in headers.items():
        if key.lower() == wanted:
            return candidate
    return None


def plan(
    policy: Policy,
    model: str,
    *,
    key: str | None,
    roll: float,
    shadow_roll: float = 1.0,
    route: Route | None = None,
) -> Plan | None:
    """Plan one request for the client's ``model``; None when no route serves it.

    The arm comes from ``sticky_roll(route.name, key)`` when a sticky key is given, else from
    ``roll``. Attempts are the chosen target (role "primary") then ``route.fallback`` in order
    (role "fallback"), skipping any that repeats an earlier attempt's backends and model. A shadow
    attempt is included when ``shadow_roll < route.shadow.share`` (the default 1.0 never shadows).
    A caller that already resolved the route (to find its sticky key) passes it as ``route``.
    """
    if route is None:
        route = resolve_route(policy, model)
    if route is None:
        return None
    if key:  # keys are client input too: only short ones are remembered
        roll = _remembered_roll(route.name, key) if len(key) <= _MEMO_MODEL_MAX else sticky_roll(route.name, key)
    arm = pick_arm([t.weight for t in route.targets], roll)
    shadowed = route.shadow is not None and shadow_roll < route.shadow.share
    if len(model) > _MEMO_MODEL_MAX:  # a glob route takes any name the client sends: never kept
        return _plan(route, model, arm, shadowed)
    memo_key = (id(route), model, arm, shadowed)
    known = _PLANS.get(memo_key)
    if known is not None:
        return known
    if len(_PLANS) >= _PLANS_MAX:
        _PLANS.clear()
    made = _PLANS[memo_key] = _plan(route, model, arm, shadowed)
    return made


# Plans are values: the same (route, model, arm, shadowed) always gives an equal Plan, so each is made
# once and shared (a Plan is frozen). An entry holds its route (``Plan.route``), so while it is kept
# no other route can take that route's id. Bounded: at most _PLANS_MAX entries of short model names.
_PLANS: dict[tuple[int, str, int, bool], Plan] = {}
_PLANS_MAX = 4096
_MEMO_MODEL_MAX = 256
# the sticky rolls of recent keys: one SHA-256 each
_remembered_roll = functools.lru_cache(maxsize=_PLANS_MAX)(sticky_roll)


def _plan(route: Route, model: str, arm: int, shadowed: bool) -> Plan:
    attempts: list[Attempt] = []
    seen: set[tuple[tuple[str, ...], str]] = set()
    for target, role in [(route.targets[arm], "primary"), *((t, "fallback") for t in route.fallback)]:
        attempt = _attempt(target, model, role)
        identity = (target.backends, attempt.model)
        if identity not in seen:
            seen.add(identity)
            attempts.append(attempt)
    shadow = _attempt(route.shadow.target, model, "shadow") if shadowed and route.shadow is not None else None
    return Plan(route=route, arm=arm, attempts=tuple(attempts), shadow=shadow)


def _attempt(target: Target, client_model: str, role: str) -> Attempt:
    return Attempt(target=target, model=target.model or client_model, role=role)
