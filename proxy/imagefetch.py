"""SSRF-safe fetching of ``http(s)`` image URLs for vision requests (off by default).

Shell module: imports aiohttp and is, besides ``proxy/upstream.py``, the only owner of a client
session. Every hop (the URL, then each redirect, followed by hand) must be http(s), match
``allow_hosts`` and resolve only to addresses outside ``deny_networks`` (one bad address refuses
the hop). The connection then goes to exactly the vetted addresses: the session's resolver only
answers from pins set for the hop, so DNS rebinding cannot swap them. Body size is enforced on
the bytes read, and the declared content type must agree with the magic bytes.

Failures raise `ImageFetchError` (``message`` safe to show, never an internal address, and a
``code``): ``image_fetch_disabled``, ``invalid_image_url``, ``image_host_not_allowed``,
``image_resolve_failed``, ``image_address_denied``, ``image_too_many_redirects``,
``image_fetch_failed``, ``image_fetch_timeout``, ``image_too_large``, ``unsupported_image_type``.
aiohttp exceptions are translated here, since this module owns its own session.
"""

from __future__ import annotations

import asyncio
import base64
import ipaddress
import socket
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from fnmatch import fnmatchcase

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from yarl import URL

from policies.schema import Section

__all__ = ["DEFAULT_DENY_NETWORKS", "ImageFetchConfig", "ImageFetchError", "ImageFetcher", "Network",
           "Resolver", "is_denied", "parse_image_fetch"]  # fmt: skip

Resolver = Callable[[str, int], Awaitable[list[str]]]  # (host, port) -> addresses; OSError if none
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

_V4_DENY = (
    "0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16", "172.16.0.0/12",
    "192.0.0.0/24", "192.0.2.0/24", "192.88.99.0/24", "192.168.0.0/16", "198.18.0.0/15",
    "198.51.100.0/24", "203.0.113.0/24", "224.0.0.0/4", "240.0.0.0/4",
)  # fmt: skip
_V6_DENY = (
    "::/128", "::1/128", "64:ff9b:1::/48", "100::/64", "2001:db8::/32", "fc00::/7", "fe80::/10",
    "fec0::/10", "ff00::/8",
)  # fmt: skip
DEFAULT_DENY_NETWORKS: tuple[Network, ...] = (
    *(ipaddress.IPv4Network(n) for n in _V4_DENY),
    *(ipaddress.IPv6Network(n) for n in _V6_DENY),
    # the same IPv4 ranges written as IPv4-mapped IPv6 (::ffff:10.0.0.0/104 ...)
    *(ipaddress.IPv6Network(f"::ffff:{n.split('/')[0]}/{96 + int(n.split('/')[1])}") for n in _V4_DENY),
)
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
# IPv4-compatible (::a.b.c.d, RFC 4291, deprecated) and IPv4-translated (::ffff:0:a.b.c.d, RFC 2765)
# addresses carry an IPv4 address in their last 32 bits, as NAT64 ones do
_LOW_32_EMBEDDING = (_NAT64, ipaddress.IPv6Network("::/96"), ipaddress.IPv6Network("::ffff:0:0:0/96"))
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_ALIASES = {"image/jpg": "image/jpeg", "image/pjpeg": "image/jpeg"}
_TYPES = ("image/jpeg", "image/png", "image/webp", "image/gif")
_HEADERS = {"Accept": ", ".join(_TYPES), "Accept-Encoding": "identity", "User-Agent": "ollama-gateway"}


class ImageFetchError(Exception):
    """A refused or failed image fetch; the gateway answers 400 with ``message`` and ``code``."""

    def __init__(self, message: str, code: str) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


@dataclass(frozen=True, slots=True, kw_only=True)
class ImageFetchConfig:
    """The parsed ``image_fetch:`` section."""

    enabled: bool = False
    allow_hosts: tuple[str, ...] = ()  # lower-case host names or fnmatch globs
    max_bytes: int = 10 * 1024 * 1024
    timeout: float = 10.0  # seconds for the whole fetch, redirects included
    max_redirects: int = 3
    deny_networks: tuple[Network, ...] = DEFAULT_DENY_NETWORKS


def parse_image_fetch(section: Section) -> ImageFetchConfig:
    """Read the ``image_fetch:`` section; problems (with dotted paths) go to ``section.problems``."""
    problems, d = section.problems, ImageFetchConfig()
    enabled = section.bool("enabled", False)
    hosts = tuple(h.strip().lower().rstrip(".") for h in section.str_list("allow_hosts", ()))
    if "" in hosts:
        problems.add(section.at("allow_hosts"), "must not contain empty host names")
    elif enabled and not hosts:
        problems.add(section.at("allow_hosts"), "is required when enabled (host names or globs)")
    networks: list[Network] = []
    for path, item in section.list("deny_networks", None) or ():
        try:
            networks.append(ipaddress.ip_network(item, strict=False))  # type: ignore[arg-type]
        except (TypeError, ValueError):
            problems.add(path, f"must be an IP network such as 10.0.0.0/8 or fc00::/7 (got {item!r})")
    config = ImageFetchConfig(
        enabled=enabled,
        allow_hosts=hosts,
        max_bytes=section.number("max_bytes", d.max_bytes, minimum=1, integer=True),
        timeout=float(section.number("timeout", d.timeout, minimum=0, exclusive_minimum=True)),
        max_redirects=section.number("max_redirects", d.max_redirects, minimum=0, integer=True),
        deny_networks=tuple(networks) if section.has("deny_networks") else d.deny_networks,
    )
    section.done()
    return config


def is_denied(address: str, networks: tuple[Network, ...]) -> bool:
    """Whether ``address``, or an IPv4 address embedded in it, is in ``networks``.

    Embedded forms: IPv4-mapped (``::ffff:a.b.c.d``), IPv4-compatible (``::a.b.c.d``), IPv4-translated
    (``::ffff:0:a.b.c.d``), NAT64 (``64:ff9b::/96``), 6to4 and Teredo.
    An address that does not parse counts as denied.
    """
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])  # drop an IPv6 zone such as %eth0
    except ValueError:
        return True
    candidates: list[ipaddress.IPv4Address | ipaddress.IPv6Address] = [ip]
    if isinstance(ip, ipaddress.IPv6Address):
        candidates += [a for a in (ip.ipv4_mapped, ip.sixtofour, *(ip.teredo or ())) if a is not None]
        if any(ip in net for net in _LOW_32_EMBEDDING):
            candidates.append(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
    return any(c in net for c in candidates for net in networks)


def _sniff(head: bytes) -> str | None:
    if head.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "image/gif"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    return None


def _host_key(host: str) -> str:
    return host.lower().rstrip(".")


def _url(text: str, base: URL | None = None) -> URL:
    try:
        url = URL(text) if base is None else base.join(URL(text))
        host, _ = url.raw_host, url.port  # yarl may only complain when these are read
    except (TypeError, ValueError):
        raise ImageFetchError("the image URL is not a valid URL", "invalid_image_url") from None
    if url.scheme not in ("http", "https") or not host:
        raise ImageFetchError("image URLs must be absolute http or https URLs", "invalid_image_url")
    if url.raw_user is not None or url.raw_password is not None:
        raise ImageFetchError("image URLs must not contain credentials", "invalid_image_url")
    return url.with_fragment(None)


async def _system_resolver(host: str, port: int) -> list[str]:
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


class _PinnedResolver(AbstractResolver):
    """An aiohttp resolver that never looks anything up: it answers only with pinned addresses."""

    def __init__(self) -> None:
        self._pins: dict[str, tuple[tuple[str, ...], int]] = {}  # host -> (addresses, users)

    @contextmanager
    def pinned(self, host: str, addresses: tuple[str, ...]) -> Iterator[None]:
        key = _host_key(host)
        self._pins[key] = (addresses, self._pins.get(key, ((), 0))[1] + 1)
        try:
            yield
        finally:
            current, users = self._pins[key]
            if users > 1:
                self._pins[key] = (current, users - 1)
            else:
                del self._pins[key]

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        addresses, _ = self._pins.get(_host_key(host), ((), 0))
        results: list[ResolveResult] = [
            {"hostname": host, "host": a, "port": port, "family": fam, "proto": 0, "flags": 0}
            for a in addresses
            if family in (socket.AF_UNSPEC, fam := socket.AF_INET6 if ":" in a else socket.AF_INET)
        ]
        if not results:
            raise OSError(f"{host} has no vetted address")
        return results

    async def close(self) -> None:
        return None


class ImageFetcher:
    """Fetches vetted image URLs into ``data:`` URLs over one lazily created ClientSession.

    ``resolver`` replaces ``loop.getaddrinfo`` (tests map names to addresses with it). Call
    `close` on shutdown (e.g. from the app's ``cleanup_ctx``).
    """

    def __init__(self, config: ImageFetchConfig, *, resolver: Resolver | None = None) -> None:
        self.config = config
        self._resolve = resolver or _system_resolver
        self._pins = _PinnedResolver()
        self._session: aiohttp.ClientSession | None = None

    async def fetch_data_url(self, url: str) -> str:
        """Fetch ``url`` and return ``data:<mime>;base64,<data>``, or raise `ImageFetchError`."""
        cfg = self.config
        if not cfg.enabled:
            raise ImageFetchError(
                "fetching image URLs is disabled on this gateway; send the image as a data: URL",
                "image_fetch_disabled",
            )
        try:
            async with asyncio.timeout(cfg.timeout):
                mime, body = await self._fetch(url)
        except TimeoutError:  # first: aiohttp's ServerTimeoutError is also a ClientError
            message = f"fetching the image took longer than {cfg.timeout:g}s"
            raise ImageFetchError(message, "image_fetch_timeout") from None
        except aiohttp.ClientError as exc:
            raise ImageFetchError("could not fetch the image", "image_fetch_failed") from exc
        return f"data:{mime};base64,{base64.b64encode(body).decode('ascii')}"

    async def close(self) -> None:
        """Close the session, if one was opened; a later fetch opens a new one."""
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                # no DNS cache (each hop is pinned), no keep-alive across hops or fetches
                connector=aiohttp.TCPConnector(resolver=self._pins, use_dns_cache=False, force_close=True),
                timeout=aiohttp.ClientTimeout(total=self.config.timeout),
                headers=_HEADERS,
                auto_decompress=False,  # sizes count wire bytes; no decompression bombs
                trust_env=False,  # never route through HTTP(S)_PROXY from the environment
                cookie_jar=aiohttp.DummyCookieJar(),  # no cookies carried between hosts
            )
        return self._session

    async def _fetch(self, text: str) -> tuple[str, bytes]:
        url = _url(text)
        for _ in range(self.config.max_redirects + 1):
            host, addresses = await self._vet(url)
            with self._pins.pinned(host, addresses):
                async with self._client().get(url, allow_redirects=False) as resp:
                    if resp.status not in _REDIRECTS:
                        return await self._read(resp)
                    location = resp.headers.get("Location")
                    if not location:
                        raise ImageFetchError("redirect without a Location header", "image_fetch_failed")
                    url = _url(location, base=url)
        message = f"the image URL redirected more than {self.config.max_redirects} times"
        raise ImageFetchError(message, "image_too_many_redirects")

    async def _vet(self, url: URL) -> tuple[str, tuple[str, ...]]:
        host = _host_key(url.raw_host or "")
        if not any(fnmatchcase(host, pattern) for pattern in self.config.allow_hosts):
            message = f"image host {host!r} is not in image_fetch.allow_hosts"
            raise ImageFetchError(message, "image_host_not_allowed")
        try:
            addresses: tuple[str, ...] = (str(ipaddress.ip_address(host)),)
        except ValueError:
            try:
                addresses = tuple(await self._resolve(host, url.port or 0))
            except OSError:
                addresses = ()
        if not addresses:
            raise ImageFetchError(f"could not resolve image host {host!r}", "image_resolve_failed")
        if any(is_denied(a, self.config.deny_networks) for a in addresses):
            message = f"image host {host!r} resolves to a private or reserved address"
            raise ImageFetchError(message, "image_address_denied")
        return host, addresses

    async def _read(self, resp: aiohttp.ClientResponse) -> tuple[str, bytes]:
        limit = self.config.max_bytes
        if resp.status != 200:
            raise ImageFetchError(f"the image URL answered HTTP {resp.status}", "image_fetch_failed")
        declared = _ALIASES.get(resp.content_type, resp.content_type)
        if declared not in _TYPES:
            message = f"unsupported image content type {declared!r} (use {', '.join(_TYPES)})"
            raise ImageFetchError(message, "unsupported_image_type")
        if resp.content_length is not None and resp.content_length > limit:
            raise ImageFetchError(f"the image is larger than {limit} bytes", "image_too_large")
        body = bytearray()
        async for chunk in resp.content.iter_chunked(64 * 1024):
            body += chunk
            if len(body) > limit:  # chunked bodies have no Content-Length to trust
                raise ImageFetchError(f"the image is larger than {limit} bytes", "image_too_large")
        if _sniff(bytes(body[:12])) != declared:
            raise ImageFetchError(f"the image data is not {declared} as declared", "unsupported_image_type")
        return declared, bytes(body)
