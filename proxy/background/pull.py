"""Model pulls on Ollama backends: one in flight per (backend, model), with progress for everyone.

``Puller`` owns them. Three callers share it: the router's auto-pull hook (a backend answered "model not found" and
``ops.auto_pull`` allows the model), the admin API (``POST /admin/models/pull``) and warm-up. However
many of them ask for the same model on the same backend, one ``/api/pull`` runs (single flight); the
others wait for it or watch its progress. A waiter gives up after ``ops.auto_pull.timeout`` while the
pull itself carries on in the background, so the next request finds the model installed.

Client input decides which names reach auto-pull (any name matching an ``ops.auto_pull`` glob), so
a stream of unknown names must not become a stream of pulls: a name whose auto-pull failed is not
auto-pulled again on that backend for ``FAILED_PULL_TTL`` seconds (a negative cache; Ollama fails
an unknown name fast with "file does not exist"), and a backend starts a new auto-pull only while
its auto-pulls in flight plus those failed in that window number fewer than ``AUTO_PULL_BUDGET``.
So however many unknown names arrive, a backend makes at most ``AUTO_PULL_BUDGET`` failing pulls
per ``FAILED_PULL_TTL``. The ``on_auto_pull`` hook gets a bounded model label: the name once it is
installed (a pull that succeeded), else ``other``.

Ollama streams NDJSON progress: ``{"status": "pulling <digest>", "digest", "total", "completed"}`` per
layer, then ``{"status": "success"}``; a failure is an ``{"error": "..."}`` line (often after a 200).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from collections.abc import Callable

from policies.outcome import Outcome
from proxy.backends import Backends
from proxy.background.health import check_backend
from proxy.background.tasks import Tasks
from proxy.config import AutoPullConfig
from proxy.errors import ProxyError, UpstreamStreamError
from proxy.jsonio import JSONDecodeError, dumps, loads
from proxy.state.pulls import DONE, FOLLOW, MINE, SharedPulls
from proxy.state.store import StateUnavailable
from proxy.upstream.backend import Upstream

__all__ = ["AUTO_PULL_BUDGET", "FAILED_PULL_TTL", "PullBoard", "PullProgress", "AutoPull", "Puller", "stream_pull"]

log = logging.getLogger("proxy.background.pull")
_Key = tuple[str, str]  # (backend, model)
_SHARE_EVERY = 0.25  # seconds between two progress updates shared with the other processes
_RECENT = 10.0  # a pull that ended this recently answers late waiters without a new pull
_KEEP = 20  # finished pulls kept for /status and the dashboard
FAILED_PULL_TTL = 300.0
"""Seconds a name whose auto-pull failed is not auto-pulled again on that backend."""
AUTO_PULL_BUDGET = 3
"""Per backend: auto-pulls in flight plus auto-pulls failed in the last ``FAILED_PULL_TTL`` seconds."""


@dataclass(slots=True)
class PullProgress:
    """Where one pull stands; ``state`` is ``pulling``, ``done`` or ``failed``."""

    backend: str
    model: str
    trigger: str  # "auto" | "admin" | "warmup"
    state: str = "pulling"
    status: str = "starting"
    layers: dict[str, tuple[int, int]] = field(default_factory=dict)  # digest -> (completed, total)
    error: str | None = None
    started_at: float = field(default_factory=time.time)
    finished_at: float | None = None

    @property
    def completed(self) -> int:
        return sum(c for c, _ in self.layers.values())

    @property
    def total(self) -> int:
        return sum(t for _, t in self.layers.values())

    def as_dict(self) -> dict[str, object]:
        total = self.total
        return {"backend": self.backend, "model": self.model, "trigger": self.trigger, "state": self.state,
                "status": self.status, "completed": self.completed, "total": total,
                "percent": round(100.0 * self.completed / total, 1) if total else None,
                "error": self.error, "started_at": self.started_at, "finished_at": self.finished_at}


@dataclass(frozen=True, slots=True)
class AutoPull:
    """What the auto-pull hook tells the router: retry the attempt, or keep the 404 with a note."""

    ready: bool
    note: str | None = None  # appended to the model-not-found message when a pull was tried


class PullBoard:
    """The pulls of one gateway: tasks in flight, recent progress, and watchers' queues."""

    def __init__(self) -> None:
        self.tasks: dict[_Key, asyncio.Task[None]] = {}
        self.progress: dict[_Key, PullProgress] = {}
        self.watchers: dict[_Key, set[asyncio.Queue[dict[str, object] | None]]] = {}
        self.failed: dict[_Key, tuple[float, str]] = {}  # failed auto-pulls: (monotonic time, error)

    def snapshot(self) -> list[dict[str, object]]:
        """Every pull in flight or recently finished, newest first."""
        return [p.as_dict() for p in sorted(self.progress.values(), key=lambda p: -p.started_at)]

    def publish(self, key: _Key, event: dict[str, object] | None) -> None:
        """Hand a progress event (``None``: the pull ended) to everyone watching ``key``."""
        for queue in self.watchers.get(key, ()):
            queue.put_nowait(event)

    def prune(self) -> None:
        """Forget the oldest finished pulls beyond the last ``_KEEP``."""
        done = sorted((p.finished_at or 0.0, k) for k, p in self.progress.items() if p.state != "pulling")
        for _, key in done[:max(0, len(self.progress) - _KEEP)]:
            del self.progress[key]


async def stream_pull(upstream: Upstream, model: str) -> AsyncIterator[dict[str, object]]:
    """Ollama's pull progress lines as they come; an ``{"error"}`` line raises UpstreamStreamError."""
    resp = await upstream.send("POST", "/api/pull", dumps({"model": model, "stream": True}), model=model)
    async for raw in resp.lines():
        try:
            line = loads(raw)
        except JSONDecodeError:
            continue
        if not isinstance(line, dict):
            continue
        if "error" in line:
            resp.close()
            raise UpstreamStreamError(f"pulling {model} on {upstream.name} failed: {line['error']}",
                                      outcome=Outcome.STREAM_ERROR, backend=upstream.name)
        yield line


def _apply(progress: PullProgress, line: dict[str, object]) -> None:
    progress.status = str(line.get("status") or progress.status)
    digest, total, completed = line.get("digest"), line.get("total"), line.get("completed")
    if isinstance(digest, str) and isinstance(total, int) and total > 0:
        progress.layers[digest] = (completed if isinstance(completed, int) else 0, total)


class Puller:
    """Pulls on Ollama backends for the router (auto-pull), the admin API and warm-up.

    ``settings`` returns the current ``ops.auto_pull`` section (it follows hot reloads);
    ``on_pulled`` runs after a pull succeeds (the model catalog forgets what it cached);
    ``on_auto_pull(backend, model, outcome)`` hears how automatic pulls ended (metrics).
    """

    def __init__(self, backends: Backends, tasks: Tasks, settings: Callable[[], AutoPullConfig], *,
                 on_pulled: Callable[[], None] | None = None,
                 on_auto_pull: Callable[[str, str, str], None] | None = None,
                 clock: Callable[[], float] = time.monotonic, shared: SharedPulls | None = None) -> None:
        self.clock = clock
        self.shared = shared  # with a state section: single flight across processes
        self.backends = backends
        self.tasks = tasks
        self.settings = settings
        self.on_pulled = on_pulled
        self.on_auto_pull = on_auto_pull
        self.board = PullBoard()

    async def _run(self, upstream: Upstream, progress: PullProgress) -> None:
        key = (upstream.name, progress.model)
        board = self.board
        claim = await self._claim(upstream, progress)
        try:
            if claim == FOLLOW:
                await self._follow(upstream, progress)
            elif claim == DONE:
                progress.status = "success"  # another process pulled it a moment ago
            else:
                await self._pull(upstream, progress)
        except ProxyError as exc:
            progress.state, progress.error = "failed", exc.message
            log.warning("pull of %s on %s failed: %s", progress.model, upstream.name, exc.message)
        except Exception:  # a bug must not leave waiters and /status with a pull that never ends
            progress.state, progress.error = "failed", "internal error (see the gateway's log)"
            log.exception("pull of %s on %s failed unexpectedly", progress.model, upstream.name)
        except asyncio.CancelledError:
            progress.state, progress.error = "failed", "cancelled"
            raise
        else:
            progress.state = "done"
            log.info("pulled %s on %s", progress.model, upstream.name)
            if self.on_pulled is not None:
                self.on_pulled()  # /v1/models should list it now
            self.backends.set_health(upstream.name, await check_backend(upstream))
        finally:
            progress.finished_at = time.time()
            if claim == MINE:
                await self._share(upstream, progress, final=True)
            board.tasks.pop(key, None)
            board.publish(key, progress.as_dict())
            board.publish(key, None)
            if progress.state == "done":
                board.failed.pop(key, None)
            elif progress.trigger == "auto":
                board.failed[key] = (self.clock(), progress.error or "failed")
            if progress.trigger == "auto" and self.on_auto_pull is not None:
                done = progress.state == "done"
                label = progress.model if done or self.backends.installed(progress.model) else "other"
                self.on_auto_pull(upstream.name, label, "ok" if done else "error")
            board.prune()

    async def _pull(self, upstream: Upstream, progress: PullProgress) -> None:
        """Pull on the backend, publishing progress locally and (throttled) to the other processes."""
        key = (upstream.name, progress.model)
        log.info("pulling %s on %s (%s)", progress.model, upstream.name, progress.trigger)
        logged, shared_at = -1, 0.0
        async for line in stream_pull(upstream, progress.model):
            _apply(progress, line)
            self.board.publish(key, progress.as_dict())
            if self.shared is not None and self.clock() - shared_at >= _SHARE_EVERY:
                shared_at = self.clock()
                await self._share(upstream, progress)
            total = progress.total
            tenth = progress.completed * 10 // total if total else -1
            if tenth > logged:
                logged = tenth
                log.info("pulling %s on %s: %s %d%%", progress.model, upstream.name, progress.status, tenth * 10)
        if progress.status != "success":
            raise UpstreamStreamError(f"pulling {progress.model} on {upstream.name} ended without success",
                                      outcome=Outcome.BROKEN_STREAM, backend=upstream.name)

    async def _claim(self, upstream: Upstream, progress: PullProgress) -> str:
        """Whether this process pulls (``MINE``), follows another's pull, or finds it done (shared state)."""
        if self.shared is None:
            return MINE
        try:
            return await self.shared.claim(upstream.name, progress.model)
        except StateUnavailable:
            return MINE  # Redis down: pull here (at worst one pull per process, as without state)

    async def _share(self, upstream: Upstream, progress: PullProgress, *, final: bool = False) -> None:
        if self.shared is None:
            return
        shared = {"state": progress.state, "status": progress.status, "error": progress.error,
                  "layers": {d: list(v) for d, v in progress.layers.items()}}
        try:
            if final:
                await self.shared.finish(upstream.name, progress.model, shared)
            else:
                await self.shared.publish(upstream.name, progress.model, shared)
        except StateUnavailable:
            pass  # the others' claim check finds the lock lapsed and pulls again

    async def _follow(self, upstream: Upstream, progress: PullProgress) -> None:
        """Another process pulls: mirror its progress here until it ends, as if this process pulled."""
        key = (upstream.name, progress.model)
        log.info("pull of %s on %s runs in another gateway process; following it", progress.model, upstream.name)
        assert self.shared is not None
        try:
            async for remote in self.shared.follow(upstream.name, progress.model):
                progress.status = str(remote.get("status") or progress.status)
                progress.layers = {d: (int(c), int(t)) for d, (c, t) in dict(remote.get("layers") or {}).items()}
                self.board.publish(key, progress.as_dict())
                if remote.get("state") == "failed":
                    raise UpstreamStreamError(str(remote.get("error") or f"pulling {progress.model} failed"),
                                              outcome=Outcome.STREAM_ERROR, backend=upstream.name)
                if remote.get("state") == "done":
                    progress.status = "success"
                    return
        except StateUnavailable:
            raise UpstreamStreamError(f"lost track of the pull of {progress.model} in another process (shared "
                                      "state unavailable)", outcome=Outcome.BROKEN_STREAM,
                                      backend=upstream.name) from None
        raise UpstreamStreamError(f"the pull of {progress.model} in another process ended without a result",
                                  outcome=Outcome.BROKEN_STREAM, backend=upstream.name)

    def start(self, upstream: Upstream, model: str, *, trigger: str) -> PullProgress:
        """Start pulling ``model`` on ``upstream``, or join the pull already in flight."""
        key = (upstream.name, model)
        if key in self.board.tasks:
            return self.board.progress[key]
        progress = self.board.progress[key] = PullProgress(backend=upstream.name, model=model, trigger=trigger)
        self.board.tasks[key] = self.tasks.spawn(self._run(upstream, progress), name=f"pull {upstream.name}/{model}")
        return progress

    async def watch(self, upstream: Upstream, model: str, *,
                    trigger: str = "admin") -> AsyncIterator[dict[str, object]]:
        """Start or join a pull and yield its progress until it ends (the last event has its state)."""
        key = (upstream.name, model)
        queue: asyncio.Queue[dict[str, object] | None] = asyncio.Queue()
        watchers = self.board.watchers
        watchers.setdefault(key, set()).add(queue)
        try:
            progress = self.start(upstream, model, trigger=trigger)
            yield progress.as_dict()
            while (event := await queue.get()) is not None:
                yield event
        finally:
            queues = watchers.get(key)
            if queues is not None:
                queues.discard(queue)
                if not queues:
                    del watchers[key]

    def allowed(self, model: str) -> bool:
        """Whether ``ops.auto_pull`` lets the gateway pull ``model`` by itself (off by default)."""
        settings = self.settings()
        return settings.enabled and any(fnmatchcase(model, pattern) for pattern in settings.models)

    async def auto_pull(self, upstream: Upstream, model: str) -> AutoPull:
        """After a "model not found" from an Ollama backend: pull it (once) and wait, within the timeout."""
        if upstream.kind != "ollama" or not self.allowed(model):
            return AutoPull(ready=False)
        key = (upstream.name, model)
        board = self.board
        recent = board.progress.get(key)
        if (recent is not None and recent.state == "done" and recent.finished_at is not None
                and time.time() - recent.finished_at < _RECENT):
            return AutoPull(ready=True)  # ended a moment ago: this request's 404 crossed the pull's end
        if key not in board.tasks:
            refused = self._refusal(upstream.name, key)
            if refused is not None:
                return AutoPull(ready=False, note=refused)
        progress = self.start(upstream, model, trigger="auto")
        task = self.board.tasks.get(key)
        timeout = self.settings().timeout
        if task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(task), timeout)
            except TimeoutError:
                log.warning("auto-pull of %s on %s still running after %.1fs; falling back", model, upstream.name,
                            timeout)
                return AutoPull(ready=False, note=f"auto-pull of {model} on {upstream.name} did not finish "
                                                  f"within {timeout:g}s; it continues in the background")
        if progress.state == "done":
            return AutoPull(ready=True)
        return AutoPull(ready=False, note=f"auto-pull failed: {progress.error}")

    def _refusal(self, backend: str, key: _Key) -> str | None:
        """Why no new auto-pull of ``key`` may start now (None: it may): the negative cache, the budget."""
        failed, now = self.board.failed, self.clock()
        for old in [k for k, (at, _) in failed.items() if now - at >= FAILED_PULL_TTL]:
            del failed[old]
        if key in failed:
            at, error = failed[key]
            return f"auto-pull failed: {error} (not tried again for {FAILED_PULL_TTL - (now - at):.0f}s)"
        spent = sum(1 for b, _ in failed if b == backend) + sum(
            1 for k in self.board.tasks if k[0] == backend and self.board.progress[k].trigger == "auto")
        if spent >= AUTO_PULL_BUDGET:
            return (f"auto-pull paused on {backend}: {spent} automatic pulls failed or are running "
                    f"within {FAILED_PULL_TTL:.0f}s")
        return None
