"""Reading the ``routes`` and ``breaker`` config sections into a ``Policy``, reporting every mistake.

Every problem is added to the caller's ``Problems`` with a dotted path, e.g.
``routes[1].targets[0].weight: must be a number > 0 (got 'ten')``; a best-effort ``Policy`` is
returned anyway and the caller raises once. Unknown keys are errors, so typos cannot hide.
Pure: no file or environment access (``${VAR}`` resolves against the ``environ`` passed in).

The user-facing shape::

    routes:
      - name: chat                 # required, unique
        models: ["gpt-4o", "gpt-4o-*", "llama3"]   # exact names/aliases and fnmatch globs; "*" = default route
        targets:                   # >= 1
          - backend: gpu1          # a backend name, or a list of names = a pool balanced by choose_backend
            model: llama3.2:3b     # name on that backend; omitted = the client's model name
            weight: 95             # >= 0, default 1: the traffic split between targets (0: never chosen)
        fallback:                  # ordered targets tried after the chosen one fails (same shape, no weight)
          - {backend: cloud, model: gpt-4o-mini}
        fallback_on: [connect, timeout, 5xx, 429, queue_full, model_not_found, stream_error]
                                   # default DEFAULT_FALLBACK_ON
        sticky: [header:X-Session-Id, user, api_key]
                                   # first present key decides the arm; default [api_key, user]; [] = random
        options: {num_ctx: 8192}   # defaults injected into Ollama requests unless the client set them
        keep_alive: 30m            # string or number
        shadow: {backend: gpu2, model: llama3.2:3b, share: 0.1}
        retry: {attempts: 1, base_delay: 0.25, max_delay: 4, budget: 15}
        required: true             # default true: readiness needs a healthy target for this route
        hosted_tools: ignore       # tools Ollama cannot run (web_search, server tools): ignore | refuse (400)
        max_output_tokens: 8192    # optional cap on what one request may ask to generate
    breaker: {failures: 5, ratio: 0.5, window: 30, min_requests: 10, cooldown: 30}

With no routes at all, every model goes to the first backend under the client's own model name
(one route named ``default`` matching ``"*"``).
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from policies.model import BreakerSettings, Policy, RetrySettings, Route, Target
from policies.outcome import DEFAULT_FALLBACK_ON, Outcome
from policies.schema import Problems, Section
from policies.targets import read_shadow, read_strings, read_targets

__all__ = ["parse_policy"]

_FALLBACK_CHOICES = tuple(o.value for o in Outcome if o is not Outcome.OK)
_STICKY_HINT = "must be api_key, user or header:<Name>"


def parse_policy(
    raw_routes: object,
    raw_breaker: object,
    *,
    backends: Mapping[str, str],
    problems: Problems,
    environ: Mapping[str, str] | None = None,
) -> Policy:
    """Read the raw ``routes`` list and ``breaker`` mapping into a ``Policy``.

    ``backends`` maps each declared backend name to its kind ("ollama" | "openai"). Every problem
    goes into ``problems`` with a path starting at ``routes`` or ``breaker``; the returned policy
    skips routes too broken to build, so callers must check ``problems`` before using it.
    """
    if not backends:
        problems.add("backends", "at least one backend is required")
    breaker = _breaker(Section(raw_breaker, "breaker", problems, environ))
    if raw_routes is None or raw_routes == []:
        routes = _default_routes(backends)
    elif not isinstance(raw_routes, list):
        problems.add("routes", f"must be a list of routes (got {type(raw_routes).__name__})")
        routes = ()
    else:
        names: dict[str, str] = {}
        claims: dict[str, tuple[str, str]] = {}
        built: list[Route] = []
        for i, item in enumerate(raw_routes):
            if not isinstance(item, Mapping):
                hint = "must be a mapping with name, models and targets"
                problems.add(f"routes[{i}]", f"{hint} (got {item!r})")
                continue
            route = _route(Section(item, f"routes[{i}]", problems, environ), backends, names, claims)
            if route is not None:
                built.append(route)
        routes = tuple(built)
    return Policy(routes=routes, backends=backends, breaker=breaker)


def _default_routes(backends: Mapping[str, str]) -> tuple[Route, ...]:
    if not backends:
        return ()
    target = Target(backends=(next(iter(backends)),), model=None)
    return (Route(name="default", models=("*",), targets=(target,), required=True),)


def _route(
    sec: Section,
    backends: Mapping[str, str],
    names: dict[str, str],
    claims: dict[str, tuple[str, str]],
) -> Route | None:
    name = sec.str("name")
    if name is not None:
        if not name.strip():
            sec.problems.add(sec.at("name"), "must not be empty")
        elif name in names:
            sec.problems.add(sec.at("name"), f"duplicate route name {name!r} (first used at {names[name]})")
        else:
            names[name] = sec.at("name")
    models = read_strings(sec, "models", required=True) or []
    if sec.raw.get("models") == []:
        sec.problems.add(sec.at("models"), "must list at least one model name or pattern")
    for path, pattern in models:
        if not pattern:
            sec.problems.add(path, "must not be empty")
        elif pattern in claims and not claims[pattern][0].startswith(f"{sec.path}."):
            where, owner = claims[pattern]
            sec.problems.add(path, f"{pattern!r} is already claimed by route {owner!r} ({where})")
        else:
            claims.setdefault(pattern, (path, name or "?"))
    targets = read_targets(sec, "targets", backends, weighted=True)
    if sec.raw.get("targets") == []:
        sec.problems.add(sec.at("targets"), "must list at least one target")
    elif targets and not any(target.weight > 0 for target in targets):
        sec.problems.add(sec.at("targets"), "needs at least one target with a weight > 0 (all are 0)")
        targets = ()
    fallback = read_targets(sec, "fallback", backends, weighted=False)
    fallback_on, sticky, options = _fallback_on(sec), _sticky(sec), _options(sec)
    keep_alive = sec.custom("keep_alive", _keep_alive, None)
    shadow, retry = read_shadow(sec, backends), _retry(sec.mapping("retry"))
    required = sec.bool("required", True)
    hosted_tools = sec.str("hosted_tools", "ignore", choices=("ignore", "refuse"))
    max_output_tokens = sec.number("max_output_tokens", None, minimum=1, integer=True)
    sec.done()
    if not (name and targets):
        return None
    return Route(
        name=name,
        models=tuple(pattern for _, pattern in models),
        targets=targets,
        fallback=fallback,
        fallback_on=fallback_on,
        sticky=sticky,
        options=MappingProxyType(options),
        keep_alive=keep_alive,
        shadow=shadow,
        retry=retry,
        required=required,
        hosted_tools=hosted_tools or "ignore",
        max_output_tokens=max_output_tokens,
    )


def _fallback_on(sec: Section) -> frozenset[Outcome]:
    items = read_strings(sec, "fallback_on", allow_int=True)
    if items is None:
        return DEFAULT_FALLBACK_ON
    outcomes = set()
    for path, text in items:
        if text in _FALLBACK_CHOICES:
            outcomes.add(Outcome(text))
        else:
            sec.problems.add(path, f"must be one of {', '.join(_FALLBACK_CHOICES)} (got {text!r})")
    return frozenset(outcomes)


def _sticky(sec: Section) -> tuple[str, ...]:
    items = read_strings(sec, "sticky")
    if items is None:
        return ("api_key", "user")
    keys = []
    for path, text in items:
        header = text.startswith("header:") and text[len("header:") :].strip()
        if text in ("api_key", "user") or header:
            keys.append(text)
        else:
            sec.problems.add(path, f"{_STICKY_HINT} (got {text!r})")
    return tuple(keys)


def _options(sec: Section) -> dict[str, object]:
    options = sec.raw_mapping("options", {})
    for key in options:
        if not isinstance(key, str):
            sec.problems.add(sec.at("options"), f"keys must be strings (got {key!r})")
    return {str(k): v for k, v in options.items()}


def _keep_alive(value: object, path: str) -> str | int:
    if isinstance(value, str) and value.strip():
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    raise ValueError(f"must be a duration such as '30m' or a whole number of seconds (got {value!r})")


def _retry(sec: Section) -> RetrySettings:
    defaults = RetrySettings()
    settings = RetrySettings(
        attempts=sec.number("attempts", defaults.attempts, minimum=0, integer=True),
        base_delay=sec.number("base_delay", defaults.base_delay, minimum=0),
        max_delay=sec.number("max_delay", defaults.max_delay, minimum=0),
        budget=sec.number("budget", defaults.budget, minimum=0),
    )
    sec.done()
    return settings


def _breaker(sec: Section) -> BreakerSettings:
    d = BreakerSettings()
    settings = BreakerSettings(
        failures=sec.number("failures", d.failures, minimum=1, integer=True),
        ratio=sec.number("ratio", d.ratio, minimum=0, exclusive_minimum=True, maximum=1),
        window=sec.number("window", d.window, minimum=0, exclusive_minimum=True),
        min_requests=sec.number("min_requests", d.min_requests, minimum=1, integer=True),
        cooldown=sec.number("cooldown", d.cooldown, minimum=0, exclusive_minimum=True),
    )
    sec.done()
    return settings
