"""The image carries the extras the gateway is run with elsewhere: uvloop, as scripts/serve.sh installs it."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_image_builds_and_checks_the_fast_extras() -> None:
    """The build stage makes wheels for ``.[fast]`` by default, and the runtime fails to build without uvloop."""
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert re.findall(r"^ARG GATEWAY_EXTRAS=(\S+)$", dockerfile, re.MULTILINE) == ["fast"]
    assert 'RUN pip wheel --wheel-dir /wheels ".[${GATEWAY_EXTRAS}]"' in dockerfile
    assert re.search(r"pip install --no-index /wheels/\*\.whl \\\n && python -c \"import uvloop\"", dockerfile)
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert [req.split(">=")[0] for req in extras["fast"]] == ["uvloop"]
    assert [req.split(">=")[0] for req in extras["tracing"]] == ["opentelemetry-sdk",
                                                                 "opentelemetry-exporter-otlp-proto-http"]
    assert 'bootstrap.sh" fast' in (ROOT / "scripts" / "serve.sh").read_text()
