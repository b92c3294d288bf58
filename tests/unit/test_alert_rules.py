"""deploy/alerts.yml checked by Prometheus's own promtool: the rules parse, every alert fires (and only
fires) on the series the gateway exports, and prometheus.yml and docker-compose load them."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy" / "alerts.yml"
RULE_TESTS = ROOT / "tests" / "fixtures" / "prometheus" / "alerts_test.yml"
PROMTOOL = shutil.which("promtool")

needs_promtool = pytest.mark.skipif(PROMTOOL is None, reason="promtool missing (scripts/test.sh installs Debian's prometheus)")

# the rules in deploy/alerts.yml, in order
ALERTS = ["GatewayBackendDown", "GatewayCircuitOpen", "GatewayHighErrorRatio", "GatewayHighFallbackRatio",
          "GatewaySlowTimeToFirstToken", "GatewayAutoPullFailing", "GatewaySharedStateDown", "GatewayScrapeFailing"]


def _promtool(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL is not None
    return subprocess.run([PROMTOOL, *args], cwd=cwd, capture_output=True, text=True, timeout=60, check=False)


@needs_promtool
def test_promtool_checks_the_rules() -> None:
    """``promtool check rules`` accepts the file and counts every rule."""
    result = _promtool("check", "rules", str(RULES))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(ALERTS)} rules found" in result.stdout


@needs_promtool
def test_promtool_unit_tests_every_alert() -> None:
    """``promtool test rules``: each alert fires with its exact labels and text on the input series, not on the others."""
    result = _promtool("test", "rules", str(RULE_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout
    tested = {case["alertname"] for test in yaml.safe_load(RULE_TESTS.read_text())["tests"]
              for case in test["alert_rule_test"]}
    assert tested == set(ALERTS)


def test_rules_read_only_the_gateways_metric_names() -> None:
    """Each alert is named as listed and reads a metric the gateway exports (or Prometheus's ``up``)."""
    from proxy.telemetry.families import _SPECS

    exported = {spec[1] for spec in _SPECS.values()}
    (group,) = yaml.safe_load(RULES.read_text())["groups"]
    assert [rule["alert"] for rule in group["rules"]] == ALERTS
    for rule in group["rules"]:
        used = {name for name in exported if name in rule["expr"]}
        assert used or 'up{job="ollama-gateway"}' in rule["expr"], rule["alert"]
        assert rule["labels"]["severity"] in ("warning", "critical")


@needs_promtool
def test_prometheus_config_loads_the_rules(tmp_path: Path) -> None:
    """prometheus.yml names alerts.yml, which compose mounts beside it: promtool checks both together."""
    config = yaml.safe_load((ROOT / "deploy" / "prometheus.yml").read_text())
    assert config["rule_files"] == ["alerts.yml"]
    secret = tmp_path / "gateway_admin_key"
    secret.write_text("admin-key\n")
    for job in config["scrape_configs"]:
        if "authorization" in job:  # the compose secret is not here: point at a stand-in
            job["authorization"]["credentials_file"] = str(secret)
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    shutil.copy(RULES, tmp_path / "alerts.yml")
    result = _promtool("check", "config", "prometheus.yml", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 8 rules found" in result.stdout

    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert "./deploy/alerts.yml:/etc/prometheus/alerts.yml:ro" in compose["services"]["prometheus"]["volumes"]
