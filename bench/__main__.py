"""One-command benchmark: direct vs bare pass-through vs gateway vs LiteLLM, interleaved rounds.

    .venv/bin/python -m bench [--quick] [--no-litellm] [--no-gateway] [--rounds N] [--out FILE]

See bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import shutil
import signal
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from . import clients, report
from .arms import REPO, Arm, direct_arm, gateway_arm, litellm_arm, litellm_version, log, passthrough_arm, \
    start_fake, wait_port
from .procs import machine_cpu, own_cpu, register_pid, running, stop_all

FULL = dict(rounds=3, wrk_s=4, warm_s=1, lat_n=1500, lat_cap=3.0, s0_n=20, s20_n=4, stream_cap=3.0,
            cpu_req_n=3000, cpu_stream_n=400, cpu_cap=6.0, cpu_conc=16, hold_n=1000, hold_timeout=60.0,
            many_n=10_000, many_base=100, many_tokens=20, many_timeout=180.0)
QUICK = dict(rounds=2, wrk_s=2, warm_s=1, lat_n=400, lat_cap=1.5, s0_n=8, s20_n=2, stream_cap=1.5,
             cpu_req_n=1000, cpu_stream_n=150, cpu_cap=3.0, cpu_conc=16, hold_n=1000, hold_timeout=20.0,
             many_n=1_000, many_base=100, many_tokens=20, many_timeout=90.0)
HOLD_MODE = {"token_delay_ms": 600_000, "first_token_delay_ms": 0}
# the many-streams cell: tokens 100 ms apart, as a slow model sends them, each stream `many_tokens` long
MANY_MODE = {"token_delay_ms": 100, "first_token_delay_ms": 0}
KINDS = {"chat": ("", "chat"), "completions": ("cmpl_", "completions"), "responses": ("resp_", "Responses")}


@dataclass
class Spec:
    key: str
    what: str
    proxied_only: bool = False      # the direct arm has no proxy process to measure
    workers_arm: bool = False       # also run the gateway --workers 2 arm
    mode: dict | None = None        # fake Ollama token timing for this measure
    kind: str = "chat"              # the call: chat, legacy completions or Responses (the gateway's door)
    # a CPU per stream cell: (concurrency, streams: a count, or a float share of the settings' cpu_stream_n,
    # warm-up calls; None: one per connection)
    stream_cpu: tuple[int, int | float, int | None] | None = None


def _stream_cpu_specs() -> list[Spec]:
    """The cost per token must not grow with the answer: 64 and 1,024 tokens, back to back and 10 ms
    apart (many at once, as the streams of a real model overlap), on each of the three doors."""
    out = []
    for kind, (tag, label) in KINDS.items():
        lab = "" if kind == "chat" else label + " "
        out += [
            Spec(f"cpu_{tag}s64_0", f"CPU/stream {lab}64 tok 0 ms", True, mode={"token_delay_ms": 0}, kind=kind,
                 stream_cpu=(16, 1.0, None)),
            Spec(f"cpu_{tag}s1k_0", f"CPU/stream {lab}1k tok 0 ms", True, mode={"token_delay_ms": 0, "tokens": 1024},
                 kind=kind, stream_cpu=(16, 0.25, None)),
            Spec(f"cpu_{tag}s64_10", f"CPU/stream {lab}64 tok 10 ms", True, mode={"token_delay_ms": 10}, kind=kind,
                 stream_cpu=(64, 128, 1)),
            Spec(f"cpu_{tag}s1k_10", f"CPU/stream {lab}1k tok 10 ms", True,
                 mode={"token_delay_ms": 10, "tokens": 1024}, kind=kind, stream_cpu=(64, 64, 1)),
        ]
    return out


SPECS = [
    Spec("rps1", "wrk 1 conn"),
    Spec("rps16", "wrk 16 conns", workers_arm=True),
    Spec("rps64", "wrk 64 conns", workers_arm=True),
    # whole 64-token streams back to back through wrk: streams/s, one worker and two
    Spec("srps16", "wrk streams 16 conns", workers_arm=True, mode={"token_delay_ms": 0}),
    Spec("lat", "latency, 1 conn"),
    Spec("s0", "streams, 0 ms apart", mode={"token_delay_ms": 0}),
    Spec("s20", "streams, 20 ms apart", mode={"token_delay_ms": 20}),
    Spec("cpu_req", "CPU per request", proxied_only=True),
    # tokens 1 ms apart so every token is its own read and write, as with a real model
    Spec("cpu_stream", "CPU per stream", proxied_only=True, mode={"token_delay_ms": 1}, stream_cpu=(16, 1.0, None)),
    *_stream_cpu_specs(),
]
_DEFAULT_MODE = {"token_delay_ms": 0, "tokens": 64}


async def set_mode(fake_url: str, mode: dict) -> None:
    async with aiohttp.ClientSession() as s:
        async with s.post(fake_url + "/_bench/mode", json=mode) as r:
            r.raise_for_status()


async def fake_stats(fake_url: str) -> dict:
    async with aiohttp.ClientSession() as s:
        async with s.get(fake_url + "/_bench/stats") as r:
            return await r.json()


def raise_nofile(want: int = 65536) -> str:
    """Raise the open-files limit this process and every arm it starts inherit: 10,000 streams through
    a proxy hold 20,000 of its descriptors. As root the hard limit goes up too."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < want and os.geteuid() == 0:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, want))
            soft, hard = want, want
        except (ValueError, OSError):  # above fs.nr_open: keep the hard limit there is
            pass
    new = hard if hard != resource.RLIM_INFINITY else max(soft, want)
    if soft < new:
        resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
    return f"open files limit {resource.getrlimit(resource.RLIMIT_NOFILE)[0]}"


async def settle(limit: float = 0.1, window: float = 0.2, max_wait: float = 20.0) -> float:
    """Wait until the started processes are idle (< limit cores), e.g. LiteLLM finishing requests that wrk
    abandoned, so that one arm's backlog does not slow the next measurement. Returns the seconds waited."""
    t0 = time.monotonic()
    while True:
        procs = running()
        c0 = sum(p.cpu() for p in procs)
        await asyncio.sleep(window)
        c1 = sum(p.cpu() for p in procs)
        if (c1 - c0) / window < limit or time.monotonic() - t0 > max_wait:
            return time.monotonic() - t0


async def measure(spec: Spec, arm: Arm, cfg: dict, tmp: Path, wrk_ok: bool) -> dict:
    t = arm.target.variant(spec.kind)
    if spec.key.startswith(("rps", "srps")):
        if not wrk_ok:
            raise clients.BenchError("wrk unavailable")
        stream = spec.key.startswith("s")
        conns = int(spec.key.lstrip("srps"))
        script = tmp / f"wrk-{t.name}{'-stream' if stream else ''}.lua"
        if not script.exists():
            clients.wrk_script(t, tmp, stream=stream)
        await clients.run_wrk(t, script, conns, cfg["warm_s"], register_pid, allow_empty=True)
        res = await clients.run_wrk(t, script, conns, cfg["wrk_s"], register_pid, allow_empty=True)
        if res["requests"] < 2 * conns:  # a slow arm (LiteLLM): too few answers to count, measure longer
            res = await clients.run_wrk(t, script, conns, 3 * cfg["wrk_s"], register_pid)
        return res
    if spec.key == "lat":
        return await clients.latency(t, cfg["lat_n"], cfg["lat_cap"])
    if spec.key == "s0":
        return await clients.streams(t, cfg["s0_n"], cfg["stream_cap"])
    if spec.key == "s20":
        return await clients.streams(t, cfg["s20_n"], cfg["s20_n"] * 3.0)
    if spec.key == "cpu_req":
        return await clients.cpu_per_call(t, arm.proc.cpu, stream=False, n=cfg["cpu_req_n"],
                                          concurrency=cfg["cpu_conc"], cap_s=cfg["cpu_cap"])
    if spec.stream_cpu is not None:
        concurrency, n, warm = spec.stream_cpu
        if isinstance(n, float):
            n = max(16, int(cfg["cpu_stream_n"] * n))
        spaced = warm is not None  # the spaced cells take seconds per stream: a longer cap
        return await clients.cpu_per_call(t, arm.proc.cpu, stream=True, n=n, concurrency=concurrency,
                                          cap_s=cfg["cpu_cap"] * (4 if spaced else 1), warm=warm)
    raise AssertionError(spec.key)


async def many_streams(arm: Arm, fake_url: str, cfg: dict) -> dict:
    """``many_base`` then ``many_n`` concurrent slow streams through one arm (tokens 100 ms apart, all
    opened first, then run at once): every token must arrive, and the CPU per token at ``many_n`` is
    compared with ``many_base``'s."""
    out = {}

    async def held() -> int:
        return (await fake_stats(fake_url))["held"]

    async def release() -> None:
        async with aiohttp.ClientSession() as s:
            async with s.post(fake_url + "/_bench/release") as r:
                r.raise_for_status()

    try:
        for label, n in (("base", cfg["many_base"]), ("many", cfg["many_n"])):
            await settle()
            await set_mode(fake_url, {**MANY_MODE, "tokens": cfg["many_tokens"], "hold": True})
            res = await clients.slow_streams(arm.target, n, cfg["many_tokens"], arm.proc.cpu, arm.proc.rss,
                                             held, release, cfg["many_timeout"])
            log(f"  {n:,} slow streams {arm.name:12} {_short(res)}")
            out[label] = res
    finally:
        await set_mode(fake_url, _DEFAULT_MODE)
    many, base = out["many"], out["base"]
    return {**{k: many[k] for k in ("streams", "complete", "failed", "unfinished", "held", "peak_open", "open_s", "run_s", "rss_open_mib",
                                    "rss_peak_mib", "rss_kib_per_stream", "cpu_us_per_token",
                                    "open_cpu_ms_per_stream")},
            "base_cpu_us_per_token": base["cpu_us_per_token"], "base_open_cpu_ms_per_stream":
            base["open_cpu_ms_per_stream"], "base_complete": base["complete"], "base_streams": base["streams"],
            "errors": many["errors"] or base["errors"]}


async def amain(args: argparse.Namespace) -> int:
    cfg = dict(QUICK if args.quick else FULL, quick=args.quick)
    if args.rounds:
        cfg["rounds"] = args.rounds
    if args.many:
        cfg["many_n"] = args.many
    started = time.monotonic()
    m0, own0 = machine_cpu(), own_cpu()
    tmp = Path(tempfile.mkdtemp(prefix="bench-"))
    notes: list[str] = []
    arms: dict[str, Arm] = {}
    results: dict = defaultdict(lambda: defaultdict(list))
    errors: dict = {}
    try:
        log(raise_nofile() + f"; scratch dir {tmp}")
        fd_cap = (resource.getrlimit(resource.RLIMIT_NOFILE)[0] - 200) // 2  # a proxy: 2 descriptors a stream
        if cfg["many_n"] > fd_cap:
            notes.append(f"concurrent slow streams: {cfg['many_n']:,} asked, {fd_cap:,} run: the open-files limit "
                         f"here is {resource.getrlimit(resource.RLIMIT_NOFILE)[0]:,} and cannot be raised (no "
                         "CAP_SYS_RESOURCE), and a proxy holds two descriptors per stream (client and backend)")
            cfg["many_n"] = fd_cap
        wrk_why = clients.wrk_available()
        if wrk_why:
            log(f"throughput figures skipped: {wrk_why}")
            notes.append(f"throughput figures skipped: {wrk_why}")

        fake, fake_port = start_fake(tmp)
        await wait_port(fake_port, fake, 10)
        fake_url = f"http://127.0.0.1:{fake_port}"
        log(f"fake Ollama on {fake_url} (pid {fake.pid})")

        arms["direct"] = await direct_arm(fake_port)
        arms["passthrough"] = await passthrough_arm(fake_port, tmp)
        if args.no_gateway:
            arms["gateway"] = Arm("gateway", skipped="--no-gateway")
        else:
            arms["gateway"] = await gateway_arm(fake_port, tmp)
            if arms["gateway"].ok and not args.no_workers:
                arms["gateway-w2"] = await gateway_arm(fake_port, tmp, workers=2)
        if args.no_litellm:
            arms["litellm"] = Arm("litellm", skipped="--no-litellm")
        else:
            log("starting LiteLLM (installs it on first use)")
            arms["litellm"] = await litellm_arm(fake_port, tmp)
        for a in arms.values():
            log(f"arm {a.name}: " + (f"SKIPPED: {a.skipped}" if a.skipped else f"ready, {a.info}"
                                     + (f" (pid {a.proc.pid})" if a.proc else "")))

        main_arms = [a for n, a in arms.items() if a.ok and n != "gateway-w2"]
        w2 = arms.get("gateway-w2")
        for rnd in range(cfg["rounds"]):
            order = main_arms[rnd % len(main_arms):] + main_arms[:rnd % len(main_arms)]
            log(f"round {rnd + 1}/{cfg['rounds']}: order {[a.name for a in order]}")
            for spec in [sp for sp in SPECS if not args.only or sp.key in args.only.split(",")]:
                todo = [a for a in order if not (spec.proxied_only and a.proc is None)
                        and not (spec.kind != "chat" and a.name == "litellm")]  # LiteLLM: chat only
                if spec.workers_arm and w2 is not None and w2.ok:
                    todo.append(w2)
                if spec.mode is not None:
                    await set_mode(fake_url, spec.mode)
                try:
                    for arm in todo:
                        if not arm.ok:
                            continue
                        if arm.proc is not None and not arm.proc.alive():
                            arm.skipped = f"process died during the run:\n{arm.proc.log_tail()}"
                            log(f"arm {arm.name} died: {arm.proc.log_tail(5)}")
                            continue
                        waited = await settle()
                        if waited > 2:
                            log(f"  (waited {waited:.1f} s for the processes to go idle)")
                        try:
                            res = await measure(spec, arm, cfg, tmp, wrk_why is None)
                            results[spec.key][arm.name].append(res)
                            log(f"  {spec.what:22} {arm.name:12} {_short(res)}")
                        except Exception as exc:  # noqa: BLE001 - one cell fails, the run goes on
                            errors[(spec.key, arm.name)] = (str(exc) or repr(exc)).splitlines()[0][:300]
                            log(f"  {spec.what:22} {arm.name:12} ERROR {errors[(spec.key, arm.name)]}")
                finally:
                    if spec.mode is not None:
                        await set_mode(fake_url, _DEFAULT_MODE)

        for a in arms.values():
            if a.ok and a.proc is not None and a.name != "gateway-w2":
                results["rss_after"][a.name].append({"mib": a.proc.rss() / 2**20})
        if w2 is not None and w2.ok:
            w2.proc.stop()  # free its memory and fds before holding 1,000 streams

        if not args.no_hold:
            for a in [a for a in main_arms if a.proc is not None and a.ok]:
                base = (await fake_stats(fake_url))["active_streams"]
                await set_mode(fake_url, HOLD_MODE)
                try:
                    log(f"holding {cfg['hold_n']} slow streams through {a.name}")
                    res = await clients.hold_streams(a.target, cfg["hold_n"], a.proc.rss, cfg["hold_timeout"])
                    results["hold"][a.name].append(res)
                    log(f"  {a.name}: {res['opened']}/{res['wanted']} open in {res['open_s']:.1f} s, "
                        f"RSS {res['rss_mib']:.1f} MiB {res['errors'] or ''}")
                    if res["opened"] < res["wanted"]:
                        notes.append(f"{a.name}: only {res['opened']} of {res['wanted']} slow streams opened within "
                                     f"{cfg['hold_timeout']:.0f} s (RSS sampled then)"
                                     + (f"; first errors: {res['errors']}" if res["errors"] else ""))
                except Exception as exc:  # noqa: BLE001
                    errors[("hold", a.name)] = (str(exc) or repr(exc))[:300]
                finally:
                    await set_mode(fake_url, {"token_delay_ms": 0})
                left = None
                for _ in range(50):
                    left = (await fake_stats(fake_url))["active_streams"] - base
                    if left <= 0:
                        break
                    await asyncio.sleep(0.2)
                if left and left > 0:
                    notes.append(f"{a.name}: {left} upstream streams still open at the fake 10 s after its "
                                 "clients disconnected (client disconnects are not propagated upstream)")

        if not args.no_many:
            for a in [a for a in main_arms if a.proc is not None and a.ok and a.name != "litellm"]:
                # a fresh process: its RSS then does not carry the heap the earlier cells left behind
                a.proc.stop()
                fresh = await (gateway_arm(fake_port, tmp) if a.name == "gateway" else passthrough_arm(fake_port, tmp))
                if not fresh.ok or fresh.proc is None:
                    errors[("many", a.name)] = f"could not restart: {fresh.skipped}"
                    continue
                a.proc, a.target = fresh.proc, fresh.target
                log(f"{cfg['many_n']:,} concurrent slow streams through a fresh {a.name}")
                try:
                    results["many"][a.name].append(await many_streams(a, fake_url, cfg))
                except Exception as exc:  # noqa: BLE001
                    errors[("many", a.name)] = (str(exc) or repr(exc))[:300]
                    log(f"  many streams {a.name} ERROR {errors[('many', a.name)]}")

        gw = arms.get("gateway")
        if gw is not None and gw.ok:
            notes.extend(await gateway_checks(gw, tmp))
        stats = await fake_stats(fake_url)
        if stats.get("unknown_paths"):
            notes.append(f"paths the fake Ollama does not serve were requested: {stats['unknown_paths']}")
    finally:
        stop_all()
        if not args.keep_logs:
            shutil.rmtree(tmp, ignore_errors=True)

    elapsed = time.monotonic() - started
    m1, own1 = machine_cpu(), own_cpu()
    other = (m1["busy"] - m0["busy"]) - (own1 - own0)
    steal = m1["steal"] - m0["steal"]
    notes.append(f"machine load during the run ({elapsed:.0f} s): processes outside the benchmark used about "
                 f"{max(0.0, other):.1f} CPU-s ({max(0.0, other) / elapsed:.0%} of one core on average); "
                 f"hypervisor steal {steal:.1f} s ({steal / max(1e-9, m1['all'] - m0['all']):.1%} of CPU time)")
    if arms["passthrough"].ok and not arms["gateway"].ok:
        notes.append("the gateway arm was skipped; its columns, ratios and targets are empty")
    md = report.render(results, arms, errors, notes, cfg,
                       litellm_version() if arms.get("litellm") and arms["litellm"].ok else None, elapsed)
    print()
    print(md)
    out = args.out or (None if args.quick else str(REPO / "docs" / "benchmark-results.md"))
    if out and out != "-":
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(md)
        log(f"wrote {out}")
    if args.json:
        Path(args.json).write_text(json.dumps({"settings": cfg, "results": results,
                                               "errors": {f"{k[0]}/{k[1]}": v for k, v in errors.items()},
                                               "skipped": {n: a.skipped for n, a in arms.items() if a.skipped}},
                                              indent=1, default=str))
    if args.keep_logs:
        log(f"logs kept in {tmp}")
    log(f"done in {elapsed / 60:.1f} min")
    return 0


async def gateway_checks(gw: Arm, tmp: Path) -> list[str]:
    """Evidence that the gateway ran with its feature path on: request log lines, /metrics answering."""
    out = []
    logf = tmp / "gateway-requests.log"
    lines = sum(1 for _ in open(logf, "rb")) if logf.exists() else 0
    out.append(f"gateway request log: {lines:,} lines written to the log file" if lines
               else "gateway request log: no lines in the log file (request logging off or written elsewhere?)")
    try:
        async with aiohttp.ClientSession() as s:
            async with s.get(gw.target.base + "/metrics", headers=gw.target.headers) as r:
                text = await r.text()
                out.append(f"gateway GET /metrics: HTTP {r.status}, {len(text.splitlines())} lines")
    except Exception as exc:  # noqa: BLE001
        out.append(f"gateway GET /metrics failed: {exc!r}")
    return out


def _short(res: dict) -> str:
    return ", ".join(f"{k}={v:,.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in res.items())


def main() -> int:
    ap = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="~2 minute smoke run: fewer rounds, shorter points")
    ap.add_argument("--no-litellm", action="store_true", help="skip the LiteLLM arm (no install)")
    ap.add_argument("--no-gateway", action="store_true", help="skip the gateway arm")
    ap.add_argument("--no-workers", action="store_true", help="skip the gateway --workers 2 comparison")
    ap.add_argument("--no-hold", action="store_true", help="skip holding 1,000 slow streams")
    ap.add_argument("--no-many", action="store_true", help="skip the 10,000 concurrent slow streams")
    ap.add_argument("--many", type=int, help="how many concurrent slow streams (default 10,000, quick 1,000)")
    ap.add_argument("--only", help="comma-separated measure keys to run (e.g. srps16,cpu_resp_s64_10); "
                                   "default all")
    ap.add_argument("--rounds", type=int, help="interleaved rounds (default 3, quick 2)")
    ap.add_argument("--out", help="markdown output (default docs/benchmark-results.md; with --quick none); - for none")
    ap.add_argument("--json", help="also write the raw per-round values to this JSON file")
    ap.add_argument("--keep-logs", action="store_true", help="keep the scratch dir with every process's log")
    args = ap.parse_args()
    try:
        import uvloop
        factory = uvloop.new_event_loop
    except ImportError:  # pragma: no cover
        factory = None
    rc = 1

    def on_term(*_: object) -> None:
        raise KeyboardInterrupt

    # Ctrl-C even when started in the background (where SIGINT arrives ignored); asyncio.Runner then
    # turns SIGINT into a cancellation of the run, and every `finally` stops what it started.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, on_term)
    try:
        with asyncio.Runner(loop_factory=factory) as runner:
            rc = runner.run(amain(args))
    except KeyboardInterrupt:
        log("interrupted: stopping every process started")
        rc = 130
    finally:
        stop_all()
    return rc


if __name__ == "__main__":
    raise SystemExit(main())
