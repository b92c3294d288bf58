"""Several gateway processes sharing one real Redis (Debian's redis-server on a loopback port).

Each gateway is a real ``python -m proxy`` subprocess; the fake Ollama runs in the test's loop. The
test command installs redis-server when it is missing; without it these tests cannot run.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from tests.integration.test_routing import closed_port
from tests.integration.test_workers import GatewayProcess

needs_redis = pytest.mark.skipif(shutil.which("redis-server") is None,
                                reason="needs Debian's redis-server (scripts/test.sh installs it)")

KEY, FREE_KEY = "sk-limited-0001", "sk-unlimited-0002"
CHAT = {"model": "llama3.2", "messages": [{"role": "user", "content": "hi"}]}


class RedisServer:
    """redis-server on a free loopback port, no persistence; ``stop``/``start`` for outage tests."""

    def __init__(self, tmp: Path) -> None:
        self.port = closed_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.dir = tmp
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                                      "--appendonly", "no", "--dir", str(self.dir)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while subprocess.run(["redis-cli", "-p", str(self.port), "ping"], capture_output=True).stdout.strip() != b"PONG":
            assert time.monotonic() < deadline, "redis-server did not start"
            time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(10)
            self.proc = None


@pytest.fixture
def redis_server(tmp_path: Path) -> Any:
    server = RedisServer(tmp_path)
    server.start()
    yield server
    server.stop()


class SlowOllama:
    """A fake Ollama /api/chat that answers after ``delay`` and records the most requests in flight."""

    def __init__(self, delay: float = 0.0) -> None:
        self.delay, self.in_flight, self.most, self.calls = delay, 0, 0, 0
        self.app = web.Application()
        self.app.router.add_post("/api/chat", self.chat)

    async def chat(self, request: web.Request) -> web.Response:
        await request.read()
        self.calls += 1
        self.in_flight += 1
        self.most = max(self.most, self.in_flight)
        try:
            await asyncio.sleep(self.delay)
        finally:
            self.in_flight -= 1
        return web.json_response({"model": "llama3.2", "created_at": "2026-01-01T00:00:00Z", "done": True,
                                  "done_reason": "stop", "message": {"role": "assistant", "content": "ok"},
                                  "prompt_eval_count": 3, "eval_count": 1})


def _config(ollama_url: str, redis_url: str, **limits: Any) -> dict[str, Any]:
    state = {"redis_url": "${TEST_REDIS_URL}", **limits.pop("state", {})}
    return {"backends": [{"name": "local", "type": "ollama", "url": ollama_url}],
            "auth": {"credentials": [{"name": "limited", "api_key": KEY, **limits},
                                     {"name": "free", "api_key": FREE_KEY}]},
            "logging": {"requests": False}, "metrics": {"enabled": False}, "state": state}


async def _gateways(tmp_path: Path, raw: dict[str, Any], redis_url: str, n: int = 3) -> list[GatewayProcess]:
    procs = []
    for i in range(n):
        home = tmp_path / f"gw{i}"
        home.mkdir()
        proc = GatewayProcess(home, raw, env={"TEST_REDIS_URL": redis_url})
        proc.start()
        procs.append(proc)
    for proc in procs:
        await proc.wait_serving()
    return procs


async def _post(session: aiohttp.ClientSession, url: str, key: str = KEY) -> tuple[int, dict[str, str], float]:
    started = time.monotonic()
    async with session.post(url + "/v1/chat/completions", json=CHAT, headers={"Authorization": f"Bearer {key}"}) as resp:
        await resp.read()
        return resp.status, dict(resp.headers), time.monotonic() - started


@needs_redis
async def test_three_processes_enforce_one_requests_per_minute_exactly(aiohttp_server, tmp_path, redis_server):
    """60 requests a minute for one credential, 150 sent round-robin to three processes: exactly 60 pass."""
    ollama = await aiohttp_server(SlowOllama().app)
    procs = await _gateways(tmp_path, _config(str(ollama.make_url("")).rstrip("/"), redis_server.url,
                                              requests_per_minute=60), redis_server.url)
    try:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
            results = await asyncio.gather(*(_post(session, procs[i % 3].url) for i in range(150)))
        statuses = [status for status, _, _ in results]
        assert statuses.count(200) == 60 and statuses.count(429) == 90
        assert all(int(headers["Retry-After"]) >= 1 for status, headers, _ in results if status == 429)
    finally:
        for proc in procs:
            proc.kill()


@needs_redis
async def test_three_processes_never_run_more_than_max_concurrent(aiohttp_server, tmp_path, redis_server):
    """``max_concurrent: 4`` over three processes: the backend never sees more than 4 at once."""
    slow = SlowOllama(delay=0.6)
    ollama = await aiohttp_server(slow.app)
    procs = await _gateways(tmp_path, _config(str(ollama.make_url("")).rstrip("/"), redis_server.url,
                                              max_concurrent=4), redis_server.url)
    try:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
            results = await asyncio.gather(*(_post(session, procs[i % 3].url) for i in range(12)))
            statuses = sorted(status for status, _, _ in results)
            assert statuses == [200] * 4 + [429] * 8 and slow.most == 4
            # the slots came back: four more pass
            again = await asyncio.gather(*(_post(session, procs[i % 3].url) for i in range(4)))
        assert [status for status, _, _ in again] == [200] * 4
    finally:
        for proc in procs:
            proc.kill()


@needs_redis
async def test_a_crashed_process_gives_its_slot_back(aiohttp_server, tmp_path, redis_server):
    """A process killed while it holds the only slot: after ``lease_ttl`` another process admits again."""
    slow = SlowOllama(delay=30)
    ollama = await aiohttp_server(slow.app)
    raw = _config(str(ollama.make_url("")).rstrip("/"), redis_server.url, max_concurrent=1,
                  state={"lease_ttl": 1})
    procs = await _gateways(tmp_path, raw, redis_server.url, n=2)
    try:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
            held = asyncio.ensure_future(_post(session, procs[0].url))
            while slow.in_flight == 0:
                await asyncio.sleep(0.02)
            assert (await _post(session, procs[1].url))[0] == 429
            procs[0].kill()  # SIGKILL: no release, no renewal
            await asyncio.gather(held, return_exceptions=True)
            slow.delay = 0.0
            await asyncio.sleep(1.3)
            assert (await _post(session, procs[1].url))[0] == 200
    finally:
        for proc in procs:
            proc.kill()


@needs_redis
@pytest.mark.parametrize("policy", ["allow", "refuse"])
async def test_redis_down_mid_run_never_hangs_nor_500s(aiohttp_server, tmp_path, redis_server, policy):
    """Redis stopped: ``allow`` serves with per-process limits, ``refuse`` answers 503 to limited
    credentials only; no request takes 2 s or gets a 500; a WARNING each way; restarted, limits hold again."""
    ollama = await aiohttp_server(SlowOllama().app)
    raw = _config(str(ollama.make_url("")).rstrip("/"), redis_server.url, requests_per_minute=5,
                  state={"on_unavailable": policy})
    procs = await _gateways(tmp_path, raw, redis_server.url, n=2)
    try:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
            first = [await _post(session, procs[i % 2].url) for i in range(6)]
            assert [s for s, _, _ in first] == [200] * 5 + [429]
            redis_server.stop()
            down = [await _post(session, procs[i % 2].url) for i in range(6)]
            free = [await _post(session, procs[i % 2].url, FREE_KEY) for i in range(2)]
            assert all(seconds < 2.0 for _, _, seconds in down + free)
            assert [s for s, _, _ in free] == [200, 200]
            if policy == "allow":  # each process's own bucket of 5 (full, since none was used locally)
                assert [s for s, _, _ in down] == [200] * 6
            else:
                assert [s for s, _, _ in down] == [503] * 6
                assert all(h["Retry-After"] == "1" for _, h, _ in down)
            redis_server.start()  # empty: the shared bucket is full again
            await asyncio.sleep(2.2)  # past state.retry_after: the next call tries Redis again
            back = [await _post(session, procs[i % 2].url) for i in range(7)]
            assert [s for s, _, _ in back] == [200] * 5 + [429] * 2
        for proc in procs:
            log = proc.stderr
            assert "shared state (Redis) is unavailable" in log and "reachable again" in log
            assert "Traceback" not in log
    finally:
        for proc in procs:
            proc.kill()


@pytest.mark.parametrize("workers, level", [(2, "WARNING"), (1, "INFO")])
def test_without_state_the_startup_log_says_limits_are_per_process(caplog, workers, level):
    """No ``state`` section and a limited credential: a startup line says limits are per process."""
    import logging

    from proxy.config import parse_config
    from proxy.server import warn_if_limits_per_process

    caplog.set_level(logging.INFO, logger="proxy.server")
    limited = parse_config({"auth": {"credentials": [{"name": "a", "api_key": "k", "requests_per_minute": 5}]}}, {})
    assert warn_if_limits_per_process(limited, workers) is True
    (record,) = caplog.records
    assert record.levelname == level and "per process" in record.getMessage()
    caplog.clear()
    shared = parse_config({"auth": {"credentials": [{"name": "a", "api_key": "k", "requests_per_minute": 5}]},
                           "state": {"redis_url": "redis://127.0.0.1:1/0"}}, {})
    unlimited = parse_config({"auth": {"credentials": [{"name": "a", "api_key": "k"}]}}, {})
    assert warn_if_limits_per_process(shared, workers) is False and warn_if_limits_per_process(unlimited, workers) is False
    assert caplog.records == []


@needs_redis
async def test_a_response_stored_through_one_process_continues_through_another(start_fake, tmp_path, redis_server):
    """``previous_response_id`` across replicas: stored via one process, continued, retrieved and deleted
    via another; another caller does not see it."""
    import openai

    from tests.fakes import ollama as o

    local = await start_fake()
    local.fake.script("/api/chat", o.ok("Nice to meet you, Ada."), o.ok("Your name is Ada."))
    raw = _config(local.url, redis_server.url)
    procs = await _gateways(tmp_path, raw, redis_server.url, n=2)
    clients = [openai.AsyncOpenAI(base_url=p.url + "/v1", api_key=KEY, max_retries=0, timeout=20) for p in procs]
    other = openai.AsyncOpenAI(base_url=procs[1].url + "/v1", api_key=FREE_KEY, max_retries=0, timeout=20)
    try:
        first = await clients[0].responses.create(model="llama3.2", input="My name is Ada.")
        second = await clients[1].responses.create(model="llama3.2", input="What is my name?",
                                                   previous_response_id=first.id)
        assert second.output_text == "Your name is Ada."
        assert [m["content"] for m in local.fake.bodies("/api/chat")[1]["messages"]] == [
            "My name is Ada.", "Nice to meet you, Ada.", "What is my name?"]
        assert (await clients[1].responses.retrieve(first.id)).output_text == "Nice to meet you, Ada."
        with pytest.raises(openai.NotFoundError):
            await other.responses.retrieve(first.id)
        await clients[1].responses.delete(first.id)
        with pytest.raises(openai.NotFoundError):
            await clients[0].responses.retrieve(first.id)
    finally:
        for client in (*clients, other):
            await client.close()
        for proc in procs:
            proc.kill()


def _slow_pull(seconds: float):  # noqa: ANN202 - a FakeOllama pull behaviour: progress over ``seconds``, then success
    async def behave(fake: Any, request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
        await resp.prepare(request)
        for done in (0, 25, 50, 75, 100):
            line = {"status": "pulling abc", "digest": "sha256:" + "a" * 64, "total": 100, "completed": done}
            await resp.write(json.dumps(line).encode() + b"\n")
            await asyncio.sleep(seconds / 5)
        await resp.write(b'{"status": "success"}\n')
        name = str(body.get("model"))
        if name not in fake.models:
            fake.models.append(name)
        await resp.write_eof()
        return resp

    return behave


@needs_redis
async def test_nine_requests_over_three_processes_cause_one_pull(start_fake, tmp_path, redis_server):
    """A missing model asked for nine times at once through three processes: one /api/pull, nine answers."""
    local = await start_fake(models=[])
    local.fake.pull_behaviour = _slow_pull(1.0)
    raw = {**_config(local.url, redis_server.url), "ops": {"auto_pull": {"enabled": True, "models": ["llama3.2*"],
                                                                         "timeout": 20}}}
    procs = await _gateways(tmp_path, raw, redis_server.url, n=3)
    try:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
            results = await asyncio.gather(*(_post(session, procs[i % 3].url, FREE_KEY) for i in range(9)))
        assert [status for status, _, _ in results] == [200] * 9
        assert local.fake.bodies("/api/pull") == [{"model": "llama3.2", "stream": True}]
        followers = sum("runs in another gateway process" in p.stderr for p in procs)
        assert followers == 2
    finally:
        for proc in procs:
            proc.kill()


@needs_redis
async def test_readyz_status_and_the_gauge_say_whether_redis_answers(aiohttp_server, tmp_path, redis_server):
    """``/readyz`` and ``/status`` report the shared state; ``proxy_state_backend_up`` is 1, then 0 once
    a call failed, then 1 again after Redis is back (readiness itself does not depend on it)."""
    ollama = await aiohttp_server(SlowOllama().app)
    raw = _config(str(ollama.make_url("")).rstrip("/"), redis_server.url, requests_per_minute=100)
    raw["metrics"] = {"enabled": True}
    raw["auth"]["admin"] = {"api_key": "sk-admin-0003"}
    (proc,) = await _gateways(tmp_path, raw, redis_server.url, n=1)
    admin = {"Authorization": "Bearer sk-admin-0003"}

    async def look(session: aiohttp.ClientSession) -> tuple[dict[str, Any], dict[str, Any], str]:
        async with session.get(proc.url + "/readyz") as resp:
            ready = await resp.json()
        async with session.get(proc.url + "/status", headers=admin) as resp:
            status = await resp.json()
        async with session.get(proc.url + "/metrics", headers=admin) as resp:
            gauge = [line for line in (await resp.text()).splitlines() if line.startswith("proxy_state_backend_up")]
        return ready, status, gauge[0]

    try:
        async with aiohttp.ClientSession() as session:
            assert (await _post(session, proc.url))[0] == 200
            ready, status, gauge = await look(session)
            assert ready["state"]["up"] is True and status["state"]["up"] is True
            assert gauge == 'proxy_state_backend_up{backend="redis"} 1.0'
            redis_server.stop()
            assert (await _post(session, proc.url))[0] == 200  # on_unavailable: allow
            ready, status, gauge = await look(session)
            assert ready["state"] == {"backend": "redis", "up": False, "error": "Redis unavailable (ConnectionError)",
                                      "on_unavailable": "allow"}
            assert status["state"]["up"] is False and gauge == 'proxy_state_backend_up{backend="redis"} 0.0'
            redis_server.start()
            await asyncio.sleep(2.2)
            assert (await _post(session, proc.url))[0] == 200
            ready, status, gauge = await look(session)
            assert ready["state"]["up"] is True and gauge == 'proxy_state_backend_up{backend="redis"} 1.0'
    finally:
        proc.kill()


def test_redis_py_loads_only_with_a_state_section():
    """redis-py (with the cryptography and OpenTelemetry modules it pulls in, about 9 MiB of RSS) is
    imported by a gateway that shares state, never by one without a ``state`` section."""
    code = ("import sys; from proxy.app import create_app; from proxy.config import parse_config; "
            "create_app(parse_config({}, {}), health_checks=False); print('redis' in sys.modules); "
            "create_app(parse_config({'state': {'redis_url': 'redis://127.0.0.1:1/0'}}, {}), health_checks=False); "
            "print('redis' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert result.stdout.split() == ["False", "True"]
