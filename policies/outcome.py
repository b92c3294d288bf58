"""Why an upstream attempt ended, and what each ending means for fallback, retries and breakers.

Owns the ``Outcome`` vocabulary shared by ``proxy.upstream.backend`` (which classifies failures), the
router (which acts on them) and metrics (which count them). Pure: stdlib only, imports nothing
from ``proxy``.
"""

from __future__ import annotations

import enum
from collections.abc import Collection

__all__ = ["DEFAULT_FALLBACK_ON", "RETRYABLE", "Outcome", "counts_as_failure", "should_fall_back"]


class Outcome(str, enum.Enum):
    """How one attempt against one backend ended; the values are the config and metric spellings."""

    OK = "ok"
    CONNECT = "connect"  # refused, reset or DNS failure
    TIMEOUT = "timeout"  # no first byte in time
    SERVER_ERROR = "5xx"
    RATE_LIMITED = "429"
    QUEUE_FULL = "queue_full"  # Ollama answers 503 when OLLAMA_MAX_QUEUE is exceeded
    MODEL_NOT_FOUND = "model_not_found"  # 404: the model is not pulled on that backend
    STREAM_ERROR = "stream_error"  # Ollama {"error": ...} line before any content
    BROKEN_STREAM = "broken_stream"  # body truncated before "done"
    BAD_REQUEST = "bad_request"  # 4xx other than 401/403/404/429: the client's fault
    UPSTREAM_AUTH = "upstream_auth"  # 401/403 from the backend: our credentials are wrong
    CONTEXT_LENGTH = "context_length"  # the prompt is longer than the context it would run with
    CLIENT_DISCONNECT = "client_disconnect"

    def __str__(self) -> str:
        # On Python 3.11 a (str, Enum) member formats as "Outcome.OK"; metric labels and log
        # lines want the config spelling, so str() and f-strings give the value (as StrEnum does).
        return str(self.value)


DEFAULT_FALLBACK_ON: frozenset[Outcome] = frozenset(
    {
        Outcome.CONNECT,
        Outcome.TIMEOUT,
        Outcome.SERVER_ERROR,
        Outcome.RATE_LIMITED,
        Outcome.QUEUE_FULL,
        Outcome.MODEL_NOT_FOUND,
        Outcome.STREAM_ERROR,
        Outcome.BROKEN_STREAM,
    }
)
"""Outcomes that move on to the next attempt when a route does not set ``fallback_on``."""

RETRYABLE: frozenset[Outcome] = frozenset(
    {Outcome.CONNECT, Outcome.SERVER_ERROR, Outcome.RATE_LIMITED, Outcome.QUEUE_FULL}
)
"""Outcomes worth retrying on the same target: transient and nothing was generated.

A timeout is not here: the backend may still be working on the request, and retrying it would
double the load on a backend that is already slow.
"""

# CONTEXT_LENGTH is in neither list: a route falls back on it only when it names it (to a target
# with a bigger context), and it says nothing about the backend's health.

# Failures say something about the backend's health. 429 is the backend protecting itself (and a
# breaker on top of it would turn a brief limit into a long outage); 404, 400 and disconnects are
# about the request or the client, not the backend.
_FAILURES: frozenset[Outcome] = frozenset(
    {
        Outcome.CONNECT,
        Outcome.TIMEOUT,
        Outcome.SERVER_ERROR,
        Outcome.QUEUE_FULL,
        Outcome.BROKEN_STREAM,
        Outcome.STREAM_ERROR,
        Outcome.UPSTREAM_AUTH,
    }
)


def should_fall_back(outcome: Outcome, fallback_on: Collection[Outcome]) -> bool:
    """Return True when ``outcome`` (before the first byte went out) should try the next attempt.

    ``fallback_on`` is the route's list (``Route.fallback_on``).
    """
    return outcome in fallback_on


def counts_as_failure(outcome: Outcome) -> bool:
    """Return True when ``outcome`` should count against the backend's circuit breaker."""
    return outcome in _FAILURES
