"""Every typed key of the app and of a request: nothing else lives here."""

from __future__ import annotations

from aiohttp import web

from proxy.auth import Credential
from proxy.gateway import Gateway
from proxy.router import RequestContext

__all__ = ["GATEWAY", "CTX", "CREDENTIAL"]

GATEWAY = web.AppKey("gateway", Gateway)
CTX = web.RequestKey("ctx", RequestContext)
CREDENTIAL = web.RequestKey("credential", Credential)  # the authenticated caller, when auth is on
