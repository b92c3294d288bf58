"""``python -m proxy --workers 2``: worker processes share one port and ``/metrics`` sums all of them.

Also home of ``GatewayProcess``, the gateway run as a real subprocess (``test_shutdown`` uses it):
the fake Ollama stays in the test's event loop on 127.0.0.1, which the subprocess can reach.
"""

from __future__ import annotations

import asyncio
import glob
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp

from tests.integration.test_observability import samples, series
from tests.integration.test_routing import HI, backend, closed_port, routed

ROOT = Path(__file__).resolve().parents[2]
_SERVING = re.compile(r"serving on http://\S+ \(pid (\d+)\)")


class GatewayProcess:
    """``python -m proxy`` on a free loopback port; stderr/stdout go to files under ``tmp_path``."""

    def __init__(self, tmp_path: Path, raw_config: dict[str, Any], *, workers: int = 1,
                 env: dict[str, str] | None = None) -> None:
        self.tmp_path = tmp_path
        self.port = closed_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.workers = workers
        self.config_path = tmp_path / "gateway.yaml"
        self.config_path.write_text(json.dumps(raw_config))  # JSON is YAML
        self.metrics_dir = tmp_path / "prometheus"
        self.stderr_path = tmp_path / "gateway.stderr"
        self.env = env
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(self.metrics_dir), "PYTHONPATH": str(ROOT)}
        if self.workers == 1:
            env.pop("PROMETHEUS_MULTIPROC_DIR")
        env.update(self.env or {})
        for name in [k for k, v in env.items() if v == ""]:
            del env[name]  # env={"NAME": ""} unsets NAME
        with open(self.stderr_path, "wb") as err, open(self.tmp_path / "gateway.stdout", "wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "proxy", "--config", str(self.config_path), "--host", "127.0.0.1",
                 "--port", str(self.port), "--workers", str(self.workers)],
                cwd=ROOT, env=env, stdout=out, stderr=err, stdin=subprocess.DEVNULL)

    @property
    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace") if self.stderr_path.exists() else ""

    @property
    def worker_pids(self) -> list[int]:
        """Pids of the processes that logged ``serving on ...`` (the workers, or the single process)."""
        return [int(pid) for pid in _SERVING.findall(self.stderr)]

    async def wait_serving(self, timeout: float = 20.0) -> None:
        """Wait until every worker logged that it serves, failing early if the process died."""
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while len(self.worker_pids) < self.workers:
            assert self.proc.poll() is None, f"gateway exited {self.proc.returncode}:\n{self.stderr}"
            assert time.monotonic() < deadline, f"gateway not serving after {timeout}s:\n{self.stderr}"
            await asyncio.sleep(0.05)

    def terminate(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)

    async def wait_exit(self, timeout: float) -> int:
        """The exit code, once the process ended within ``timeout`` seconds."""
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None:
            assert time.monotonic() < deadline, f"gateway still running {timeout}s after SIGTERM:\n{self.stderr}"
            await asyncio.sleep(0.05)
        return self.proc.returncode

    def kill(self) -> None:
        """Last resort in ``finally``: SIGKILL the workers and the parent by pid, then reap the parent."""
        if self.proc is None:
            return
        for pid in [*self.worker_pids, self.proc.pid] if self.workers > 1 else [self.proc.pid]:
            if pid == self.proc.pid and self.proc.poll() is not None:
                continue
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass


async def test_two_workers_report_every_request_on_each_scrape(start_fake, tmp_path):
    """40 requests spread over two workers; within a second (each worker flushes its tally every second)
    every /metrics scrape, whichever worker answers, shows 40."""
    local = await start_fake()
    raw = routed([backend("local", local.url)], {"targets": [{"backend": "local"}]},
                 logging={"requests": True, "file": str(tmp_path / "requests.log")})
    gateway = GatewayProcess(tmp_path, raw, workers=2)
    try:
        gateway.start()
        await gateway.wait_serving()
        assert len(set(gateway.worker_pids)) == 2
        body = {"model": "llama3.2", "messages": HI}
        # force_close: a fresh connection per request, so the kernel's SO_REUSEPORT hash spreads them
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as http:
            for _ in range(40):
                async with http.post(gateway.url + "/v1/chat/completions", json=body) as resp:
                    assert resp.status == 200
                    await resp.read()
            # prometheus_client keeps one counter file per process that counted something
            counted_by = {int(Path(p).stem.rsplit("_", 1)[1])
                          for p in glob.glob(str(gateway.metrics_dir / "counter_*.db"))}
            assert counted_by == set(gateway.worker_pids), "both workers should have served requests"
            key = series("proxy_requests_total", route="chat", model="llama3.2", backend="local", outcome="ok",
                         status_class="2xx")
            deadline = time.monotonic() + 5
            while True:
                async with http.get(gateway.url + "/metrics") as resp:
                    if samples(await resp.text()).get(key) == 40.0 or time.monotonic() > deadline:
                        break
                await asyncio.sleep(0.1)
            for _ in range(8):
                async with http.get(gateway.url + "/metrics") as resp:
                    assert resp.status == 200
                    scraped = samples(await resp.text())
                assert scraped[key] == 40.0
                assert scraped[series("proxy_in_flight_requests", route="chat")] == 0.0
                assert scraped[series("proxy_request_duration_seconds_count", route="chat", model="llama3.2",
                                      backend="local")] == 40.0
        assert len(local.fake.bodies("/api/chat")) == 40
        gateway.terminate()
        assert await gateway.wait_exit(15) == 0
        # both workers append to one request log (flushed at the latest on exit): 40 whole JSON lines
        records = [json.loads(line) for line in (tmp_path / "requests.log").read_text().splitlines()]
        chats = [r for r in records if r["path"] == "/v1/chat/completions"]
        assert [(r["status"], r["outcome"]) for r in chats] == [(200, "ok")] * 40
        assert len({r["request_id"] for r in chats}) == 40
    finally:
        gateway.kill()


async def test_a_metrics_dir_the_gateway_created_is_removed_on_exit(start_fake, tmp_path):
    """Without PROMETHEUS_MULTIPROC_DIR the workers share a fresh temporary directory, gone after exit."""
    local = await start_fake()
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    gateway = GatewayProcess(tmp_path, routed([backend("local", local.url)], {"targets": [{"backend": "local"}]}),
                             workers=2, env={"PROMETHEUS_MULTIPROC_DIR": "", "TMPDIR": str(tmp)})
    try:
        gateway.start()
        await gateway.wait_serving()
        async with aiohttp.ClientSession() as http:
            async with http.post(gateway.url + "/v1/chat/completions", json={"model": "llama3.2", "messages": HI}) as r:
                assert r.status == 200
        assert [p.name.startswith("ollama-gateway-metrics-") for p in tmp.iterdir()] == [True]
        gateway.terminate()
        assert await gateway.wait_exit(15) == 0
        assert list(tmp.iterdir()) == []
    finally:
        gateway.kill()
