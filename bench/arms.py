"""The arms under test: how each one is configured, started and checked."""

from __future__ import annotations

import asyncio
import os
import secrets
import shlex
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from .clients import BenchError, Target, probe
from .procs import Proc, free_port

REPO = Path(__file__).resolve().parent.parent
LITELLM_VENV = Path(os.environ.get("BENCH_LITELLM_VENV", "/tmp/bench-litellm-venv"))


@dataclass
class Arm:
    name: str
    target: Target | None = None
    proc: Proc | None = None
    skipped: str | None = None   # why the arm is not measured
    info: str = ""

    @property
    def ok(self) -> bool:
        return self.skipped is None and self.target is not None


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


async def wait_port(port: int, proc: Proc | None, timeout: float) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc is not None and not proc.alive():
            raise BenchError(f"exited with code {proc.popen.returncode}:\n{proc.log_tail()}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            await asyncio.sleep(0.1)
    raise BenchError(f"port {port} not open after {timeout:.0f} s:\n{proc.log_tail() if proc else ''}")


async def ready(arm: Arm, port: int, timeout: float) -> None:
    """Port open, then a real non-streaming + streaming request succeed (retried until the timeout)."""
    end = time.monotonic() + timeout
    await wait_port(port, arm.proc, timeout)
    last = ""
    while time.monotonic() < end:
        if arm.proc is not None and not arm.proc.alive():
            raise BenchError(f"exited with code {arm.proc.popen.returncode}:\n{arm.proc.log_tail()}")
        try:
            arm.info = await probe(arm.target, timeout=max(1.0, min(20.0, end - time.monotonic())))
            return
        except Exception as exc:  # noqa: BLE001 - retried, then reported
            last = str(exc) or repr(exc)
            await asyncio.sleep(0.5)
    raise BenchError(f"not answering correctly after {timeout:.0f} s: {last[:500]}")


# ---------------------------------------------------------------- fake Ollama

def start_fake(tmp: Path) -> tuple[Proc, int]:
    port = free_port()
    proc = Proc("fake-ollama", [sys.executable, "-m", "bench.fake_ollama", "--port", str(port)],
                tmp / "fake-ollama.log", cwd=str(REPO))
    return proc, port


# ---------------------------------------------------------------- direct / passthrough

async def direct_arm(fake_port: int) -> Arm:
    arm = Arm("direct", Target("direct", f"http://127.0.0.1:{fake_port}", "/api/chat", sse=False))
    await ready(arm, fake_port, 10)
    return arm


async def passthrough_arm(fake_port: int, tmp: Path) -> Arm:
    port = free_port()
    arm = Arm("passthrough", Target("passthrough", f"http://127.0.0.1:{port}", "/api/chat", sse=False))
    arm.proc = Proc("passthrough", [sys.executable, "-m", "bench.passthrough", "--upstream",
                                    f"http://127.0.0.1:{fake_port}", "--port", str(port)],
                    tmp / "passthrough.log", cwd=str(REPO))
    await ready(arm, port, 20)
    return arm


# ---------------------------------------------------------------- gateway

def gateway_config(port: int, fake_port: int, log_file: str) -> str:
    """The gateway's config with its full feature path on (auth, weighted split, metrics, request logs).

    Kept in one function so the lead can adjust it to the config checker."""
    # connection limits above the 10,000 slow streams of the bench's many-streams cell (defaults: 4,096
    # client connections, 1,024 pooled per backend)
    return f"""\
server: {{host: 127.0.0.1, port: {port}, max_connections: 24000}}
backends:
  - {{name: ollama-a, type: ollama, url: "http://127.0.0.1:{fake_port}", max_connections: 12000}}
  - {{name: ollama-b, type: ollama, url: "http://127.0.0.1:{fake_port}", max_connections: 12000}}
routes:
  - name: bench
    models: ["bench-model"]
    targets: [{{backend: ollama-a, model: bench-model, weight: 50}}, {{backend: ollama-b, model: bench-model, weight: 50}}]
auth:
  credentials: [{{name: bench, api_key: "${{BENCH_API_KEY}}"}}]
  admin: {{api_key: "${{BENCH_API_KEY}}"}}  # the harness reads /metrics with the same key
logging: {{requests: true, format: json, file: "{log_file}"}}
metrics: {{enabled: true}}
"""


async def gateway_arm(fake_port: int, tmp: Path, *, workers: int | None = None, timeout: float = 30) -> Arm:
    name = "gateway" if workers is None else f"gateway-w{workers}"
    cmd = os.environ.get("BENCH_GATEWAY_CMD")  # e.g. another build: "/path/python -m proxy"
    if not cmd and not (REPO / "proxy" / "__main__.py").exists():
        return Arm(name, skipped="proxy/__main__.py does not exist yet (the gateway is not written)")
    port = free_port()
    key = "sk-bench-" + secrets.token_hex(16)
    cfg = tmp / f"{name}.yaml"
    cfg.write_text(gateway_config(port, fake_port, str(tmp / f"{name}-requests.log")))
    argv = [*(shlex.split(cmd) if cmd else [sys.executable, "-m", "proxy"]), "--config", str(cfg), "--host", "127.0.0.1", "--port", str(port)]
    if workers is not None:
        argv += ["--workers", str(workers)]
    env = {**os.environ, "BENCH_API_KEY": key}
    arm = Arm(name, Target(name, f"http://127.0.0.1:{port}", "/v1/chat/completions", sse=True,
                           headers={"Authorization": f"Bearer {key}"}))
    try:
        arm.proc = Proc(name, argv, tmp / f"{name}.log", env=env, cwd=str(REPO))
        await ready(arm, port, timeout)
    except BenchError as exc:
        arm.skipped = f"gateway did not start or answer: {exc}"
        if arm.proc is not None:
            arm.proc.stop()
    return arm


# ---------------------------------------------------------------- LiteLLM

def install_litellm(tmp: Path, timeout: float = 900) -> str | None:
    """Reuse or create the throw-away venv with litellm[proxy]. None on success, else the reason."""
    exe = LITELLM_VENV / "bin" / "litellm"
    if exe.exists():
        return None
    logf = tmp / "litellm-install.log"
    log(f"installing litellm[proxy] into {LITELLM_VENV} (one time, a few minutes; log {logf})")
    try:
        with open(logf, "wb") as out:
            subprocess.run([sys.executable, "-m", "venv", str(LITELLM_VENV)], stdout=out, stderr=subprocess.STDOUT,
                           check=True, timeout=120)
            subprocess.run([str(LITELLM_VENV / "bin" / "pip"), "install", "-q", "litellm[proxy]"], stdout=out,
                           stderr=subprocess.STDOUT, check=True, timeout=timeout)
    except (OSError, subprocess.SubprocessError) as exc:
        tail = "\n".join(logf.read_text(errors="replace").strip().splitlines()[-5:]) if logf.exists() else ""
        return f"pip install 'litellm[proxy]' failed: {exc}\n{tail}"
    return None if exe.exists() else "litellm installed but its CLI is missing"


def litellm_version() -> str:
    try:
        from importlib.metadata import distributions
        for d in distributions(path=[str(p) for p in (LITELLM_VENV / "lib").glob("python*/site-packages")]):
            if d.metadata["Name"].lower() == "litellm":
                return d.version
    except Exception:  # noqa: BLE001
        pass
    return "?"


async def litellm_arm(fake_port: int, tmp: Path, timeout: float = 120) -> Arm:
    why = await asyncio.to_thread(install_litellm, tmp)
    if why:
        return Arm("litellm", skipped=why)
    port = free_port()
    key = "sk-bench-" + secrets.token_hex(16)
    cfg = tmp / "litellm.yaml"
    cfg.write_text(f"""\
model_list:
  - model_name: bench-model
    litellm_params:
      model: ollama_chat/bench-model
      api_base: "http://127.0.0.1:{fake_port}"
general_settings:
  master_key: "{key}"
litellm_settings:
  drop_params: true
  set_verbose: false
""")
    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_LOG": "ERROR",
           "LITELLM_TELEMETRY": "False", "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost"}
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "DATABASE_URL"):
        env.pop(var, None)
    arm = Arm("litellm", Target("litellm", f"http://127.0.0.1:{port}", "/v1/chat/completions", sse=True,
                                headers={"Authorization": f"Bearer {key}"}))
    argv = [str(LITELLM_VENV / "bin" / "litellm"), "--config", str(cfg), "--host", "127.0.0.1",
            "--port", str(port), "--num_workers", "1"]
    try:
        arm.proc = Proc("litellm", argv, tmp / "litellm.log", env=env, cwd=str(tmp))
        await ready(arm, port, timeout)
        arm.info += f", litellm {litellm_version()}"
    except BenchError as exc:
        arm.skipped = f"LiteLLM did not start or answer: {exc}"
        if arm.proc is not None:
            arm.proc.stop()
    return arm
