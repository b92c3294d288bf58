"""The audit trail: one structured line on the ``proxy.audit`` logger per admin action that ended.

Who (the admin credential's name, or what triggered it: ``signal`` for a reload), what, which backend
and model, and the outcome; the same fields are in the record's ``audit`` attribute for structured
handlers. Names come from request bodies: anything but a plain name is JSON-quoted, so a newline or
a ``who=`` inside a model name cannot forge a line or a field.
"""

from __future__ import annotations

import logging
import re

from proxy.jsonio import dumps

__all__ = ["audit"]

_audit_log = logging.getLogger("proxy.audit")
_PLAIN = re.compile(r"[\w.:/@+-]+", re.ASCII)


def audit(action: str, *, who: str, backend: str | None, model: str | None, outcome: str,
          status: int | None = None, error: str | None = None) -> None:
    """One line on ``proxy.audit`` for an admin action that ended (also for callers such as a reload)."""
    fields: dict[str, object] = {"action": action, "who": who, "backend": backend, "model": model,
                                 "outcome": outcome, "status": status}
    if error is not None:
        fields["error"] = error
    text = " ".join(f"{k}={v if not isinstance(v, str) or _PLAIN.fullmatch(v) else dumps(v).decode()}"
                    for k, v in fields.items() if v is not None)
    _audit_log.info("admin %s", text, extra={"audit": fields})
