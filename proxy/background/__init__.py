"""Work the gateway does beside requests: health checks, auto-pull, warm-up, shadow traffic,
hot reload, and the pre-flight check (``python -m proxy check``).

Each module takes the owners it uses (``Backends``, ``Config``, ``Metrics``) as arguments; none
of them is imported by the request path except through those owners' hooks.
"""
