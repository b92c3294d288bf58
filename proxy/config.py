"""Gateway configuration: one YAML file parsed strictly into frozen dataclasses.

``parse_config(raw, environ)`` is pure: every problem in the file is collected with its dotted path
(``backends[1].url: must start with http:// or https://``) and raised once as ``ConfigError``.
``load_config(path, environ)`` is the only code that reads the file and the only user of yaml.
Secrets are never written into the file: ``${VAR}`` references are resolved against ``environ``.
With no file at all the gateway serves 127.0.0.1:8080 in front of ``OLLAMA_BASE_URL``
(default http://localhost:11434), passing every model name through as is.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from urllib.parse import urlsplit

from policies.model import Policy
from policies.parse import parse_policy
from policies.schema import Problems, SchemaError, Section
from proxy.auth import AuthConfig, parse_auth
from proxy.imagefetch import ImageFetchConfig, parse_image_fetch
from proxy.state.config import StateConfig, parse_state
from proxy.telemetry.trace_config import TracingConfig, parse_tracing
from proxy.tls import TLSConfig, TLSError, server_context

__all__ = [
    "Config",
    "ConfigError",
    "LiveConfig",
    "ServerConfig",
    "BackendConfig",
    "Timeouts",
    "TLSConfig",
    "LoggingConfig",
    "MetricsConfig",
    "OpsConfig",
    "AutoPullConfig",
    "WarmupModel",
    "parse_config",
    "load_config",
    "DEFAULT_OLLAMA_URL",
]

DEFAULT_OLLAMA_URL = "http://localhost:11434"
_MIB = 1024 * 1024


class ConfigError(SchemaError):
    """The config file has problems; ``str()`` lists every one with its dotted path."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Timeouts:
    connect: float = 10.0
    first_byte: float = 600.0  # a cold model load can take minutes
    idle: float = 120.0  # longest silence between two stream lines
    read: float = 900.0  # whole non-streamed answer


@dataclass(frozen=True, slots=True, kw_only=True)
class BackendConfig:
    name: str
    kind: str  # "ollama" | "openai" | "anthropic"
    url: str  # no trailing slash; for openai, the base that /chat/completions is appended to; for
    # anthropic, the base that /v1/messages is appended to (https://api.anthropic.com)
    username: str | None = None
    password: str | None = None
    api_key: str | None = None
    tls_verify: bool = True
    ca_bundle: str | None = None
    timeouts: Timeouts = field(default_factory=Timeouts)
    max_connections: int = 1024  # pooled connections; beyond it requests wait for a free one
    health_interval: float = 10.0

    def __repr__(self) -> str:  # never show secrets
        return f"BackendConfig(name={self.name!r}, kind={self.kind!r}, url={self.url!r})"


@dataclass(frozen=True, slots=True, kw_only=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 8080
    workers: int = 1
    max_body_bytes: int = 20 * _MIB
    header_timeout: float = 10.0  # a new connection must send its request headers within this
    body_timeout: float = 60.0  # a client must send its whole body within this
    keepalive_timeout: float = 75.0
    max_connections: int = 4096
    shutdown_timeout: float = 30.0
    backend_headers: bool = True  # x-gateway-backend / x-gateway-model on responses
    cors_origins: tuple[str, ...] = ()
    tls: TLSConfig | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class LoggingConfig:
    level: str = "info"
    format: str = "json"  # "json" | "text"
    requests: bool = True
    file: str | None = None  # request log destination; default stdout
    include_prompts: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class MetricsConfig:
    enabled: bool = True
    # per client-facing model or route: USD per 1M (input, output) tokens a cloud would have charged
    cloud_prices: Mapping[str, tuple[float, float]] = field(default_factory=lambda: MappingProxyType({}))


@dataclass(frozen=True, slots=True, kw_only=True)
class WarmupModel:
    backend: str
    model: str


@dataclass(frozen=True, slots=True, kw_only=True)
class AutoPullConfig:
    enabled: bool = False
    models: tuple[str, ...] = ()  # globs; empty with enabled = nothing is pulled
    timeout: float = 600.0  # how long callers wait for a pull before the route falls back


@dataclass(frozen=True, slots=True, kw_only=True)
class OpsConfig:
    warmup: tuple[WarmupModel, ...] = ()
    warmup_keep_alive: str | int | None = None
    auto_pull: AutoPullConfig = field(default_factory=AutoPullConfig)
    models_cache_ttl: float = 10.0


@dataclass(frozen=True, slots=True, kw_only=True)
class Config:
    server: ServerConfig
    backends: tuple[BackendConfig, ...]
    policy: Policy
    auth: AuthConfig
    image_fetch: ImageFetchConfig
    logging: LoggingConfig
    metrics: MetricsConfig
    ops: OpsConfig
    state: StateConfig | None = None  # shared state across processes (Redis); None: per process
    source: str | None = None  # the file it came from, for hot reload
    tracing: TracingConfig = field(default_factory=TracingConfig)  # OpenTelemetry spans; off by default


@dataclass(slots=True)
class LiveConfig:
    """The config in force: hot reload replaces ``current``; a request keeps the one it started with."""

    current: Config


def _url(value: object, path: str) -> str:
    if not isinstance(value, str):
        raise ValueError(f"must be a string (got a {type(value).__name__})")
    parts = urlsplit(value)
    if "@" in parts.netloc:
        # never echo the value: it may carry a password
        raise ValueError("must not contain credentials; use username/password or api_key with ${VAR}")
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"must be an http:// or https:// URL with a host (got {value!r})")
    return value.rstrip("/")


def _timeouts(section: Section) -> Timeouts:
    d = Timeouts()
    t = Timeouts(
        connect=section.number("connect", d.connect, minimum=0, exclusive_minimum=True),
        first_byte=section.number("first_byte", d.first_byte, minimum=0, exclusive_minimum=True),
        idle=section.number("idle", d.idle, minimum=0, exclusive_minimum=True),
        read=section.number("read", d.read, minimum=0, exclusive_minimum=True),
    )
    section.done()
    return t


def _backends(root: Section, environ: Mapping[str, str]) -> tuple[BackendConfig, ...]:
    if not root.has("backends"):
        root.list("backends", [])
        url = environ.get("OLLAMA_BASE_URL", DEFAULT_OLLAMA_URL)
        try:
            url = _url(url, "OLLAMA_BASE_URL")
        except ValueError as exc:
            root.problems.add("OLLAMA_BASE_URL", str(exc))
        return (BackendConfig(name="ollama", kind="ollama", url=url),)
    out: list[BackendConfig] = []
    seen: set[str] = set()
    for path, raw in root.list("backends"):
        s = Section(raw, path, root.problems, root.environ)
        name = s.str("name", "")
        if not name:
            root.problems.add(s.at("name"), "is required")
        elif name in seen:
            root.problems.add(s.at("name"), f"duplicate backend name {name!r}")
        seen.add(name)
        kind = s.str("type", "ollama", choices=("ollama", "openai", "anthropic"))
        url = s.custom("url", _url, "")
        username = s.str("username", None)
        password = s.str("password", None)
        api_key = s.str("api_key", None)
        if (username is None) != (password is None):
            root.problems.add(s.at("password" if username else "username"),
                              "username and password go together (HTTP Basic towards the backend)")
        if api_key is not None and username is not None:
            root.problems.add(s.at("api_key"), "use either api_key (Bearer) or username/password, not both")
        if kind == "anthropic":  # x-api-key only, from the environment: api_key: ${ANTHROPIC_API_KEY}
            if username is not None:
                root.problems.add(s.at("username"), "an anthropic backend takes api_key (x-api-key), "
                                  "not username/password")
            if api_key is None:
                root.problems.add(s.at("api_key"), "is required for an anthropic backend "
                                  "(e.g. api_key: ${ANTHROPIC_API_KEY})")
        out.append(BackendConfig(
            name=name, kind=kind or "ollama", url=url or "", username=username, password=password,
            api_key=api_key, tls_verify=s.bool("tls_verify", True), ca_bundle=s.str("ca_bundle", None),
            timeouts=_timeouts(s.mapping("timeouts")),
            max_connections=s.number("max_connections", 1024, minimum=1, integer=True),
            health_interval=s.number("health_interval", 10.0, minimum=0, exclusive_minimum=True),
        ))
        s.done()
    if not out:
        root.problems.add("backends", "at least one backend is required")
    return tuple(out)


def _server(s: Section) -> ServerConfig:
    d = ServerConfig()
    max_body_mb = s.number("max_body_mb", d.max_body_bytes / _MIB, minimum=0, exclusive_minimum=True)
    server = ServerConfig(
        host=s.str("host", d.host),
        port=s.number("port", d.port, minimum=0, maximum=65535, integer=True),
        workers=s.number("workers", d.workers, minimum=1, maximum=256, integer=True),
        max_body_bytes=int((max_body_mb or 20) * _MIB),
        header_timeout=s.number("header_timeout", d.header_timeout, minimum=0, exclusive_minimum=True),
        body_timeout=s.number("body_timeout", d.body_timeout, minimum=0, exclusive_minimum=True),
        keepalive_timeout=s.number("keepalive_timeout", d.keepalive_timeout, minimum=0, exclusive_minimum=True),
        max_connections=s.number("max_connections", d.max_connections, minimum=1, integer=True),
        shutdown_timeout=s.number("shutdown_timeout", d.shutdown_timeout, minimum=0),
        backend_headers=s.bool("backend_headers", d.backend_headers),
        cors_origins=s.str_list("cors_origins", ()),
        tls=_tls(s.mapping("tls")),
    )
    s.done()
    return server


def _tls(s: Section) -> TLSConfig | None:
    if not s.raw:
        return None
    cfg = TLSConfig(cert_file=s.str("cert_file") or "", key_file=s.str("key_file") or "",
                    client_ca=s.str("client_ca", None))
    s.done()
    return cfg


def _logging(s: Section) -> LoggingConfig:
    cfg = LoggingConfig(
        level=s.str("level", "info", choices=("debug", "info", "warning", "error")),
        format=s.str("format", "json", choices=("json", "text")),
        requests=s.bool("requests", True),
        file=s.str("file", None),
        include_prompts=s.bool("include_prompts", False),
    )
    s.done()
    return cfg


def _price(value: object, path: str) -> tuple[float, float]:
    if (isinstance(value, Mapping) and set(value) <= {"input", "output"}
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0 for v in value.values())):
        return float(value.get("input", 0.0)), float(value.get("output", 0.0))
    raise ValueError("must be {input: USD per 1M tokens, output: USD per 1M tokens}")


def _metrics(s: Section) -> MetricsConfig:
    prices_section = s.mapping("cloud_prices")
    prices = {str(k): prices_section.custom(str(k), _price, (0.0, 0.0)) for k in prices_section.raw}
    cfg = MetricsConfig(enabled=s.bool("enabled", True), cloud_prices=MappingProxyType(prices))
    s.done()
    return cfg


def _keep_alive(value: object, path: str) -> str | int:
    if isinstance(value, (str, int)) and not isinstance(value, bool):
        return value
    raise ValueError(f"must be a duration such as 30m, or seconds (got {value!r})")


def _ops(s: Section, backends: tuple[BackendConfig, ...]) -> OpsConfig:
    names = [b.name for b in backends if b.kind == "ollama"]
    warmup: list[WarmupModel] = []
    for path, raw in s.list("warmup", []):
        if isinstance(raw, str) and names:
            warmup.extend(WarmupModel(backend=name, model=raw) for name in names)
            continue
        w = Section(raw, path, s.problems, s.environ)
        backend, model = w.str("backend", ""), w.str("model", "")
        if backend not in names:
            s.problems.add(w.at("backend"), f"must name an ollama backend (one of {', '.join(names)})")
        warmup.append(WarmupModel(backend=backend, model=model))
        w.done()
    a = s.mapping("auto_pull")
    auto_pull = AutoPullConfig(enabled=a.bool("enabled", False), models=a.str_list("models", ()),
                               timeout=a.number("timeout", 600.0, minimum=0, exclusive_minimum=True))
    a.done()
    keep_alive = s.custom("warmup_keep_alive", _keep_alive, None)
    cfg = OpsConfig(warmup=tuple(warmup), warmup_keep_alive=keep_alive, auto_pull=auto_pull,
                    models_cache_ttl=s.number("models_cache_ttl", 10.0, minimum=0))
    s.done()
    return cfg


def parse_config(raw: object, environ: Mapping[str, str], *, source: str | None = None) -> Config:
    """Validate a decoded config mapping; raise ``ConfigError`` listing every problem."""
    problems = Problems()
    root = Section(raw, "", problems, environ)
    server = _server(root.mapping("server"))
    backends = _backends(root, environ)
    policy = parse_policy(root.raw.get("routes"), root.raw.get("breaker"),
                          backends={b.name: b.kind for b in backends}, problems=problems, environ=environ)
    root.list("routes", [])
    root.mapping("breaker")
    auth = parse_auth(root.mapping("auth"))
    image_fetch = parse_image_fetch(root.mapping("image_fetch"))
    logging = _logging(root.mapping("logging"))
    metrics = _metrics(root.mapping("metrics"))
    ops = _ops(root.mapping("ops"), backends)
    state = parse_state(root.mapping("state"))
    tracing = parse_tracing(root.mapping("tracing"))
    root.done()
    if problems:
        raise ConfigError(problems.items)
    return Config(server=server, backends=backends, policy=policy, auth=auth, image_fetch=image_fetch,
                  logging=logging, metrics=metrics, ops=ops, state=state, source=source,
                  tracing=tracing)


def load_config(path: str | None, environ: Mapping[str, str]) -> Config:
    """Read and parse the YAML file at ``path`` (``None``: the built-in defaults)."""
    if path is None:
        return parse_config({}, environ)
    import yaml  # the only yaml user

    try:
        with open(path, encoding="utf-8") as handle:
            raw = yaml.safe_load(handle)
    except OSError as exc:
        raise ConfigError([("", f"cannot read {path}: {exc.strerror}")]) from None
    except yaml.YAMLError as exc:
        raise ConfigError([("", f"{path} is not valid YAML: {exc}")]) from None
    config = parse_config(raw if raw is not None else {}, environ, source=path)
    _check_ca_bundles(config)
    _check_server_tls(config)
    return config


def _check_server_tls(config: Config) -> None:
    """``server.tls`` files that cannot be loaded are a config error, not a crash at startup."""
    if config.server.tls is not None:
        try:
            server_context(config.server.tls)
        except TLSError as exc:
            raise ConfigError([("server.tls", str(exc))]) from None


def _check_ca_bundles(config: Config) -> None:
    """A ``ca_bundle`` that cannot be loaded is a config error, not a crash at startup."""
    import ssl

    problems = []
    for i, backend in enumerate(config.backends):
        if backend.ca_bundle and backend.url.startswith("https://") and backend.tls_verify:
            try:
                ssl.create_default_context(cafile=backend.ca_bundle)
            except (OSError, ssl.SSLError) as exc:
                problems.append((f"backends[{i}].ca_bundle", f"cannot load {backend.ca_bundle}: {exc}"))
    if problems:
        raise ConfigError(problems)
