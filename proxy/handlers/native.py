"""Ollama's own native API in front (``/api/*``, ``/``), authenticated and routed (routes added by ``add_routes``)."""

from __future__ import annotations

from aiohttp import web

__all__ = ["add_routes"]


def add_routes(router: web.UrlDispatcher) -> None:
    """Register this door's routes on ``router``."""
