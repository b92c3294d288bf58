"""``/v1/responses``: the OpenAI Responses API over Ollama's native ``/api/chat`` (issue 13; routes added by ``add_routes``)."""

from __future__ import annotations

from aiohttp import web

__all__ = ["add_routes"]


def add_routes(router: web.UrlDispatcher) -> None:
    """Register this door's routes on ``router``."""
