"""proxy.auth: header forms, hashed secrets, model allow-lists, config errors and secret hygiene."""

from __future__ import annotations

import base64

import pytest

from policies.schema import Problems, Section
from proxy.auth import (
    DEFAULT_REALM,
    AuthConfig,
    Authenticator,
    Credential,
    hash_secret,
    model_allowed,
    parse_auth,
    verify_secret,
    www_authenticate,
)

SALT = b"0123456789abcdef"
KEY_HASH = hash_secret("hashed-key-1", salt=SALT)
BOB_HASH = hash_secret("builder", salt=SALT)
ENV = {"APP_KEY": "sk-app-123", "ALICE_PW": "wonderland", "ADMIN_KEY": "adm-999", "OTHER_KEY": "sk-other-456"}
RAW = {
    "realm": "test-realm",
    "credentials": [
        {"name": "app", "api_key": "${APP_KEY}", "models": ["llama3*", "gpt-4o-mini"], "max_concurrent": 2},
        {"name": "alice", "username": "alice", "password": "${ALICE_PW}"},
        {"name": "hashed", "api_key_hash": KEY_HASH, "requests_per_minute": 60, "tokens_per_minute": 1000},
        {"name": "bob", "username": "bob", "password_hash": BOB_HASH},
        {"name": "other", "api_key": "${OTHER_KEY}"},
    ],
    "admin": {"api_key": "${ADMIN_KEY}"},
}


def parse(raw: object, environ: dict[str, str] = ENV) -> tuple[AuthConfig, list[tuple[str, str]]]:
    problems = Problems()
    config = parse_auth(Section(raw, "auth", problems, environ))
    return config, problems.items


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


@pytest.fixture
def auth() -> Authenticator:
    config, problems = parse(RAW)
    assert problems == []
    return Authenticator(config)


@pytest.mark.parametrize(
    ("authorization", "x_api_key", "expected"),
    [
        pytest.param("Bearer sk-app-123", None, "app", id="bearer-ok"),
        pytest.param("bearer sk-app-123", None, "app", id="bearer-scheme-case-insensitive"),
        pytest.param("  Bearer   sk-other-456  ", None, "other", id="bearer-extra-spaces"),
        pytest.param("Bearer sk-app-124", None, None, id="bearer-wrong"),
        pytest.param("Bearer sk-app-12", None, None, id="bearer-prefix-of-key"),
        pytest.param("Bearer ", None, None, id="bearer-empty"),
        pytest.param("Bearer", None, None, id="bearer-no-token"),
        pytest.param(basic("alice", "wonderland"), None, "alice", id="basic-ok"),
        pytest.param(basic("alice", "wonderlant"), None, None, id="basic-wrong-password"),
        pytest.param(basic("mallory", "wonderland"), None, None, id="basic-wrong-user"),
        pytest.param(basic("alice", ""), None, None, id="basic-empty-password"),
        pytest.param(basic("whoever", "sk-app-123"), None, "app", id="basic-password-is-api-key"),
        pytest.param(basic("", "sk-app-123"), None, "app", id="basic-empty-user-api-key"),
        pytest.param("Basic !!!not-base64!!!", None, None, id="basic-bad-base64"),
        pytest.param("Basic " + b64(b"alicewonderland"), None, None, id="basic-no-colon"),
        pytest.param("Basic " + b64(b"alice:wonder\xffland"), None, None, id="basic-non-utf8"),
        pytest.param("Basic ", None, None, id="basic-empty"),
        pytest.param("Basic b\u00e4d", None, None, id="basic-non-ascii-token"),
        pytest.param(None, "sk-app-123", "app", id="x-api-key-ok"),
        pytest.param(None, "sk-app-999", None, id="x-api-key-wrong"),
        pytest.param(None, "", None, id="x-api-key-empty"),
        pytest.param("", "sk-app-123", "app", id="empty-authorization-falls-back-to-x-api-key"),
        pytest.param("Bearer wrong", "sk-app-123", None, id="authorization-wins-over-x-api-key"),
        pytest.param("Token sk-app-123", None, None, id="wrong-scheme"),
        pytest.param("Digest " + b64(b"alice:wonderland"), None, None, id="wrong-scheme-base64"),
        pytest.param("sk-app-123", None, None, id="no-scheme"),
        pytest.param(None, None, None, id="missing"),
        pytest.param("Bearer adm-999", None, None, id="admin-key-is-not-a-client-key"),
        pytest.param("Bearer wonderland", None, None, id="bearer-password-without-user"),
        pytest.param("Bearer \udcff", None, None, id="lone-surrogate"),
        pytest.param("Bearer hashed-key-1", None, "hashed", id="hashed-key"),
        pytest.param(None, "hashed-key-1", "hashed", id="hashed-key-x-api-key"),
        pytest.param(basic("x", "hashed-key-1"), None, "hashed", id="hashed-key-as-basic-password"),
        pytest.param("Bearer hashed-key-2", None, None, id="hashed-key-wrong"),
        pytest.param(basic("bob", "builder"), None, "bob", id="hashed-password"),
        pytest.param(basic("bob", "builders"), None, None, id="hashed-password-wrong"),
        pytest.param(basic("alice", "builder"), None, None, id="hashed-password-wrong-user"),
        pytest.param("Bearer builder", None, None, id="hashed-password-via-bearer"),
    ],
)
def test_authenticate_header_forms(auth: Authenticator, authorization: str | None, x_api_key: str | None,
                                   expected: str | None) -> None:
    """Each header form yields the configured credential or None, and never raises."""
    credential = auth.authenticate(authorization, x_api_key)
    assert (credential.name if credential else None) == expected


def test_credential_carries_settings(auth: Authenticator) -> None:
    """The returned credential holds its models and limits; defaults are all models, unlimited."""
    app = auth.authenticate("Bearer sk-app-123", None)
    assert app == Credential(name="app", models=("llama3*", "gpt-4o-mini"), max_concurrent=2)
    hashed = auth.authenticate("Bearer hashed-key-1", None)
    assert hashed == Credential(name="hashed", requests_per_minute=60, tokens_per_minute=1000)
    assert hashed.models == ("*",) and hashed.max_concurrent is None


@pytest.mark.parametrize(
    ("authorization", "x_api_key", "expected"),
    [
        ("Bearer adm-999", None, True),
        (None, "adm-999", True),
        (basic("admin", "adm-999"), None, True),
        ("Bearer sk-app-123", None, False),
        ("Bearer adm-998", None, False),
        (None, None, False),
        ("Basic %%%", None, False),
    ],
)
def test_authenticate_admin(auth: Authenticator, authorization: str | None, x_api_key: str | None,
                            expected: bool) -> None:
    """Only the admin secret opens admin endpoints; client keys do not."""
    assert auth.authenticate_admin(authorization, x_api_key) is expected


def test_admin_login_with_password_hash() -> None:
    """The admin may be a username with a hashed password (for a browser dashboard)."""
    config, problems = parse({"admin": {"username": "root", "password_hash": BOB_HASH}})
    assert problems == []
    auth = Authenticator(config)
    assert (auth.enabled, auth.admin_enabled, auth.uses_hashes) == (False, True, True)
    assert auth.authenticate_admin(basic("root", "builder"), None)
    assert not auth.authenticate_admin(basic("toor", "builder"), None)
    assert not auth.authenticate_admin("Bearer builder", None)


def test_no_auth_section_means_auth_off() -> None:
    """Without credentials auth is disabled and nothing authenticates."""
    config, problems = parse(None)
    assert problems == [] and config == AuthConfig()
    auth = Authenticator(config)
    assert (auth.enabled, auth.admin_enabled, auth.uses_hashes, auth.realm) == (False, False, False, DEFAULT_REALM)
    assert auth.authenticate("Bearer anything", None) is None
    assert auth.authenticate_admin("Bearer anything", None) is False


def test_flags(auth: Authenticator) -> None:
    """The example config has clients, an admin and hashed secrets."""
    assert (auth.enabled, auth.admin_enabled, auth.uses_hashes, auth.realm) == (True, True, True, "test-realm")


# ----------------------------------------------------------------------------- hashing


def test_hash_secret_format_and_round_trip() -> None:
    """hash_secret writes scrypt$16384$8$1$salt$hash with a 16-byte salt and 32-byte hash."""
    encoded = hash_secret("s3cret")
    kind, n, r, p, salt, digest = encoded.split("$")
    assert (kind, n, r, p) == ("scrypt", "16384", "8", "1")
    assert len(base64.b64decode(salt)) == 16 and len(base64.b64decode(digest)) == 32
    assert verify_secret("s3cret", encoded)
    assert not verify_secret("s3cret ", encoded)
    assert not verify_secret("", encoded)


def test_hash_secret_salts() -> None:
    """A random salt makes each hash different; a given salt makes it reproducible."""
    assert hash_secret("x") != hash_secret("x")
    assert hash_secret("hashed-key-1", salt=SALT) == KEY_HASH
    assert KEY_HASH.split("$")[4] == base64.b64encode(SALT).decode()


@pytest.mark.parametrize(
    "encoded",
    [
        "",
        "scrypt",
        "bcrypt$16384$8$1$" + KEY_HASH.split("$", 4)[4],
        KEY_HASH.replace("scrypt$16384", "scrypt$16383"),  # N not a power of two
        KEY_HASH.replace("scrypt$16384", "scrypt$1073741824"),  # far too much memory
        KEY_HASH.replace("$8$1$", "$0$1$"),
        KEY_HASH.replace("$8$1$", "$8$-1$"),
        KEY_HASH.rsplit("$", 1)[0] + "$not*base64",
        KEY_HASH.rsplit("$", 1)[0] + "$" + b64(b"short"),
        KEY_HASH + "$extra",
    ],
)
def test_verify_secret_rejects_malformed_hashes(encoded: str) -> None:
    """A malformed or unreasonable hash verifies nothing and does not raise."""
    assert verify_secret("hashed-key-1", encoded) is False


def test_hashed_success_is_cached_and_failure_is_not(auth: Authenticator) -> None:
    """A verified hashed secret is cached (by digest); a wrong one is not."""
    cache = auth._cache  # read-only peek: the cache is otherwise invisible except through timing
    assert auth.authenticate("Bearer hashed-key-2", None) is None
    assert len(cache) == 0
    assert auth.authenticate("Bearer hashed-key-1", None).name == "hashed"  # type: ignore[union-attr]
    assert len(cache) == 1
    assert auth.authenticate("Bearer hashed-key-1", None).name == "hashed"  # type: ignore[union-attr]
    assert len(cache) == 1
    assert all(b"hashed-key-1" not in key for key in cache)
    assert auth.authenticate("Bearer sk-app-123", None).name == "app"  # type: ignore[union-attr]
    assert len(cache) == 1  # plaintext keys never need the cache


def test_cache_is_bounded_lru() -> None:
    """The cache keeps the most recently used entries up to its size."""
    config, _ = parse({"credentials": [{"name": "h", "api_key_hash": KEY_HASH},
                                       {"name": "b", "username": "bob", "password_hash": BOB_HASH}]})
    auth = Authenticator(config, cache_size=2)
    auth.authenticate("Bearer hashed-key-1", None)
    auth.authenticate(basic("bob", "builder"), None)
    first = list(auth._cache)
    auth.authenticate(None, "hashed-key-1")  # same secret, same form as the first: a hit, now newest
    assert list(auth._cache) == [first[1], first[0]]
    auth.authenticate(basic("u", "hashed-key-1"), None)  # a third form: evicts the oldest (bob)
    assert len(auth._cache) == 2 and first[1] not in auth._cache


# ----------------------------------------------------------------------------- models and header


@pytest.mark.parametrize(
    ("model", "allowed"),
    [
        ("llama3", True),
        ("llama3:8b", True),
        ("llama3.1:70b-instruct", True),
        ("gpt-4o-mini", True),
        ("gpt-4o", False),
        ("gpt-4o-mini-2024", False),
        ("Llama3", False),
        ("llama2", False),
        ("", False),
    ],
)
def test_model_allowed_globs(model: str, allowed: bool) -> None:
    """Models match exact names or case-sensitive fnmatch globs."""
    credential = Credential(name="app", models=("llama3*", "gpt-4o-mini"))
    assert model_allowed(credential, model) is allowed


def test_model_allowed_default_and_character_classes() -> None:
    """The default allows every model; ? and [...] work as globs."""
    assert model_allowed(Credential(name="all"), "anything:at-all")
    credential = Credential(name="c", models=("qwen?", "phi[34]"))
    assert [model_allowed(credential, m) for m in ("qwen3", "qwen", "phi3", "phi5")] == [True, False, True, False]


def test_www_authenticate() -> None:
    """The challenge names the realm and UTF-8, with quotes escaped."""
    assert www_authenticate("ollama-gateway") == 'Basic realm="ollama-gateway", charset="UTF-8"'
    assert www_authenticate('a"b\\c') == 'Basic realm="a\\"b\\\\c", charset="UTF-8"'


# ----------------------------------------------------------------------------- config errors


def one(raw_credential: dict[str, object], **top: object) -> dict[str, object]:
    return {"credentials": [{"name": "ok", "api_key": "k0"}, raw_credential], **top}


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (one({"name": "x", "api_key_hash": "scrypt$1$2$3"}),
         [("auth.credentials[1].api_key_hash", "not a valid scrypt hash (make one with hash_secret / `hash-key`)")]),
        (one({"name": "x", "username": "u", "password_hash": "plain"}),
         [("auth.credentials[1].password_hash", "not a valid scrypt hash (make one with hash_secret / `hash-key`)")]),
        (one({"name": "x", "api_key": "k", "api_key_hash": KEY_HASH}),
         [("auth.credentials[1].api_key_hash", "give either api_key or api_key_hash, not both")]),
        (one({"name": "x"}),
         [("auth.credentials[1]", "needs api_key, api_key_hash, or username with password or password_hash")]),
        (one({"name": "x", "username": "u"}),
         [("auth.credentials[1].password", "is required with username (or give password_hash)")]),
        (one({"name": "x", "password": "p"}), [("auth.credentials[1].username", "is required with password")]),
        (one({"name": "x", "password_hash": BOB_HASH}),
         [("auth.credentials[1].username", "is required with password_hash")]),
        (one({"name": "x", "username": "u", "password": "p", "password_hash": BOB_HASH}),
         [("auth.credentials[1].password_hash", "give either password or password_hash, not both")]),
        (one({"name": "x", "api_key": "k", "username": "u", "password": "p"}),
         [("auth.credentials[1].username", "give an API key or a username, not both")]),
        (one({"name": "x", "username": "a:b", "password": "p"}),
         [("auth.credentials[1].username", "must be non-empty and must not contain ':'")]),
        (one({"name": "ok", "api_key": "k1"}), [("auth.credentials[1].name", "duplicate name, also used by auth.credentials[0]")]),
        (one({"name": "x", "api_key": "k0"}), [("auth.credentials[1].api_key", "duplicate api_key, also used by auth.credentials[0]")]),
        (one({"name": "x", "api_key": ""}), [("auth.credentials[1].api_key", "must not be empty")]),
        (one({"name": "x", "api_key": "${NOPE}"}), [("auth.credentials[1].api_key", "environment variable NOPE is not set")]),
        (one({"name": "x", "api_key": 12345}), [("auth.credentials[1].api_key", "must be a string (got 12345)")]),
        (one({"api_key": "k"}), [("auth.credentials[1].name", "is required")]),
        (one({"name": " ", "api_key": "k"}), [("auth.credentials[1].name", "must not be empty")]),
        (one({"name": "x", "api_key": "k", "modles": ["a"]}), [("auth.credentials[1].modles", "unknown key")]),
        (one({"name": "x", "api_key": "k", "models": []}),
         [("auth.credentials[1].models", "must list non-empty model names or globs (omit it to allow all)")]),
        (one({"name": "x", "api_key": "k", "max_concurrent": 0}),
         [("auth.credentials[1].max_concurrent", "must be an integer >= 1 (got 0)")]),
        (one({"name": "x", "api_key": "k", "tokens_per_minute": 1.5}),
         [("auth.credentials[1].tokens_per_minute", "must be an integer >= 1 (got 1.5)")]),
        (one({"name": "x", "api_key": "k"}, credentail=[]), [("auth.credentail", "unknown key")]),
        (one({"name": "x", "api_key": "k"}, admin={"api_key": "a", "models": ["x"]}), [("auth.admin.models", "unknown key")]),
        (one({"name": "x", "api_key": "k"}, admin={}),
         [("auth.admin", "needs api_key, api_key_hash, or username with password or password_hash")]),
        (one({"name": "x", "api_key": "k"}, realm='say "hi"'),
         [("auth.realm", "must be non-empty printable text without quotes or backslashes")]),
        ({"credentials": {"name": "x"}}, [("auth.credentials", "must be a list (got {'name': 'x'})")]),
        ({"credentials": ["k"]}, [("auth.credentials[0]", "must be a mapping (got 'k')"),
                                  ("auth.credentials[0].name", "is required"),
                                  ("auth.credentials[0]", "needs api_key, api_key_hash, or username with password or password_hash")]),
    ],
)
def test_parse_auth_errors(raw: object, expected: list[tuple[str, str]]) -> None:
    """Each mistake is reported once, at its dotted path, and the bad entry is dropped."""
    config, problems = parse(raw)
    assert problems == expected
    if expected[0][0].startswith("auth.credentials[1]"):
        assert [e.credential.name for e in config.credentials] == ["ok"]


def test_parse_auth_collects_every_problem() -> None:
    """Problems in several credentials are all reported, not just the first."""
    _, problems = parse({"credentials": [{"name": "a"}, {"name": "b", "api_key_hash": "nope"}], "admin": {"pw": 1}})
    assert [path for path, _ in problems] == [
        "auth.credentials[0]", "auth.credentials[1].api_key_hash", "auth.admin", "auth.admin.pw"]


def test_parse_auth_valid_config() -> None:
    """The example config parses into entries with their credentials and secrets."""
    config, problems = parse(RAW)
    assert problems == []
    assert config.realm == "test-realm"
    assert [e.credential.name for e in config.credentials] == ["app", "alice", "hashed", "bob", "other"]
    app, alice, hashed, bob, _ = config.credentials
    assert (app.username, app.secret, app.secret_hash) == (None, "sk-app-123", None)
    assert (alice.username, alice.secret) == ("alice", "wonderland")
    assert (hashed.secret, hashed.secret_hash) == (None, KEY_HASH)
    assert (bob.username, bob.secret_hash) == ("bob", BOB_HASH)
    assert config.admin is not None and config.admin.secret == "adm-999" and config.admin.credential.name == "admin"


def test_repr_never_shows_secrets() -> None:
    """repr/str of the config, its entries and the authenticator contain no secret or hash."""
    config, _ = parse(RAW)
    auth = Authenticator(config)
    auth.authenticate("Bearer hashed-key-1", None)
    texts = [repr(config), str(config), repr(config.admin), repr(auth), *(repr(e) for e in config.credentials)]
    secrets = [*ENV.values(), KEY_HASH, BOB_HASH, "hashed-key-1", "builder", KEY_HASH.split("$")[5]]
    for text in texts:
        for secret in secrets:
            assert secret not in text
    assert repr(config.credentials[1]) == "Entry(name='alice', username='alice', secret=<plaintext>)"
    assert repr(config.credentials[2]) == "Entry(name='hashed', username=None, secret=<hashed>)"
