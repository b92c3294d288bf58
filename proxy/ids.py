"""Identifiers for requests, completions and tool calls: unique, cheap, and not secret.

A random per-process prefix (drawn again in a forked worker) followed by a counter, so making one
costs no system call (``secrets.token_hex`` reads the kernel's random source every time, a
measurable share of a fast request). They are labels, never credentials: nothing is authorised
by knowing one.
"""

from __future__ import annotations

import itertools
import os

__all__ = ["new_id"]

_prefix = ""
_counter: itertools.count[int] = itertools.count()


def _reseed() -> None:
    global _prefix, _counter
    _prefix = os.urandom(6).hex()
    _counter = itertools.count(int.from_bytes(os.urandom(4), "big"))


_reseed()
os.register_at_fork(after_in_child=_reseed)


def new_id(kind: str) -> str:
    """``kind`` followed by 24 hex digits, e.g. ``new_id("req_")`` -> ``req_3f9a0c1b7e2d00000000a1c4``."""
    return f"{kind}{_prefix}{next(_counter) & 0xFFFFFFFFFFFF:012x}"
