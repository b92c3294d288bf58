"""The routing policy as frozen values: targets, routes, settings, and the plan for one request.

Built by ``policies.parse`` from config, read by ``policies.plan`` and by the proxy's router.
Every value is immutable (tuples, frozensets, read-only mappings) so a policy can be shared by
all requests without locks. Constructors check the invariants that would otherwise surface as
strange routing (a zero weight, an empty pool); config mistakes are reported earlier, with dotted
paths, by ``parse_policy``. Pure: stdlib only.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Never, TypeVar

from policies.outcome import DEFAULT_FALLBACK_ON, Outcome

__all__ = [
    "Attempt",
    "BreakerSettings",
    "Plan",
    "Policy",
    "RetrySettings",
    "Route",
    "Shadow",
    "Target",
]

_V = TypeVar("_V")


def _read_only(value: Mapping[str, _V]) -> Mapping[str, _V]:
    return value if isinstance(value, MappingProxyType) else MappingProxyType(dict(value))


def _empty() -> Mapping[str, Never]:
    return MappingProxyType({})


@dataclass(frozen=True, slots=True, kw_only=True)
class Target:
    """Where a request may go: one backend, or a pool of backends balanced by ``choose_backend``.

    ``model`` is the name on the backend; ``None`` passes the client's model name through.
    ``weight`` is this target's share of the route's traffic split (0: configured, never chosen).
    """

    backends: tuple[str, ...]
    model: str | None
    weight: float = 1.0

    def __post_init__(self) -> None:
        if not self.backends:
            raise ValueError("a target needs at least one backend")
        if not (math.isfinite(self.weight) and self.weight >= 0):
            raise ValueError(f"target weight must be a finite number >= 0 (got {self.weight!r})")

    def label(self) -> str:
        """A bounded, config-derived name for metrics and logs, e.g. ``gpu1+gpu2:llama3.2:3b``."""
        return f"{'+'.join(self.backends)}:{self.model if self.model is not None else '*'}"


@dataclass(frozen=True, slots=True, kw_only=True)
class Shadow:
    """A copy of a ``share`` of the route's traffic sent to ``target``; its answer is discarded."""

    target: Target
    share: float

    def __post_init__(self) -> None:
        if not 0 < self.share <= 1:
            raise ValueError(f"shadow share must be in (0, 1] (got {self.share!r})")


@dataclass(frozen=True, slots=True, kw_only=True)
class RetrySettings:
    """Retries on the same target: ``attempts`` extra tries, exponential backoff, a time budget."""

    attempts: int = 0
    base_delay: float = 0.25
    max_delay: float = 4.0
    budget: float = 15.0


@dataclass(frozen=True, slots=True, kw_only=True)
class BreakerSettings:
    """When a backend's breaker opens, and for how long it stays open before one probe."""

    failures: int = 5  # consecutive failures that open the breaker
    ratio: float = 0.5  # failure ratio over the window that opens it ...
    window: float = 30.0  # ... measured over this many seconds ...
    min_requests: int = 10  # ... once the window holds at least this many requests
    cooldown: float = 30.0  # seconds open before a half-open probe


@dataclass(frozen=True, slots=True, kw_only=True)
class Route:
    """One routing rule: which client model names it serves and where their requests go."""

    name: str
    models: tuple[str, ...]  # exact names/aliases and fnmatch globs; "*" makes it the default route
    targets: tuple[Target, ...]  # the weighted split; one is chosen per request
    fallback: tuple[Target, ...] = ()  # tried in order after the chosen target fails
    fallback_on: frozenset[Outcome] = DEFAULT_FALLBACK_ON
    sticky: tuple[str, ...] = ("api_key", "user")  # "api_key" | "user" | "header:<Name>"
    # Ollama request options injected unless the client set them; excluded from the hash because
    # a read-only mapping is not hashable (equality still compares it).
    options: Mapping[str, object] = field(default_factory=_empty, hash=False)
    keep_alive: str | int | None = None
    shadow: Shadow | None = None
    retry: RetrySettings = RetrySettings()
    required: bool = True  # readiness needs a healthy target for this route
    hosted_tools: str = "ignore"  # tools Ollama cannot run (web_search, ...): "ignore" (left out) | "refuse" (400)
    max_output_tokens: int | None = None  # a cap on what a request may ask to generate (Messages' max_tokens)

    def __post_init__(self) -> None:
        if not self.targets:
            raise ValueError(f"route {self.name!r} needs at least one target")
        if not any(target.weight > 0 for target in self.targets):
            raise ValueError(f"route {self.name!r} needs a target with a weight > 0")
        object.__setattr__(self, "options", _read_only(self.options))


@dataclass(frozen=True, slots=True, kw_only=True)
class Policy:
    """Every route, in config order, plus the backend kinds and the breaker settings."""

    routes: tuple[Route, ...]
    backends: Mapping[str, str] = field(default_factory=_empty, hash=False)  # name -> "ollama" | "openai"
    breaker: BreakerSettings = BreakerSettings()

    def __post_init__(self) -> None:
        object.__setattr__(self, "backends", _read_only(self.backends))


@dataclass(frozen=True, slots=True, kw_only=True)
class Attempt:
    """One try: a target and the model name to ask that backend for."""

    target: Target
    model: str  # resolved: target.model, or the client's model when the target passes it through
    role: str  # "primary" | "fallback" | "shadow"


@dataclass(frozen=True, slots=True, kw_only=True)
class Plan:
    """What to do with one request: the matched route, the chosen arm, attempts in order."""

    route: Route
    arm: int  # index into route.targets
    attempts: tuple[Attempt, ...]  # attempts[0] is the primary; the rest are fallbacks
    shadow: Attempt | None = None
