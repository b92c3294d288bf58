"""The backends as the request path sees them: their clients, circuit breakers and health.

``Backends`` owns, per configured backend, its ``Upstream`` (``proxy.upstream``), its breaker state
(decided by the pure ``policies.breaker``) and what the last health check found (``BackendHealth``,
written by ``proxy.background.health``). It chooses the backend for an attempt (``pick``: breakers,
health, loaded models and load, via ``policies.balance``), records how attempts ended (``record``),
and answers readiness. Hot reload replaces the upstreams as a whole (``adopt``); breaker and health
state carry over for backends kept under the same name.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace

from policies.balance import choose_backend
from policies.breaker import CLOSED, BreakerState, allow, record
from policies.model import Attempt, BreakerSettings, Route
from policies.names import model_spellings
from policies.outcome import Outcome, counts_as_failure
from proxy.upstream.backend import Upstream

__all__ = ["Backends", "BackendHealth"]

log = logging.getLogger("proxy.backends")


@dataclass(slots=True)
class BackendHealth:
    """What the last health check of one backend found (cheap endpoints only)."""

    up: bool | None = None  # None: not checked yet
    latency: float | None = None
    version: str | None = None
    error: str | None = None
    checked_at: float | None = None
    installed: tuple[str, ...] = ()
    running: tuple[dict[str, object], ...] = ()
    loaded: frozenset[str] = field(default_factory=frozenset)


class Backends:
    """Every configured backend's client, breaker and health.

    ``on_circuit(name, state)`` hears each backend's breaker state when it is adopted (``closed``
    for a new one), every transition, and ``None`` for a backend a reload removed.
    """

    def __init__(self, breaker: BreakerSettings, *, clock: Callable[[], float] = time.monotonic,
                 on_circuit: Callable[[str, str | None], None] | None = None) -> None:
        self.breaker = breaker
        self.clock = clock
        self.on_circuit = on_circuit
        self.upstreams: dict[str, Upstream] = {}
        self.breakers: dict[str, BreakerState] = {}
        self.health: dict[str, BackendHealth] = {}

    def adopt(self, upstreams: Mapping[str, Upstream], breaker: BreakerSettings | None = None) -> None:
        """Serve with these backends (and breaker settings); state carries over for names kept."""
        if breaker is not None:
            self.breaker = breaker
        removed = [name for name in self.upstreams if name not in upstreams]
        self.upstreams = dict(upstreams)
        self.breakers = {name: self.breakers.get(name, CLOSED) for name in upstreams}
        self.health = {name: self.health.get(name) or BackendHealth() for name in upstreams}
        if self.on_circuit is not None:  # every backend has a circuit series from the start (0: closed)
            for name in removed:
                self.on_circuit(name, None)
            for name, state in self.breakers.items():
                self.on_circuit(name, state.state)

    def of_kind(self, kind: str) -> list[Upstream]:
        return [u for u in self.upstreams.values() if u.kind == kind]

    def refuses(self, name: str) -> bool:
        """True while the backend's breaker would refuse a request (no state change)."""
        state = self.breakers.get(name, CLOSED)
        if state.state == "closed":
            return False
        if state.state == "open":
            return self.clock() - state.opened_at < self.breaker.cooldown
        return state.probe_in_flight and self.clock() - state.probe_started_at < self.breaker.cooldown

    def _candidates(self, attempt: Attempt, unavailable: set[str]) -> str | None:
        names = attempt.target.backends
        outstanding = {n: self.upstreams[n].outstanding for n in names if n in self.upstreams}
        loaded = {n: self.health[n].loaded for n in names if n in self.health}
        return choose_backend(names, model=attempt.model, outstanding=outstanding, loaded=loaded,
                              unavailable=unavailable)

    def pick(self, attempt: Attempt) -> Upstream | None:
        """The backend for ``attempt`` among its pool, honouring breakers, health and load (None: none usable)."""
        candidates = attempt.target.backends
        if len(candidates) == 1:  # the common case, without the pool arithmetic
            name = candidates[0]
            upstream = self.upstreams.get(name)
            if upstream is None:
                return None
            state = self.breakers.get(name, CLOSED)
            if state.state == "closed":
                return upstream
            ok, self.breakers[name] = allow(state, self.breaker, self.clock())
            return upstream if ok else None
        refused = {name for name in candidates if self.refuses(name)}
        down = {name for name in candidates if self.health.get(name, BackendHealth()).up is False}
        name = self._candidates(attempt, refused | down)
        if name is None and down - refused:
            # every usable candidate looks down: the health check may be stale, so try anyway
            name = self._candidates(attempt, refused)
        if name is None or name not in self.upstreams:
            return None
        ok, self.breakers[name] = allow(self.breakers.get(name, CLOSED), self.breaker, self.clock())
        return self.upstreams[name] if ok else None

    def pick_quietly(self, attempt: Attempt) -> Upstream | None:
        """The least busy usable backend of ``attempt`` without touching breaker state (shadow traffic)."""
        names = attempt.target.backends
        unavailable = {n for n in names if n not in self.upstreams or self.refuses(n) or self.health[n].up is False}
        name = self._candidates(attempt, unavailable)
        return self.upstreams[name] if name is not None else None

    def record(self, backend: str, outcome: Outcome | None) -> None:
        """Feed an attempt's outcome to the backend's breaker (a client leaving says nothing about it)."""
        if outcome is None or outcome is Outcome.CLIENT_DISCONNECT:
            return
        before = self.breakers.get(backend, CLOSED)
        failure = counts_as_failure(outcome)
        if outcome is not Outcome.OK and not failure and before.state == "closed":
            return
        after = record(before, self.breaker, self.clock(), success=not failure)
        self.breakers[backend] = after
        if after.state != before.state:
            log.warning("circuit for backend %s is now %s", backend, after.state)
            if self.on_circuit is not None:
                self.on_circuit(backend, after.state)

    def set_health(self, name: str, health: BackendHealth) -> None:
        """Store a health check's finding, logging when the backend goes up or down."""
        before = self.health.get(name)
        if before is not None and before.up is not health.up:
            if health.up:
                log.info("backend %s is up", name)
            else:
                log.warning("backend %s is down: %s", name, health.error)
        if not health.up and before is not None and not health.installed and before.installed:
            # down: what it had installed stays listed (the dashboard, /status); nothing runs on it now
            health = replace(health, installed=before.installed, running=(), loaded=frozenset())
        if name in self.upstreams:
            self.health[name] = health

    def installed(self, model: str) -> bool:
        """Whether some backend's last health check listed ``model`` (``name`` or ``name:latest``)."""
        spelled, other = model_spellings(model)
        return any(spelled in health.installed or other in health.installed for health in self.health.values())

    def readiness(self, routes: Sequence[Route]) -> tuple[bool, dict[str, object]]:
        """Ready when every required route has at least one target with a healthy backend.

        Each route lists the backends it considered: ``state`` (``up``, ``down`` or ``unchecked``:
        the last health check), ``circuit`` (``closed``, ``open``, ``half_open``), ``usable`` (up and
        not refused by its breaker) and, when down, the check's ``error``. Names and error texts only,
        never URLs or credentials: ``/readyz`` needs no credential.
        """
        out: dict[str, object] = {}
        ready = True
        for route in routes:
            considered = list(dict.fromkeys(
                name for target in (*route.targets, *route.fallback) for name in target.backends))
            states = [self._state(name) for name in considered]
            healthy = [s["name"] for s in states if s["usable"]]
            out[route.name] = {"ready": bool(healthy), "required": route.required, "healthy_backends": healthy,
                               "backends": states}
            if route.required and not healthy:
                ready = False
        return ready, out

    def _state(self, name: str) -> dict[str, object]:
        health = self.health.get(name)
        up = health.up if health is not None else None
        state: dict[str, object] = {"name": name, "state": "unchecked" if up is None else "up" if up else "down",
                                    "circuit": self.breakers.get(name, CLOSED).state}
        if health is not None and up is False:
            state["error"] = _without_urls(health.error or "health check failed")
        state["usable"] = bool(up) and not self.refuses(name)
        return state


_URL = re.compile(r"\b[a-z][a-z0-9+.-]*://\S+", re.IGNORECASE)


def _without_urls(text: str) -> str:
    """An error text fit for an unauthenticated answer: URLs replaced, at most 300 characters."""
    return _URL.sub("<url>", text)[:300]
