"""``python -m proxy check --config FILE [--pull]``: can this config serve, before it serves?

Checks every backend's reachability and credentials (Ollama: ``/api/version``, then ``/api/tags``;
OpenAI-compatible: ``GET /models``; a 401/403 means the gateway's credentials are wrong) and every
model the routes name explicitly (targets, fallbacks and shadows) on the backends that must have it.
Prints two readable tables and exits 0 when everything is in place, 1 when something is not, 2 when
the config itself is invalid. ``--pull`` pulls what is missing on Ollama backends, with a progress bar.
Targets without a ``model`` pass the client's model name through and cannot be checked ahead.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TextIO

from policies.model import Policy
from policies.outcome import Outcome
from proxy.config import Config, ConfigError, load_config
from proxy.errors import ProxyError
from proxy.background.pull import stream_pull
from proxy.upstream.backend import Upstream, close_upstreams, open_upstreams

__all__ = ["BackendReport", "ModelReport", "main", "needed_models", "run_checks"]

_TIMEOUT = 10.0
_BAR = 30


@dataclass(slots=True)
class BackendReport:
    name: str
    kind: str
    ok: bool = False
    status: str = "unchecked"
    detail: str = ""
    models: set[str] = field(default_factory=set)


@dataclass(slots=True)
class ModelReport:
    backend: str
    model: str
    needed_by: list[str]
    status: str = "unchecked"  # present | MISSING | unknown | pulled | pull failed

    @property
    def ok(self) -> bool:
        return self.status in ("present", "pulled")


def needed_models(policy: Policy) -> dict[tuple[str, str], list[str]]:
    """``(backend, model) -> ["route chat (target)", ...]`` for every explicitly named model."""
    out: dict[tuple[str, str], list[str]] = {}
    for route in policy.routes:
        targets = [(t, "target") for t in route.targets] + [(t, "fallback") for t in route.fallback]
        if route.shadow is not None:
            targets.append((route.shadow.target, "shadow"))
        for target, role in targets:
            if target.model is None:
                continue
            for backend in target.backends:
                who = f"{route.name} ({role})"
                users = out.setdefault((backend, target.model), [])
                if who not in users:
                    users.append(who)
    return out


def _has(installed: set[str], model: str) -> bool:
    # Ollama lists "llama3.2:latest" for a model pulled as "llama3.2"
    return model in installed or (":" not in model and f"{model}:latest" in installed)


def _count(models: set[str]) -> str:
    return f"{len(models)} model{'' if len(models) == 1 else 's'}"


async def _check_backend(upstream: Upstream) -> BackendReport:
    report = BackendReport(name=upstream.name, kind=upstream.kind)
    started = time.perf_counter()
    try:
        if upstream.kind == "ollama":
            version = await upstream.get_json("/api/version", timeout=_TIMEOUT)
            tags = await upstream.get_json("/api/tags", timeout=_TIMEOUT)
            entries = tags.get("models") if isinstance(tags, dict) else None
            report.models = {str(m.get("model") or m.get("name")) for m in entries or [] if isinstance(m, dict)}
            v = version.get("version") if isinstance(version, dict) else None
            report.detail = f"Ollama {v or '?'}, {_count(report.models)}"
        else:
            answer = await upstream.get_json(upstream.models_path or "/models", timeout=_TIMEOUT)
            data = answer.get("data") if isinstance(answer, dict) else None
            report.models = {str(m.get("id")) for m in data or [] if isinstance(m, dict)}
            report.detail = _count(report.models)
    except ProxyError as exc:
        if exc.outcome is Outcome.UPSTREAM_AUTH:
            report.status, report.detail = "bad credentials", "the backend refused the configured credentials"
        elif exc.outcome in (Outcome.CONNECT, Outcome.TIMEOUT):
            report.status, report.detail = "unreachable", exc.message
        else:
            report.status, report.detail = "error", exc.message
        return report
    report.ok, report.status = True, "ok"
    report.detail += f", {(time.perf_counter() - started) * 1000:.0f} ms"
    return report


def _bar(completed: int, total: int) -> str:
    if total <= 0:
        return "[" + "." * _BAR + "]    "
    filled = min(_BAR, _BAR * completed // total)
    return f"[{'#' * filled}{'.' * (_BAR - filled)}] {100 * completed // total:3d}%"


async def _pull(upstream: Upstream, model: str, out: TextIO) -> bool:
    """Pull with a one-line progress bar (redrawn on a terminal, one line per change elsewhere)."""
    tty = out.isatty()
    layers: dict[str, tuple[int, int]] = {}
    last, status = "", ""
    out.write(f"pulling {model} on {upstream.name}\n")
    try:
        async for line in stream_pull(upstream, model):
            digest, total, completed = line.get("digest"), line.get("total"), line.get("completed")
            if isinstance(digest, str) and isinstance(total, int):
                layers[digest] = (completed if isinstance(completed, int) else 0, total)
            done, size = sum(c for c, _ in layers.values()), sum(t for _, t in layers.values())
            status = str(line.get("status", ""))
            text = f"  {_bar(done, size)} {status}"
            if tty:
                out.write("\r" + text.ljust(79)[:79])
            elif text != last:
                out.write(text + "\n")
            last = text
            out.flush()
    except ProxyError as exc:
        out.write(("\n" if tty else "") + f"  failed: {exc.message}\n")
        return False
    out.write("\n" if tty else "")
    ok = status == "success"
    if not ok:
        out.write("  failed: the pull ended without success\n")
    return ok


def _table(rows: Sequence[Sequence[str]], out: TextIO) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for n, row in enumerate(rows):
        out.write("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() + "\n")
        if n == 0:
            out.write("  ".join("-" * w for w in widths) + "\n")


async def run_checks(config: Config, *, pull: bool, out: TextIO) -> int:
    """Check everything, print the tables, return the exit code."""
    upstreams = open_upstreams(config.backends)
    try:
        reports = dict(zip(upstreams, await asyncio.gather(*(_check_backend(u) for u in upstreams.values()))))
        models = [ModelReport(backend=b, model=m, needed_by=who)
                  for (b, m), who in needed_models(config.policy).items()]
        for item in models:
            backend = reports.get(item.backend)
            if backend is None or not backend.ok:
                item.status = "unknown"
            else:
                item.status = "present" if _has(backend.models, item.model) else "MISSING"
        if pull:
            for item in models:
                upstream = upstreams.get(item.backend)
                if item.status == "MISSING" and upstream is not None and upstream.kind == "ollama":
                    item.status = "pulled" if await _pull(upstream, item.model, out) else "pull failed"
    finally:
        await close_upstreams(upstreams)
    out.write("\nBackends\n")
    _table([("BACKEND", "TYPE", "STATUS", "DETAIL")]
           + [(r.name, r.kind, r.status, r.detail) for r in reports.values()], out)
    if models:
        out.write("\nModels the routes need\n")
        _table([("BACKEND", "MODEL", "STATUS", "NEEDED BY")]
               + [(m.backend, m.model, m.status, ", ".join(m.needed_by)) for m in models], out)
    problems = sum(not r.ok for r in reports.values()) + sum(not m.ok for m in models)
    if problems:
        hint = "" if pull else " (run with --pull to pull missing models on Ollama backends)"
        out.write(f"\n{problems} problem(s){hint if any(m.status == 'MISSING' for m in models) else ''}\n")
        return 1
    out.write("\nall backends reachable, all models present\n")
    return 0


def main(argv: Sequence[str], environ: Mapping[str, str], *, out: TextIO | None = None) -> int:
    p = argparse.ArgumentParser(prog="ollama-gateway check",
                                description="Pre-flight: check backends, credentials and the models the routes need.")
    p.add_argument("--config", "-c", metavar="FILE", help="YAML config (default: built-in defaults)")
    p.add_argument("--pull", action="store_true", help="pull missing models on Ollama backends")
    args = p.parse_args(argv)
    stream = out or sys.stdout
    try:
        config = load_config(args.config, environ)
    except ConfigError as exc:
        print(f"invalid config:\n{exc}", file=sys.stderr)
        return 2
    return asyncio.run(run_checks(config, pull=args.pull, out=stream))
