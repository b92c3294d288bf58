"""HTTPS towards clients (``server.tls``), and mutual TLS when ``client_ca`` is set.

``server_context`` builds the listening socket's ``SSLContext`` (TLS 1.2 at least; with ``client_ca``
every client must present a certificate signed by it). ``ServerTLS.reload`` re-reads the files on
SIGHUP into the same context: new handshakes get the new certificate, connections already open keep
theirs, nothing is dropped. New files are first loaded into a scratch context, so a bad file keeps
the old certificate serving. Errors name the file, never a key's content.
"""

from __future__ import annotations

import logging
import ssl
from dataclasses import dataclass

__all__ = ["TLSConfig", "TLSError", "ServerTLS", "server_context"]

log = logging.getLogger("proxy.tls")


@dataclass(frozen=True, slots=True, kw_only=True)
class TLSConfig:
    """``server.tls``: HTTPS towards clients; ``client_ca`` asks every client for a certificate (mTLS)."""

    cert_file: str
    key_file: str
    client_ca: str | None = None


class TLSError(Exception):
    """A certificate, key or CA file of ``server.tls`` cannot be used."""


def _check_readable(*paths: str) -> None:
    # ssl's own FileNotFoundError carries no file name: say which file it is
    for path in paths:
        try:
            with open(path, "rb"):
                pass
        except OSError as exc:
            raise TLSError(f"cannot read {path}: {exc.strerror}") from None


def _load(context: ssl.SSLContext, cfg: TLSConfig) -> None:
    _check_readable(cfg.cert_file, cfg.key_file, *([cfg.client_ca] if cfg.client_ca else []))
    try:
        context.load_cert_chain(cfg.cert_file, cfg.key_file)
    except (OSError, ssl.SSLError):
        raise TLSError(f"cannot load the certificate {cfg.cert_file} with the key {cfg.key_file} "
                       "(a PEM certificate chain and its matching private key, unencrypted)") from None
    if cfg.client_ca:
        try:
            context.load_verify_locations(cafile=cfg.client_ca)
        except (OSError, ssl.SSLError):
            raise TLSError(f"cannot load the client CA bundle {cfg.client_ca}") from None
        context.verify_mode = ssl.CERT_REQUIRED


def server_context(cfg: TLSConfig) -> ssl.SSLContext:
    """A server-side context for ``cfg``; raises ``TLSError`` naming the file that does not load."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    _load(context, cfg)
    return context


class ServerTLS:
    """The live context of the listening socket; ``reload`` swaps its certificate in place."""

    def __init__(self, cfg: TLSConfig) -> None:
        self.cfg = cfg
        self.context = server_context(cfg)

    def reload(self, cfg: TLSConfig | None = None) -> bool:
        """Re-read the files (of ``cfg`` when given); False, old certificate kept, when they fail."""
        cfg = cfg or self.cfg
        try:
            server_context(cfg)  # a scratch load first: a bad file must not half-replace the live one
            _load(self.context, cfg)
        except TLSError as exc:
            log.error("TLS reload rejected, keeping the certificate in use: %s", exc)
            return False
        if cfg.client_ca != self.cfg.client_ca:
            log.warning("server.tls.client_ca changed: the new CA is trusted now; a CA removed stays "
                        "trusted until a restart")
        self.cfg = cfg
        log.info("TLS certificate reloaded from %s", cfg.cert_file)
        return True
