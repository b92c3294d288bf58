"""Per-credential limits: concurrency, requests per minute and tokens per minute.

Pure: stdlib only, no clock of its own (every method takes ``now``, seconds on a monotonic clock),
no aiohttp. Buckets refill continuously: capacity is the per-minute figure and it refills at
figure/60 per second, so a client may burst up to a minute's allowance and then goes steady.
Unlimited settings hold no bucket and cost nothing.

Typical middleware use (the order keeps refusals free of side effects)::

    refusal = limits.for_credential(cred).admit(now)     # or the three checks one by one
    if refusal: raise RateLimitedError(retry_after=ceil(refusal.retry_after or 1))
    try: ... ; caller.spend_tokens(usage.total_tokens, now)
    finally: caller.leave()
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from proxy.auth import Credential

__all__ = ["CallerLimits", "Limits", "Refusal", "TokenBucket"]

_EPSILON = 1e-9  # float refills such as 0.1 * 10 must not leave a bucket at 0.9999999


class TokenBucket:
    """A continuously refilled bucket: ``capacity`` tokens, ``rate`` tokens per second.

    Starts full. The level may go negative (a debt) through `spend`; time going backwards is
    ignored rather than draining the bucket.
    """

    __slots__ = ("capacity", "rate", "level", "updated")

    def __init__(self, capacity: float, rate: float) -> None:
        if capacity <= 0 or rate <= 0:
            raise ValueError("capacity and rate must be > 0")
        self.capacity, self.rate = float(capacity), float(rate)
        self.level = float(capacity)
        self.updated: float | None = None

    @classmethod
    def per_minute(cls, amount: int) -> TokenBucket:
        """A bucket holding ``amount`` and refilling ``amount / 60`` per second."""
        return cls(amount, amount / 60.0)

    def refill(self, now: float) -> None:
        """Add what accrued since the last call (never above capacity)."""
        if self.updated is not None and now > self.updated:
            self.level = min(self.capacity, self.level + (now - self.updated) * self.rate)
        if self.updated is None or now > self.updated:
            self.updated = now

    def take(self, amount: float, now: float) -> float | None:
        """Take ``amount`` if available and return None, else the seconds until it would be."""
        self.refill(now)
        if self.level + _EPSILON >= amount:
            self.level -= amount
            return None
        return (amount - self.level) / self.rate

    def wait_until_not_negative(self, now: float) -> float | None:
        """None while the level is >= 0, else the seconds until it is back to zero."""
        self.refill(now)
        return None if self.level + _EPSILON >= 0 else -self.level / self.rate

    def spend(self, amount: float, now: float) -> None:
        """Subtract ``amount`` unconditionally; the level may go negative."""
        self.refill(now)
        self.level -= amount


@dataclass(frozen=True, slots=True, kw_only=True)
class Refusal:
    """Why `CallerLimits.admit` said no; ``retry_after`` is None for concurrency (no estimate)."""

    reason: Literal["concurrency", "requests", "tokens"]
    retry_after: float | None


class CallerLimits:
    """The limits of one credential: in-flight requests, requests/minute and tokens/minute."""

    __slots__ = ("max_concurrent", "in_flight", "requests", "tokens")

    def __init__(
        self,
        *,
        max_concurrent: int | None = None,
        requests_per_minute: int | None = None,
        tokens_per_minute: int | None = None,
    ) -> None:
        self.max_concurrent = max_concurrent
        self.in_flight = 0
        self.requests = TokenBucket.per_minute(requests_per_minute) if requests_per_minute else None
        self.tokens = TokenBucket.per_minute(tokens_per_minute) if tokens_per_minute else None

    @classmethod
    def of(cls, credential: Credential) -> CallerLimits:
        """Limits from a credential's settings (``None`` means unlimited)."""
        return cls(
            max_concurrent=credential.max_concurrent,
            requests_per_minute=credential.requests_per_minute,
            tokens_per_minute=credential.tokens_per_minute,
        )

    def try_enter(self) -> bool:
        """Count one more in-flight request, or return False when at ``max_concurrent``.

        Every True must be paired with one `leave` (in a ``finally``).
        """
        if self.max_concurrent is None:
            return True
        if self.in_flight >= self.max_concurrent:
            return False
        self.in_flight += 1
        return True

    def leave(self) -> None:
        """End one in-flight request started by a successful `try_enter`."""
        if self.max_concurrent is not None and self.in_flight > 0:
            self.in_flight -= 1

    def check_request(self, now: float) -> float | None:
        """None when a request is allowed (one request token is taken), else seconds to wait."""
        return None if self.requests is None else self.requests.take(1, now)

    def check_tokens(self, now: float) -> float | None:
        """None unless the token budget is in debt; then the seconds until it is paid off."""
        return None if self.tokens is None else self.tokens.wait_until_not_negative(now)

    def spend_tokens(self, n: int, now: float) -> None:
        """Charge ``n`` tokens after a response (prompt + completion); may leave a debt."""
        if self.tokens is not None and n > 0:
            self.tokens.spend(n, now)

    def admit(self, now: float) -> Refusal | None:
        """All three checks in a side-effect-free order; None means admitted and entered.

        Checks tokens (read only), then concurrency, then takes a request token, undoing the
        concurrency slot if that last step refuses. After None, call `leave` when done.
        """
        if (wait := self.check_tokens(now)) is not None:
            return Refusal(reason="tokens", retry_after=wait)
        if not self.try_enter():
            return Refusal(reason="concurrency", retry_after=None)
        if (wait := self.check_request(now)) is not None:
            self.leave()
            return Refusal(reason="requests", retry_after=wait)
        return None


class Limits:
    """Credential -> `CallerLimits`, created on first use from the credential's settings.

    Keyed by the (frozen) credential itself, so one `Limits` survives a config reload: a caller
    whose name and settings did not change keeps its budget and in-flight count; a changed one
    starts afresh under its new settings.
    """

    __slots__ = ("_callers",)

    def __init__(self) -> None:
        self._callers: dict[Credential, CallerLimits] = {}

    def for_credential(self, credential: Credential) -> CallerLimits:
        """The shared `CallerLimits` of ``credential``, creating it on first use."""
        caller = self._callers.get(credential)
        if caller is None:
            caller = self._callers[credential] = CallerLimits.of(credential)
        return caller
