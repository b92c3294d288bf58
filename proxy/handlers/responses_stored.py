"""Stored Responses over HTTP: ``GET`` and ``DELETE /v1/responses/{id}``, ``GET /v1/responses/{id}/input_items``.

A caller sees only what it stored (the store is keyed by its credential's name; with auth off
everyone is the same caller); an unknown id, another caller's included, is a 404 naming
``response_id``. ``input_items`` lists the items the model saw for that response (the continued
conversation, then the request's own input) in OpenAI's cursor-page shape, honouring ``limit``
(1..100, default 20), ``order`` (``desc`` by default, as OpenAI) and ``after`` (an item id).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from aiohttp import web

from proxy.errors import InvalidRequestError, NotFoundError
from proxy.handlers.common import json_response
from proxy.ids import new_id
from proxy.keys import CREDENTIAL, CTX
from proxy.responses_store import ResponseStore, StoredResponse

__all__ = ["RESPONSES", "owner_of", "stored_input_items", "not_found", "retrieve_response", "delete_response",
           "list_input_items"]

RESPONSES = web.AppKey("responses", ResponseStore)  # type: ignore[type-abstract]

# ids for input items the client sent without one (the list endpoint pages by item id)
_ID_PREFIX = {"message": "msg_", "function_call": "fc_", "function_call_output": "fco_", "reasoning": "rs_"}


def owner_of(request: web.Request) -> str:
    """Whose stored responses this request may see: its credential's name, ``""`` with auth off."""
    credential = request.get(CREDENTIAL)
    return credential.name if credential is not None else ""


def not_found(response_id: str, param: str = "response_id") -> NotFoundError:
    if param == "previous_response_id":
        return NotFoundError(f"Previous response with id '{response_id}' not found.", param=param,
                             code="previous_response_not_found")
    return NotFoundError(f"Response with id '{response_id}' not found.", param=param)


def stored_input_items(items: Sequence[object]) -> list[dict[str, object]]:
    """A request's input items as OpenAI lists them: each with an ``id``, messages with typed parts."""
    out: list[dict[str, object]] = []
    for item in items:
        if isinstance(item, str):
            item = {"type": "message", "role": "user", "content": item}
        if not isinstance(item, Mapping):
            continue  # the translator refused anything else before this runs
        entry = dict(item)
        kind = entry.get("type") or ("message" if "role" in entry else "item")
        entry["type"] = kind
        if kind == "message":
            content = entry.get("content")
            if isinstance(content, str):
                part = "output_text" if entry.get("role") == "assistant" else "input_text"
                entry["content"] = [{"type": part, "text": content}]
            entry.setdefault("status", "completed")
        if not isinstance(entry.get("id"), str) or not entry["id"]:
            entry["id"] = new_id(_ID_PREFIX.get(str(kind), "item_"))
        out.append(entry)
    return out


async def _stored(request: web.Request) -> tuple[str, StoredResponse]:
    response_id = request.match_info["response_id"]
    entry = await request.app[RESPONSES].get(owner_of(request), response_id)
    if entry is None:
        raise not_found(response_id)
    return response_id, entry


def _headers(request: web.Request) -> dict[str, str]:
    return {"X-Request-ID": request[CTX].request_id}


async def retrieve_response(request: web.Request) -> web.StreamResponse:
    """``GET /v1/responses/{id}``: the stored response object."""
    if request.query.get("stream") not in (None, "false"):
        raise InvalidRequestError("Streaming a stored response again is not supported.", param="stream",
                                  code="unsupported_parameter")
    _, entry = await _stored(request)
    return json_response(entry.response, _headers(request))


async def delete_response(request: web.Request) -> web.StreamResponse:
    """``DELETE /v1/responses/{id}``: forget it; OpenAI's deletion object."""
    response_id = request.match_info["response_id"]
    if not await request.app[RESPONSES].delete(owner_of(request), response_id):
        raise not_found(response_id)
    return json_response({"id": response_id, "object": "response", "deleted": True}, _headers(request))


def _limit(query: Mapping[str, str]) -> int:
    raw = query.get("limit")
    if raw is None:
        return 20
    try:
        limit = int(raw)
    except ValueError:
        limit = 0
    if not 1 <= limit <= 100:
        raise InvalidRequestError(f"Invalid 'limit': {raw!r}. Expected an integer from 1 to 100.", param="limit")
    return limit


async def list_input_items(request: web.Request) -> web.StreamResponse:
    """``GET /v1/responses/{id}/input_items``: the items the model saw, one cursor page at a time."""
    query = request.query
    limit = _limit(query)
    order = query.get("order", "desc")
    if order not in ("asc", "desc"):
        raise InvalidRequestError(f"Invalid 'order': {order!r}. Supported: asc, desc.", param="order")
    _, entry = await _stored(request)
    items = list(entry.input_items)
    if order == "desc":
        items.reverse()
    after = query.get("after")
    if after is not None:
        at = next((i for i, item in enumerate(items) if item.get("id") == after), None)
        if at is None:
            raise InvalidRequestError(f"Invalid 'after': no input item with id '{after}' in this response.",
                                      param="after")
        items = items[at + 1:]
    page = items[:limit]
    return json_response({
        "object": "list", "data": page,
        "first_id": page[0]["id"] if page else None, "last_id": page[-1]["id"] if page else None,
        "has_more": len(items) > limit,
    }, _headers(request))
