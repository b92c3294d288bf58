"""proxy.imagefetch against a real aiohttp server on 127.0.0.1: SSRF refusals, limits, success."""

from __future__ import annotations

import asyncio
import base64
import struct
import zlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from aiohttp import web

from policies.schema import Problems, Section
from proxy.imagefetch import (
    DEFAULT_DENY_NETWORKS,
    ImageFetchConfig,
    ImageFetcher,
    ImageFetchError,
    Resolver,
    is_denied,
    parse_image_fetch,
)


def _png() -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0)  # 1x1, 8-bit RGB
    pixels = zlib.compress(b"\x00\xff\x00\x00")
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")


PNG = _png()
JPEG = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + b"\x00" * 64
HOSTS = web.AppKey("hosts", list)


def image_app() -> web.Application:
    """Serves a real PNG plus misbehaving variants; records each request's Host header."""

    async def record(request: web.Request) -> None:
        request.app[HOSTS].append(request.headers.get("Host"))

    async def png(request: web.Request) -> web.Response:
        await record(request)
        return web.Response(body=PNG, content_type="image/png")

    async def redirect(request: web.Request) -> web.Response:
        await record(request)
        raise web.HTTPFound(request.query["to"])

    async def loop(request: web.Request) -> web.Response:
        raise web.HTTPFound("/loop")

    async def chunked(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "image/png"})
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        try:
            await resp.write(PNG)
            for _ in range(64):
                await resp.write(b"\0" * 1024)
            await resp.write_eof()
        except (ConnectionError, RuntimeError):
            pass  # the fetcher hung up once over its limit, as it should
        return resp

    async def big(request: web.Request) -> web.Response:
        return web.Response(body=PNG + b"\0" * 5000, content_type="image/png")

    async def html(request: web.Request) -> web.Response:
        return web.Response(body=PNG, content_type="text/html")

    async def liar(request: web.Request) -> web.Response:
        return web.Response(body=JPEG, content_type="image/png")

    async def jpeg(request: web.Request) -> web.Response:
        return web.Response(body=JPEG, content_type="image/jpg")

    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(1.0)
        return web.Response(body=PNG, content_type="image/png")

    app = web.Application()
    app[HOSTS] = []
    app.router.add_get("/cat.png", png)
    app.router.add_get("/r", redirect)
    app.router.add_get("/loop", loop)
    app.router.add_get("/chunked", chunked)
    app.router.add_get("/big", big)
    app.router.add_get("/html", html)
    app.router.add_get("/liar", liar)
    app.router.add_get("/jpeg", jpeg)
    app.router.add_get("/slow", slow)
    return app


def resolver_for(mapping: dict[str, list[str]], calls: list[str] | None = None) -> Resolver:
    async def resolve(host: str, port: int) -> list[str]:
        if calls is not None:
            calls.append(host)
        if host not in mapping:
            raise OSError(f"unknown host {host}")
        return list(mapping[host])

    return resolve


DATA_URL = "data:image/png;base64," + base64.b64encode(PNG).decode()
LOCAL_ONLY_OPEN = ("10.0.0.0/8", "169.254.0.0/16", "192.168.0.0/16")  # loopback allowed, for the test server


@pytest.fixture
async def server(aiohttp_server: Any) -> Any:
    return await aiohttp_server(image_app())


@pytest.fixture
async def make_fetcher() -> AsyncIterator[Callable[..., ImageFetcher]]:
    fetchers: list[ImageFetcher] = []

    def make(*, resolver: Resolver | None = None, deny: tuple[str, ...] | None = None, **fields: Any) -> ImageFetcher:
        if deny is not None:
            fields["deny_networks"] = tuple(parse_networks(deny))
        config = ImageFetchConfig(**{"enabled": True, "allow_hosts": ("*",), "timeout": 5.0, **fields})
        fetcher = ImageFetcher(config, resolver=resolver)
        fetchers.append(fetcher)
        return fetcher

    yield make
    for fetcher in fetchers:
        await fetcher.close()


def parse_networks(networks: tuple[str, ...]) -> tuple[Any, ...]:
    problems = Problems()
    config = parse_image_fetch(Section({"deny_networks": list(networks)}, "image_fetch", problems))
    assert problems.items == []
    return config.deny_networks


async def refused(fetcher: ImageFetcher, url: str) -> ImageFetchError:
    with pytest.raises(ImageFetchError) as info:
        await fetcher.fetch_data_url(url)
    return info.value


# ----------------------------------------------------------------------------- success


async def test_fetches_image_through_pinned_name(server: Any) -> None:
    """An allowed name resolving (by the injected resolver) to the server yields a data: URL."""
    problems = Problems()
    raw = {"enabled": True, "allow_hosts": ["images.test"], "deny_networks": []}
    config = parse_image_fetch(Section(raw, "image_fetch", problems))
    assert problems.items == []
    fetcher = ImageFetcher(config, resolver=resolver_for({"images.test": ["127.0.0.1"]}))
    try:
        assert await fetcher.fetch_data_url(f"http://images.test:{server.port}/cat.png") == DATA_URL
        assert await fetcher.fetch_data_url(f"http://IMAGES.test.:{server.port}/cat.png#frag") == DATA_URL
    finally:
        await fetcher.close()
    assert server.app[HOSTS][0] == f"images.test:{server.port}"


async def test_connects_to_the_vetted_address_only(server: Any, make_fetcher: Callable[..., ImageFetcher]) -> None:
    """DNS is asked once per hop; a rebinding answer afterwards is never used to connect."""
    calls: list[str] = []
    answers = iter([["127.0.0.1"], ["10.0.0.5"], ["10.0.0.5"]])

    async def rebinding(host: str, port: int) -> list[str]:
        calls.append(host)
        return next(answers)

    fetcher = make_fetcher(resolver=rebinding, deny=LOCAL_ONLY_OPEN)
    assert await fetcher.fetch_data_url(f"http://images.test:{server.port}/cat.png") == DATA_URL
    assert calls == ["images.test"]
    error = await refused(fetcher, f"http://images.test:{server.port}/cat.png")
    assert error.code == "image_address_denied"


async def test_follows_allowed_redirects(server: Any, make_fetcher: Callable[..., ImageFetcher]) -> None:
    """Relative and absolute redirects between allowed hosts are followed and re-vetted."""
    calls: list[str] = []
    mapping = {"images.test": ["127.0.0.1"], "cdn.test": ["127.0.0.1"]}
    fetcher = make_fetcher(resolver=resolver_for(mapping, calls), deny=LOCAL_ONLY_OPEN,
                           allow_hosts=("images.test", "*.test"))
    to = f"http://cdn.test:{server.port}/r?to=/cat.png"
    assert await fetcher.fetch_data_url(f"http://images.test:{server.port}/r?to={to}") == DATA_URL
    assert calls == ["images.test", "cdn.test", "cdn.test"]


async def test_glob_allowed_host(server: Any, make_fetcher: Callable[..., ImageFetcher]) -> None:
    """``*.cdn.example.com`` allows its subdomains; jpg is accepted as jpeg."""
    fetcher = make_fetcher(resolver=resolver_for({"a.cdn.example.com": ["127.0.0.1"]}), deny=(),
                           allow_hosts=("images.example.com", "*.cdn.example.com"))
    result = await fetcher.fetch_data_url(f"http://a.cdn.example.com:{server.port}/jpeg")
    assert result == "data:image/jpeg;base64," + base64.b64encode(JPEG).decode()


async def test_session_reopens_after_close(server: Any, make_fetcher: Callable[..., ImageFetcher]) -> None:
    """close() releases the session; a later fetch opens a new one."""
    fetcher = make_fetcher(deny=())
    url = f"http://127.0.0.1:{server.port}/cat.png"
    assert await fetcher.fetch_data_url(url) == DATA_URL
    await fetcher.close()
    await fetcher.close()
    assert await fetcher.fetch_data_url(url) == DATA_URL


# ----------------------------------------------------------------------------- SSRF refusals


@pytest.mark.parametrize(
    "host",
    ["127.0.0.1", "[::1]", "169.254.169.254", "10.0.0.5", "172.16.3.4", "192.168.1.1", "100.64.0.1",
     "0.0.0.0", "[::ffff:127.0.0.1]", "[::ffff:a9fe:a9fe]", "[fe80::1]", "[fd00::1]", "224.0.0.1", "[::]"],
)
async def test_refuses_private_literals(server: Any, make_fetcher: Callable[..., ImageFetcher], host: str) -> None:
    """Loopback, private, link-local (metadata), CGNAT and IPv6 equivalents are refused by default."""
    fetcher = make_fetcher()
    error = await refused(fetcher, f"http://{host}:{server.port}/cat.png")
    assert error.code == "image_address_denied"
    assert server.app[HOSTS] == []  # nothing reached the server


@pytest.mark.parametrize("answer", [["127.0.0.1"], ["93.184.216.34", "127.0.0.1"], ["::1"], ["2606:4700::1", "fd12::1"]])
async def test_refuses_name_resolving_to_private(server: Any, make_fetcher: Callable[..., ImageFetcher],
                                                 answer: list[str]) -> None:
    """A name is refused when ANY address it resolves to is denied."""
    fetcher = make_fetcher(resolver=resolver_for({"evil.test": answer}))
    error = await refused(fetcher, f"http://evil.test:{server.port}/cat.png")
    assert error.code == "image_address_denied"
    assert "127.0.0.1" not in error.message and "::1" not in error.message
    assert server.app[HOSTS] == []


@pytest.mark.parametrize(
    ("target", "code"),
    [
        ("http://10.0.0.5/cat.png", "image_address_denied"),
        ("http://169.254.169.254/latest/meta-data/", "image_address_denied"),
        ("http://internal.test/cat.png", "image_address_denied"),
        ("http://other.example/cat.png", "image_host_not_allowed"),
        ("file:///etc/passwd", "invalid_image_url"),
        ("gopher://images.test/", "invalid_image_url"),
    ],
)
async def test_refuses_bad_redirect_target(server: Any, make_fetcher: Callable[..., ImageFetcher], target: str,
                                           code: str) -> None:
    """Every redirect hop is vetted like the first URL."""
    mapping = {"images.test": ["127.0.0.1"], "internal.test": ["192.168.7.7"]}
    fetcher = make_fetcher(resolver=resolver_for(mapping), deny=LOCAL_ONLY_OPEN,
                           allow_hosts=("images.test", "internal.test", "10.0.0.5", "169.254.169.254"))
    error = await refused(fetcher, f"http://images.test:{server.port}/r?to={target}")
    assert error.code == code
    assert len(server.app[HOSTS]) == 1  # only the redirecting request


async def test_refuses_too_many_redirects(server: Any, make_fetcher: Callable[..., ImageFetcher]) -> None:
    """Redirects beyond max_redirects are refused; 0 means none."""
    fetcher = make_fetcher(deny=(), max_redirects=2)
    assert (await refused(fetcher, f"http://127.0.0.1:{server.port}/loop")).code == "image_too_many_redirects"
    strict = make_fetcher(deny=(), max_redirects=0)
    url = f"http://127.0.0.1:{server.port}/r?to=/cat.png"
    assert (await refused(strict, url)).code == "image_too_many_redirects"


@pytest.mark.parametrize("host", ["evil.example.net", "cdn.example.com", "images.example.com.evil.net"])
async def test_refuses_host_not_allowed(make_fetcher: Callable[..., ImageFetcher], host: str) -> None:
    """Hosts outside allow_hosts are refused before any DNS lookup."""
    calls: list[str] = []
    fetcher = make_fetcher(resolver=resolver_for({}, calls), allow_hosts=("images.example.com", "*.cdn.example.com"))
    assert (await refused(fetcher, f"https://{host}/cat.png")).code == "image_host_not_allowed"
    assert calls == []


@pytest.mark.parametrize(
    "url",
    ["ftp://images.test/cat.png", "file:///etc/passwd", "data:image/png;base64,AAAA", "http://u:p@images.test/x.png",
     "/relative/cat.png", "http://", "http://images.test:99999/x.png"],
)
async def test_refuses_invalid_urls(make_fetcher: Callable[..., ImageFetcher], url: str) -> None:
    """Only absolute http(s) URLs without credentials are fetched."""
    assert (await refused(make_fetcher(), url)).code == "invalid_image_url"


async def test_refuses_unresolvable_host(make_fetcher: Callable[..., ImageFetcher]) -> None:
    """A name that does not resolve is an image_resolve_failed error."""
    fetcher = make_fetcher(resolver=resolver_for({"empty.test": []}))
    assert (await refused(fetcher, "http://nowhere.test/cat.png")).code == "image_resolve_failed"
    assert (await refused(fetcher, "http://empty.test/cat.png")).code == "image_resolve_failed"


async def test_disabled_by_default() -> None:
    """With the default config nothing is fetched."""
    fetcher = ImageFetcher(ImageFetchConfig())
    assert (await refused(fetcher, "https://images.example.com/cat.png")).code == "image_fetch_disabled"
    await fetcher.close()


# ----------------------------------------------------------------------------- body checks


async def test_refuses_oversize_chunked_body(server: Any, make_fetcher: Callable[..., ImageFetcher]) -> None:
    """Size is enforced on bytes read, so a chunked body without Content-Length is cut off."""
    fetcher = make_fetcher(deny=(), max_bytes=4096)
    assert (await refused(fetcher, f"http://127.0.0.1:{server.port}/chunked")).code == "image_too_large"


async def test_refuses_oversize_content_length(server: Any, make_fetcher: Callable[..., ImageFetcher]) -> None:
    """A Content-Length above max_bytes is refused before reading."""
    fetcher = make_fetcher(deny=(), max_bytes=len(PNG) + 100)
    assert (await refused(fetcher, f"http://127.0.0.1:{server.port}/big")).code == "image_too_large"
    assert await fetcher.fetch_data_url(f"http://127.0.0.1:{server.port}/cat.png") == DATA_URL


@pytest.mark.parametrize(("path", "code"), [("/html", "unsupported_image_type"), ("/liar", "unsupported_image_type"),
                                            ("/missing.png", "image_fetch_failed")])
async def test_refuses_wrong_type_or_status(server: Any, make_fetcher: Callable[..., ImageFetcher], path: str,
                                            code: str) -> None:
    """A non-image content type, magic bytes that disagree with it, or a non-200 status are refused."""
    fetcher = make_fetcher(deny=())
    assert (await refused(fetcher, f"http://127.0.0.1:{server.port}{path}")).code == code


async def test_timeout(server: Any, make_fetcher: Callable[..., ImageFetcher]) -> None:
    """The whole fetch is bounded by timeout."""
    fetcher = make_fetcher(deny=(), timeout=0.2)
    error = await refused(fetcher, f"http://127.0.0.1:{server.port}/slow")
    assert error.code == "image_fetch_timeout" and "0.2s" in error.message


async def test_connection_refused(make_fetcher: Callable[..., ImageFetcher], unused_tcp_port: int) -> None:
    """A refused connection is an image_fetch_failed error, not an aiohttp exception."""
    fetcher = make_fetcher(deny=())
    assert (await refused(fetcher, f"http://127.0.0.1:{unused_tcp_port}/cat.png")).code == "image_fetch_failed"


# ----------------------------------------------------------------------------- config and address rules


@pytest.mark.parametrize(
    ("address", "denied"),
    [
        ("8.8.8.8", False), ("93.184.216.34", False), ("2606:4700::1111", False),
        ("127.0.0.1", True), ("127.255.255.254", True), ("::1", True), ("169.254.169.254", True),
        ("::ffff:10.1.2.3", True), ("64:ff9b::7f00:1", True), ("2002:c0a8:101::1", True),
        ("fe80::1%eth0", True), ("255.255.255.255", True), ("not-an-ip", True), ("::ffff:8.8.8.8", False),
    ],
)
def test_is_denied_default_networks(address: str, denied: bool) -> None:
    """Default deny list covers private, reserved and embedded-IPv4 forms, and allows public ones."""
    assert is_denied(address, DEFAULT_DENY_NETWORKS) is denied


def test_embedded_ipv4_checked_against_custom_list() -> None:
    """A mapped IPv6 form is caught even when only the IPv4 network is listed."""
    networks = parse_networks(("10.0.0.0/8",))
    assert is_denied("::ffff:10.0.0.5", networks) and is_denied("64:ff9b::a00:5", networks)
    assert not is_denied("::ffff:127.0.0.1", networks)


def parse(raw: object) -> tuple[ImageFetchConfig, list[tuple[str, str]]]:
    problems = Problems()
    return parse_image_fetch(Section(raw, "image_fetch", problems)), problems.items


def test_parse_defaults() -> None:
    """An absent section means disabled, 10 MiB, 10 s, 3 redirects and the default deny list."""
    config, problems = parse(None)
    assert problems == [] and config == ImageFetchConfig()
    assert (config.enabled, config.max_bytes, config.timeout, config.max_redirects) == (False, 10485760, 10.0, 3)
    assert config.deny_networks == DEFAULT_DENY_NETWORKS


def test_parse_full_section() -> None:
    """Every key is read; hosts are lower-cased and networks parsed."""
    config, problems = parse({"enabled": True, "allow_hosts": ["Images.Example.com.", "*.cdn.example.com"],
                              "max_bytes": 1000, "timeout": 2.5, "max_redirects": 0,
                              "deny_networks": ["10.0.0.0/8", "fd00::/8"]})
    assert problems == []
    assert config.allow_hosts == ("images.example.com", "*.cdn.example.com")
    assert (config.max_bytes, config.timeout, config.max_redirects) == (1000, 2.5, 0)
    assert [str(n) for n in config.deny_networks] == ["10.0.0.0/8", "fd00::/8"]


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ({"enabled": True}, [("image_fetch.allow_hosts", "is required when enabled (host names or globs)")]),
        ({"allow_hosts": ["a", ""]}, [("image_fetch.allow_hosts", "must not contain empty host names")]),
        ({"deny_networks": ["10.0.0.0/8", "ten"]},
         [("image_fetch.deny_networks[1]", "must be an IP network such as 10.0.0.0/8 or fc00::/7 (got 'ten')")]),
        ({"deny_networks": "10.0.0.0/8"}, [("image_fetch.deny_networks", "must be a list (got '10.0.0.0/8')")]),
        ({"timeout": 0}, [("image_fetch.timeout", "must be a number > 0 (got 0)")]),
        ({"max_bytes": "big"}, [("image_fetch.max_bytes", "must be an integer >= 1 (got 'big')")]),
        ({"max_redirects": -1}, [("image_fetch.max_redirects", "must be an integer >= 0 (got -1)")]),
        ({"enabled": "yes", "allow_hosts": ["a"]}, [("image_fetch.enabled", "must be true or false (got 'yes')")]),
        ({"alow_hosts": ["a"]}, [("image_fetch.alow_hosts", "unknown key")]),
    ],
)
def test_parse_errors(raw: object, expected: list[tuple[str, str]]) -> None:
    """Each mistake is reported at its dotted path."""
    assert parse(raw)[1] == expected
