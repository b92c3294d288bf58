"""Reading target entries (``targets``, ``fallback``, ``shadow``) for ``policies.parse``.

A target names one backend or a pool of them, an optional model name on that backend, and (in
``targets`` only) a weight. Every backend name is checked against the declared backends; problems
go into the section's ``Problems`` with their dotted paths. Pure: stdlib only.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from policies.model import Shadow, Target
from policies.schema import Section, expand_env

__all__ = ["read_shadow", "read_strings", "read_targets"]


def read_strings(sec: Section, key: str, *, required: bool = False,
                 allow_int: bool = False) -> list[tuple[str, str]] | None:
    """Read a string or a list of strings as ``[(path, text), ...]``; None when absent.

    ``${VAR}`` references are expanded; an item naming an unset variable is reported and left out.
    With ``allow_int``, integers read as their text (YAML parses an unquoted ``429`` as a number).
    """
    if not sec.has(key):
        if required:
            sec.list(key)  # reports "is required"
        else:
            sec.list(key, None)  # marks the key as read
        return None
    if isinstance(sec.raw[key], str):
        items = [(sec.at(key), sec.custom(key, lambda value, _: value, expand=False))]
    else:
        items = sec.list(key)
    out: list[tuple[str, str]] = []
    for path, item in items:
        if allow_int and isinstance(item, int) and not isinstance(item, bool):
            item = str(item)
        if not isinstance(item, str):
            sec.problems.add(path, f"must be a string (got {item!r})")
            continue
        text, missing = expand_env(item, sec.environ)
        for var in missing:
            sec.problems.add(path, f"environment variable {var} is not set")
        if not missing:
            out.append((path, text))
    return out


def read_targets(
    sec: Section, key: str, backends: Mapping[str, str], *, weighted: bool
) -> tuple[Target, ...]:
    """Read the list of target mappings at ``key`` (required when ``weighted``, else optional)."""
    found: list[Target] = []
    for path, item in (sec.list(key) if weighted else sec.list(key, [])) or ():
        if not isinstance(item, Mapping):
            example = "{backend: gpu1, model: llama3.2:3b}"
            sec.problems.add(path, f"must be a mapping such as {example} (got {item!r})")
            continue
        target_sec = Section(item, path, sec.problems, sec.environ)
        target = _target(target_sec, backends, weighted=weighted)
        target_sec.done()
        if target is not None:
            found.append(target)
    return tuple(found)


def _target(sec: Section, backends: Mapping[str, str], *, weighted: bool) -> Target | None:
    names = read_strings(sec, "backend", required=True)
    if sec.raw.get("backend") == []:
        sec.problems.add(sec.at("backend"), "must name at least one backend")
    known = ", ".join(backends) or "none are defined"
    for path, backend in names or ():
        if not backend:
            sec.problems.add(path, "must not be empty")
        elif backend not in backends:
            sec.problems.add(path, f"unknown backend {backend!r} (known: {known})")
    model = sec.str("model", None)
    if model is not None and not model.strip():
        sec.problems.add(sec.at("model"), "must not be empty (omit it to pass the client's model through)")
        model = None
    weight = 1.0
    if weighted:
        # 0 is a 100/0 phase of a migration: the arm exists (and shows in metrics) but gets nothing
        weight = sec.number("weight", 1.0, minimum=0)
        if weight is None or not math.isfinite(weight):
            if weight is not None:
                sec.problems.add(sec.at("weight"), f"must be a finite number >= 0 (got {weight!r})")
            weight = 1.0
    unique = tuple(dict.fromkeys(b for _, b in names or ()))
    return Target(backends=unique, model=model, weight=float(weight)) if unique else None


def read_shadow(sec: Section, backends: Mapping[str, str]) -> Shadow | None:
    """Read the optional ``shadow`` mapping: a target (no weight) plus a ``share`` in (0, 1]."""
    if not sec.has("shadow"):
        sec.mapping("shadow")  # marks the key as read
        return None
    shadow_sec = sec.mapping("shadow")
    target = _target(shadow_sec, backends, weighted=False)
    share = shadow_sec.number("share", minimum=0, exclusive_minimum=True, maximum=1)
    shadow_sec.done()
    return Shadow(target=target, share=float(share)) if target and share is not None else None
