"""Config reading and semantic checks in policies.parse.parse_policy."""

from __future__ import annotations

from types import MappingProxyType

import pytest

from policies import DEFAULT_FALLBACK_ON, Outcome, Problems, RetrySettings, Shadow, Target
from policies import BreakerSettings, parse_policy

BACKENDS = {"gpu1": "ollama", "gpu2": "ollama", "cloud": "openai"}
KNOWN = "known: gpu1, gpu2, cloud"


def good(**changes: object) -> dict[str, object]:
    """A valid route, with some keys replaced (a value of None removes the key)."""
    route: dict[str, object] = {"name": "chat", "models": ["llama3"], "targets": [{"backend": "gpu1"}]}
    route.update(changes)
    return {k: v for k, v in route.items() if v is not None}


def problems_for(
    routes: object, breaker: object = None, backends: dict[str, str] = BACKENDS
) -> list[tuple[str, str]]:
    """Parse and return the problems found."""
    problems = Problems()
    parse_policy(routes, breaker, backends=backends, problems=problems, environ={"GPU": "gpu2"})
    return problems.items


def test_full_route_parses() -> None:
    """Every documented key of a route is read into the frozen model."""
    problems = Problems()
    policy = parse_policy(
        [
            {
                "name": "chat",
                "models": ["gpt-4o", "gpt-4o-*", "llama3"],
                "targets": [
                    {"backend": "gpu1", "model": "llama3.2:3b", "weight": 95},
                    {"backend": ["gpu1", "${GPU}"], "weight": 5},
                ],
                "fallback": [{"backend": "cloud", "model": "gpt-4o-mini"}],
                "fallback_on": ["connect", "5xx"],
                "sticky": ["header:X-Session-Id", "user"],
                "options": {"num_ctx": 8192},
                "keep_alive": "30m",
                "shadow": {"backend": "gpu2", "model": "llama3.2:3b", "share": 0.1},
                "retry": {"attempts": 1, "base_delay": 0.5, "max_delay": 4, "budget": 10},
                "required": False,
            }
        ],
        {"failures": 3, "ratio": 0.25, "window": 60, "min_requests": 20, "cooldown": 10},
        backends=BACKENDS,
        problems=problems,
        environ={"GPU": "gpu2"},
    )
    assert problems.items == []
    (route,) = policy.routes
    assert route.models == ("gpt-4o", "gpt-4o-*", "llama3")
    assert route.targets == (
        Target(backends=("gpu1",), model="llama3.2:3b", weight=95.0),
        Target(backends=("gpu1", "gpu2"), model=None, weight=5.0),
    )
    assert route.fallback == (Target(backends=("cloud",), model="gpt-4o-mini"),)
    assert route.fallback_on == frozenset({Outcome.CONNECT, Outcome.SERVER_ERROR})
    assert route.sticky == ("header:X-Session-Id", "user")
    assert isinstance(route.options, MappingProxyType) and dict(route.options) == {"num_ctx": 8192}
    assert route.keep_alive == "30m"
    assert route.shadow == Shadow(target=Target(backends=("gpu2",), model="llama3.2:3b"), share=0.1)
    assert route.retry == RetrySettings(attempts=1, base_delay=0.5, max_delay=4, budget=10)
    assert route.required is False
    assert policy.breaker == BreakerSettings(failures=3, ratio=0.25, window=60, min_requests=20, cooldown=10)
    assert dict(policy.backends) == BACKENDS


def test_route_defaults() -> None:
    """Omitted optional keys take the documented defaults."""
    problems = Problems()
    policy = parse_policy([good()], None, backends=BACKENDS, problems=problems)
    (route,) = policy.routes
    assert problems.items == []
    assert route.fallback == () and route.fallback_on == DEFAULT_FALLBACK_ON
    assert route.sticky == ("api_key", "user") and dict(route.options) == {}
    assert (route.keep_alive, route.shadow, route.retry, route.required) == (None, None, RetrySettings(), True)
    assert policy.breaker == BreakerSettings()


@pytest.mark.parametrize("raw_routes", [None, []])
def test_no_routes_gives_the_default_route(raw_routes: object) -> None:
    """Without routes every model goes to the first backend under its own name."""
    problems = Problems()
    policy = parse_policy(raw_routes, None, backends=BACKENDS, problems=problems)
    assert problems.items == []
    (route,) = policy.routes
    assert (route.name, route.models, route.required) == ("default", ("*",), True)
    assert route.targets == (Target(backends=("gpu1",), model=None),)


def test_no_backends_is_an_error() -> None:
    """A policy needs at least one backend to send anything to."""
    assert problems_for(None, backends={}) == [("backends", "at least one backend is required")]


ONE_OF = (
    "must be one of connect, timeout, 5xx, 429, queue_full, model_not_found, stream_error, "
    "broken_stream, bad_request, upstream_auth, context_length, client_disconnect"
)
STICKY = "must be api_key, user or header:<Name>"
KEEP_ALIVE = "must be a duration such as '30m' or a whole number of seconds"
EXAMPLE = "{backend: gpu1, model: llama3.2:3b}"

# (changes to one otherwise valid route, path, message)
ROUTE_ERRORS = [
    ({"name": None}, "routes[0].name", "is required"),
    ({"name": "  "}, "routes[0].name", "must not be empty"),
    ({"models": None}, "routes[0].models", "is required"),
    ({"models": []}, "routes[0].models", "must list at least one model name or pattern"),
    ({"models": ["a", 3]}, "routes[0].models[1]", "must be a string (got 3)"),
    ({"models": ["a", ""]}, "routes[0].models[1]", "must not be empty"),
    ({"targets": None}, "routes[0].targets", "is required"),
    ({"targets": []}, "routes[0].targets", "must list at least one target"),
    ({"targets": "gpu1"}, "routes[0].targets", "must be a list (got 'gpu1')"),
    ({"targets": ["gpu1"]}, "routes[0].targets[0]", f"must be a mapping such as {EXAMPLE} (got 'gpu1')"),
    ({"targets": [{"model": "m"}]}, "routes[0].targets[0].backend", "is required"),
    ({"targets": [{"backend": []}]}, "routes[0].targets[0].backend", "must name at least one backend"),
    ({"targets": [{"backend": ""}]}, "routes[0].targets[0].backend", "must not be empty"),
    ({"targets": [{"backend": "gpu9"}]}, "routes[0].targets[0].backend", f"unknown backend 'gpu9' ({KNOWN})"),
    (
        {"targets": [{"backend": ["gpu1", "gpu9"]}]},
        "routes[0].targets[0].backend[1]",
        f"unknown backend 'gpu9' ({KNOWN})",
    ),
    ({"targets": [{"backend": "${NOPE}"}]}, "routes[0].targets[0].backend", "environment variable NOPE is not set"),
    (
        {"targets": [{"backend": "gpu1", "model": ""}]},
        "routes[0].targets[0].model",
        "must not be empty (omit it to pass the client's model through)",
    ),
    (
        {"targets": [{"backend": "gpu1"}, {"backend": "gpu2", "weight": "ten"}]},
        "routes[0].targets[1].weight",
        "must be a number >= 0 (got 'ten')",
    ),
    # weight 0 is allowed (a 100/0 migration phase), but not on every target
    ({"targets": [{"backend": "gpu1", "weight": 0}]}, "routes[0].targets",
     "needs at least one target with a weight > 0 (all are 0)"),
    ({"targets": [{"backend": "gpu1", "weight": -1}]}, "routes[0].targets[0].weight", "must be a number >= 0 (got -1)"),
    (
        {"targets": [{"backend": "gpu1", "weight": float("inf")}]},
        "routes[0].targets[0].weight",
        "must be a finite number >= 0 (got inf)",
    ),
    ({"targets": [{"backend": "gpu1", "wieght": 2}]}, "routes[0].targets[0].wieght", "unknown key"),
    ({"fallback": [{"backend": "cloud", "weight": 2}]}, "routes[0].fallback[0].weight", "unknown key"),
    ({"fallback": [{"backend": "gpu7"}]}, "routes[0].fallback[0].backend", f"unknown backend 'gpu7' ({KNOWN})"),
    ({"fallbak": []}, "routes[0].fallbak", "unknown key"),
    ({"fallback_on": ["connect", "500"]}, "routes[0].fallback_on[1]", f"{ONE_OF} (got '500')"),
    ({"fallback_on": ["ok"]}, "routes[0].fallback_on[0]", f"{ONE_OF} (got 'ok')"),
    ({"sticky": ["user", "cookie"]}, "routes[0].sticky[1]", f"{STICKY} (got 'cookie')"),
    ({"sticky": ["header:"]}, "routes[0].sticky[0]", f"{STICKY} (got 'header:')"),
    ({"options": [1]}, "routes[0].options", "must be a mapping (got [1])"),
    ({"keep_alive": True}, "routes[0].keep_alive", f"{KEEP_ALIVE} (got True)"),
    ({"keep_alive": 1.5}, "routes[0].keep_alive", f"{KEEP_ALIVE} (got 1.5)"),
    ({"shadow": {"backend": "gpu2"}}, "routes[0].shadow.share", "is required"),
    ({"shadow": {"backend": "gpu2", "share": 1.5}}, "routes[0].shadow.share", "must be a number <= 1 (got 1.5)"),
    ({"shadow": {"backend": "gpu2", "share": 0}}, "routes[0].shadow.share", "must be a number > 0 (got 0)"),
    ({"shadow": {"backend": "nope", "share": 0.5}}, "routes[0].shadow.backend", f"unknown backend 'nope' ({KNOWN})"),
    ({"shadow": "gpu2"}, "routes[0].shadow", "must be a mapping (got 'gpu2')"),
    ({"retry": {"attempts": -1}}, "routes[0].retry.attempts", "must be an integer >= 0 (got -1)"),
    ({"retry": {"attempts": 1.5}}, "routes[0].retry.attempts", "must be an integer >= 0 (got 1.5)"),
    ({"retry": {"budjet": 1}}, "routes[0].retry.budjet", "unknown key"),
    ({"required": "yes"}, "routes[0].required", "must be true or false (got 'yes')"),
]

# (routes, breaker, path, message)
POLICY_ERRORS = [
    ("chat", None, "routes", "must be a list of routes (got str)"),
    (["chat"], None, "routes[0]", "must be a mapping with name, models and targets (got 'chat')"),
    (
        [good(), good(models=["x"])],
        None,
        "routes[1].name",
        "duplicate route name 'chat' (first used at routes[0].name)",
    ),
    (
        [good(models=["a", "llama3"]), good(name="b", models=["llama3"])],
        None,
        "routes[1].models[0]",
        "'llama3' is already claimed by route 'chat' (routes[0].models[1])",
    ),
    (
        [good(models=["*"]), good(name="b", models=["*"])],
        None,
        "routes[1].models[0]",
        "'*' is already claimed by route 'chat' (routes[0].models[0])",
    ),
    (None, {"ratio": 2}, "breaker.ratio", "must be a number <= 1 (got 2)"),
    (None, {"ratio": 0}, "breaker.ratio", "must be a number > 0 (got 0)"),
    (None, {"failures": 0}, "breaker.failures", "must be an integer >= 1 (got 0)"),
    (None, {"min_requests": 2.5}, "breaker.min_requests", "must be an integer >= 1 (got 2.5)"),
    (None, {"window": -5}, "breaker.window", "must be a number > 0 (got -5)"),
    (None, {"cooldwn": 5}, "breaker.cooldwn", "unknown key"),
    (None, [1], "breaker", "must be a mapping (got [1])"),
]


@pytest.mark.parametrize(("changes", "path", "message"), ROUTE_ERRORS)
def test_route_error_paths(changes: dict[str, object], path: str, message: str) -> None:
    """Each mistake in a route is reported once, at its exact dotted path, saying what is allowed."""
    found = problems_for([good(**changes)])
    assert (path, message) in found, found
    assert [p for p, _ in found].count(path) == 1


@pytest.mark.parametrize(("routes", "breaker", "path", "message"), POLICY_ERRORS)
def test_policy_error_paths(routes: object, breaker: object, path: str, message: str) -> None:
    """Mistakes across routes and in the breaker are reported at their exact dotted paths."""
    found = problems_for(routes, breaker)
    assert (path, message) in found, found
    assert [p for p, _ in found].count(path) == 1


def test_all_problems_are_collected() -> None:
    """Several mistakes in one config are all reported, in the order they appear."""
    found = problems_for(
        [good(targets=[{"backend": "gpu9", "weight": -1}]), good(name="chat", fallbak=1)],
        {"ratio": 7},
    )
    assert [p for p, _ in found] == [
        "breaker.ratio",
        "routes[0].targets[0].backend",
        "routes[0].targets[0].weight",
        "routes[1].name",
        "routes[1].models[0]",
        "routes[1].fallbak",
    ]


def test_same_pattern_twice_in_one_route_is_not_a_conflict() -> None:
    """Only a name claimed by two different routes is an error."""
    assert problems_for([good(models=["llama3", "llama3"])]) == []


@pytest.mark.parametrize(("raw", "expected"), [("30m", "30m"), (300, 300), (-1, -1), (600.0, 600), ("-1", "-1")])
def test_keep_alive_accepts_durations_and_seconds(raw: object, expected: object) -> None:
    """keep_alive is a duration string or a whole number of seconds, passed on as given."""
    problems = Problems()
    policy = parse_policy([good(keep_alive=raw)], None, backends=BACKENDS, problems=problems)
    assert problems.items == [] and policy.routes[0].keep_alive == expected


def test_lone_strings_are_lists_of_one() -> None:
    """A single model, backend, outcome or sticky source may be written without list brackets."""
    problems = Problems()
    policy = parse_policy(
        [good(models="llama3", fallback_on="connect", sticky="user")], None, backends=BACKENDS, problems=problems
    )
    assert problems.items == []
    route = policy.routes[0]
    assert (route.models, route.fallback_on, route.sticky) == (("llama3",), frozenset({Outcome.CONNECT}), ("user",))


def test_empty_sticky_list_means_random() -> None:
    """sticky: [] is kept as an empty tuple rather than replaced by the default."""
    problems = Problems()
    policy = parse_policy([good(sticky=[])], None, backends=BACKENDS, problems=problems)
    assert problems.items == [] and policy.routes[0].sticky == ()
