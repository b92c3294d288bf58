"""State shared by every gateway process through Redis (or Valkey): the ``state`` config section.

Without it every process keeps its own limits (``proxy.ratelimit``), which with ``--workers N`` or
several replicas multiplies each credential's limits. With it, ``store.SharedState`` is the one
client (tight timeouts, a circuit breaker of its own, reconnecting by itself) and
``limits.SharedLimits`` applies each credential's limits atomically in Redis. Circuit breakers and
health stay per process: each process learns a backend's health itself within one health interval.
"""
