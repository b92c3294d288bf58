"""Deployment files checked without Docker: compose topology (Valkey, the load balancer), Dockerfile, env docs, Grafana."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from proxy.telemetry.metrics import Metrics

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
ENV_REF = re.compile(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*)")  # ${VAR}, ${VAR:-x}; not $${VAR}
MONITORING = "monitoring"


def _yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return _yaml(ROOT / "docker-compose.yml")  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, Any]:
    return compose["services"]  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def dockerfile() -> str:
    return (ROOT / "Dockerfile").read_text()


def _networks(service: dict[str, Any]) -> set[str]:
    nets = service.get("networks", [])
    return set(nets if isinstance(nets, list) else nets.keys())


def _container_port(spec: str | dict[str, Any]) -> int:
    """Target port of a short ("[ip:]host:container") or long ({target: ...}) port spec."""
    if isinstance(spec, dict):
        return int(spec["target"])
    return int(str(spec).rsplit(":", 1)[-1].split("/")[0])


def _host_ip(spec: str | dict[str, Any]) -> str | None:
    """Host address of a port spec after ``${VAR:-default}`` substitution, None when all interfaces."""
    if isinstance(spec, dict):
        return spec.get("host_ip")
    parts = re.sub(r"\$\{[^}:]*(?::-([^}]*))?\}", lambda m: m.group(1) or "0", str(spec)).split(":")
    return parts[0] if len(parts) == 3 else None


def _strings(node: object) -> list[str]:
    """Every string value in a parsed YAML tree (comments are not config)."""
    if isinstance(node, dict):
        return [s for value in node.values() for s in _strings(value)]
    if isinstance(node, list):
        return [s for value in node for s in _strings(value)]
    return [node] if isinstance(node, str) else []


@pytest.mark.parametrize("name", ["ollama", "ollama-gpu"])
def test_ollama_publishes_no_ports_and_is_only_on_the_internal_network(
        compose: dict[str, Any], services: dict[str, Any], name: str) -> None:
    """Ollama (either variant) is reachable only from inside the internal backend network."""
    ollama = services[name]
    assert "ports" not in ollama and "expose" not in ollama
    assert _networks(ollama) == {"backend"}
    assert compose["networks"]["backend"].get("internal") is True
    assert ollama["image"].startswith("ollama/ollama")
    assert "ollama-models:/root/.ollama" in ollama["volumes"]
    assert ollama["healthcheck"]["test"][-2:] == ["ollama", "list"]


def test_both_ollama_variants_answer_as_host_ollama(services: dict[str, Any]) -> None:
    """deploy/gateway.yaml points at http://ollama:11434, which each variant answers to."""
    for name in ("ollama", "ollama-gpu"):
        aliases = services[name]["networks"]["backend"].get("aliases", [])
        assert name == "ollama" or "ollama" in aliases
    gateway_cfg = _yaml(DEPLOY / "gateway.yaml")
    assert [b["url"] for b in gateway_cfg["backends"]] == ["http://ollama:11434"]


def test_profiles_make_cpu_the_default_and_gpu_an_alternative(services: dict[str, Any]) -> None:
    """cpu and gpu variants sit in their own profiles; .env.example enables cpu by default."""
    assert services["ollama"]["profiles"] == ["cpu"]
    assert services["ollama-gpu"]["profiles"] == ["gpu"]
    assert "profiles" not in services["gateway"]
    assert re.search(r"^COMPOSE_PROFILES=cpu$", (ROOT / ".env.example").read_text(), re.MULTILINE)
    for name in ("ollama", "ollama-gpu"):
        dep = services["gateway"]["depends_on"][name]
        assert dep == {"condition": "service_healthy", "required": False}


def test_gpu_profile_reserves_nvidia_devices(services: dict[str, Any]) -> None:
    """The gpu variant reserves every NVIDIA GPU."""
    devices = services["ollama-gpu"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": "all", "capabilities": ["gpu"]}]


def test_the_load_balancer_is_the_only_published_service(services: dict[str, Any], dockerfile: str) -> None:
    """Only `lb` publishes a port to all interfaces; the gateway publishes none, so it can be scaled."""
    exposed = {int(p) for p in re.findall(r"^EXPOSE\s+(\d+)", dockerfile, re.MULTILINE)}
    config_port = _yaml(DEPLOY / "gateway.yaml")["server"]["port"]
    assert exposed == {config_port} == {8080}
    assert f"--port\", \"{config_port}\"" in dockerfile
    gateway = services["gateway"]
    assert "ports" not in gateway and "container_name" not in gateway
    assert gateway["deploy"]["replicas"] == "${GATEWAY_REPLICAS:-1}"
    lb = services["lb"]
    assert [_container_port(p) for p in lb["ports"]] == [_nginx_listen_port()] == [8080]
    assert [_host_ip(p) for p in lb["ports"]] == [None]
    for name, service in services.items():
        if name == "lb" or "ports" not in service:
            continue
        # monitoring UIs may only listen on the host's loopback
        assert MONITORING in service.get("profiles", []), name
        assert all(_host_ip(p) == "127.0.0.1" for p in service["ports"]), name


def _nginx_conf() -> str:
    return _yaml(ROOT / "docker-compose.yml")["configs"]["lb-nginx"]["content"]  # type: ignore[no-any-return]


def _nginx_listen_port() -> int:
    (port,) = re.findall(r"^\s*listen\s+(\d+);", _nginx_conf(), re.MULTILINE)
    return int(port)


def test_load_balancer_spreads_over_every_replica_and_streams(services: dict[str, Any]) -> None:
    """nginx re-resolves `gateway` (every replica) at the config port, streams unbuffered and retries refusals."""
    conf = _nginx_conf()
    config_port = _yaml(DEPLOY / "gateway.yaml")["server"]["port"]
    assert re.search(rf"^\s*server gateway:{config_port} resolve;", conf, re.MULTILINE)
    assert re.search(r"^\s*resolver 127\.0\.0\.11 valid=\d+s", conf, re.MULTILINE)  # Docker's embedded DNS
    for directive in ("proxy_buffering off;", "proxy_request_buffering off;", "client_max_body_size 0;",
                      "proxy_http_version 1.1;", "proxy_next_upstream error timeout;", "proxy_pass http://gateway;"):
        assert directive in conf, directive
    read_timeout = int(re.findall(r"proxy_read_timeout (\d+)s;", conf)[0])
    assert read_timeout >= 900  # the gateway's own timeouts.read default
    assert "$host" not in conf.replace("$$host", "")  # a single `$` would be substituted by Compose
    lb = services["lb"]
    assert lb["configs"] == [{"source": "lb-nginx", "target": "/etc/nginx/conf.d/default.conf"}]
    assert _networks(lb) == {"frontend"}
    assert lb["depends_on"] == {"gateway": {"condition": "service_healthy"}}
    assert lb["read_only"] is True and "/healthz" in lb["healthcheck"]["test"][-1]


def test_valkey_is_internal_unpublished_and_healthchecked(compose: dict[str, Any], services: dict[str, Any]) -> None:
    """Valkey sits only on the internal network, publishes nothing, keeps nothing on disk and answers ping."""
    valkey = services["valkey"]
    assert "ports" not in valkey and "expose" not in valkey
    assert _networks(valkey) == {"backend"}
    assert compose["networks"]["backend"].get("internal") is True
    assert valkey["image"] == "valkey/valkey:${VALKEY_IMAGE_TAG:-9.0.8-alpine}"
    assert valkey["healthcheck"]["test"] == ["CMD", "valkey-cli", "ping"]
    command = valkey["command"]
    assert command[0] == "valkey-server"
    assert command[command.index("--save") + 1] == "" and command[command.index("--appendonly") + 1] == "no"
    assert "volumes" not in valkey and valkey["read_only"] is True and valkey["tmpfs"] == ["/data"]


def test_gateway_uses_valkey_for_its_state(services: dict[str, Any]) -> None:
    """The gateway waits for a healthy Valkey, and its config (with .env.example's values) points at it."""
    from proxy.config import parse_config

    assert services["gateway"]["depends_on"]["valkey"] == {"condition": "service_healthy"}
    env = dict(re.findall(r"^([A-Z_][A-Z0-9_]*)=(.*)$", (ROOT / ".env.example").read_text(), re.MULTILINE))
    assert env["GATEWAY_REDIS_URL"] == "redis://valkey:6379/0"
    raw = _yaml(DEPLOY / "gateway.yaml")
    assert raw["state"]["redis_url"] == "${GATEWAY_REDIS_URL:-redis://valkey:6379/0}"  # an older .env still works
    config = parse_config(raw, env)
    assert config.state is not None
    assert (config.state.redis_url, config.state.on_unavailable) == ("redis://valkey:6379/0", "allow")
    without = {k: v for k, v in env.items() if k != "GATEWAY_REDIS_URL"}
    assert parse_config(raw, without).state.redis_url == "redis://valkey:6379/0"  # type: ignore[union-attr]


def test_every_image_is_pinned(services: dict[str, Any]) -> None:
    """Every image has a version: a `${X_IMAGE_TAG:-version}` default that .env.example repeats, never latest."""
    env = dict(re.findall(r"^([A-Z_][A-Z0-9_]*)=(.*)$", (ROOT / ".env.example").read_text(), re.MULTILINE))
    for name, service in services.items():
        if "build" in service:
            continue
        repo, _, tag = service["image"].partition(":")
        match = re.fullmatch(r"\$\{([A-Z_]+_IMAGE_TAG):-([^}]+)\}", tag)
        assert match, (name, service["image"])
        variable, default = match.groups()
        assert re.match(r"v?\d+\.\d+", default) and "latest" not in default, (name, default)
        assert env[variable] == default, (name, variable)


def test_gateway_wiring(services: dict[str, Any]) -> None:
    """The gateway is built here, sits on both networks, reads .env and mounts its config read-only."""
    gateway = services["gateway"]
    assert gateway["build"] == "."
    assert _networks(gateway) == {"backend", "frontend"}
    assert gateway["env_file"] == ".env"
    assert "./deploy/gateway.yaml:/etc/ollama-gateway/config.yaml:ro" in gateway["volumes"]


def test_healthchecks_probe_healthz(services: dict[str, Any], dockerfile: str) -> None:
    """Both the image and the compose service probe /healthz with python (slim has no curl)."""
    probe = "http://127.0.0.1:8080/healthz"
    healthcheck = re.search(r"^HEALTHCHECK (?:.*\\\n)*.*$", dockerfile, re.MULTILINE)
    assert healthcheck is not None and probe in healthcheck.group(0) and "urllib" in healthcheck.group(0)
    test = services["gateway"]["healthcheck"]["test"]
    assert test[:3] == ["CMD", "python", "-c"] and probe in test[3]
    assert "curl" not in healthcheck.group(0)


def test_dockerfile_is_multistage_slim_and_runs_as_non_root(dockerfile: str) -> None:
    """Wheels are built in one stage, installed in a pinned python:3.11 slim runtime that runs as a non-root user."""
    stages = re.findall(r"^FROM\s+(\S+)", dockerfile, re.MULTILINE)
    assert stages == ["python:3.11.15-slim-trixie", "python:3.11.15-slim-trixie"]  # pinned, not a moving tag
    users = re.findall(r"^USER\s+(\S+)", dockerfile, re.MULTILINE)
    assert users and users[-1].split(":")[0] not in ("root", "0")
    assert re.search(r"^CMD \[\"ollama-gateway\", \"--config\", \"/etc/ollama-gateway/config.yaml\"", dockerfile,
                     re.MULTILINE)


def test_dockerignore_keeps_secrets_and_venv_out() -> None:
    """.env and the virtualenv never enter the build context."""
    ignored = set((ROOT / ".dockerignore").read_text().split())
    assert {".env", ".venv", ".git"} <= ignored


def test_every_variable_used_is_documented_in_env_example() -> None:
    """Each ${VAR} in docker-compose.yml and deploy/gateway.yaml has a line in .env.example."""
    documented = set(re.findall(r"^([A-Z_][A-Z0-9_]*)=", (ROOT / ".env.example").read_text(), re.MULTILINE))
    used: set[str] = set()
    for path in (ROOT / "docker-compose.yml", DEPLOY / "gateway.yaml"):
        used |= {name for text in _strings(_yaml(path)) for name in ENV_REF.findall(text)}
    used |= {s["environment"] for s in _yaml(ROOT / "docker-compose.yml").get("secrets", {}).values()
             if "environment" in s}
    assert {"GATEWAY_API_KEY", "GATEWAY_ADMIN_KEY"} <= used
    assert used <= documented, sorted(used - documented)


def test_prometheus_scrapes_gateway_metrics_with_the_admin_key(services: dict[str, Any]) -> None:
    """Prometheus scrapes gateway:8080/metrics with a bearer token from the admin-key secret."""
    job = next(j for j in _yaml(DEPLOY / "prometheus.yml")["scrape_configs"] if j["job_name"] == "ollama-gateway")
    assert job["static_configs"][0]["targets"] == ["gateway:8080"]
    assert job.get("metrics_path", "/metrics") == "/metrics"
    secret_file = job["authorization"]["credentials_file"]
    assert job["authorization"].get("type", "Bearer") == "Bearer"
    assert secret_file == "/run/secrets/gateway_admin_key"
    assert "gateway_admin_key" in services["prometheus"]["secrets"]
    assert "./deploy/prometheus.yml:/etc/prometheus/prometheus.yml:ro" in services["prometheus"]["volumes"]


def test_grafana_provisioning_points_at_prometheus_and_the_dashboard(services: dict[str, Any]) -> None:
    """The datasource uid matches the dashboard's, and the dashboards folder is mounted where provisioning looks."""
    (source,) = _yaml(DEPLOY / "grafana/provisioning/datasources/prometheus.yml")["datasources"]
    assert (source["type"], source["uid"], source["url"]) == ("prometheus", "prometheus", "http://prometheus:9090")
    (provider,) = _yaml(DEPLOY / "grafana/provisioning/dashboards/ollama-gateway.yml")["providers"]
    mounts = services["grafana"]["volumes"]
    assert f"./deploy/grafana/dashboards:{provider['options']['path']}:ro" in mounts
    assert "./deploy/grafana/provisioning:/etc/grafana/provisioning:ro" in mounts


def _dashboard() -> dict[str, Any]:
    return json.loads((DEPLOY / "grafana/dashboards/ollama-gateway.json").read_text())  # type: ignore[no-any-return]


def test_dashboard_queries_only_metrics_that_exist() -> None:
    """Every proxy_* series the dashboard queries is one Metrics registers (catches renames)."""
    exprs = [t["expr"] for p in _dashboard()["panels"] for t in p.get("targets", [])]
    exprs += [v["definition"] for v in _dashboard()["templating"]["list"]]
    queried = {name for expr in exprs for name in re.findall(r"\bproxy_[a-z0-9_]+", expr)}
    assert queried and queried <= Metrics.sample_names(), sorted(queried - Metrics.sample_names())


def test_dashboard_has_the_promised_panels() -> None:
    """The dashboard covers traffic, errors, latency, TTFT, tokens/s, Ollama, overhead, resilience and cost."""
    dash = _dashboard()
    assert dash["uid"] == "ollama-gateway"
    text = json.dumps(dash["panels"])
    for metric in ("proxy_requests_total", "proxy_request_duration_seconds_bucket",
                   "proxy_time_to_first_token_seconds_bucket", "proxy_output_tokens_per_second",
                   "proxy_ollama_load_duration_seconds_bucket", "proxy_ollama_cold_starts_total",
                   "proxy_overhead_seconds_bucket", "proxy_fallbacks_total", "proxy_circuit_state",
                   "proxy_split_arm_total", "proxy_cloud_cost_avoided_usd_total"):
        assert metric in text, metric
    datasources = {t["datasource"]["uid"] for p in dash["panels"] for t in p.get("targets", [])}
    assert datasources == {"prometheus"}
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
