"""A bare aiohttp pass-through proxy: the baseline the gateway is compared with.

Forwards method, path, query and body to the upstream with one pooled ClientSession and streams the
answer back unchanged: no translation, no auth, no logging, no metrics.
Run: python -m bench.passthrough --upstream http://127.0.0.1:11434 --port 8081
"""

from __future__ import annotations

import argparse
import asyncio

from aiohttp import ClientSession, ClientTimeout, TCPConnector, web

HOP = {"host", "content-length", "connection", "transfer-encoding", "keep-alive"}
SESSION = web.AppKey("session", ClientSession)


async def forward(request: web.Request) -> web.StreamResponse:
    session = request.app[SESSION]
    headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP}
    body = await request.read()
    async with session.request(request.method, request.rel_url, data=body, headers=headers) as up:
        ctype = up.headers.get("Content-Type", "application/octet-stream")
        if up.headers.get("Transfer-Encoding", "").lower() != "chunked":
            return web.Response(status=up.status, body=await up.read(), headers={"Content-Type": ctype})
        resp = web.StreamResponse(status=up.status, headers={"Content-Type": ctype})
        await resp.prepare(request)
        async for chunk in up.content.iter_any():
            await resp.write(chunk)
        await resp.write_eof()
        return resp


def make_app(upstream: str) -> web.Application:
    app = web.Application()

    async def session_ctx(app: web.Application):
        app[SESSION] = ClientSession(base_url=upstream, connector=TCPConnector(limit=0),
                                     timeout=ClientTimeout(total=None), auto_decompress=False)
        yield
        await app[SESSION].close()

    app.cleanup_ctx.append(session_ctx)
    app.router.add_route("*", "/{tail:.*}", forward)
    return app


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--upstream", required=True)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8081)
    args = ap.parse_args()
    try:
        import uvloop
        loop = uvloop.new_event_loop()
    except ImportError:  # pragma: no cover
        loop = asyncio.new_event_loop()
    web.run_app(make_app(args.upstream), host=args.host, port=args.port, access_log=None,
                print=None, loop=loop, backlog=4096, handler_cancellation=True)


if __name__ == "__main__":
    main()
