"""Choosing one backend from a target's pool: prefer one with the model loaded, then the least busy.

Loading a model into Ollama's memory takes seconds to minutes, so a backend that already holds it
(as reported by ``/api/ps``) beats an idle one that would have to load it. Among equals, the
backend with the fewest requests in flight wins, and ties go to the order the config lists them.
Pure: the caller passes in the counts and the loaded sets it keeps. Stdlib only.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence

__all__ = ["choose_backend"]

_LATEST = ":latest"


def _base(model: str) -> str:
    return model[: -len(_LATEST)] if model.endswith(_LATEST) else model


def choose_backend(
    candidates: Sequence[str],
    *,
    model: str,
    outstanding: Mapping[str, int],
    loaded: Mapping[str, frozenset[str]],
    unavailable: Collection[str] = (),
) -> str | None:
    """Return the backend to send ``model`` to, or None when every candidate is unavailable.

    Candidates in ``unavailable`` (breaker open, marked down) are dropped. Those whose ``loaded``
    set holds the model are preferred; within the preferred group (or among all when none has
    it loaded) the fewest ``outstanding`` requests wins, ties going to candidate order.
    Backends missing from ``outstanding`` count as idle.
    """
    usable = [c for c in candidates if c not in unavailable]
    wanted = _base(model)
    warm = [c for c in usable if any(_base(m) == wanted for m in loaded.get(c, frozenset()))]
    pool = warm or usable
    if not pool:
        return None
    # min() keeps the first of equal keys, which is the candidate order.
    return min(pool, key=lambda c: outstanding.get(c, 0))
