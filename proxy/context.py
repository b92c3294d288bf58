"""The state of one request: ``RequestContext``, created by the middleware, read by everyone after.

The handler plans it (route, attempts), the router records the attempts made, the relay marks the
first byte (``commit``, ``ttft``), and accounting reads it at the end for metrics and the request
log. It holds plain values only (and the handler's ``release`` callback): no framework object, no owner.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from policies.model import Plan
from proxy.config import Config

__all__ = ["RequestContext"]


@dataclass(slots=True)
class RequestContext:
    """Everything known about one request, for routing, headers, metrics and the request log."""

    request_id: str
    endpoint: str
    config: Config  # the config this request runs under (a reload does not change it mid-request)
    client_model: str = ""
    credential: str | None = None
    plan: Plan | None = None
    started: float = field(default_factory=time.perf_counter)
    stream: bool = False
    committed: bool = False  # the first byte went to the client: no more fallback
    in_flight: bool = False  # counted in the in-flight gauge (released by Accounting.finish)
    backend: str | None = None
    model: str | None = None  # the model name on the backend that served it
    path: list[str] = field(default_factory=list)  # "backend:model" per attempt made
    fallbacks: list[tuple[str, str, str]] = field(default_factory=list)  # (failed, reason, to backend): reached
    ignored_tools: tuple[str, ...] = ()  # hosted/server tools left out of what Ollama saw (Responses, Messages)
    outcome: str = "ok"
    status: int = 200
    upstream_wait: float = 0.0  # seconds blocked on backends (total minus this = gateway overhead)
    ttft: float | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    timings: dict[str, object] | None = None  # Ollama's final-chunk durations (ns)
    prompt_text: str | None = None
    answer_text: str | None = None
    # lets go of what only another attempt would need (the body, its translation, the serialised
    # payloads): called once, when the answer commits; a stream then holds none of it for its duration
    release: Callable[[], None] | None = None

    def commit(self) -> None:
        """The first byte goes to the client: no fallback from here on."""
        self.committed = True
        if self.release is not None:
            release, self.release = self.release, None
            release()

    @property
    def route(self) -> str:
        return self.plan.route.name if self.plan else "-"
