"""Shadow requests: a copy of a share of a route's traffic sent to another target, answer discarded.

The client never waits for, nor sees, a shadow: ``start_shadow`` only schedules a background task
(kept in ``Tasks`` so it is not garbage-collected mid-flight). It reuses the primary's validated Ollama translation
(the route is the same; only the model differs), so nothing unvalidated is ever shadowed. The copy is always
non-streamed, runs under its own deadline (the shadow backend's ``timeouts.read``), and every
failure is logged and swallowed. What it yields is a measurement: latency, outcome and token counts
through ``on_result``, to compare a candidate backend (say Ollama) with the one serving users.
Shadows take no part in breaker bookkeeping, and at most ``MAX_SHADOWS`` run at once per gateway,
so a hanging shadow backend cannot pile up tasks.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping

from policies.model import Attempt
from policies.outcome import Outcome
from proxy.backends import Backends
from proxy.background.tasks import Tasks
from proxy.context import RequestContext
from proxy.endpoints import Endpoint
from proxy.errors import ProxyError
from proxy.jsonio import dumps_kept
from proxy.relay import ollama_error_line
from proxy.upstream.backend import Upstream
from proxy.translate.fields import token_count

__all__ = ["MAX_SHADOWS", "Shadows", "ShadowResult"]

log = logging.getLogger("proxy.background.shadow")

MAX_SHADOWS = 64
_TASK_NAME = "shadow"
# (route, backend, outcome, seconds, prompt tokens, completion tokens)
ShadowResult = Callable[[str, str, str, float, int, int], None]


class Shadows:
    """Starts shadow copies in the background; ``on_result`` hears each one's measurement."""

    def __init__(self, backends: Backends, tasks: Tasks, *, on_result: ShadowResult | None = None) -> None:
        self.backends, self.tasks, self.on_result = backends, tasks, on_result

    def start(self, ctx: RequestContext, endpoint: Endpoint, body: Mapping[str, object],
              native: Mapping[str, object]) -> None:
        """Send a non-streamed copy to ``ctx.plan.shadow`` in the background; never raises.

        ``body`` is the client's (validated) body, for an OpenAI-compatible shadow backend;
        ``native`` its Ollama translation, for an Ollama one.
        """
        plan = ctx.plan
        if plan is None or plan.shadow is None:
            return
        attempt = plan.shadow
        if self.tasks.count(_TASK_NAME) >= MAX_SHADOWS:
            log.warning("request %s: shadow skipped, %d shadow requests already in flight", ctx.request_id,
                        MAX_SHADOWS)
            return
        upstream = self.backends.pick_quietly(attempt)
        if upstream is None:
            log.debug("request %s: shadow skipped, no usable backend for %s", ctx.request_id,
                      attempt.target.label())
            return
        if upstream.kind == "openai":
            copy = {k: v for k, v in body.items() if k not in ("stream", "stream_options")}
            payload, path = dumps_kept({**copy, "model": attempt.model, "stream": False}), endpoint.openai_path
        else:
            payload, path = dumps_kept({**native, "model": attempt.model, "stream": False}), endpoint.ollama_path
        self.tasks.spawn(self._shadow(plan.route.name, ctx.request_id, upstream, path, payload, attempt),
                         name=_TASK_NAME)

    async def _shadow(self, route: str, request_id: str, upstream: Upstream, path: str, payload: bytes,
                      attempt: Attempt) -> None:
        started = time.perf_counter()
        outcome, prompt_tokens, completion_tokens = Outcome.OK.value, 0, 0
        upstream.outstanding += 1
        try:
            async with asyncio.timeout(upstream.cfg.timeouts.read):
                resp = await upstream.send("POST", path, payload, model=attempt.model)
                answer = await resp.json()
            error = ollama_error_line(answer, upstream.name) if upstream.kind == "ollama" else None
            if error is not None:
                raise error
            prompt_tokens, completion_tokens = _usage(answer, upstream.kind)
        except ProxyError as exc:
            outcome = exc.outcome.value if exc.outcome is not None else "rejected"
            log.info("request %s: shadow to %s failed (%s): %s", request_id, upstream.name, outcome, exc.message)
        except TimeoutError:
            outcome = Outcome.TIMEOUT.value
            log.info("request %s: shadow to %s timed out", request_id, upstream.name)
        except asyncio.CancelledError:
            raise  # shutting down: nothing to record
        except Exception:
            outcome = "error"
            log.exception("request %s: shadow to %s failed unexpectedly", request_id, upstream.name)
        finally:
            upstream.outstanding -= 1
        if self.on_result is not None:
            self.on_result(route, upstream.name, outcome, time.perf_counter() - started, prompt_tokens,
                           completion_tokens)


def _usage(answer: object, kind: str) -> tuple[int, int]:
    """(prompt tokens, completion tokens) of a whole answer of either kind of backend."""
    if not isinstance(answer, dict):
        return 0, 0
    if kind == "openai":
        usage = answer.get("usage")
        if not isinstance(usage, dict):
            return 0, 0
        return token_count(usage.get("prompt_tokens")), token_count(usage.get("completion_tokens"))
    return token_count(answer.get("prompt_eval_count")), token_count(answer.get("eval_count"))
