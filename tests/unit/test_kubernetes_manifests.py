"""deploy/kubernetes/ checked offline: every manifest against the Kubernetes JSON schemas, then the values that matter.

The schemas are the ones kubernetes-validate ships (strict: an unknown or misspelt field is an error),
for the oldest Kubernetes these manifests support, so nothing here needs a cluster or the network.
"""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import kubernetes_validate
import pytest
import yaml

from proxy.config import parse_config

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "kubernetes"
KUBERNETES_VERSION = "1.30"  # the oldest supported release; its schemas ship with kubernetes-validate
SECRET_TEMPLATE = "secret.example.yaml"
ENV_REF = re.compile(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*)")
POD_LABELS = {"app.kubernetes.io/name": "ollama-gateway", "app.kubernetes.io/component": "gateway"}

Doc = dict[str, Any]


def _documents(path: Path) -> list[Doc]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def _manifest_files() -> list[Path]:
    return sorted(p for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")


@pytest.fixture(scope="module")
def objects() -> dict[tuple[str, str], Doc]:
    """Every object of every manifest (the Secret template included), by (kind, name)."""
    found: dict[tuple[str, str], Doc] = {}
    for path in _manifest_files():
        for doc in _documents(path):
            key = (doc["kind"], doc["metadata"]["name"])
            assert key not in found, key
            found[key] = doc
    return found


@pytest.fixture(scope="module")
def gateway(objects: dict[tuple[str, str], Doc]) -> Doc:
    return objects[("Deployment", "ollama-gateway")]


@pytest.fixture(scope="module")
def container(gateway: Doc) -> Doc:
    (only,) = gateway["spec"]["template"]["spec"]["containers"]
    return only  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def config_text(objects: dict[tuple[str, str], Doc]) -> str:
    return objects[("ConfigMap", "ollama-gateway-config")]["data"]["config.yaml"]  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def secret(objects: dict[tuple[str, str], Doc]) -> dict[str, str]:
    return objects[("Secret", "ollama-gateway")]["stringData"]  # type: ignore[no-any-return]


def _deployments(objects: dict[tuple[str, str], Doc]) -> list[Doc]:
    return [doc for (kind, _), doc in objects.items() if kind == "Deployment"]


def _selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


@pytest.mark.parametrize("path", _manifest_files(), ids=lambda p: p.name)
def test_every_manifest_validates_against_the_kubernetes_schemas(path: Path) -> None:
    """Each object validates (strict: no unknown field) against the shipped schemas, without a network."""
    docs = _documents(path)
    assert docs
    for doc in docs:
        assert kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True) == KUBERNETES_VERSION


def test_a_misspelt_field_is_caught() -> None:
    """The validation is strict: a typo in a probe is an error, not a silently ignored field."""
    bad = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "x"},
           "spec": {"containers": [{"name": "x", "image": "x:1", "livenesProbe": {}}]}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, KUBERNETES_VERSION, strict=True)


def test_kustomization_lists_every_manifest_but_the_secret_template(objects: dict[tuple[str, str], Doc],
                                                                    container: Doc) -> None:
    """`kubectl apply -k` applies every manifest and never the placeholder Secrets; the image is pinned there."""
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    assert kustomization["kind"] == "Kustomization"
    listed = kustomization["resources"]
    assert len(listed) == len(set(listed))
    assert set(listed) == {p.name for p in _manifest_files()} - {SECRET_TEMPLATE}
    assert kustomization["namespace"] == "ollama-gateway"
    assert ("Namespace", kustomization["namespace"]) in objects
    (image,) = kustomization["images"]
    assert image["name"] == container["image"] == "ollama-gateway"
    assert re.fullmatch(r"\d+\.\d+\.\d+", image["newTag"])
    assert all(label.get("includeSelectors") is False for label in kustomization.get("labels", []))


def test_probes_and_service_reach_the_configured_port(objects: dict[tuple[str, str], Doc], container: Doc,
                                                      config_text: str) -> None:
    """Liveness on /healthz, readiness on /readyz, and the Service, all at the port the config listens on."""
    config_port = yaml.safe_load(config_text)["server"]["port"]
    (port,) = container["ports"]
    assert (port["name"], port["containerPort"]) == ("http", config_port)
    command = container["command"]
    assert command[command.index("--port") + 1] == str(config_port)
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert container["startupProbe"]["httpGet"]["path"] == "/healthz"
    service = objects[("Service", "ollama-gateway")]
    (service_port,) = service["spec"]["ports"]
    assert service_port["targetPort"] in (port["name"], port["containerPort"])


def test_grace_period_outlasts_the_pre_stop_sleep_and_the_drain(gateway: Doc, container: Doc,
                                                                config_text: str) -> None:
    """SIGKILL comes only after the preStop sleep and server.shutdown_timeout have both run out."""
    shutdown_timeout = yaml.safe_load(config_text)["server"]["shutdown_timeout"]
    pre_stop = container["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "sleep" and 2 <= int(pre_stop[1]) <= 10
    grace = gateway["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert grace > int(pre_stop[1]) + shutdown_timeout
    assert (shutdown_timeout, int(pre_stop[1]), grace) == (30, 5, 45)


def test_config_parses_with_the_secret_as_environment(config_text: str, secret: dict[str, str]) -> None:
    """The ConfigMap's config is valid given the Secret's variables, and its state points at the Valkey Service."""
    config = parse_config(yaml.safe_load(config_text), secret)
    assert config.state is not None and config.state.on_unavailable == "allow"
    assert config.server.shutdown_timeout == 30
    assert [(route.name, route.required) for route in config.policy.routes] == [("default", True)]
    assert config.state.redis_url == secret["GATEWAY_REDIS_URL"]


def test_secret_keys_are_exactly_the_variables_the_config_uses(config_text: str, secret: dict[str, str],
                                                               container: Doc) -> None:
    """Each ${VAR} of the config is a Secret key passed as env, and the Secret holds nothing else."""
    used = set(ENV_REF.findall(config_text))
    assert used == set(secret) == {"GATEWAY_API_KEY", "GATEWAY_ADMIN_KEY", "GATEWAY_REDIS_URL"}
    from_secret = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in container["env"] if "valueFrom" in e}
    assert from_secret == {name: {"name": "ollama-gateway", "key": name} for name in used}
    assert not any("value" in e for e in container["env"])  # no secret written into the manifest


def test_secret_template_holds_only_marked_placeholders(objects: dict[tuple[str, str], Doc]) -> None:
    """Every value of the template is a CHANGE-ME placeholder, and the Redis URL's password is Valkey's."""
    templates = [doc for (kind, _), doc in objects.items() if kind == "Secret"]
    assert {doc["metadata"]["name"] for doc in templates} == {"ollama-gateway", "ollama-gateway-valkey"}
    for doc in templates:
        assert all("CHANGE-ME" in value for value in doc["stringData"].values()), doc["metadata"]["name"]
    url = urlsplit(objects[("Secret", "ollama-gateway")]["stringData"]["GATEWAY_REDIS_URL"])
    valkey_service = objects[("Service", "ollama-gateway-valkey")]
    (port,) = valkey_service["spec"]["ports"]
    assert (url.scheme, url.hostname, url.port, url.path) == ("redis", "ollama-gateway-valkey", port["port"], "/0")
    assert url.password == objects[("Secret", "ollama-gateway-valkey")]["stringData"]["VALKEY_PASSWORD"]
    assert "TEMPLATE" in (K8S / SECRET_TEMPLATE).read_text().splitlines()[0]


def test_config_map_is_mounted_where_the_command_reads_it(objects: dict[tuple[str, str], Doc], gateway: Doc,
                                                          container: Doc) -> None:
    """The ConfigMap's config.yaml is mounted read-only at the --config path; /tmp is an emptyDir."""
    command = container["command"]
    config_path = Path(command[command.index("--config") + 1])
    volumes = {v["name"]: v for v in gateway["spec"]["template"]["spec"]["volumes"]}
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    mount = mounts[str(config_path.parent)]
    assert mount["readOnly"] is True
    config_volume = volumes[mount["name"]]["configMap"]
    assert config_volume["name"] == "ollama-gateway-config" and ("ConfigMap", config_volume["name"]) in objects
    assert config_volume["items"] == [{"key": "config.yaml", "path": config_path.name}]
    assert "emptyDir" in volumes[mounts["/tmp"]["name"]]


def test_every_pod_runs_non_root_read_only_with_requests_and_limits(objects: dict[tuple[str, str], Doc]) -> None:
    """Both Deployments: non-root, no privilege escalation, no capabilities, read-only root, bounded resources."""
    deployments = _deployments(objects)
    assert len(deployments) == 2
    for deployment in deployments:
        pod = deployment["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] > 0
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        assert pod["automountServiceAccountToken"] is False and pod["enableServiceLinks"] is False
        for c in pod["containers"]:
            assert c["securityContext"] == {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                                            "capabilities": {"drop": ["ALL"]}}, c["name"]
            assert set(c["resources"]["requests"]) == set(c["resources"]["limits"]) == {"cpu", "memory"}
            repo, _, tag = c["image"].partition(":")
            assert repo == "ollama-gateway" or (re.match(r"\d+\.\d+\.\d+", tag) and "latest" not in tag), c["image"]


def test_hpa_pdb_and_service_select_the_gateway_pods(objects: dict[tuple[str, str], Doc], gateway: Doc) -> None:
    """The HPA scales the Deployment on CPU, and the PDB and the Service select exactly its pods."""
    labels = gateway["spec"]["template"]["metadata"]["labels"]
    assert labels == POD_LABELS and gateway["spec"]["selector"]["matchLabels"] == POD_LABELS
    assert gateway["spec"]["replicas"] >= 2
    hpa = objects[("HorizontalPodAutoscaler", "ollama-gateway")]
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": gateway["apiVersion"], "kind": "Deployment",
                                             "name": gateway["metadata"]["name"]}
    assert hpa["spec"]["minReplicas"] >= 2 and hpa["spec"]["maxReplicas"] > hpa["spec"]["minReplicas"]
    (metric,) = hpa["spec"]["metrics"]
    assert (metric["type"], metric["resource"]["name"], metric["resource"]["target"]["type"]) == (
        "Resource", "cpu", "Utilization")
    pdb = objects[("PodDisruptionBudget", "ollama-gateway")]
    assert pdb["apiVersion"] == "policy/v1"
    assert pdb["spec"]["selector"]["matchLabels"] == POD_LABELS
    assert pdb["spec"]["maxUnavailable"] < hpa["spec"]["minReplicas"]  # a drain never takes every pod
    assert objects[("Service", "ollama-gateway")]["spec"]["selector"] == POD_LABELS
    valkey_pods = objects[("Deployment", "ollama-gateway-valkey")]["spec"]["template"]["metadata"]["labels"]
    for selector in (POD_LABELS, objects[("Service", "ollama-gateway")]["spec"]["selector"]):
        assert not _selects(selector, valkey_pods)


def test_valkey_requires_the_password_keeps_nothing_and_admits_only_the_gateway(
        objects: dict[tuple[str, str], Doc]) -> None:
    """Valkey takes its password from its Secret, has no persistence, and only gateway pods may connect."""
    deployment = objects[("Deployment", "ollama-gateway-valkey")]
    (valkey,) = deployment["spec"]["template"]["spec"]["containers"]
    args = valkey["args"]
    assert args[0] == "valkey-server" and args[args.index("--requirepass") + 1] == "$(VALKEY_PASSWORD)"
    assert args[args.index("--save") + 1] == "" and args[args.index("--appendonly") + 1] == "no"
    assert valkey["env"] == [{"name": "VALKEY_PASSWORD", "valueFrom": {
        "secretKeyRef": {"name": "ollama-gateway-valkey", "key": "VALKEY_PASSWORD"}}}]
    # valkey-cli exits 0 on a NOAUTH error too: the probe must look for the PONG itself
    assert "PONG" in valkey["readinessProbe"]["exec"]["command"][-1]
    pods = deployment["spec"]["template"]["metadata"]["labels"]
    service = objects[("Service", "ollama-gateway-valkey")]
    assert service["spec"]["selector"] == pods
    (port,) = valkey["ports"]
    assert service["spec"]["ports"][0]["targetPort"] == port["name"]
    policy = objects[("NetworkPolicy", "ollama-gateway-valkey")]["spec"]
    assert policy["podSelector"]["matchLabels"] == pods and policy["policyTypes"] == ["Ingress"]
    (rule,) = policy["ingress"]
    assert rule["from"] == [{"podSelector": {"matchLabels": POD_LABELS}}]
    assert rule["ports"] == [{"protocol": "TCP", "port": port["containerPort"]}]


# --- The Secret's Redis URL against a real, password-protected Redis -----------------------------------------


@pytest.fixture
def password_redis(tmp_path: Path) -> Any:
    """Debian's redis-server on a free loopback port, as valkey.yaml runs Valkey: a password, no persistence."""
    if shutil.which("redis-server") is None:
        pytest.skip("needs Debian's redis-server (scripts/test.sh installs it)")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    password = "0123456789abcdef" * 4  # hex, like the README's token_hex: nothing to escape in a URL
    proc = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--requirepass", password,
                             "--save", "", "--appendonly", "no", "--dir", str(tmp_path)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while subprocess.run(["redis-cli", "-p", str(port), "--no-auth-warning", "-a", password, "ping"],
                         capture_output=True).stdout.strip() != b"PONG":
        assert time.monotonic() < deadline, "redis-server did not start"
        time.sleep(0.05)
    yield port, password
    proc.terminate()
    proc.wait(10)


def _deployed_config(config_text: str, ollama_url: str) -> dict[str, Any]:
    """The ConfigMap's config with its Ollama URL pointed at a fake, and a limit on the `app` credential."""
    raw = yaml.safe_load(config_text)
    (only,) = raw["backends"]
    only["url"] = ollama_url
    raw["auth"]["credentials"][0]["requests_per_minute"] = 3
    raw["logging"]["requests"] = False
    return raw  # type: ignore[no-any-return]


async def test_two_pods_share_a_limit_through_the_secrets_redis_url(config_text: str, secret: dict[str, str],
                                                                    start_fake: Any, start_gateway: Any,
                                                                    password_redis: tuple[int, str]) -> None:
    """Two gateways with the ConfigMap's config and a Secret-shaped URL (password) admit 3 a minute between them."""
    port, password = password_redis
    fake = await start_fake()
    environ = {**secret, "GATEWAY_REDIS_URL": f"redis://:{password}@127.0.0.1:{port}/0"}
    raw = _deployed_config(config_text, fake.url)
    pods = [await start_gateway(raw, environ=environ) for _ in range(2)]
    headers = {"Authorization": f"Bearer {secret['GATEWAY_API_KEY']}"}
    body = {"model": "llama3.2", "messages": [{"role": "user", "content": "hi"}]}
    statuses = []
    async with aiohttp.ClientSession() as session:
        for i in range(6):
            async with session.post(pods[i % 2].url + "/v1/chat/completions", json=body, headers=headers) as resp:
                await resp.read()
                statuses.append(resp.status)
        async with session.get(pods[1].url + "/readyz") as resp:
            ready = await resp.json()
    assert statuses == [200, 200, 200, 429, 429, 429]  # per pod, each would have admitted 3
    assert ready["state"]["up"] is True


async def test_a_wrong_password_is_an_unavailable_redis_not_a_500(config_text: str, secret: dict[str, str],
                                                                  start_fake: Any, start_gateway: Any,
                                                                  password_redis: tuple[int, str]) -> None:
    """A Secret whose password Redis refuses: `allow` serves with the pod's own limits, and /readyz says so."""
    port, _ = password_redis
    fake = await start_fake()
    environ = {**secret, "GATEWAY_REDIS_URL": f"redis://:not-the-password@127.0.0.1:{port}/0"}
    pods = [await start_gateway(_deployed_config(config_text, fake.url), environ=environ) for _ in range(2)]
    headers = {"Authorization": f"Bearer {secret['GATEWAY_API_KEY']}"}
    body = {"model": "llama3.2", "messages": [{"role": "user", "content": "hi"}]}
    statuses = []
    async with aiohttp.ClientSession() as session:
        for i in range(8):
            async with session.post(pods[i % 2].url + "/v1/chat/completions", json=body, headers=headers) as resp:
                await resp.read()
                statuses.append(resp.status)
        async with session.get(pods[0].url + "/readyz") as resp:
            ready = await resp.json()
    assert statuses == [200, 200, 200, 200, 200, 200, 429, 429]  # 3 a minute in each pod: 6 in all
    assert ready["state"]["up"] is False and ready["state"]["on_unavailable"] == "allow"
    assert "not-the-password" not in json.dumps(ready)  # /readyz is open: the URL never shows
