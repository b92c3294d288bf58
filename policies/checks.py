"""Warnings about a valid policy that probably does not do what its author meant (``--check-config``).

Pure: stdlib only. ``policy_warnings(policy)`` returns ``(dotted path, message)`` pairs, in config
order, for three mistakes seen in migrations; none of them stops the gateway:

- a glob that can never match because an earlier glob takes every name it would (globs are tried
  in route order, a route listing ``"*"`` last; exact names always win, so they are never shadowed);
- a target pooling backends of different kinds (an Ollama and an OpenAI-compatible one answer the
  same request in different ways, and one model name rarely means the same model on both);
- a fallback that repeats a target of the route (a failed backend tried again as its own fallback).

The glob check treats the later pattern as a name: ``llama3*`` is shadowed by ``llama*`` because
``fnmatch("llama3*", "llama*")``. That is exact for the usual ``prefix*`` patterns and an
approximation for ``?`` and ``[...]``.
"""

from __future__ import annotations

from fnmatch import fnmatchcase

from policies.model import Policy, Route, Target
from policies.plan import is_glob

__all__ = ["policy_warnings"]


def _glob_order(policy: Policy) -> list[tuple[int, Route]]:
    """Routes in the order their globs are tried: config order, routes listing ``"*"`` last."""
    indexed = list(enumerate(policy.routes))
    return [ir for ir in indexed if "*" not in ir[1].models] + [ir for ir in indexed if "*" in ir[1].models]


def _shadowed_globs(policy: Policy) -> list[tuple[str, str]]:
    found: list[tuple[str, str]] = []
    earlier: list[tuple[int, str]] = []  # (route index, glob) tried before
    for i, route in _glob_order(policy):
        globs = [(j, p) for j, p in enumerate(route.models) if is_glob(p)]
        shadows = {j: next(((k, q) for k, q in earlier if fnmatchcase(p, q)), None) for j, p in globs}
        unreachable = all(is_glob(p) for p in route.models) and all(shadows.values())
        for j, pattern in globs:
            owner = shadows[j]
            if owner is not None:
                k, q = owner
                tail = f"; route {route.name!r} is unreachable" if unreachable else ""
                found.append((f"routes[{i}].models[{j}]", f"{pattern!r} never matches: routes[{k}] "
                              f"({policy.routes[k].name!r}) has {q!r}, tried first{tail}"))
        earlier.extend((i, p) for _, p in globs)
    return found


def _same(a: Target, b: Target) -> bool:
    return set(a.backends) == set(b.backends) and a.model == b.model


def policy_warnings(policy: Policy) -> list[tuple[str, str]]:
    """Every warning for ``policy`` as ``(dotted path, message)``; empty when nothing looks wrong."""
    out = _shadowed_globs(policy)
    kinds = policy.backends
    for i, route in enumerate(policy.routes):
        for key, targets in (("targets", route.targets), ("fallback", route.fallback)):
            for j, target in enumerate(targets):
                mixed = sorted({kinds.get(b, "?") for b in target.backends})
                if len(mixed) > 1:
                    out.append((f"routes[{i}].{key}[{j}].backend",
                                f"pools backends of different kinds ({', '.join(mixed)}): each answers in its "
                                "own way and a model name rarely means the same model on both"))
        for j, fallback in enumerate(route.fallback):
            for t, target in enumerate(route.targets):
                if _same(fallback, target):
                    out.append((f"routes[{i}].fallback[{j}]",
                                f"repeats routes[{i}].targets[{t}] ({target.label()}): when it fails, the same "
                                "backend and model are tried again"))
    return out
