"""Config parsing: the shipped files parse, and each class of mistake is reported at its dotted path."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from proxy.config import ConfigError, load_config, parse_config

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "config.example.yaml"
PRESETS = sorted((ROOT / "examples" / "migration").glob("*.yaml"))
_REQUIRED_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")  # ${X} without a :-default


def _environ_for(path: Path) -> dict[str, str]:
    """A fake environment that sets every variable the file requires (placeholder values)."""
    return {name: f"test-{name.lower()}" for name in _REQUIRED_VAR.findall(path.read_text())}


def _problems(raw: dict[str, Any], environ: dict[str, str] | None = None) -> list[tuple[str, str]]:
    with pytest.raises(ConfigError) as caught:
        parse_config(raw, environ or {})
    return list(caught.value.problems)


def _backend(**overrides: Any) -> dict[str, Any]:
    return {"name": "gpu1", "type": "ollama", "url": "http://127.0.0.1:11434", **overrides}


def _route(**overrides: Any) -> dict[str, Any]:
    return {"name": "chat", "models": ["llama3.2"], "targets": [{"backend": "gpu1"}], **overrides}


def test_example_config_parses():
    """``config.example.yaml`` at the repository root is a valid config."""
    if not EXAMPLE.exists():
        pytest.skip("config.example.yaml not written yet")
    config = load_config(str(EXAMPLE), _environ_for(EXAMPLE))
    assert config.backends and config.policy.routes


def test_no_config_means_one_local_ollama():
    """Without a file the gateway fronts OLLAMA_BASE_URL and passes every model through."""
    config = parse_config({}, {"OLLAMA_BASE_URL": "http://ollama:11434/"})
    assert [(b.name, b.kind, b.url) for b in config.backends] == [("ollama", "ollama", "http://ollama:11434")]
    assert config.policy.routes[0].models == ("*",)


@pytest.mark.parametrize("path", PRESETS, ids=[p.stem for p in PRESETS])
def test_migration_presets_parse(path: Path):
    """Each migration preset passes the config checker given the env vars it names."""
    config = load_config(str(path), _environ_for(path))
    assert any(b.kind == "ollama" for b in config.backends)
    assert any(b.kind == "openai" and b.api_key for b in config.backends)


def test_there_are_four_migration_presets():
    """The four phases are all present, so a renamed file cannot silently drop out of the test above."""
    assert [p.stem.split("-")[0] for p in PRESETS] == ["phase1", "phase2", "phase3", "phase4"]


MISTAKES = [
    ("unknown-top-level-key", {"backends": [_backend()], "rotues": []}, "rotues", "unknown key"),
    ("unknown-backend-key", {"backends": [_backend(timeout=5)]}, "backends[0].timeout", "unknown key"),
    ("unknown-route-key", {"backends": [_backend()], "routes": [_route(fallbak=[])]}, "routes[0].fallbak",
     "unknown key"),
    ("bad-url-scheme", {"backends": [_backend(url="ftp://host")]}, "backends[0].url", "http:// or https://"),
    ("url-without-host", {"backends": [_backend(url="http://")]}, "backends[0].url", "with a host"),
    ("url-with-credentials", {"backends": [_backend(url="https://me:secret@host")]}, "backends[0].url",
     "must not contain credentials"),
    ("missing-env-var", {"backends": [_backend(type="openai", url="https://api.example.com/v1",
                                                api_key="${CLOUD_KEY}")]},
     "backends[0].api_key", "environment variable CLOUD_KEY is not set"),
    ("unknown-backend-in-route", {"backends": [_backend()], "routes": [_route(targets=[{"backend": "gpu9"}])]},
     "routes[0].targets[0].backend", "unknown backend 'gpu9'"),
    ("unknown-backend-in-fallback", {"backends": [_backend()], "routes": [_route(fallback=[{"backend": "x"}])]},
     "routes[0].fallback[0].backend", "unknown backend 'x'"),
    ("weight-not-a-number", {"backends": [_backend()],
                             "routes": [_route(targets=[{"backend": "gpu1", "weight": "ten"}])]},
     "routes[0].targets[0].weight", "must be a number >= 0"),
    ("weight-zero-everywhere", {"backends": [_backend()],
                                "routes": [_route(targets=[{"backend": "gpu1", "weight": 0}])]},
     "routes[0].targets", "needs at least one target with a weight > 0"),
    ("duplicate-backend-name", {"backends": [_backend(), _backend(url="http://127.0.0.2:11434")]},
     "backends[1].name", "duplicate backend name 'gpu1'"),
    ("bad-backend-type", {"backends": [_backend(type="vllm")]}, "backends[0].type", "must be one of"),
    ("negative-timeout", {"backends": [_backend(timeouts={"first_byte": -1})]}, "backends[0].timeouts.first_byte",
     "must be a number > 0"),
    ("fallback-on-typo", {"backends": [_backend()], "routes": [_route(fallback_on=["5xxx"])]},
     "routes[0].fallback_on[0]", "must be one of"),
    ("shadow-share-above-one", {"backends": [_backend()],
                                "routes": [_route(shadow={"backend": "gpu1", "share": 2})]},
     "routes[0].shadow.share", "<= 1"),
    ("sticky-typo", {"backends": [_backend()], "routes": [_route(sticky=["session"])]}, "routes[0].sticky[0]",
     "must be api_key, user or header:<Name>"),
    ("duplicate-route-name", {"backends": [_backend()], "routes": [_route(), _route(models=["other"])]},
     "routes[1].name", "duplicate route name"),
]


@pytest.mark.parametrize("raw, path, message", [m[1:] for m in MISTAKES], ids=[m[0] for m in MISTAKES])
def test_mistake_is_reported_at_its_dotted_path(raw: dict[str, Any], path: str, message: str):
    """A config mistake yields exactly one problem, naming the key's dotted path."""
    problems = _problems(raw)
    assert len(problems) == 1, problems
    assert problems[0][0] == path
    assert message in problems[0][1]


def test_every_problem_is_reported_at_once():
    """Problems are collected, not fail-fast: three mistakes, three lines."""
    raw = {"backends": [_backend(url="ftp://x"), _backend()], "routes": [_route(targets=[{"backend": "nope"}])]}
    assert [path for path, _ in _problems(raw)] == ["backends[0].url", "backends[1].name",
                                                   "routes[0].targets[0].backend"]


def test_env_var_default_is_used_when_unset():
    """``${VAR:-default}`` falls back to its default; the set variable wins."""
    raw = {"backends": [_backend(url="${OLLAMA_URL:-http://ollama:11434}")]}
    assert parse_config(raw, {}).backends[0].url == "http://ollama:11434"
    assert parse_config(raw, {"OLLAMA_URL": "http://gpu:1"}).backends[0].url == "http://gpu:1"


def _check_config(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "proxy", "--check-config", str(path)], cwd=ROOT,
                          capture_output=True, text=True, timeout=60, env={"PATH": "/usr/bin:/bin"})


def test_check_config_cli_accepts_a_valid_file(tmp_path: Path):
    """``python -m proxy --check-config FILE`` exits 0 and says OK for a valid file."""
    path = tmp_path / "ok.yaml"
    path.write_text(yaml.safe_dump({"backends": [_backend()], "routes": [_route()]}))
    result = _check_config(path)
    assert result.returncode == 0, result.stderr
    assert "OK" in result.stdout


def test_check_config_cli_prints_every_error(tmp_path: Path):
    """An invalid file exits 1 and prints each problem with its dotted path."""
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({"backends": [_backend(url="https://u:p@h", fallbak=1)],
                                    "routes": [_route(targets=[{"backend": "gpu1", "weight": -1}])]}))
    result = _check_config(path)
    assert result.returncode == 1
    assert "3 problem(s)" in result.stderr
    for path_text in ("backends[0].url", "backends[0].fallbak", "routes[0].targets[0].weight"):
        assert path_text in result.stderr


@pytest.mark.parametrize("content", [None, "backends: [", "- just\n- a list\n"], ids=["missing", "bad-yaml", "list"])
def test_check_config_cli_rejects_unreadable_files(tmp_path: Path, content: str | None):
    """A missing file, broken YAML or a non-mapping document exits 1 with a message."""
    path = tmp_path / "config.yaml"
    if content is not None:
        path.write_text(content)
    result = _check_config(path)
    assert result.returncode == 1
    assert result.stderr.strip()
