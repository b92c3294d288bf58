"""Ollama's own API in front: the pure decisions behind passing native calls through.

Pure: no framework. Nothing here translates a dialect (a native body stays native); it decides
which attempts of a routing plan can take a native call (Ollama backends only), fills a route's
defaults into a native body, merges the model lists of several Ollama backends into the one list a
caller sees (``/api/tags``, ``/api/ps``), and picks the version the gateway reports.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from policies.model import Attempt, Plan, Policy, Route, Target
from policies.plan import is_glob, resolve_route
from proxy.translate.fields import token_count, wrong_type

__all__ = ["native_body", "native_attempts", "merge_models", "lowest_version", "final_timings", "with_model_field",
           "native_backends",
           "NATIVE_KIND"]

NATIVE_KIND = "ollama"  # the only backend type a native call can reach: no translation to OpenAI's dialect exists

# the parts of a final line that are the answer, not its timings and counts (a generate's
# ``context`` can be thousands of token ids: the request log and metrics never need them)
_ANSWER_KEYS = frozenset({"message", "response", "context", "embeddings", "embedding", "logprobs"})


def native_body(body: Mapping[str, object], *, default_options: Mapping[str, object],
                default_keep_alive: str | int | None) -> dict[str, object]:
    """The client's native body with the route's defaults filled in where the client left them unset.

    Only ``options`` must be an object for that (a 400 naming it otherwise); every other field is
    Ollama's to judge and passes through unchanged.
    """
    native = dict(body)
    options = body.get("options")
    if options is not None and not isinstance(options, Mapping):
        raise wrong_type("options", "an object", options)
    if default_options:
        native["options"] = {**default_options, **(options or {})}
    if default_keep_alive is not None and body.get("keep_alive") is None:
        native["keep_alive"] = default_keep_alive
    return native


def with_model_field(body: Mapping[str, object]) -> dict[str, object]:
    """Older clients name the model ``name`` in show, pull, push, create and delete (Ollama still
    accepts it): read it as ``model``."""
    out = dict(body)
    if out.get("model") is None and isinstance(out.get("name"), str):
        out["model"] = out.pop("name")
    return out


def _native_target(target: Target, kinds: Mapping[str, str]) -> Target | None:
    """``target`` narrowed to its Ollama backends (None when it has none)."""
    names = tuple(name for name in target.backends if kinds.get(name) == NATIVE_KIND)
    if not names:
        return None
    if len(names) == len(target.backends):
        return target
    return Target(backends=names, model=target.model, weight=target.weight)


def native_attempts(plan: Plan, kinds: Mapping[str, str], client_model: str) -> tuple[Attempt, ...]:
    """The attempts of ``plan`` a native call can take: those on Ollama backends, in the plan's order.

    A pool mixing kinds keeps only its Ollama members. When the chosen split arm has no Ollama
    backend, the route's first other arm that has one takes its place (before the fallbacks), so
    a split that sends a share of traffic to a cloud still serves every native caller.
    """
    route = plan.route
    out: list[Attempt] = []
    seen: set[tuple[tuple[str, ...], str]] = set()

    def add(target: Target, role: str) -> None:
        narrowed = _native_target(target, kinds)
        if narrowed is None:
            return
        attempt = Attempt(target=narrowed, model=target.model or client_model, role=role)
        identity = (narrowed.backends, attempt.model)
        if identity not in seen:
            seen.add(identity)
            out.append(attempt)

    primary, *rest = plan.attempts
    add(primary.target, primary.role)
    if not out:
        for i, target in enumerate(route.targets):
            if i != plan.arm and _native_target(target, kinds) is not None:
                add(target, "primary")
                break
    for attempt in rest:
        add(attempt.target, attempt.role)
    return tuple(out)


def native_backends(policy: Policy, model: str) -> tuple[str, ...]:
    """The Ollama backends ``model``'s route can reach (targets, then fallbacks), in config order."""
    route = resolve_route(policy, model)
    names: list[str] = []
    for target in (*route.targets, *route.fallback) if route is not None else ():
        narrowed = _native_target(target, policy.backends)
        names.extend(n for n in (narrowed.backends if narrowed else ()) if n not in names)
    return tuple(names)


def _serves_natively(route: Route, kinds: Mapping[str, str]) -> bool:
    return any(_native_target(t, kinds) is not None for t in (*route.targets, *route.fallback))


def _entry_name(entry: Mapping[str, object]) -> str | None:
    name = entry.get("model") or entry.get("name")
    return name if isinstance(name, str) and name else None


def _find(listing: Mapping[str, Mapping[str, object]], model: str) -> Mapping[str, object] | None:
    """Ollama's lookup: ``llama3.2`` is ``llama3.2:latest``."""
    found = listing.get(model)
    if found is None and ":" not in model.rpartition("/")[2]:
        found = listing.get(model + ":latest")
    return found


def merge_models(policy: Policy, listings: Sequence[tuple[str, Sequence[Mapping[str, object]]]],
                 allowed: Callable[[str], bool]) -> list[dict[str, object]]:
    """One model list in Ollama's shape from several backends' lists (``/api/tags`` or ``/api/ps``).

    ``listings`` holds ``(backend name, its models)`` in config order. First the routes' exact
    names (aliases), each listed under its own name with the entry of the model it maps to, when
    some Ollama target of its route has that model; then every listed model a route accepts and
    can serve natively. A name appears once (the first backend's entry wins) and only when
    ``allowed`` (the caller's allow-list) lets the caller use it.
    """
    kinds = policy.backends
    by_backend: dict[str, dict[str, Mapping[str, object]]] = {}
    for backend, models in listings:
        index = by_backend.setdefault(backend, {})
        for entry in models:
            name = _entry_name(entry)
            if name is not None and name not in index:
                index[name] = entry
    out: list[dict[str, object]] = []
    seen: set[str] = set()

    def emit(name: str, entry: Mapping[str, object]) -> None:
        seen.add(name)
        out.append({**entry, "name": name, "model": name})

    for route in policy.routes:
        for alias in route.models:
            if is_glob(alias) or alias in seen or not allowed(alias) or resolve_route(policy, alias) is not route:
                continue
            for target in (*route.targets, *route.fallback):
                narrowed = _native_target(target, kinds)
                entry = next((found for backend in (narrowed.backends if narrowed else ())
                              if (found := _find(by_backend.get(backend, {}), target.model or alias)) is not None),
                             None)
                if entry is not None:
                    emit(alias, entry)
                    break
    for backend, _ in listings:
        for name, entry in by_backend.get(backend, {}).items():
            if name in seen or not allowed(name):
                continue
            route = resolve_route(policy, name)
            if route is not None and _serves_natively(route, kinds):
                emit(name, entry)
    return out


def _version_key(version: str) -> tuple[tuple[int, ...], str]:
    head = version.lstrip("v").split("-", 1)[0].split("+", 1)[0]
    numbers: list[int] = []
    for part in head.split("."):
        if not part.isdigit():
            break
        numbers.append(int(part))
    return tuple(numbers), version


def lowest_version(versions: Sequence[object]) -> str | None:
    """The lowest of the backends' versions (a client gating features on it must find them everywhere)."""
    texts = [v for v in versions if isinstance(v, str) and v]
    return min(texts, key=_version_key) if texts else None


def final_timings(final: Mapping[str, object]) -> tuple[dict[str, object], int, int]:
    """An answer's (or a stream's last line's) timings and its prompt and output token counts."""
    timings = {k: v for k, v in final.items() if k not in _ANSWER_KEYS}
    return timings, token_count(final.get("prompt_eval_count")), token_count(final.get("eval_count"))
