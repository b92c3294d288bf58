"""The ``state`` config section: where the shared state lives and what to do when it cannot be reached.

Pure: parsed from a ``policies.schema.Section`` like every other section; ``redis_url`` normally
comes from the environment (``${GATEWAY_REDIS_URL}``), since it may carry a password.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

from policies.schema import Section

__all__ = ["StateConfig", "parse_state"]


@dataclass(frozen=True, slots=True, kw_only=True)
class StateConfig:
    """``redis://`` or ``rediss://`` (TLS) URL, optionally with a password and a database number."""

    redis_url: str
    on_unavailable: str = "allow"  # "allow": per-process limits meanwhile; "refuse": 503 for limited credentials
    key_prefix: str = "ollama-gateway"
    timeout: float = 0.5  # seconds for one Redis call (connect included) before it counts as down
    retry_after: float = 2.0  # seconds a down Redis is left alone before the next try
    lease_ttl: float = 30.0  # seconds a concurrency slot outlives a crashed process (renewed while held)

    def __repr__(self) -> str:  # the URL may carry a password
        return f"StateConfig(on_unavailable={self.on_unavailable!r}, key_prefix={self.key_prefix!r})"


def _url(value: object, path: str) -> str:
    if not isinstance(value, str) or urlsplit(value).scheme not in ("redis", "rediss", "unix"):
        raise ValueError("must be a redis://, rediss:// or unix:// URL")  # never echo it: it may hold a password
    return value


def parse_state(section: Section) -> StateConfig | None:
    """The section's settings, or None when it is absent (every process keeps its own state)."""
    if not section.raw:
        return None
    cfg = StateConfig(
        redis_url=section.custom("redis_url", _url) or "",
        on_unavailable=section.str("on_unavailable", "allow", choices=("allow", "refuse")),
        key_prefix=section.str("key_prefix", "ollama-gateway"),
        timeout=section.number("timeout", 0.5, minimum=0, exclusive_minimum=True),
        retry_after=section.number("retry_after", 2.0, minimum=0, exclusive_minimum=True),
        lease_ttl=section.number("lease_ttl", 30.0, minimum=1),
    )
    section.done()
    return cfg
