"""Command line: serve (default), ``--check-config FILE``, ``check`` (pre-flight) and ``hash-key``.

    python -m proxy [--config FILE] [--host H] [--port P] [--workers N]
    python -m proxy --check-config FILE
    python -m proxy check --config FILE [--pull]
    python -m proxy hash-key [KEY]          (reads the key from stdin when not given)
"""

from __future__ import annotations

import argparse
import getpass
import logging
import os
import sys
from collections.abc import Sequence

from proxy.config import ConfigError, load_config

__all__ = ["main"]


def _serve_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ollama-gateway", description="OpenAI-compatible gateway for Ollama.")
    p.add_argument("--config", "-c", metavar="FILE", help="YAML config (default: built-in defaults)")
    p.add_argument("--check-config", metavar="FILE",
                   help="validate FILE, print every problem (exit non-zero on any) and warnings (exit 0)")
    p.add_argument("--host", help="listen address (overrides server.host)")
    p.add_argument("--port", type=int, help="listen port (overrides server.port)")
    p.add_argument("--workers", type=int, help="worker processes sharing the port (overrides server.workers)")
    return p


def _check_config(path: str) -> int:
    """Problems fail the check (exit 1); warnings (``policies.checks``) are printed and do not."""
    from policies.checks import policy_warnings

    try:
        config = load_config(path, os.environ)
    except ConfigError as exc:
        print(f"{path}: {len(exc.problems)} problem(s)", file=sys.stderr)
        for where, message in exc.problems:
            print(f"  {where}: {message}" if where else f"  {message}", file=sys.stderr)
        return 1
    warnings = policy_warnings(config.policy)
    for where, message in warnings:
        print(f"  warning: {where}: {message}", file=sys.stderr)
    print(f"{path}: OK" + (f" ({len(warnings)} warning(s))" if warnings else ""))
    return 0


def _hash_key(argv: Sequence[str]) -> int:
    from proxy.auth import hash_secret

    p = argparse.ArgumentParser(prog="ollama-gateway hash-key",
                                description="Print the scrypt hash of a secret, for api_key_hash / password_hash.")
    p.add_argument("secret", nargs="?", help="the key or password (default: prompt, or read stdin)")
    args = p.parse_args(argv)
    secret = args.secret
    if secret is None:
        secret = getpass.getpass("secret: ") if sys.stdin.isatty() else sys.stdin.readline().rstrip("\n")
    if not secret:
        print("an empty secret cannot be hashed", file=sys.stderr)
        return 2
    print(hash_secret(secret))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "hash-key":
        return _hash_key(argv[1:])
    if argv and argv[0] == "check":
        from proxy.background.preflight import main as preflight_main

        return preflight_main(argv[1:], os.environ)
    args = _serve_parser().parse_args(argv)
    if args.check_config:
        return _check_config(args.check_config)
    try:
        config = load_config(args.config, os.environ)
    except ConfigError as exc:
        print(f"invalid config:\n{exc}", file=sys.stderr)
        return 1
    from proxy.telemetry.logs import configure_logging
    from proxy.server import serve

    configure_logging(config.logging.level, config.logging.format)
    server = config.server
    logging.getLogger("proxy").debug("config loaded from %s", args.config or "(defaults)")
    return serve(config, host=args.host or server.host, port=args.port if args.port is not None else server.port,
                 workers=args.workers or server.workers, environ=os.environ)


if __name__ == "__main__":
    sys.exit(main())
