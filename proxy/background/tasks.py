"""The app's background tasks (shadow requests, pulls, warm-up, reload drains): kept referenced
while they run (asyncio holds only weak references), counted by name, ended at shutdown."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

__all__ = ["Tasks"]


class Tasks:
    """A set of running tasks; each leaves the set when it ends."""

    def __init__(self) -> None:
        self.running: set[asyncio.Task[Any]] = set()

    def spawn(self, coro: Coroutine[Any, Any, Any], *, name: str) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self.running.add(task)
        task.add_done_callback(self.running.discard)
        return task

    def count(self, name: str) -> int:
        """Tasks named ``name`` still running."""
        return sum(1 for task in self.running if task.get_name() == name and not task.done())

    async def cancel_all(self) -> None:
        """Cancel every task and wait for them to end (app shutdown)."""
        tasks = list(self.running)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
