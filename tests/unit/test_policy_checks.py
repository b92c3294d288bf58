"""``--check-config`` warnings: shadowed globs, pools mixing backend kinds, fallbacks repeating a target."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

from policies import Problems, parse_policy
from policies.checks import policy_warnings

ROOT = Path(__file__).resolve().parents[2]
KINDS = {"gpu1": "ollama", "gpu2": "ollama", "cloud": "openai"}


def warnings_for(routes: list[dict[str, object]]) -> list[tuple[str, str]]:
    problems = Problems()
    policy = parse_policy(routes, None, backends=KINDS, problems=problems)
    assert problems.items == []
    return policy_warnings(policy)


def test_a_clean_policy_has_no_warnings():
    """Exact names, distinct globs, one-kind pools and a distinct fallback: nothing to say."""
    assert warnings_for([
        {"name": "a", "models": ["llama3.2", "qwen*"], "targets": [{"backend": ["gpu1", "gpu2"]}],
         "fallback": [{"backend": "cloud", "model": "gpt-4o-mini"}]},
        {"name": "b", "models": ["*"], "targets": [{"backend": "gpu2"}]},
    ]) == []


def test_an_earlier_glob_that_takes_every_name_makes_a_later_route_unreachable():
    """llama3* after llama* never matches; a route of only shadowed globs is called unreachable."""
    found = warnings_for([
        {"name": "all-llama", "models": ["llama*"], "targets": [{"backend": "gpu1"}]},
        {"name": "llama3", "models": ["llama3*"], "targets": [{"backend": "gpu2"}]},
        {"name": "mixed", "models": ["llama3.1*", "phi3"], "targets": [{"backend": "gpu2"}]},
    ])
    assert found == [
        ("routes[1].models[0]", "'llama3*' never matches: routes[0] ('all-llama') has 'llama*', tried first; "
                                "route 'llama3' is unreachable"),
        ("routes[2].models[0]", "'llama3.1*' never matches: routes[0] ('all-llama') has 'llama*', tried first"),
    ]


def test_the_catch_all_route_shadows_nothing_listed_after_it():
    """A route listing "*" is tried last, so a glob in a later route still matches."""
    assert warnings_for([
        {"name": "default", "models": ["*"], "targets": [{"backend": "gpu1"}]},
        {"name": "qwen", "models": ["qwen*"], "targets": [{"backend": "gpu2"}]},
    ]) == []


def test_a_pool_mixing_kinds_and_a_fallback_repeating_the_primary_are_warned():
    """An ollama+openai pool, and a fallback that is the primary again."""
    found = warnings_for([{"name": "r", "models": ["m"], "targets": [{"backend": ["gpu1", "cloud"]}],
                           "fallback": [{"backend": ["cloud", "gpu1"]}]}])
    assert [path for path, _ in found] == ["routes[0].targets[0].backend", "routes[0].fallback[0].backend",
                                           "routes[0].fallback[0]"]
    assert "different kinds (ollama, openai)" in found[0][1]
    assert found[2][1].startswith("repeats routes[0].targets[0] (gpu1+cloud:*)")


def test_check_config_prints_warnings_and_still_succeeds(tmp_path: Path):
    """``--check-config`` exits 0 for a valid file and prints each warning with its path."""
    path = tmp_path / "warn.yaml"
    path.write_text(yaml.safe_dump({
        "backends": [{"name": "gpu1", "type": "ollama", "url": "http://127.0.0.1:11434"}],
        "routes": [{"name": "a", "models": ["llama*"], "targets": [{"backend": "gpu1"}]},
                   {"name": "b", "models": ["llama3*"], "targets": [{"backend": "gpu1"}],
                    "fallback": [{"backend": "gpu1"}]}]}))
    result = subprocess.run([sys.executable, "-m", "proxy", "--check-config", str(path)], cwd=ROOT,
                            capture_output=True, text=True, timeout=60, env={"PATH": "/usr/bin:/bin"})
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"{path}: OK (2 warning(s))"
    assert "warning: routes[1].models[0]: 'llama3*' never matches" in result.stderr
    assert "warning: routes[1].fallback[0]: repeats routes[1].targets[0]" in result.stderr
