"""A/B of two gateway checkouts in one run: CPU per call, interleaved rounds, medians.

Two full runs of ``bench/run.sh`` on this shared machine differ by ±0.2-0.3 in a cell's ratio; two
gateways measured side by side, in the same rounds against the same fake, show what a change did.
``--base`` is another checkout of this repository (``git worktree add /tmp/base <commit>``); the
gateway of this checkout is the other arm. Both get the bench's gateway config (auth, a split,
metrics, JSON request logs).

    .venv/bin/python -m bench.ab --base /tmp/base                   # 5 rounds of every cell
    .venv/bin/python -m bench.ab --base /tmp/base --rounds 7 --cells responses:1024,request

Cells: ``request`` (non-streamed chat, 3,000 calls) and ``KIND:TOKENS`` streams back to back
(KIND: chat, completions or responses; 150 streams each), all at 16 concurrent calls.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shlex
import statistics
import sys
import tempfile
from pathlib import Path

from . import clients
from .__main__ import set_mode
from .arms import gateway_arm, start_fake, wait_port
from .procs import stop_all


def _base_command(base: Path) -> str:
    code = f"import sys, runpy; sys.path.insert(0, {str(base)!r}); runpy.run_module('proxy', run_name='__main__')"
    return f"{shlex.quote(sys.executable)} -c {shlex.quote(code)}"


async def _run(base: Path, rounds: int, cells: list[str]) -> dict[tuple[str, str], list[float]]:
    fake, fake_port = start_fake(Path(tempfile.mkdtemp(prefix="bench-ab-")))
    await wait_port(fake_port, fake, 10)
    os.environ["BENCH_GATEWAY_CMD"] = _base_command(base)
    try:
        arms = {"base": await gateway_arm(fake_port, Path(tempfile.mkdtemp(prefix="bench-ab-")))}
    finally:
        del os.environ["BENCH_GATEWAY_CMD"]
    arms["this"] = await gateway_arm(fake_port, Path(tempfile.mkdtemp(prefix="bench-ab-")))
    for name, arm in arms.items():
        if not arm.ok:
            raise SystemExit(f"the {name} gateway did not start: {arm.skipped}")
    results: dict[tuple[str, str], list[float]] = {}
    for rnd in range(rounds):
        for cell in cells:
            kind, _, tokens = cell.partition(":")
            stream = cell != "request"
            await set_mode(f"http://127.0.0.1:{fake_port}", {"token_delay_ms": 0, "tokens": int(tokens or 64)})
            order = list(arms.items()) if rnd % 2 == 0 else list(arms.items())[::-1]
            for name, arm in order:
                target = arm.target.variant(kind) if stream else arm.target
                res = await clients.cpu_per_call(target, arm.proc.cpu, stream=stream, n=150 if stream else 3000,
                                                 concurrency=16, cap_s=6.0)
                results.setdefault((cell, name), []).append(res["cpu_ms"])
    return results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base", type=Path, required=True, help="another checkout of this repository")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--cells", default="request,chat:1024,responses:1024,completions:1024")
    args = ap.parse_args()
    if not (args.base / "proxy" / "__main__.py").exists():
        raise SystemExit(f"{args.base} is not a checkout of this repository")
    try:
        results = asyncio.run(_run(args.base.resolve(), args.rounds, args.cells.split(",")))
    finally:
        stop_all()
    for cell in args.cells.split(","):
        base, this = (statistics.median(results[(cell, n)]) for n in ("base", "this"))
        print(f"{cell:18} base {base:8.3f} ms   this {this:8.3f} ms   this/base {this / base:5.2f}x   "
              f"rounds base {[round(x, 3) for x in results[(cell, 'base')]]} this "
              f"{[round(x, 3) for x in results[(cell, 'this')]]}")


if __name__ == "__main__":
    main()
