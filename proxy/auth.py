"""Client and admin credentials: the ``auth:`` config section and checking request headers.

Pure: stdlib only. Imports no aiohttp and no yaml and never reads ``os.environ``; secrets arrive
already expanded from ``${VAR}`` by ``policies.schema.Section``. The middleware passes raw header
values to `Authenticator` and maps ``None``/``False`` to a 401 with `www_authenticate(realm)`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
import threading
from dataclasses import dataclass
from fnmatch import fnmatchcase

from policies.schema import Section

__all__ = ["DEFAULT_REALM", "AuthConfig", "Authenticator", "Credential", "Entry", "hash_secret",
           "model_allowed", "parse_auth", "verify_secret", "www_authenticate"]  # fmt: skip

DEFAULT_REALM = "ollama-gateway"
_N, _R, _P, _SALT_BYTES, _HASH_BYTES = 16384, 8, 1, 16, 32
_MAX_MEM = 256 * 1024 * 1024  # refuse configured hashes that would need more to verify
_NO_USER = bytes(32)  # the "username digest" of API keys and of Bearer/x-api-key requests
_Scrypt = tuple[int, int, int, bytes, bytes]  # n, r, p, salt, digest
_LIMITS = ("max_concurrent", "requests_per_minute", "tokens_per_minute")


@dataclass(frozen=True, slots=True, kw_only=True)
class Credential:
    """Who a request belongs to, and its limits; ``None`` limits mean unlimited."""

    name: str
    models: tuple[str, ...] = ("*",)
    max_concurrent: int | None = None
    requests_per_minute: int | None = None
    tokens_per_minute: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True, repr=False)
class Entry:
    """An API key (``username`` None) or a login; ``secret`` or ``secret_hash``, never in repr."""

    credential: Credential
    username: str | None = None
    secret: str | None = None
    secret_hash: str | None = None

    def __repr__(self) -> str:
        kind = "hashed" if self.secret_hash is not None else "plaintext"
        return f"Entry(name={self.credential.name!r}, username={self.username!r}, secret=<{kind}>)"


@dataclass(frozen=True, slots=True, kw_only=True)
class AuthConfig:
    """The parsed ``auth:`` section; no credentials means client auth is off."""

    realm: str = DEFAULT_REALM
    credentials: tuple[Entry, ...] = ()
    admin: Entry | None = None


def _bytes(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")  # header text may hold lone surrogates: never raise


def _sha(text: str) -> bytes:
    return hashlib.sha256(_bytes(text)).digest()


def _scrypt(secret: str, n: int, r: int, p: int, salt: bytes, size: int) -> bytes:
    memory = 128 * r * (n + p + 2) + 1024 * 1024  # OpenSSL refuses above maxmem (default 32 MiB)
    return hashlib.scrypt(_bytes(secret), salt=salt, n=n, r=r, p=p, maxmem=memory, dklen=size)


def _parse_hash(encoded: str) -> _Scrypt | None:
    parts = encoded.split("$")
    if len(parts) != 6 or parts[0] != "scrypt" or not all(x.isascii() and x.isdigit() for x in parts[1:4]):
        return None
    n, r, p = int(parts[1]), int(parts[2]), int(parts[3])
    if n < 2 or n & (n - 1) or not (1 <= r <= 64 and 1 <= p <= 16) or 128 * r * (n + p + 2) > _MAX_MEM:
        return None
    try:
        salt, digest = (base64.b64decode(x, validate=True) for x in parts[4:])
    except (binascii.Error, ValueError):
        return None
    return (n, r, p, salt, digest) if salt and 16 <= len(digest) <= 64 else None


def hash_secret(secret: str, *, salt: bytes | None = None) -> str:
    """Hash an API key or password for ``api_key_hash``/``password_hash``.

    Format: ``scrypt$N$r$p$<salt>$<hash>`` with N=16384, r=8, p=1, a 16-byte random salt (unless a
    non-empty ``salt`` is given) and a 32-byte scrypt output; salt and hash are standard base64 with padding.
    `verify_secret` also accepts other power-of-two N, r <= 64, p <= 16 and 16..64-byte hashes.
    """
    salt = salt or secrets.token_bytes(_SALT_BYTES)
    digest = _scrypt(secret, _N, _R, _P, salt, _HASH_BYTES)
    return f"scrypt${_N}${_R}${_P}${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


def verify_secret(secret: str, encoded: str) -> bool:
    """Check ``secret`` against a `hash_secret` string in constant time; a malformed hash gives False."""
    parsed = _parse_hash(encoded)
    if parsed is None:
        return False
    n, r, p, salt, digest = parsed
    return hmac.compare_digest(_scrypt(secret, n, r, p, salt, len(digest)), digest)


def model_allowed(credential: Credential, model: str) -> bool:
    """Whether ``credential`` may use ``model``: exact names or fnmatch globs, case-sensitive."""
    models = credential.models
    if "*" in models or model in models:  # the common lists, without fnmatch
        return True
    return any(fnmatchcase(model, pattern) for pattern in models)


def www_authenticate(realm: str) -> str:
    """The ``WWW-Authenticate`` value for a 401: ``Basic realm="<realm>", charset="UTF-8"``."""
    quoted = realm.replace("\\", "\\\\").replace('"', '\\"')
    return f'Basic realm="{quoted}", charset="UTF-8"'


def _secret(sub: Section, key: str, *, hashed: bool = False) -> str | None:
    before = len(sub.problems.items)
    value = sub.str(key, None)
    if value is None or len(sub.problems.items) != before:  # missing, wrong type or unset ${VAR}
        return None
    if not value:
        sub.problems.add(sub.at(key), "must not be empty")
    elif hashed and _parse_hash(value) is None:
        sub.problems.add(sub.at(key), "not a valid scrypt hash (make one with hash_secret / `hash-key`)")
    return value or None


def _login(sub: Section, credential: Credential) -> Entry | None:
    """Read the secret fields; exactly one way of logging in must be configured."""
    before = len(sub.problems.items)
    key, key_hash = _secret(sub, "api_key"), _secret(sub, "api_key_hash", hashed=True)
    username = sub.str("username", None)
    password, password_hash = _secret(sub, "password"), _secret(sub, "password_hash", hashed=True)
    keys = [k for k in ("api_key", "api_key_hash") if sub.has(k)]
    passwords = [k for k in ("password", "password_hash") if sub.has(k)]
    user, add = sub.has("username"), sub.problems.add
    if len(keys) == 2:
        add(sub.at("api_key_hash"), "give either api_key or api_key_hash, not both")
    if keys and (user or passwords):
        add(sub.at("username" if user else passwords[0]), "give an API key or a username, not both")
    elif not (keys or user or passwords):
        add(sub.path, "needs api_key, api_key_hash, or username with password or password_hash")
    elif not keys and not passwords:
        add(sub.at("password"), "is required with username (or give password_hash)")
    elif not keys and not user:
        add(sub.at("username"), f"is required with {passwords[0]}")
    elif len(passwords) == 2:
        add(sub.at("password_hash"), "give either password or password_hash, not both")
    if username is not None and (not username or ":" in username):
        add(sub.at("username"), "must be non-empty and must not contain ':'")
    if len(sub.problems.items) != before:
        return None
    secret, secret_hash = key or password, key_hash or password_hash
    return Entry(credential=credential, username=username, secret=secret, secret_hash=secret_hash)


def _client(sub: Section) -> Entry | None:
    before = len(sub.problems.items)
    name = sub.str("name")
    if name is not None and not name.strip():
        sub.problems.add(sub.at("name"), "must not be empty")
    models = sub.str_list("models", ("*",))
    if not models or "" in models:
        sub.problems.add(sub.at("models"), "must list non-empty model names or globs (omit it to allow all)")
    limits = {k: sub.number(k, None, minimum=1, integer=True) for k in _LIMITS}
    entry = _login(sub, Credential(name=name or "", models=tuple(models), **limits))
    sub.done()
    return entry if len(sub.problems.items) == before else None


def parse_auth(section: Section) -> AuthConfig:
    """Read the ``auth:`` section; problems (with dotted paths) go to ``section.problems``.

    The caller raises once for the whole config (``problems.raise_if_any()``). Each credential
    needs a unique ``name`` and exactly one of ``api_key``/``api_key_hash``, or ``username`` with
    one of ``password``/``password_hash``. ``admin`` takes the same secret fields and nothing else.
    """
    problems = section.problems
    realm = section.str("realm", DEFAULT_REALM)
    if realm is not None and (not realm or not realm.isprintable() or '"' in realm or "\\" in realm):
        problems.add(section.at("realm"), "must be non-empty printable text without quotes or backslashes")
    entries: list[Entry] = []
    seen: dict[tuple[str, bytes], str] = {}  # (field, sha256 of value) -> path of first use
    for path, raw in section.list("credentials", []):
        entry = _client(Section(raw, path, problems, section.environ))
        if entry is None:
            continue
        key, before = entry.secret if entry.username is None else None, len(problems.items)
        for what, value in (("name", entry.credential.name), ("username", entry.username), ("api_key", key)):
            first = value is not None and seen.setdefault((what, _sha(value)), path)
            if first and first != path:  # never echo the value: it may be a secret
                problems.add(f"{path}.{what}", f"duplicate {what}, also used by {first}")
        entries += [entry] if len(problems.items) == before else []
    admin_section, admin = section.mapping("admin"), None
    if section.has("admin"):
        admin = _login(admin_section, Credential(name="admin"))
        admin_section.done()
    section.done()
    return AuthConfig(realm=realm or DEFAULT_REALM, credentials=tuple(entries), admin=admin)


# credential, is_key (any username will do), sha256(username) or _NO_USER, sha256(secret), hash
_Check = tuple[Credential, bool, bytes, "bytes | None", "str | None"]


def _check(e: Entry) -> _Check:
    user = _NO_USER if e.username is None else _sha(e.username)
    return e.credential, e.username is None, user, None if e.secret is None else _sha(e.secret), e.secret_hash


def _presented(authorization: str | None, x_api_key: str | None) -> tuple[str | None, str] | None:
    """``(username or None, secret)``; ``Authorization`` wins when present, even if malformed."""
    if authorization is not None and authorization.strip():
        scheme, _, token = authorization.strip().partition(" ")
        scheme, token = scheme.lower(), token.strip()
        if scheme == "bearer" and token:
            return None, token
        try:
            user, colon, password = base64.b64decode(token, validate=True).decode("utf-8").partition(":")
        except (binascii.Error, ValueError):  # UnicodeDecodeError is a ValueError
            return None
        return (user, password) if scheme == "basic" and colon and password else None
    key = (x_api_key or "").strip()
    return (None, key) if key else None


class Authenticator:
    """Checks presented credentials against the configured ones without leaking through timing.

    Plaintext: sha256 of the presented secret (and username) is compared with
    ``hmac.compare_digest`` against every entry, no early exit. scrypt costs tens of ms, so a
    successful verification is cached (LRU of ``cache_size``, keyed by sha256 of what was
    presented); a failure is not, and costs one scrypt per hashed entry. ``enabled``: client
    credentials exist; ``admin_enabled``: an admin credential exists; ``uses_hashes``: a cache
    miss may run scrypt, so call from a thread executor (scrypt releases the GIL; lock on cache).
    """

    def __init__(self, config: AuthConfig, *, cache_size: int = 1024) -> None:
        self.realm = config.realm
        self._clients = tuple(_check(e) for e in config.credentials)
        self._admin = (_check(config.admin),) if config.admin is not None else ()
        self._cache: dict[bytes, Credential] = {}
        self._cache_size = cache_size
        self._lock = threading.Lock()
        self.enabled, self.admin_enabled = bool(self._clients), bool(self._admin)
        self.uses_hashes = any(c[4] is not None for c in self._clients + self._admin)

    def authenticate(self, authorization: str | None, x_api_key: str | None, *,
                     scrypt: bool = True) -> Credential | None:
        """The client credential matching the headers, or None (also when auth is disabled).

        Accepts ``Authorization: Bearer <key>``, ``Authorization: Basic <base64 user:password>``
        (the password may also be an API key, with any username) and ``x-api-key: <key>``; when
        ``Authorization`` is present ``x-api-key`` is ignored. Malformed headers give None.
        """
        presented = _presented(authorization, x_api_key)
        return self._match(False, *presented, scrypt=scrypt) if presented else None

    def authenticate_admin(self, authorization: str | None, x_api_key: str | None, *, scrypt: bool = True) -> bool:
        """Whether the headers carry the admin credential (False when none is configured)."""
        presented = _presented(authorization, x_api_key)
        return presented is not None and self._match(True, *presented, scrypt=scrypt) is not None

    def _match(self, admin: bool, username: str | None, secret: str, *, scrypt: bool = True) -> Credential | None:
        checks, tag = (self._admin, b"admin") if admin else (self._clients, b"client")
        secret_d = _sha(secret)
        user_d = _NO_USER if username is None else _sha(username)
        found: Credential | None = None
        for credential, is_key, user, digest, _ in checks:  # both comparisons, no early exit
            if digest is not None:
                ok = hmac.compare_digest(secret_d, digest) & (hmac.compare_digest(user_d, user) | is_key)
                found = found or (credential if ok else None)
        hashed = [c for c in checks if c[4] is not None]
        if found is not None or not hashed:
            return found
        who = b"\0" if username is None else b"\1" + _bytes(username)
        cache_key = hashlib.sha256(tag + b"\0" + who + b"\0" + _bytes(secret)).digest()
        with self._lock:
            if (found := self._cache.pop(cache_key, None)) is not None:
                self._cache[cache_key] = found  # re-insert: now the most recently used
                return found
        if not scrypt:
            return None
        for credential, is_key, user, _, encoded in hashed:  # one scrypt each that can match, no exit
            if encoded is not None and (is_key or username is not None):
                ok = verify_secret(secret, encoded) & (hmac.compare_digest(user_d, user) | is_key)
                found = found or (credential if ok else None)
        if found is not None:
            with self._lock:
                self._cache[cache_key] = found
                while len(self._cache) > self._cache_size:
                    del self._cache[next(iter(self._cache))]  # dicts keep insertion order: oldest first
        return found
