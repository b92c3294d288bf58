"""Load generators: wrk for throughput, aiohttp clients for latency, streams, CPU and slow streams."""

from __future__ import annotations

import asyncio
import os
import re
import statistics
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import aiohttp
import orjson

perf = time.perf_counter
HAS_CONTENT = re.compile(rb'"content"\s*:\s*"[^"]')
MESSAGES = [{"role": "user", "content": "Say hello in 64 words."}]  # PROMPT, below, as a chat


class BenchError(Exception):
    pass


# what the client sends for each kind of call, and the path it goes to: OpenAI's door of the gateway
# (SSE) or Ollama's native API (NDJSON) of the direct and pass-through arms
_PATHS = {"chat": ("/v1/chat/completions", "/api/chat"),
          "completions": ("/v1/completions", "/api/generate"),
          "responses": ("/v1/responses", "/api/chat")}
PROMPT = "Say hello in 64 words."


@dataclass
class Target:
    """Where and how a client talks to one arm."""
    name: str
    base: str                     # http://127.0.0.1:PORT
    path: str                     # /api/chat (Ollama native) or /v1/chat/completions (OpenAI)
    sse: bool                     # OpenAI SSE answers (else Ollama NDJSON)
    headers: dict = field(default_factory=dict)
    model: str = "bench-model"
    kind: str = "chat"            # chat, completions (legacy) or responses

    @property
    def url(self) -> str:
        return self.base + self.path

    def variant(self, kind: str) -> "Target":
        """The same arm called for another kind: /v1/completions or /v1/responses on the gateway,
        /api/generate or /api/chat on Ollama's native API."""
        return replace(self, kind=kind, path=_PATHS[kind][0 if self.sse else 1])

    def body(self, stream: bool) -> bytes:
        if self.kind == "completions":
            return orjson.dumps({"model": self.model, "prompt": PROMPT, "stream": stream})
        if self.kind == "responses" and self.sse:
            # store: false, as Codex and agent clients send it: stored, every answer of the run would stay
            # in the gateway's memory (up to 10,000), which "RSS after the run" is not about
            return orjson.dumps({"model": self.model, "input": PROMPT, "stream": stream, "store": False})
        return orjson.dumps({"model": self.model, "messages": MESSAGES, "stream": stream})

    def all_headers(self) -> dict:
        return {"Content-Type": "application/json", **self.headers}

    def text_of(self, obj: dict) -> tuple[str | None, bool]:
        """(the content piece in one streamed event or line, whether it ends the stream)."""
        if not self.sse:
            piece = obj.get("response") if self.kind == "completions" else (obj.get("message") or {}).get("content")
            return piece, obj.get("done") is True
        if self.kind == "responses":
            kind = obj.get("type")
            if kind in ("error", "response.failed"):
                raise BenchError(f"{self.name}: stream error {str(obj)[:300]}")
            return (obj.get("delta") if kind == "response.output_text.delta" else None), kind == "response.completed"
        choice = (obj.get("choices") or [{}])[0]
        return (choice.get("text") if self.kind == "completions" else (choice.get("delta") or {}).get("content")), False


def pct(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100)."""
    s = sorted(values)
    k = max(0, min(len(s) - 1, int(round(q / 100 * len(s) + 0.5)) - 1))
    return s[k]


def session(limit: int = 0, timeout: float = 60) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=limit, force_close=False),
                                 timeout=aiohttp.ClientTimeout(total=timeout))


# ---------------------------------------------------------------- single requests

async def one_request(s: aiohttp.ClientSession, t: Target, body: bytes, headers: dict) -> bytes:
    async with s.post(t.url, data=body, headers=headers) as r:
        data = await r.read()
        if r.status != 200:
            raise BenchError(f"{t.name}: HTTP {r.status}: {data[:300]!r}")
        return data


def content_of(t: Target, raw: bytes) -> str:
    obj = orjson.loads(raw)
    if not t.sse:
        return obj["response"] if t.kind == "completions" else obj["message"]["content"]
    if t.kind == "responses":
        return "".join(part["text"] for item in obj["output"] if item["type"] == "message" for part in item["content"])
    choice = obj["choices"][0]
    return choice["text"] if t.kind == "completions" else choice["message"]["content"]


async def one_stream(s: aiohttp.ClientSession, t: Target, body: bytes, headers: dict) -> tuple[float, float, int]:
    """(seconds to first non-empty content, seconds to end of stream, content pieces)."""
    t0 = perf()
    ttft = None
    pieces = 0
    finished = False
    async with s.post(t.url, data=body, headers=headers) as r:
        if r.status != 200:
            raise BenchError(f"{t.name}: HTTP {r.status}: {(await r.read())[:300]!r}")
        buf = b""
        async for chunk in r.content.iter_any():
            buf += chunk
            *lines, buf = buf.split(b"\n")
            for line in lines:
                if t.sse:
                    if not line.startswith(b"data:"):
                        continue
                    payload = line[5:].strip()
                    if payload == b"[DONE]":
                        finished = True
                        continue
                    obj = orjson.loads(payload)
                    if "error" in obj:
                        raise BenchError(f"{t.name}: stream error {payload[:300]!r}")
                else:
                    if not line.strip():
                        continue
                    obj = orjson.loads(line)
                    if "error" in obj:
                        raise BenchError(f"{t.name}: stream error {line[:300]!r}")
                text, last = t.text_of(obj)
                finished = finished or last
                if text:
                    pieces += 1
                    if ttft is None:
                        ttft = perf() - t0
    total = perf() - t0
    if ttft is None or not finished:
        raise BenchError(f"{t.name}: stream ended without {'content' if ttft is None else 'its end marker'}")
    return ttft, total, pieces


async def probe(t: Target, timeout: float = 20) -> str:
    """One non-streaming and one streaming request; raises BenchError with the reason if either fails."""
    async with session(timeout=timeout) as s:
        raw = await one_request(s, t, t.body(False), t.all_headers())
        try:
            text = content_of(t, raw)
        except (KeyError, IndexError, TypeError, orjson.JSONDecodeError) as exc:
            raise BenchError(f"{t.name}: unexpected non-streaming answer ({exc!r}): {raw[:300]!r}") from None
        if not text:
            raise BenchError(f"{t.name}: empty content in non-streaming answer: {raw[:300]!r}")
        _, _, pieces = await one_stream(s, t, t.body(True), t.all_headers())
        return f"ok ({len(text)} chars, {pieces} stream pieces)"


# ---------------------------------------------------------------- measurements

async def latency(t: Target, n: int, cap_s: float) -> dict:
    """n sequential non-streaming requests on one pooled connection; per-request perf_counter latency."""
    body, headers = t.body(False), t.all_headers()
    lat: list[float] = []
    async with session(limit=1) as s:
        for _ in range(3):
            await one_request(s, t, body, headers)
        end = perf() + cap_s
        while len(lat) < n and perf() < end:
            t0 = perf()
            await one_request(s, t, body, headers)
            lat.append(perf() - t0)
    return {"p50": pct(lat, 50) * 1e3, "p99": pct(lat, 99) * 1e3, "n": len(lat)}


async def streams(t: Target, n: int, cap_s: float) -> dict:
    """n sequential streams on one connection: medians of TTFT and total time."""
    body, headers = t.body(True), t.all_headers()
    ttfts, totals = [], []
    async with session(limit=1) as s:
        await one_stream(s, t, body, headers)  # warm the connection
        end = perf() + cap_s
        while len(ttfts) < n and (perf() < end or not ttfts):
            ttft, total, pieces = await one_stream(s, t, body, headers)
            if pieces != 64:
                raise BenchError(f"{t.name}: stream had {pieces} content pieces, expected 64")
            ttfts.append(ttft)
            totals.append(total)
    return {"ttft": statistics.median(ttfts) * 1e3, "total": statistics.median(totals) * 1e3, "n": len(ttfts)}


async def cpu_per_call(t: Target, cpu_of, *, stream: bool, n: int, concurrency: int, cap_s: float,
                       warm: int | None = None) -> dict:
    """CPU seconds of the proxy process tree over a fixed number of calls (stopped early at cap_s).

    ``warm`` calls (default: ``concurrency``) go first, one after another, unmeasured."""
    body, headers = t.body(stream), t.all_headers()
    done = 0
    async with session(limit=concurrency) as s:
        for _ in range(concurrency if warm is None else warm):
            await (one_stream if stream else one_request)(s, t, body, headers)
        end = perf() + cap_s
        c0, w0 = cpu_of(), perf()

        async def worker() -> None:
            nonlocal done
            while done < n and perf() < end:
                done += 1
                await (one_stream if stream else one_request)(s, t, body, headers)

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        c1, w1 = cpu_of(), perf()
    return {"cpu_ms": (c1 - c0) / done * 1e3, "n": done, "wall_s": w1 - w0, "cpu_s": c1 - c0}


async def hold_streams(t: Target, n: int, rss_of, open_timeout: float, ramp: int = 50) -> dict:
    """Open n streaming requests (the fake sends one token then stalls), sample RSS, close them all."""
    body, headers = t.body(True), t.all_headers()
    opened = 0
    all_open = asyncio.Event()
    release = asyncio.Event()
    gate = asyncio.Semaphore(ramp)
    errors: list[str] = []

    async def one(s: aiohttp.ClientSession) -> None:
        nonlocal opened
        try:
            async with gate:
                r = await s.post(t.url, data=body, headers=headers)
                seen = b""
                if r.status != 200:
                    raise BenchError(f"HTTP {r.status}")
                while True:  # until the first token arrived through the proxy
                    chunk = await r.content.readany()
                    if not chunk:
                        raise BenchError("stream ended early")
                    seen += chunk
                    if HAS_CONTENT.search(seen):
                        break
            opened += 1
            if opened == n:
                all_open.set()
            await release.wait()
            r.close()
        except Exception as exc:  # noqa: BLE001 - counted, reported
            if len(errors) < 3:
                errors.append(repr(exc)[:200])

    async with session(limit=0, timeout=open_timeout + 60) as s:
        t0 = perf()
        tasks = [asyncio.ensure_future(one(s)) for _ in range(n)]
        try:
            await asyncio.wait_for(all_open.wait(), open_timeout)
        except asyncio.TimeoutError:
            pass
        open_s = perf() - t0
        await asyncio.sleep(0.5)
        rss = rss_of()
        open_at_sample = opened  # streams released later may still complete their opening: not counted
        release.set()
        await asyncio.wait(tasks, timeout=10)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return {"rss_mib": rss / 2**20, "opened": open_at_sample, "wanted": n, "open_s": open_s, "errors": errors}


# ---------------------------------------------------------------- many slow streams

_END_MARKERS = (b"data: [DONE]", b'"done":true', b"response.completed")


def _dechunk(body: bytes) -> bytes | None:
    """A chunked HTTP body decoded; None when it is cut short."""
    out, pos = [], 0
    while True:
        eol = body.find(b"\r\n", pos)
        if eol < 0:
            return None
        size = int(body[pos:eol].split(b";", 1)[0] or b"0", 16)
        if size == 0:
            return b"".join(out)
        out.append(body[eol + 2:eol + 2 + size])
        pos = eol + 2 + size + 2
        if pos > len(body):
            return None


class _SlowStream(asyncio.Protocol):
    """One streamed request on a raw connection (``Connection: close``): a client far cheaper than
    aiohttp's, so that ten thousand of them leave the CPU to the proxy under test."""

    def __init__(self, request: bytes, counter: list[int]) -> None:
        self.request, self.counter = request, counter
        self.parts: list[bytes] = []
        self.done: asyncio.Future = asyncio.get_running_loop().create_future()

    def connection_made(self, transport) -> None:  # type: ignore[override]
        self.counter[0] += 1
        self.counter[1] = max(self.counter[1], self.counter[0])
        transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        self.parts.append(data)

    def connection_lost(self, exc) -> None:
        self.counter[0] -= 1
        if not self.done.done():
            self.done.set_result(b"".join(self.parts))


def _tokens_in(raw: bytes) -> tuple[int, bool]:
    """(content pieces, whether the stream ended with its end marker) of one raw HTTP answer."""
    head, _, body = raw.partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 200"):
        raise BenchError(f"answer {head[:60]!r}")
    if b"chunked" in head.lower():
        body = _dechunk(body)
        if body is None:
            raise BenchError("chunked body cut short")
    return len(HAS_CONTENT.findall(body)), any(m in body for m in _END_MARKERS)


async def slow_streams(t: Target, n: int, tokens: int, cpu_of, rss_of, held_of, release, timeout: float,
                       ramp: int = 256) -> dict:
    """n concurrent streams of ``tokens`` tokens each through one proxy, opened ``ramp`` at a time.

    The fake holds every stream before its first token (``held_of()`` counts them) until all n are
    open, then ``release()`` lets them run at once, tokens spaced as the fake's mode says. Measured:
    how many completed with every token, the proxy's CPU to open a stream and per token once they
    run, and its RSS with all of them open and at the peak."""
    host, port = t.base.split("//", 1)[1].rsplit(":", 1)
    body = t.body(True)
    heads = "".join(f"{k}: {v}\r\n" for k, v in t.all_headers().items())
    request = (f"POST {t.path} HTTP/1.1\r\nHost: {host}:{port}\r\n{heads}Content-Length: {len(body)}\r\n"
               "Connection: close\r\n\r\n").encode() + body
    loop = asyncio.get_running_loop()
    counter = [0, 0]  # open now, most open at once
    errors: list[str] = []
    rss0 = rss_of()
    peak = [rss0]
    finished = asyncio.Event()

    async def sample() -> None:
        while not finished.is_set():
            peak[0] = max(peak[0], rss_of())
            await asyncio.sleep(0.1)

    async def one() -> tuple[int, bool]:
        proto = _SlowStream(request, counter)
        await loop.create_connection(lambda: proto, host, int(port))
        return _tokens_in(await proto.done)

    sampler = asyncio.ensure_future(sample())
    c0, t0 = cpu_of(), perf()
    tasks: list[asyncio.Future] = []
    held = 0
    # opened `ramp` at a time, the next ones once all but one batch wait at the fake: connections the
    # proxy has not accepted yet stay well inside its listen backlog; then until every stream waits
    # there (or failed: counted below), at most `timeout` seconds
    while perf() - t0 < timeout:
        held = await held_of()
        failed_yet = sum(task.done() for task in tasks)
        if len(tasks) < n and held + failed_yet >= len(tasks) - ramp:
            tasks += [asyncio.ensure_future(one()) for _ in range(min(ramp, n - len(tasks)))]
        elif len(tasks) == n and held + failed_yet >= n:
            break
        await asyncio.sleep(0.05)
    c_open, t_open = cpu_of(), perf()
    rss_open = rss_of()
    await release()
    done, pending = await asyncio.wait(tasks, timeout=timeout)
    c1, t1 = cpu_of(), perf()
    finished.set()
    await sampler
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    complete = got = failed = 0
    for task in done:
        if task.exception() is not None:
            failed += 1
            if len(errors) < 3:
                errors.append(repr(task.exception())[:200])
            continue
        pieces, ended = task.result()
        got += pieces
        complete += pieces == tokens and ended
    return {"streams": n, "complete": complete, "failed": failed, "unfinished": len(pending), "tokens": got,
            "held": held, "peak_open": counter[1],
            "open_s": t_open - t0, "run_s": t1 - t_open,
            "open_cpu_ms_per_stream": (c_open - c0) / max(1, n) * 1e3,
            "cpu_us_per_token": (c1 - c_open) / max(1, got) * 1e6, "rss_base_mib": rss0 / 2**20,
            "rss_open_mib": rss_open / 2**20, "rss_peak_mib": peak[0] / 2**20,
            "rss_kib_per_stream": (rss_open - rss0) / 1024 / max(1, held), "errors": errors}


# ---------------------------------------------------------------- wrk

WRK_LUA = """wrk.method = "POST"
wrk.body = [==[{body}]==]
{headers}
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("BENCH_JSON {{\\"requests\\":%d,\\"duration_us\\":%d,\\"connect\\":%d,\\"read\\":%d,\\"write\\":%d,\\"status\\":%d,\\"timeout\\":%d}}\\n",
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout))
end
"""


def wrk_script(t: Target, folder: Path, stream: bool = False) -> Path:
    heads = "\n".join(f'wrk.headers["{k}"] = [==[{v}]==]' for k, v in t.all_headers().items())
    path = folder / f"wrk-{t.name}{'-stream' if stream else ''}.lua"
    path.write_text(WRK_LUA.format(body=t.body(stream).decode(), headers=heads))
    return path


async def run_wrk(t: Target, script: Path, conns: int, seconds: float, register, allow_empty: bool = False) -> dict:
    argv = ["wrk", "-t1", f"-c{conns}", f"-d{max(1, round(seconds))}s", "--timeout", "10s",
            "-s", str(script), t.url]
    proc = await asyncio.create_subprocess_exec(*argv, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.STDOUT, start_new_session=True)
    register(proc.pid)
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), seconds + 30)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        register(proc.pid, remove=True)
    text = out.decode(errors="replace")
    m = re.search(r"BENCH_JSON (\{.*\})", text)
    if not m:
        raise BenchError(f"wrk gave no summary: {text[-300:]}")
    res = orjson.loads(m.group(1))
    dur = res["duration_us"] / 1e6
    # answers that are not 2xx and broken connections fail the point; timeouts (a slow arm overloaded at
    # 64 connections, wrk --timeout 10s) only lower its rate and are reported
    bad = res["status"] + res["connect"] + res["read"] + res["write"]
    good = res["requests"] - res["status"]
    if res["requests"] == 0 and bad == 0 and allow_empty:
        return {"rps": 0.0, "requests": 0, "errors": 0, "timeouts": res["timeout"]}
    if good <= 0 or bad > 0.01 * max(1, res["requests"]):
        raise BenchError(f"wrk: {res['requests']} requests, errors "
                         f"{dict((k, res[k]) for k in ('status', 'connect', 'read', 'write', 'timeout'))}")
    return {"rps": good / dur, "requests": res["requests"], "errors": bad, "timeouts": res["timeout"]}


def wrk_available() -> str | None:
    """None when wrk is usable; else why not. Installs it with apt-get when missing and root."""
    from shutil import which
    import subprocess
    if which("wrk"):
        return None
    if os.geteuid() != 0:
        return "wrk is not installed (apt-get install -y wrk) and we are not root"
    print("[bench] wrk missing: apt-get install -y wrk", flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (["apt-get", "install", "-y", "wrk"], ["apt-get", "update"], ["apt-get", "install", "-y", "wrk"]):
        try:
            subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=300)
        except (OSError, subprocess.TimeoutExpired):
            pass
        if which("wrk"):
            return None
    return "wrk could not be installed with apt-get"
