"""Processes the benchmark starts: free ports, start/stop by pid, CPU and RSS from /proc."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

CLK_TCK = os.sysconf("SC_CLK_TCK")
_ALL: list["Proc"] = []
_PIDS: set[int] = set()  # short-lived helpers (wrk) started elsewhere


def register_pid(pid: int, remove: bool = False) -> None:
    (_PIDS.discard if remove else _PIDS.add)(pid)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ppid_map() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat[stat.rindex(")") + 2:].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    return children


def descendants(pid: int) -> list[int]:
    kids = _ppid_map()
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        for c in kids.get(p, []):
            out.append(c)
            todo.append(c)
    return out


def cpu_seconds(pid: int) -> float:
    """CPU time of one process (all its threads), in seconds.

    From the scheduler's nanosecond counters (``/proc/PID/task/*/schedstat``) where the kernel has
    them: ``utime + stime`` in ``/proc/PID/stat`` counts in clock ticks (10 ms), too coarse for a cell
    that spends a tenth of a second."""
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
        total = 0
        for tid in tasks:
            try:
                total += int(Path(f"/proc/{pid}/task/{tid}/schedstat").read_text().split()[0])
            except (OSError, IndexError, ValueError):
                pass  # a thread that ended meanwhile
        if total:
            return total / 1e9
    except OSError:
        pass
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # fields 14 and 15 of proc(5)


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


class Proc:
    """A child process started in its own session, logged to a file, stopped by its pid."""

    def __init__(self, name: str, argv: list[str], log: Path, *, env: dict | None = None,
                 cwd: str | None = None) -> None:
        self.name, self.argv, self.log = name, argv, log
        self._logf = open(log, "wb")
        self.popen = subprocess.Popen(argv, stdout=self._logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                      env=env, cwd=cwd, start_new_session=True)
        self.pid = self.popen.pid
        _ALL.append(self)

    def alive(self) -> bool:
        return self.popen.poll() is None

    def tree(self) -> list[int]:
        return [self.pid, *descendants(self.pid)] if self.alive() else []

    def _sum(self, measure):
        """``measure(pid)`` summed over the process tree; a process gone meanwhile counts as 0."""
        total = 0
        for p in self.tree():
            try:
                total += measure(p)
            except OSError:
                pass
        return total

    def cpu(self) -> float:
        return float(self._sum(cpu_seconds))

    def rss(self) -> int:
        return self._sum(rss_bytes)

    def log_tail(self, lines: int = 15) -> str:
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.strip().splitlines()[-lines:])

    def stop(self, timeout: float = 5.0) -> None:
        kids = descendants(self.pid) if self.alive() else []
        if self.alive():
            try:
                os.kill(self.pid, signal.SIGTERM)
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                os.kill(self.pid, signal.SIGKILL)
                self.popen.wait(5)
            except ProcessLookupError:
                pass
        # children it did not take down with it (workers), by their own pids
        deadline = time.monotonic() + timeout
        for sig in (signal.SIGTERM, signal.SIGKILL):
            live = [k for k in kids if _alive_pid(k)]
            for k in live:
                try:
                    os.kill(k, sig)
                except ProcessLookupError:
                    pass
            while live and time.monotonic() < deadline:
                time.sleep(0.05)
                live = [k for k in live if _alive_pid(k)]
            if not live:
                break
            deadline = time.monotonic() + 2
        self.popen.poll()
        self._logf.close()
        if self in _ALL:
            _ALL.remove(self)


def _alive_pid(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return state[state.rindex(")") + 2] != "Z"


def running() -> list["Proc"]:
    return [p for p in _ALL if p.alive()]


def machine_cpu() -> dict:
    """Machine-wide CPU seconds from /proc/stat: busy (user+nice+system), steal, all."""
    f = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    return {"busy": (f[0] + f[1] + f[2]) / CLK_TCK, "steal": (f[7] if len(f) > 7 else 0) / CLK_TCK,
            "all": sum(f[:8]) / CLK_TCK}


def own_cpu() -> float:
    """CPU seconds of this process and every child it has waited for (stopped processes, wrk)."""
    import resource
    a, b = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return a.ru_utime + a.ru_stime + b.ru_utime + b.ru_stime


def stop_all() -> None:
    for pid in list(_PIDS):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        _PIDS.discard(pid)
    for p in reversed(list(_ALL)):
        try:
            p.stop()
        except Exception as exc:  # noqa: BLE001 - keep stopping the others
            print(f"[bench] could not stop {p.name} (pid {p.pid}): {exc}", flush=True)
