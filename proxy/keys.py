"""Every typed key of the app and of a request: nothing else lives here.

Each owner is stored under its own key; a handler takes the owners it uses and passes them on.
``METRICS`` is set only when metrics are enabled, ``STATE`` only with a ``state`` section (``app.get``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from proxy.accounting import Accounting
from proxy.admission import Admission
from proxy.auth import Credential
from proxy.backends import Backends
from proxy.background.pull import Puller
from proxy.background.shadow import Shadows
from proxy.background.tasks import Tasks
from proxy.background.warmup import Warmup
from proxy.catalog import Catalog
from proxy.config import LiveConfig
from proxy.context import RequestContext
from proxy.imagefetch import ImageFetcher
from proxy.router import Router
from proxy.state.store import SharedState

if TYPE_CHECKING:  # prometheus_client must not be imported before the CLI sets PROMETHEUS_MULTIPROC_DIR
    from proxy.telemetry.metrics import Metrics

__all__ = ["CONFIG", "BACKENDS", "ADMISSION", "ACCOUNTING", "ROUTER", "PULLER", "WARMUP", "SHADOWS", "TASKS",
           "CATALOG", "IMAGES", "METRICS", "STATE", "CTX", "CREDENTIAL"]

CONFIG = web.AppKey("config", LiveConfig)
BACKENDS = web.AppKey("backends", Backends)
ADMISSION = web.AppKey("admission", Admission)
ACCOUNTING = web.AppKey("accounting", Accounting)
ROUTER = web.AppKey("router", Router)
PULLER = web.AppKey("puller", Puller)
WARMUP = web.AppKey("warmup", Warmup)
SHADOWS = web.AppKey("shadows", Shadows)
TASKS = web.AppKey("tasks", Tasks)
CATALOG = web.AppKey("catalog", Catalog)
IMAGES = web.AppKey("images", ImageFetcher)
METRICS: web.AppKey[Metrics] = web.AppKey("metrics")
STATE = web.AppKey("state", SharedState)  # set only with a ``state`` section (``app.get(STATE)``)
CTX = web.RequestKey("ctx", RequestContext)
CREDENTIAL = web.RequestKey("credential", Credential)  # the authenticated caller, when auth is on
