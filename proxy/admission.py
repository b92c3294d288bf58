"""Who may come in: authentication of the caller and its per-credential limits.

``Admission`` owns the ``Authenticator`` (rebuilt from each config's ``auth`` section), the
rate-limit state of every credential (kept across reloads, so callers keep their budgets) and the
small thread pool where scrypt runs (a flood of wrong keys cannot block the event loop, nor starve
the default executor that getaddrinfo uses). ``on_auth_failure(reason)`` and
``on_rate_limited(credential)`` let metrics hear about refusals.

With ``shared`` (the ``state`` section: ``proxy.state.limits.SharedLimits``) the limits hold across
every process using that Redis. When Redis cannot be reached, ``refuse_when_unavailable`` decides:
False (``on_unavailable: allow``) applies this process's own limits meanwhile, True (``refuse``)
answers 503 for credentials that have limits. Credentials without limits never touch Redis.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from proxy.auth import AuthConfig, Authenticator, Credential, www_authenticate
from proxy.errors import RateLimitedError, ServiceUnavailableError
from proxy.ratelimit import CallerLimits, Limits, Refusal
from proxy.state.limits import Lease, SharedLimits
from proxy.state.store import StateUnavailable

__all__ = ["Admission", "ADMIN", "Ticket"]

Ticket = CallerLimits | Lease  # what ``admit`` hands back for ``release``

ADMIN = Credential(name="admin")  # the marker credential of an admin request
_WHAT = {"concurrency": "concurrent requests", "requests": "requests per minute", "tokens": "tokens per minute"}


class Admission:
    """Authenticate callers and apply their concurrency, requests/minute and tokens/minute limits."""

    def __init__(self, auth: AuthConfig, *, clock: Callable[[], float] = time.monotonic,
                 on_auth_failure: Callable[[str], None] | None = None,
                 on_rate_limited: Callable[[str], None] | None = None, shared: SharedLimits | None = None,
                 refuse_when_unavailable: bool = False) -> None:
        self.clock = clock
        self.shared = shared
        self.refuse_when_unavailable = refuse_when_unavailable
        self.on_auth_failure = on_auth_failure
        self.on_rate_limited = on_rate_limited
        self.limits = Limits()
        # threads start on first use; scrypt only runs for hashed secrets not verified before
        self.executor = ThreadPoolExecutor(max_workers=4, thread_name_prefix="auth-scrypt")
        self.configure(auth)

    def configure(self, auth: AuthConfig) -> None:
        """Adopt a (re)loaded ``auth`` section; rate-limit state carries over."""
        self.authenticator = Authenticator(auth)
        self.www_authenticate = www_authenticate(auth.realm)

    async def authenticate(self, authorization: str | None, x_api_key: str | None,
                           *, admin: bool = False) -> Credential | None:
        """The caller's credential (with ``admin``: ``ADMIN`` when the admin credential matches), or None.

        Plaintext secrets and hashed ones verified before (a cache) are checked inline: sha256 +
        compare_digest, microseconds. Only a miss with hashed secrets configured goes to the executor.
        """
        auth = self.authenticator
        found = _check(auth, admin, authorization, x_api_key, scrypt=False)
        if found is None and auth.uses_hashes:
            loop = asyncio.get_running_loop()
            found = await loop.run_in_executor(self.executor, _check, auth, admin, authorization, x_api_key)
        return found

    def failed(self, reason: str) -> None:
        if self.on_auth_failure is not None:
            self.on_auth_failure(reason)

    async def admit(self, credential: Credential | None) -> Ticket | None:
        """Apply the caller's limits (429 when over); returns what ``release`` needs (None: nothing)."""
        if credential is None or (credential.max_concurrent is None and credential.requests_per_minute is None
                                  and credential.tokens_per_minute is None):
            return None
        if self.shared is not None:
            try:
                shared = await self.shared.admit(credential)
            except StateUnavailable:
                if self.refuse_when_unavailable:
                    raise ServiceUnavailableError("The gateway's shared rate-limit state is unavailable; retry "
                                                  "shortly.", code="state_unavailable",
                                                  headers={"Retry-After": "1"}) from None
            else:
                if isinstance(shared, Refusal):
                    self._refuse(credential, shared)
                return shared
        limits = self.limits.for_credential(credential)
        refusal = limits.admit(self.clock())
        if refusal is not None:
            self._refuse(credential, refusal)
        return limits

    def _refuse(self, credential: Credential, refusal: Refusal) -> None:
        if self.on_rate_limited is not None:
            self.on_rate_limited(credential.name)
        wait = refusal.retry_after
        headers = {"Retry-After": str(max(1, math.ceil(wait)) if wait is not None else 1)}
        raise RateLimitedError(f"Rate limit reached for {credential.name}: too many {_WHAT[refusal.reason]}.",
                               headers=headers)

    def release(self, ticket: Ticket, tokens: int) -> asyncio.Task[None] | None:
        """The request ended: give back its concurrency slot and charge the tokens it used.

        A shared ticket is released in Redis by the task returned; await it (shielded) before answering.
        """
        if isinstance(ticket, Lease):
            assert self.shared is not None
            return self.shared.release(ticket, tokens)
        ticket.leave()
        ticket.spend_tokens(tokens, self.clock())
        return None

    def close(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)

    async def aclose(self) -> None:
        """Stop renewing shared leases and close the Redis client (app shutdown)."""
        if self.shared is not None:
            await self.shared.close()
            await self.shared.state.close()


def _check(auth: Authenticator, admin: bool, authorization: str | None, x_api_key: str | None,
           scrypt: bool = True) -> Credential | None:
    if admin:
        return ADMIN if auth.authenticate_admin(authorization, x_api_key, scrypt=scrypt) else None
    return auth.authenticate(authorization, x_api_key, scrypt=scrypt)
