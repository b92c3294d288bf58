"""CPU per non-streamed request of the gateway with features switched off one at a time.

Attributes the gateway's cost: the bare pass-through, the gateway fully on (auth, metrics, request log,
a 50/50 split), the gateway without the request log, without metrics, without auth, and with all
three off, and ``session``: fully on, but with a tuned ``aiohttp.ClientSession`` as its backend client
instead of its own HTTP/1.1 client (``bench/session_pool.py``). ``limits``: fully on with per-credential
limits (concurrency, requests and tokens per minute, all far above the load) kept in the process;
``redis``: the same limits shared through a Redis on loopback (``state``; Debian's redis-server,
started here). Also prints the median of wrk's p50 latency per variant. Each variant runs wrk -c16 for 3 s after a 1 s warm-up; rounds are interleaved and the
median of the proxy process's CPU time per request is printed. Loopback only; every process stopped.

    .venv/bin/python -m bench.features 4                   # 4 rounds of every variant
    .venv/bin/python -m bench.features 4 pass full bare    # chosen variants
    .venv/bin/python -m bench.features 5 pass full session # the backend client against ClientSession
    .venv/bin/python -m bench.features 5 limits redis      # what shared limits add per request
"""
import json
import os
import socket
import statistics
import subprocess
import sys
import time

import yaml

from bench.procs import cpu_seconds
def free():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p
cpu = cpu_seconds  # the process's CPU seconds, from the scheduler's nanosecond counters
def wait(port):
    for _ in range(100):
        try: socket.create_connection(("127.0.0.1", port), 0.2).close(); return
        except OSError: time.sleep(0.1)
PY = sys.executable
REPO = str(__import__("pathlib").Path(__file__).resolve().parent.parent)
fport = free()
fake = subprocess.Popen([PY, "-m", "bench.fake_ollama", "--port", str(fport)], cwd=REPO, stdout=subprocess.DEVNULL)
wait(fport)
WORK = __import__("tempfile").mkdtemp(prefix="bench-features-")
lua = WORK + "/cpu.lua"
RESULTS = {}
LATENCY = {}  # variant -> wrk's p50 in ms per round
def run(name, cmd, port, path="/v1/chat/completions", env=None):
    p = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, **(env or {})})
    try:
        _measure(name, p, port, path)
    finally:
        p.terminate(); p.wait(10)


def _measure(name, p, port, path):
    wait(port); time.sleep(0.5)
    body = '{"model":"bench-model","messages":[{"role":"user","content":"hi"}]}' if path.startswith("/v1") else '{"model":"bench-model","messages":[{"role":"user","content":"hi"}],"stream":false}'
    open(lua,"w").write(f"wrk.method='POST'\nwrk.body='{body}'\nwrk.headers['Content-Type']='application/json'\nwrk.headers['Authorization']='Bearer sk-bench'\n")
    subprocess.run(["wrk","-t1","-c16","-d1s","-s",lua,f"http://127.0.0.1:{port}{path}"], capture_output=True)
    c0 = cpu(p.pid)
    out = subprocess.run(["wrk","-t1","-c16","-d3s","--latency","-s",lua,f"http://127.0.0.1:{port}{path}"], capture_output=True, text=True).stdout
    c1 = cpu(p.pid)
    reqs = int([l for l in out.splitlines() if "requests in" in l][0].split()[0])
    bad = [l for l in out.splitlines() if "Non-2xx" in l or "Socket errors" in l]
    if bad:  # a variant that answers errors measures the error path, not the request: no figure
        raise SystemExit(f"{name}: {'; '.join(l.strip() for l in bad)} of {reqs} requests; no figure")
    RESULTS.setdefault(name, []).append((c1-c0)/reqs*1e6)
    p50 = [l.split()[1] for l in out.splitlines() if l.strip().startswith("50%")][0]
    LATENCY.setdefault(name, []).append(float(p50[:-2]) / (1000 if p50.endswith("us") else 1))
base = {"backends": [{"name": "a", "url": f"http://127.0.0.1:{fport}"}, {"name": "b", "url": f"http://127.0.0.1:{fport}"}],
        "routes": [{"name": "bench", "models": ["bench-model"], "targets": [{"backend": "a", "model": "bench-model", "weight": 50}, {"backend": "b", "model": "bench-model", "weight": 50}]}],
        "auth": {"credentials": [{"name": "bench", "api_key": "sk-bench"}]},
        "logging": {"requests": True, "file": WORK + "/requests.log", "level": "warning"}, "metrics": {"enabled": True}}
variants = sys.argv[2:] or ["pass", "full", "nolog", "nometrics", "noauth", "bare", "session"]
REDIS = None
if "redis" in variants:
    rport = free()
    REDIS = subprocess.Popen(["redis-server", "--port", str(rport), "--bind", "127.0.0.1", "--save", "",
                              "--appendonly", "no"], stdout=subprocess.DEVNULL)
    wait(rport)
LIMITS = {"max_concurrent": 10_000, "requests_per_minute": 100_000_000, "tokens_per_minute": 100_000_000_000}


def _variant(v):
    port = free()
    if v == "pass":
        run("passthrough", [PY, "-m", "bench.passthrough", "--upstream", f"http://127.0.0.1:{fport}",
                            "--port", str(port)], port, path="/api/chat")
        return
    cfg = json.loads(json.dumps(base))
    if v in ("nolog", "bare"):
        cfg["logging"]["requests"] = False
    if v in ("nometrics", "bare"):
        cfg["metrics"]["enabled"] = False
    if v in ("noauth", "bare"):
        del cfg["auth"]
    if v in ("limits", "redis"):
        cfg["auth"]["credentials"][0].update(LIMITS)
    if v == "redis":
        cfg["state"] = {"redis_url": f"redis://127.0.0.1:{rport}/0"}
    with open(WORK + "/gateway.yaml", "w") as handle:
        handle.write(yaml.safe_dump(cfg))
    module = "bench.session_pool" if v == "session" else "proxy"
    run("gateway-" + v, [PY, "-m", module, "--config", WORK + "/gateway.yaml", "--port", str(port)], port)


try:
    for _ in range(int(sys.argv[1]) if len(sys.argv) > 1 else 3):
        for v in variants:
            _variant(v)
finally:
    fake.terminate()
    fake.wait(10)
    if REDIS is not None:
        REDIS.terminate()
        REDIS.wait(10)
for k, vals in RESULTS.items():
    print(f"{k:40s} median {statistics.median(vals):6.0f} us/req   {[round(x) for x in vals]}   "
          f"p50 {statistics.median(LATENCY[k]):.3f} ms")
