"""Inbound authentication through the running gateway: every header form, hashed secrets, model
allow-lists, the admin credential, and the warning when auth is off on a public address."""

from __future__ import annotations

import asyncio
import base64
import logging
import threading
from typing import Any

import aiohttp
import orjson
import pytest

from proxy.auth import hash_secret
from proxy.config import parse_config
from proxy.server import warn_if_exposed
from tests.conftest import one_backend_config

SALT = b"fixed-test-salt!"
ENV = {"ALICE_KEY": "sk-alice-secret-0001", "BOB_PW": "bob-password-0002", "ADMIN_KEY": "adm-secret-0003"}
CAROL_KEY, DAVE_PW = "sk-carol-hashed-0004", "dave-hashed-pw-0005"
CAROL_HASH, DAVE_HASH = hash_secret(CAROL_KEY, salt=SALT), hash_secret(DAVE_PW, salt=SALT)
REALM_HEADER = 'Basic realm="test-gw", charset="UTF-8"'
CHAT = {"model": "llama3.2", "messages": [{"role": "user", "content": "hi"}]}


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def auth_config(url: str, *, admin: bool = True, **extra: Any) -> dict[str, Any]:
    auth: dict[str, Any] = {"realm": "test-gw", "credentials": [
        {"name": "alice", "api_key": "${ALICE_KEY}", "models": ["llama3.2*"]},
        {"name": "bob", "username": "bob", "password": "${BOB_PW}"},
        {"name": "carol", "api_key_hash": CAROL_HASH},
        {"name": "dave", "username": "dave", "password_hash": DAVE_HASH},
    ]}
    if admin:
        auth["admin"] = {"api_key": "${ADMIN_KEY}"}
    return one_backend_config(url, auth=auth, **extra)


async def request(url: str, method: str = "POST", path: str = "/v1/chat/completions",
                  headers: dict[str, str] | None = None, body: object = CHAT) -> tuple[int, dict[str, str], bytes]:
    async with aiohttp.ClientSession() as session:
        kwargs: dict[str, Any] = {"headers": headers or {}}
        if method == "POST":
            kwargs["json"] = body
        async with session.request(method, url + path, **kwargs) as resp:
            return resp.status, dict(resp.headers), await resp.read()


@pytest.fixture
async def secured(fake_ollama, start_gateway):
    return await start_gateway(auth_config(fake_ollama.url), environ=ENV)


@pytest.mark.parametrize("headers, who", [
    ({"Authorization": "Bearer sk-alice-secret-0001"}, "alice"),
    ({"x-api-key": "sk-alice-secret-0001"}, "alice"),
    ({"Authorization": basic("anyone", "sk-alice-secret-0001")}, "alice"),  # an API key as Basic password
    ({"Authorization": basic("bob", "bob-password-0002")}, "bob"),
    ({"Authorization": "bearer   sk-alice-secret-0001  "}, "alice"),  # scheme case and spaces
    ({"Authorization": f"Bearer {CAROL_KEY}"}, "carol"),
    ({"x-api-key": CAROL_KEY}, "carol"),
    ({"Authorization": basic("dave", DAVE_PW)}, "dave"),
])
async def test_valid_credentials_in_every_form_are_accepted(secured, headers, who):
    """Bearer, x-api-key, Basic (login or key as password), plaintext and scrypt-hashed all pass."""
    code, resp_headers, body = await request(secured.url, headers=headers)
    assert code == 200, body
    assert orjson.loads(body)["choices"][0]["message"]["content"] == "Hello world"


@pytest.mark.parametrize("headers", [
    {},
    {"Authorization": "Bearer wrong-key"},
    {"Authorization": "Bearer "},
    {"Authorization": "Bearer"},
    {"Authorization": "Token sk-alice-secret-0001"},  # unknown scheme
    {"x-api-key": "wrong-key"},
    {"x-api-key": ""},
    {"Authorization": basic("bob", "wrong-password")},
    {"Authorization": basic("mallory", "bob-password-0002")},  # right password, wrong user
    {"Authorization": basic("bob", "")},
    {"Authorization": "Basic !!!not-base64!!!"},
    {"Authorization": "Basic " + base64.b64encode(b"no-colon-here").decode()},
    {"Authorization": "Basic " + base64.b64encode(b"bob:\xff\xfe").decode()},  # not UTF-8
    {"Authorization": f"Bearer {CAROL_KEY}x"},  # hashed key, one character off
    {"x-api-key": CAROL_HASH},  # the hash itself is not the key
    {"Authorization": basic("dave", "not-daves")},
    {"Authorization": basic("carol", DAVE_PW)},  # hashed password under another user
    {"Authorization": "Bearer adm-secret-0003"},  # the admin key is not a client key
    {"Authorization": "Bearer wrong", "x-api-key": "sk-alice-secret-0001"},  # Authorization wins
])
async def test_wrong_missing_and_malformed_credentials_get_openai_shaped_401(secured, headers):
    """Every wrong, missing or malformed credential is a 401 in OpenAI's shape with the Basic realm."""
    code, resp_headers, body = await request(secured.url, headers=headers)
    assert code == 401
    assert resp_headers["WWW-Authenticate"] == REALM_HEADER
    error = orjson.loads(body)["error"]
    assert error["type"] == "invalid_request_error" and error["code"] == "invalid_api_key"
    assert set(error) == {"message", "type", "param", "code"}
    for secret in (*ENV.values(), CAROL_KEY, DAVE_PW):
        assert secret not in body.decode()


async def test_openai_sdk_authenticates_with_its_bearer_header(secured):
    """The OpenAI SDK's own header works, and a wrong key raises its AuthenticationError."""
    import openai

    async with secured.client(api_key=ENV["ALICE_KEY"]) as client:
        answer = await client.chat.completions.create(**CHAT)
    assert answer.choices[0].message.content == "Hello world"
    async with secured.client(api_key="nope") as client:
        with pytest.raises(openai.AuthenticationError):
            await client.chat.completions.create(**CHAT)


async def test_known_caller_asking_for_a_model_it_may_not_use_gets_403(secured):
    """alice may use llama3.2* only: another model is a 403 naming the model, not a 401."""
    body = {**CHAT, "model": "nomic-embed-text"}
    code, _, raw = await request(secured.url, headers={"Authorization": "Bearer " + ENV["ALICE_KEY"]}, body=body)
    error = orjson.loads(raw)["error"]
    assert code == 403 and error["param"] == "model" and error["code"] == "model_not_allowed"
    assert "alice" in error["message"] and ENV["ALICE_KEY"] not in raw.decode()
    code, _, _ = await request(secured.url, headers={"Authorization": basic("bob", ENV["BOB_PW"])}, body=body)
    assert code == 200


async def test_model_list_is_filtered_by_the_callers_allow_list(secured):
    """/v1/models shows alice only the models she may use; bob (no list) sees all."""
    async def ids(headers: dict[str, str]) -> set[str]:
        code, _, raw = await request(secured.url, "GET", "/v1/models", headers=headers)
        assert code == 200
        return {m["id"] for m in orjson.loads(raw)["data"]}

    assert await ids({"Authorization": "Bearer " + ENV["ALICE_KEY"]}) == {"llama3.2:latest"}
    assert await ids({"Authorization": basic("bob", ENV["BOB_PW"])}) == {"llama3.2:latest", "nomic-embed-text:latest"}
    code, _, _ = await request(secured.url, "GET", "/v1/models/nomic-embed-text",
                               headers={"Authorization": "Bearer " + ENV["ALICE_KEY"]})
    assert code == 404
    code, _, _ = await request(secured.url, "GET", "/v1/models")
    assert code == 401


@pytest.mark.parametrize("path", ["/metrics", "/admin/stats", "/status", "/dashboard"])
async def test_admin_paths_need_the_admin_credential(secured, path):
    """Metrics, admin API, status and dashboard refuse no key and client keys; the admin key opens them."""
    for headers in ({}, {"Authorization": "Bearer " + ENV["ALICE_KEY"]}, {"x-api-key": "wrong"}):
        code, resp_headers, raw = await request(secured.url, "GET", path, headers=headers)
        assert code == 401 and resp_headers["WWW-Authenticate"] == REALM_HEADER
        assert orjson.loads(raw)["error"]["type"] == "invalid_request_error"
    code, _, _ = await request(secured.url, "GET", path, headers={"Authorization": "Bearer " + ENV["ADMIN_KEY"]})
    assert code == 200
    code, _, _ = await request(secured.url, "GET", path, headers={"Authorization": basic("x", ENV["ADMIN_KEY"])})
    assert code == 200


async def test_liveness_stays_open_without_credentials(secured):
    """/healthz and /livez answer without any credential, so orchestrators can probe them."""
    for path in ("/healthz", "/livez"):
        code, _, _ = await request(secured.url, "GET", path)
        assert code == 200


async def test_admin_paths_are_closed_when_clients_have_keys_but_no_admin_is_configured(fake_ollama, start_gateway):
    """With client auth on and no admin credential, /metrics is a 403, not open to every client."""
    gw = await start_gateway(auth_config(fake_ollama.url, admin=False), environ=ENV)
    code, _, raw = await request(gw.url, "GET", "/metrics", headers={"Authorization": "Bearer " + ENV["ALICE_KEY"]})
    assert code == 403 and orjson.loads(raw)["error"]["code"] == "no_admin"


async def test_admin_credential_alone_protects_admin_paths_and_leaves_the_api_open(fake_ollama, start_gateway):
    """Only an admin credential: the API needs nothing, /metrics needs the admin key."""
    raw = one_backend_config(fake_ollama.url, auth={"admin": {"username": "ops", "password": "${ADMIN_KEY}"}})
    gw = await start_gateway(raw, environ=ENV)
    assert (await request(gw.url))[0] == 200
    assert (await request(gw.url, "GET", "/metrics"))[0] == 401
    assert (await request(gw.url, "GET", "/metrics", headers={"Authorization": basic("ops", ENV["ADMIN_KEY"])}))[0] == 200
    assert (await request(gw.url, "GET", "/metrics", headers={"Authorization": basic("eve", ENV["ADMIN_KEY"])}))[0] == 401


async def test_without_auth_everything_is_open(gateway):
    """Auth off (the default): the API and /metrics need no credential."""
    assert (await request(gateway.url))[0] == 200
    assert (await request(gateway.url, "GET", "/metrics"))[0] == 200


async def test_credential_name_not_secret_is_logged(fake_ollama, start_gateway, tmp_path):
    """The request log names the credential (alice, carol) and never holds a secret."""
    log_file = tmp_path / "requests.log"
    gw = await start_gateway(auth_config(fake_ollama.url, logging={"requests": True, "file": str(log_file)}),
                             environ=ENV)
    await request(gw.url, headers={"Authorization": "Bearer " + ENV["ALICE_KEY"]})
    await request(gw.url, headers={"x-api-key": CAROL_KEY})
    await request(gw.url, headers={"x-api-key": "wrong-key-zzz"})
    for _ in range(100):  # lines are flushed within 50 ms, not synchronously
        records = [orjson.loads(line) for line in log_file.read_bytes().splitlines() if line.strip()]
        if len(records) >= 3:
            break
        await asyncio.sleep(0.02)
    assert [r["credential"] for r in records] == ["alice", "carol", None]
    assert records[2]["status"] == 401
    text = log_file.read_text()
    for secret in (*ENV.values(), CAROL_KEY, "wrong-key-zzz", CAROL_HASH):
        assert secret not in text


def scrypt_threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.name.startswith("auth-scrypt")}


async def test_plaintext_keys_never_touch_the_scrypt_threads(fake_ollama, start_gateway):
    """With plaintext credentials only, authentication stays inline: no scrypt thread is started."""
    raw = one_backend_config(fake_ollama.url, auth={"credentials": [{"name": "a", "api_key": "${ALICE_KEY}"}]})
    gw = await start_gateway(raw, environ=ENV)
    before = scrypt_threads()
    assert (await request(gw.url, headers={"Authorization": "Bearer " + ENV["ALICE_KEY"]}))[0] == 200
    assert (await request(gw.url, headers={"Authorization": "Bearer wrong"}))[0] == 401
    assert scrypt_threads() <= before  # no new thread (an earlier test's may still be exiting)


async def test_hashed_keys_are_checked_off_the_event_loop(fake_ollama, start_gateway):
    """Wrong keys against scrypt hashes are verified in the gateway's auth-scrypt threads, not on the loop.

    (Speed is for the benchmark: this checks where the work runs, not how long the loop stalls.)
    """
    gw = await start_gateway(auth_config(fake_ollama.url), environ=ENV)
    before_threads = scrypt_threads()
    results = await asyncio.gather(*(request(gw.url, headers={"x-api-key": f"wrong-{i}"}) for i in range(8)))
    assert [r[0] for r in results] == [401] * 8
    assert scrypt_threads() - before_threads  # the scrypt work ran in this gateway's threads


@pytest.mark.parametrize("host, warned", [
    ("0.0.0.0", True), ("::", True), ("", True), ("192.168.1.10", True), ("gateway.example", True),
    ("127.0.0.1", False), ("::1", False), ("localhost", False), ("127.0.0.2", False),
])
def test_startup_warns_when_auth_is_off_and_bound_off_loopback(host, warned, caplog):
    """Off loopback, auth off or credentials in clear text (no server.tls) log a warning; loopback does not."""
    open_config = parse_config({}, {})
    caplog.set_level(logging.WARNING, logger="proxy.server")
    assert warn_if_exposed(open_config, host) is warned
    assert any("authentication is OFF" in r.getMessage() for r in caplog.records) is warned
    caplog.clear()
    closed = parse_config({"auth": {"credentials": [{"name": "a", "api_key": "k"}]}}, {})
    assert warn_if_exposed(closed, host) is warned
    assert any("clear text" in r.getMessage() for r in caplog.records) is warned
    caplog.clear()
    tls = {"cert_file": "server.pem", "key_file": "server.key"}
    closed_tls = parse_config({"auth": {"credentials": [{"name": "a", "api_key": "k"}]}, "server": {"tls": tls}}, {})
    assert warn_if_exposed(closed_tls, host) is False and not caplog.records
