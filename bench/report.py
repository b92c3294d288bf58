"""Markdown report: machine, medians per arm, ratios, targets."""

from __future__ import annotations

import os
import platform
import statistics
import subprocess
import sys
import time

ARMS = ["direct", "passthrough", "gateway", "litellm"]

# the CPU-per-stream cells: (key prefix, door) x (key suffix, what)
DOORS = (("", "chat"), ("cmpl_", "completions"), ("resp_", "Responses"))
STREAM_CELLS = (("s64_0", "64 tokens back to back"), ("s1k_0", "1,024 tokens back to back"),
                ("s64_10", "64 tokens 10 ms apart"), ("s1k_10", "1,024 tokens 10 ms apart"))

# (label, measure, field, kind): kind decides format and how ratios read
ROWS = [
    ("non-stream req/s, 1 conn (wrk)", "rps1", "rps", "rps"),
    ("non-stream req/s, 16 conns (wrk)", "rps16", "rps", "rps"),
    ("non-stream req/s, 64 conns (wrk)", "rps64", "rps", "rps"),
    ("latency p50, 1 conn (ms)", "lat", "p50", "ms"),
    ("latency p99, 1 conn (ms)", "lat", "p99", "ms"),
    ("added latency p50 vs direct (ms)", "lat", "p50", "added"),
    ("added latency p99 vs direct (ms)", "lat", "p99", "added"),
    ("stream TTFT, tokens 0 ms apart (ms)", "s0", "ttft", "ms"),
    ("stream total, 64 tokens 0 ms apart (ms)", "s0", "total", "ms"),
    ("stream TTFT, tokens 20 ms apart (ms)", "s20", "ttft", "ms"),
    ("added TTFT vs direct, 20 ms apart (ms)", "s20", "ttft", "added"),
    ("stream total, 64 tokens 20 ms apart (ms)", "s20", "total", "ms"),
    ("CPU per non-stream request (ms)", "cpu_req", "cpu_ms", "cpu"),
    ("CPU per 64-token stream (ms)", "cpu_stream", "cpu_ms", "cpu"),
    ("streams/s, 64 tokens, 16 conns (wrk)", "srps16", "rps", "rps"),
    *[(f"CPU per {door} stream, {what} (ms)", f"cpu_{tag}{key}", "cpu_ms", "cpu")
      for tag, door in DOORS for key, what in STREAM_CELLS],
    ("RSS after the run (MiB)", "rss_after", "mib", "mib"),
    ("RSS holding 1,000 streams (MiB)", "hold", "rss_mib", "mib"),
    ("concurrent slow streams: all tokens arrived", "many", "complete", "count"),
    ("concurrent slow streams: most open at once", "many", "peak_open", "count"),
    ("concurrent slow streams: RSS at the peak (MiB)", "many", "rss_peak_mib", "mib"),
    ("concurrent slow streams: RSS per open stream (KiB)", "many", "rss_kib_per_stream", "dec1"),
    ("concurrent slow streams: CPU per token (µs)", "many", "cpu_us_per_token", "dec1"),
    ("the same at 100 streams: CPU per token (µs)", "many", "base_cpu_us_per_token", "dec1"),
]


def med(results: dict, measure: str, arm: str, fld: str) -> float | None:
    vals = [v[fld] for v in results.get(measure, {}).get(arm, []) if v.get(fld) is not None]
    return statistics.median(vals) if vals else None


def value(results: dict, measure: str, arm: str, fld: str, kind: str) -> float | None:
    v = med(results, measure, arm, fld)
    if kind == "added":
        d = med(results, measure, "direct", fld)
        return None if v is None or d is None else v - d
    return v


def fmt(v: float | None, kind: str) -> str:
    if v is None:
        return "—"
    if kind in ("rps", "count"):
        return f"{v:,.0f}"
    if kind in ("mib", "dec1"):
        return f"{v:.1f}"
    if kind == "added":
        return f"{v:+.3f}"
    if kind == "cpu":
        return f"{v:.3f}"
    return f"{v:.3f}" if v < 10 else f"{v:.1f}"


def ratio(a: float | None, b: float | None, kind: str) -> str:
    if a is None or b is None:
        return "—"
    if kind == "added":
        return f"{a - b:+.3f} ms"
    if b == 0:
        return "—"
    return f"{a / b:.2f}×" if a / b < 100 else f"{a / b:,.0f}×"


def machine(litellm_ver: str | None) -> list[str]:
    cpu = "?"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import aiohttp
    try:
        import uvloop
        uv = uvloop.__version__
    except ImportError:
        uv = "not installed"
    try:
        wrk = subprocess.run(["wrk", "-v"], capture_output=True, text=True, timeout=5).stdout.split("[")[0].strip()
    except (OSError, subprocess.SubprocessError):
        wrk = "not installed"
    lines = [
        f"- date: {time.strftime('%Y-%m-%d %H:%M:%S %Z')}",
        f"- CPU: {cpu}, {os.cpu_count()} cores; kernel {platform.release()}",
        f"- Python {platform.python_version()}, aiohttp {aiohttp.__version__}, uvloop {uv}, {wrk or 'wrk'}",
    ]
    if litellm_ver:
        lines.append(f"- LiteLLM {litellm_ver} (1 worker, `ollama_chat/bench-model`)")
    lines.append(f"- the {os.cpu_count()} cores are shared by the load generator (wrk or the Python client), the fake "
                 "Ollama and the proxy under test: absolute numbers are pessimistic, compare arms within this run")
    return lines


def targets(results: dict) -> list[tuple[str, bool | None, str]]:
    g = lambda m, a, f: med(results, m, a, f)  # noqa: E731
    hold = (results.get("hold", {}).get("gateway") or [{}])[0]
    out = []

    def add(name: str, a, b, test, show) -> None:
        if a is None or b is None:
            out.append((name, None, "not measured"))
        else:
            out.append((name, bool(test(a, b)), show(a, b)))

    add("non-stream throughput at 16 conns >= 90% of passthrough", g("rps16", "gateway", "rps"),
        g("rps16", "passthrough", "rps"), lambda a, b: a >= 0.9 * b,
        lambda a, b: f"{a:,.0f} vs {b:,.0f} req/s ({a / b:.0%})")
    add("non-stream throughput at 16 conns >= 50x LiteLLM", g("rps16", "gateway", "rps"),
        g("rps16", "litellm", "rps"), lambda a, b: a >= 50 * b,
        lambda a, b: f"{a:,.0f} vs {b:,.0f} req/s ({a / b:.1f}×)")
    add("added latency p50 within 0.3 ms of passthrough's", g("lat", "gateway", "p50"),
        g("lat", "passthrough", "p50"), lambda a, b: a - b <= 0.3,
        lambda a, b: f"gateway {a:.3f} ms vs passthrough {b:.3f} ms ({a - b:+.3f} ms)")
    add("added latency p99 within 1 ms of passthrough's", g("lat", "gateway", "p99"),
        g("lat", "passthrough", "p99"), lambda a, b: a - b <= 1.0,
        lambda a, b: f"gateway {a:.3f} ms vs passthrough {b:.3f} ms ({a - b:+.3f} ms)")
    add("CPU per 64-token stream <= 1.5x passthrough's", g("cpu_stream", "gateway", "cpu_ms"),
        g("cpu_stream", "passthrough", "cpu_ms"), lambda a, b: a <= 1.5 * b,
        lambda a, b: f"{a:.3f} vs {b:.3f} ms ({a / b:.2f}×)")
    for tag, door in DOORS:
        for key, what in STREAM_CELLS:
            add(f"CPU per {door} stream, {what}, <= 1.2x passthrough's", g(f"cpu_{tag}{key}", "gateway", "cpu_ms"),
                g(f"cpu_{tag}{key}", "passthrough", "cpu_ms"), lambda a, b: a <= 1.2 * b,
                lambda a, b: f"{a:.3f} vs {b:.3f} ms ({a / b:.2f}×)")
    add("TTFT within 1 ms of direct at 20 ms token spacing", g("s20", "gateway", "ttft"),
        g("s20", "direct", "ttft"), lambda a, b: a - b <= 1.0,
        lambda a, b: f"gateway {a:.3f} ms vs direct {b:.3f} ms ({a - b:+.3f} ms)")
    add("RSS < 60 MiB after the run", g("rss_after", "gateway", "mib"), 60.0, lambda a, b: a < b,
        lambda a, b: f"{a:.1f} MiB")
    many = (results.get("many", {}).get("gateway") or [{}])[0]
    add(f"{many.get('streams', 0):,} concurrent slow streams on one worker, all complete with every token",
        many.get("complete"), many.get("streams"), lambda a, b: a == b,
        lambda a, b: f"{a:,} of {b:,} complete, {many.get('peak_open', 0):,} open at once")
    add("RSS < 300 MiB at the peak of the concurrent slow streams", many.get("rss_peak_mib"), 300.0,
        lambda a, b: a < b, lambda a, b: f"{a:.1f} MiB, {many.get('rss_kib_per_stream', 0):.1f} KiB per open stream")
    add("CPU per token with the concurrent slow streams <= at 100 streams", many.get("cpu_us_per_token"),
        many.get("base_cpu_us_per_token"), lambda a, b: a <= b,
        lambda a, b: f"{a:.1f} vs {b:.1f} µs per token ({a / b:.2f}×)")
    add("RSS < 150 MiB holding 1,000 streams", g("hold", "gateway", "rss_mib"), 150.0,
        lambda a, b: a < b and hold.get("opened") == hold.get("wanted"),
        lambda a, b: f"{a:.1f} MiB with {hold.get('opened')}/{hold.get('wanted')} streams open")
    return out


def _oneline(text: str, limit: int = 400) -> str:
    flat = " / ".join(line.strip() for line in text.splitlines() if line.strip())
    return flat if len(flat) <= limit else flat[:limit] + " …"


def _ratio_text(a, b):
    return f"{a / b:.2f}×" if a and b else "—"


def render(results: dict, arms: dict, errors: dict, notes: list[str], settings: dict,
           litellm_ver: str | None, elapsed: float) -> str:
    present = [a for a in ARMS if a in arms]
    out = ["# Benchmark results", ""]
    mode = "quick smoke run" if settings.get("quick") else "full run"
    out.append(f"Produced by `bash bench/run.sh` ({mode}: {settings['rounds']} interleaved rounds, "
               f"wrk {settings['wrk_s']} s per point after a {settings['warm_s']} s warm-up; {elapsed / 60:.1f} min). "
               "Every figure is the median over rounds; see bench/README.md for what each one means.")
    out += ["", "## Machine", ""] + machine(litellm_ver) + [""]
    out += ["## Arms", ""]
    for a in present + [n for n in arms if n not in present]:
        arm = arms[a]
        out.append(f"- **{a}**: " + (f"skipped: {_oneline(arm.skipped)}" if arm.skipped
                                      else (arm.info or "ok")))
    out += ["", "## Figures (medians over rounds)", ""]
    head = ["figure", *present, "gateway ÷ passthrough", "gateway ÷ LiteLLM", "gateway ÷ direct (floor)"]
    out.append("| " + " | ".join(head) + " |")
    out.append("|" + "---|" * len(head))
    foot: dict[str, int] = {}
    for label, measure, fld, kind in ROWS:
        cells = []
        for a in present:
            v = value(results, measure, a, fld, kind)
            err = errors.get((measure, a))
            if v is None and err:
                n = foot.setdefault(f"{measure}/{a}: {err}", len(foot) + 1)
                cells.append(f"err [{n}]")
            elif v is None and (measure.startswith("cpu_") or measure in ("rss_after", "hold", "many")) and a == "direct":
                cells.append("n/a")
            else:
                cell = fmt(v, kind)
                held = (results.get(measure, {}).get(a) or [{}])[0] if measure == "hold" else {}
                if held and held.get("opened") != held.get("wanted"):
                    cell += f" (only {held.get('opened')}/{held.get('wanted')} open)"
                cells.append(cell)
        gw = value(results, measure, "gateway", fld, kind)
        if kind == "added":
            r_pt = ratio(gw, value(results, measure, "passthrough", fld, kind), "added")
            r_ll = ratio(gw, value(results, measure, "litellm", fld, kind), "added")
            r_d = "—"
        else:
            raw = lambda arm: value(results, measure, arm, fld, kind)  # noqa: E731
            r_pt = ratio(gw, raw("passthrough"), "x")
            r_ll = ratio(gw, raw("litellm"), "x")
            r_d = ratio(gw, raw("direct"), "x") if kind in ("rps", "ms") else "—"
        out.append("| " + " | ".join([label, *cells, r_pt, r_ll, r_d]) + " |")
    out.append("")
    out.append("Ratios are gateway value ÷ other arm's value (for req/s higher is better, for time, CPU and "
               "memory lower is better); on \"added\" rows they are differences in ms. "
               "CPU and RSS are of the proxy's process tree; the direct arm has no proxy (n/a).")
    if foot:
        out += [""] + [f"[{n}] {text[:400]}" for text, n in foot.items()]

    w1, w2 = results.get("rps16", {}).get("gateway"), results.get("rps16", {}).get("gateway-w2")
    if "gateway-w2" in arms:
        out += ["", "## `--workers` scaling (gateway only)", ""]
        if arms["gateway-w2"].skipped:
            out.append(f"skipped: {_oneline(arms['gateway-w2'].skipped)}")
        elif w1 and w2:
            out += ["| connections | 1 worker req/s | 2 workers req/s | 2 ÷ 1 |", "|---|---|---|---|"]
            for m, c in (("rps16", "16"), ("rps64", "64"), ("srps16", "16, streams/s (64 tokens)")):
                a, b = med(results, m, "gateway", "rps"), med(results, m, "gateway-w2", "rps")
                out.append(f"| {c} | {fmt(a, 'rps')} | {fmt(b, 'rps')} | {_ratio_text(b, a)} |")
            out.append("")
            out.append(f"With {os.cpu_count()} cores also running wrk and the fake, a second worker has little "
                       "idle CPU to use: this shows overhead and correctness more than real scaling.")

    out += ["", "## Issue targets", ""]
    for name, ok, show in targets(results):
        mark = "n/a" if ok is None else ("PASS" if ok else "FAIL")
        out.append(f"- **{mark}** {name}: {show}")

    out += ["", "## Per-round values", "", "<details><summary>raw medians per round</summary>", "", "```"]
    for measure, per_arm in results.items():
        for a, vals in per_arm.items():
            short = [{k: (round(v, 3) if isinstance(v, float) else v) for k, v in d.items() if k != "errors"}
                     for d in vals]
            out.append(f"{measure:10} {a:12} {short}")
    out += ["```", "", "</details>"]
    if notes:
        out += ["", "## Notes", ""] + [f"- {n}" for n in notes]
    out.append("")
    out.append(f"_Harness: Python {sys.version.split()[0]}, settings {settings}._")
    return "\n".join(out) + "\n"
