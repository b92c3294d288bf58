"""The audit trail: every admin action is one record on ``proxy.audit`` with who, what, where and how it ended."""

from __future__ import annotations

import base64
import logging
from typing import Any

import aiohttp
import pytest

ADMIN = {"Authorization": "Basic " + base64.b64encode(b"admin:s3cret").decode()}


@pytest.fixture
async def admin_gateway(start_fake: Any, start_gateway: Any) -> Any:
    fake = await start_fake(models=["llama3.2:latest", "qwen2.5:7b"])
    gateway = await start_gateway({
        "backends": [{"name": "gpu1", "type": "ollama", "url": fake.url}],
        "auth": {"admin": {"username": "admin", "password": "s3cret"},
                 "credentials": [{"name": "app", "api_key": "sk-app"}]},
        "logging": {"requests": False},
    })
    return gateway, fake


def _audits(caplog: pytest.LogCaptureFixture) -> list[dict[str, object]]:
    return [r.audit for r in caplog.records if r.name == "proxy.audit"]  # type: ignore[attr-defined]


async def _send(gateway: Any, method: str, path: str, body: object, headers: dict[str, str] | None = None) -> int:
    async with aiohttp.ClientSession() as session:
        async with session.request(method, gateway.url + path, json=body, headers=headers or ADMIN) as resp:
            await resp.read()
            return resp.status


async def test_admin_api_actions_are_audited_with_who_what_backend_model_and_outcome(admin_gateway, caplog):
    """Pull, warm and delete through /admin/*: one record each, failures included, with the exact fields."""
    gateway, _ = admin_gateway
    caplog.set_level(logging.INFO, logger="proxy.audit")
    assert await _send(gateway, "POST", "/admin/models/pull", {"model": "phi4:14b"}) == 200
    assert await _send(gateway, "POST", "/admin/models/warm", {"backend": "gpu1", "model": "qwen2.5:7b"}) == 200
    assert await _send(gateway, "DELETE", "/admin/models", {"backend": "gpu1", "model": "qwen2.5:7b"}) == 200
    assert await _send(gateway, "DELETE", "/admin/models", {"backend": "gpu1", "model": "gone:1b"}) == 404
    assert await _send(gateway, "POST", "/admin/models/warm", {"backend": "nope", "model": "x"}) == 404
    assert _audits(caplog) == [
        {"action": "pull", "who": "admin", "backend": "gpu1", "model": "phi4:14b", "outcome": "ok", "status": 200},
        {"action": "warm", "who": "admin", "backend": "gpu1", "model": "qwen2.5:7b", "outcome": "ok", "status": 200},
        {"action": "delete", "who": "admin", "backend": "gpu1", "model": "qwen2.5:7b", "outcome": "ok",
         "status": 200},
        {"action": "delete", "who": "admin", "backend": "gpu1", "model": "gone:1b", "outcome": "model_not_found",
         "status": 404, "error": "model 'gone:1b' not found"},
        {"action": "warm", "who": "admin", "backend": None, "model": "x", "outcome": "error", "status": 404,
         "error": "Unknown backend 'nope'."},
    ]
    first = next(r for r in caplog.records if r.name == "proxy.audit")
    assert first.getMessage() == "admin action=pull who=admin backend=gpu1 model=phi4:14b outcome=ok status=200"


async def test_native_admin_calls_are_audited(admin_gateway, caplog):
    """Ollama's own pull, copy, create, push and delete through the gateway: one record each."""
    gateway, fake = admin_gateway
    caplog.set_level(logging.INFO, logger="proxy.audit")
    assert await _send(gateway, "POST", "/api/pull", {"model": "phi4:14b", "stream": False}) == 200
    assert await _send(gateway, "POST", "/api/copy", {"source": "phi4:14b", "destination": "mine:1"}) == 200
    assert await _send(gateway, "POST", "/api/create", {"model": "made:1", "from": "phi4:14b", "stream": False}) == 200
    assert await _send(gateway, "POST", "/api/push", {"model": "made:1", "stream": False}) == 200
    assert await _send(gateway, "DELETE", "/api/delete", {"model": "mine:1"}) == 200
    assert [(a["action"], a["who"], a["backend"], a["model"], a["outcome"], a["status"]) for a in _audits(caplog)] == [
        ("pull", "admin", "gpu1", "phi4:14b", "ok", 200),
        ("copy", "admin", "gpu1", "phi4:14b", "ok", 200),
        ("create", "admin", "gpu1", "made:1", "ok", 200),
        ("push", "admin", "gpu1", "made:1", "ok", 200),
        ("delete", "admin", "gpu1", "mine:1", "ok", 200),
    ]


async def test_refused_callers_leave_no_audit_record_but_a_client_key_is_refused(admin_gateway, caplog):
    """A client key gets 403 on /api/delete and 401 on /admin/*: nothing reached a handler, nothing changed."""
    gateway, fake = admin_gateway
    caplog.set_level(logging.INFO, logger="proxy.audit")
    app_key = {"Authorization": "Bearer sk-app"}
    assert await _send(gateway, "DELETE", "/api/delete", {"model": "qwen2.5:7b"}, app_key) == 403
    assert await _send(gateway, "DELETE", "/admin/models", {"model": "qwen2.5:7b"}, app_key) == 401
    assert _audits(caplog) == []
    assert "qwen2.5:7b" in fake.fake.models


async def test_a_hostile_model_name_cannot_forge_an_audit_line(admin_gateway, caplog):
    """A newline and a fake field in the model name stay inside one JSON-quoted value."""
    gateway, _ = admin_gateway
    caplog.set_level(logging.INFO, logger="proxy.audit")
    hostile = "x\nadmin action=delete who=root outcome=ok"
    assert await _send(gateway, "DELETE", "/admin/models", {"backend": "gpu1", "model": hostile}) == 404
    [record] = [r for r in caplog.records if r.name == "proxy.audit"]
    assert record.getMessage() == (
        'admin action=delete who=admin backend=gpu1 model="x\\nadmin action=delete who=root outcome=ok" '
        'outcome=model_not_found status=404 error="model \'x\\nadmin action=delete who=root outcome=ok\' not found"')
    assert record.audit["model"] == hostile  # type: ignore[attr-defined]
