"""What each piece of a non-streamed request costs, with ``timeit`` in this process (best of 5).

The per-request pieces of the gateway's own work, called directly with the bench's gateway config
(auth, a 50/50 split, metrics, a JSON request log to /dev/null) and a context filled as after a real
chat completion. For finding where a request's CPU goes, not for the figures of a run: the bench
(``bench/run.sh``, ``bench.features``, ``bench.ab``) measures whole processes.

    .venv/bin/python -m bench.pieces
"""

from __future__ import annotations

import random
import timeit
from collections.abc import Callable

import yaml
from aiohttp import web
from multidict import CIMultiDict

from policies.outcome import Outcome
from policies.plan import plan, resolve_route, sticky_key
from proxy.accounting import Accounting, _log_record
from proxy.auth import Authenticator
from proxy.backends import Backends
from proxy.config import parse_config
from proxy.context import RequestContext
from proxy.ids import new_id
from proxy.jsonio import dumps, dumps_kept, loads
from proxy.telemetry.logs import RequestLog
from proxy.telemetry.metrics import Metrics
from proxy.translate.chat_answer import ollama_chat_to_openai
from proxy.translate.chat_request import chat_request_to_ollama

from .arms import gateway_config

KEY = "sk-bench-0123456789abcdef0123456789abcdef"
BODY = {"model": "bench-model", "messages": [{"role": "user", "content": "hi"}]}
ANSWER = {"model": "bench-model", "created_at": "2024-01-01T00:00:00Z",
          "message": {"role": "assistant", "content": "Hello there, how can I help?"}, "done": True,
          "done_reason": "stop", "total_duration": 1000000, "load_duration": 1000, "prompt_eval_count": 5,
          "prompt_eval_duration": 1000, "eval_count": 8, "eval_duration": 100000}


def _time(name: str, fn: Callable[[], object], n: int = 20000) -> None:
    best = min(timeit.repeat(fn, number=n, repeat=5)) / n * 1e6
    print(f"{name:34s} {best:6.2f} µs")


def main() -> None:
    cfg = parse_config(yaml.safe_load(gateway_config(1, 2, "/dev/null")), {"BENCH_API_KEY": KEY})
    policy = cfg.policy
    route = resolve_route(policy, "bench-model")
    assert route is not None
    headers = CIMultiDict({"Authorization": f"Bearer {KEY}", "Content-Type": "application/json", "Host": "x"})
    rng = random.Random(1)
    auth = Authenticator(cfg.auth)
    backends = Backends(policy.breaker)
    metrics = Metrics()
    accounting = Accounting(cfg, backends, metrics)
    accounting.request_log = RequestLog(open("/dev/null", "wb"), fmt="json", flush=False)
    quiet = Accounting(cfg, backends, None)
    route_plan = plan(policy, "bench-model", key="api_key:bench", roll=0.3, route=route)
    ctx = RequestContext(request_id="req_x", endpoint="/v1/chat/completions", config=cfg, client_model="bench-model",
                         credential="bench", plan=route_plan, backend="ollama-a", model="bench-model",
                         prompt_tokens=5, completion_tokens=8, timings=ANSWER, upstream_wait=0.001)
    ctx.path.append("ollama-a:bench-model")
    native = chat_request_to_ollama(BODY, model="bench-model", default_options=route.options,
                                    default_keep_alive=route.keep_alive)
    out = ollama_chat_to_openai(ANSWER, completion_id="chatcmpl-x", created=1, model="bench-model")
    raw = dumps(ANSWER)
    record = _log_record(ctx, 0.0123)

    def finish(accounting: Accounting) -> Callable[[], None]:
        def run() -> None:
            ctx.in_flight = True
            accounting.finish(ctx)
        return run

    _time("authenticate", lambda: auth.authenticate(headers.get("Authorization"), None))
    _time("RequestContext", lambda: RequestContext(request_id="req_x", endpoint="/v1/chat/completions", config=cfg))
    _time("new_id", lambda: new_id("req_"))
    _time("resolve_route + sticky_key", lambda: sticky_key(resolve_route(policy, "bench-model"),  # type: ignore[arg-type]
                                                           api_key="bench", user=None, headers=headers))
    _time("plan", lambda: plan(policy, "bench-model", key="api_key:bench", roll=rng.random(), route=route))
    _time("chat_request_to_ollama", lambda: chat_request_to_ollama(
        BODY, model="bench-model", default_options=route.options, default_keep_alive=route.keep_alive))
    _time("payload (dumps_kept)", lambda: dumps_kept({**native, "model": "bench-model", "truncate": False}))
    _time("answer (loads)", lambda: loads(raw))
    _time("ollama_chat_to_openai", lambda: ollama_chat_to_openai(ANSWER, completion_id="chatcmpl-x", created=1,
                                                                 model="bench-model"))
    _time("answer (dumps)", lambda: dumps(out))
    _time("web.Response", lambda: web.Response(body=b"x" * 300, content_type="application/json", headers={
        "X-Request-ID": "req_x", "x-gateway-backend": "a", "x-gateway-model": "m", "x-gateway-route": "r"}))
    _time("Backends.record (ok)", lambda: backends.record("ollama-a", Outcome.OK))
    _time("request log: the record", lambda: _log_record(ctx, 0.0123))
    _time("request log: the line", lambda: accounting.request_log.write(record))  # type: ignore[union-attr]
    _time("Metrics.observe_request", lambda: metrics.observe_request(
        "bench", "bench-model", "ollama-a", "ok", 200, duration=0.01, upstream_wait=0.009, prompt_tokens=5,
        completion_tokens=8, ollama_timings=ANSWER, ollama_model="bench-model"))  # type: ignore[arg-type]
    _time("Series.record", lambda: accounting.series.record(
        route="bench", arm="ollama-a:bench-model", backend="ollama-a", outcome="ok", status=200, duration=0.01,
        ttft=None, prompt_tokens=5, completion_tokens=8, fallbacks=0))
    _time("Accounting.finish, everything on", finish(accounting))
    _time("Accounting.finish, metrics/log off", finish(quiet))


if __name__ == "__main__":
    main()
