"""A fast fake Ollama: a raw asyncio Protocol HTTP/1.1 keep-alive server (uvloop if present).

Serves Ollama's native API, just enough for a benchmark:
  POST /api/chat      stream true (default): 64 NDJSON token lines + a final done line, chunked;
                      stream false: one JSON object with Content-Length
  POST /api/generate  the same with Ollama's generate lines ("response" instead of "message")
  GET  /api/tags, /api/version, /api/ps, POST /api/show, GET|HEAD /
Benchmark control (not Ollama):
  POST /_bench/mode   {"token_delay_ms": N, "first_token_delay_ms": M, "tokens": T, "hold": H}
                      (M defaults to N, T to 64; H true: streams wait before their first token until
                      POST /_bench/release, so that many can be opened first and then run all at once)
  POST /_bench/release  the held streams go on
  GET  /_bench/stats  {"requests": n, "active_streams": n, "held": n, "unknown_paths": {...}}

Run: python -m bench.fake_ollama --port 11434 [--token-delay-ms 20] [--first-token-delay-ms 0]
The token delay is slept before every token (the first one waits first_token_delay_ms);
a long delay with first_token_delay_ms 0 holds many slow streams open cheaply.
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import signal

import orjson

TOKENS = 64
CREATED = "2024-06-01T12:00:00.000000000Z"
STATE = {"token_delay": 0.0, "first_delay": 0.0, "tokens": TOKENS, "requests": 0, "active_streams": 0, "held": 0}
HOLD: list[asyncio.Event] = []  # while set to [event]: streams wait for it before their first token
UNKNOWN: dict[str, int] = {}

_cache: dict[tuple[bytes, bool, int, bool], tuple[bytes, ...]] = {}


def _token(i: int) -> str:
    return ("Hello" if i == 0 else f" w{i}")


def _text(text: str, generate: bool) -> dict:
    return {"response": text} if generate else {"message": {"role": "assistant", "content": text}}


def _final(model: str, stream: bool, tokens: int, generate: bool = False) -> dict:
    out = {"model": model, "created_at": CREATED,
           **_text("".join(_token(i) for i in range(tokens)) if not stream else "", generate),
           "done_reason": "stop", "done": True,
           "total_duration": 1_234_567_890, "load_duration": 12_345_678,
           "prompt_eval_count": 12, "prompt_eval_duration": 23_456_789,
           "eval_count": tokens, "eval_duration": 1_100_000_000}
    return out


def _chunk(payload: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(payload), payload)


def _responses(model_raw: bytes, stream: bool, generate: bool = False) -> tuple[bytes, ...]:
    """(headers, chunk 1..N, final chunk + terminator) for streams; (whole response,) otherwise.

    N is the mode's ``tokens`` (64 by default); ``generate``: /api/generate's lines."""
    tokens = int(STATE["tokens"])
    key = (model_raw, stream, tokens, generate)
    got = _cache.get(key)
    if got is not None:
        return got
    model = model_raw.decode("utf-8", "replace")
    if not stream:
        body = orjson.dumps(_final(model, False, tokens, generate))
        got = (b"HTTP/1.1 200 OK\r\nContent-Type: application/json; charset=utf-8\r\n"
               b"Content-Length: %d\r\n\r\n%s" % (len(body), body),)
    else:
        head = b"HTTP/1.1 200 OK\r\nContent-Type: application/x-ndjson\r\nTransfer-Encoding: chunked\r\n\r\n"
        parts = [head]
        for i in range(tokens):
            line = orjson.dumps({"model": model, "created_at": CREATED, **_text(_token(i), generate),
                                 "done": False}) + b"\n"
            parts.append(_chunk(line))
        parts.append(_chunk(orjson.dumps(_final(model, True, tokens, generate)) + b"\n") + b"0\r\n\r\n")
        got = tuple(parts)
    if len(_cache) < 64:
        _cache[key] = got
    return got


def _simple(status: bytes, body: bytes, ctype: bytes = b"application/json; charset=utf-8") -> bytes:
    return b"HTTP/1.1 %s\r\nContent-Type: %s\r\nContent-Length: %d\r\n\r\n%s" % (status, ctype, len(body), body)


TAGS = _simple(b"200 OK", orjson.dumps({"models": [{
    "name": "bench-model:latest", "model": "bench-model:latest", "modified_at": CREATED, "size": 1000,
    "digest": "0" * 64, "details": {"format": "gguf", "family": "llama", "parameter_size": "1B",
                                    "quantization_level": "Q4_0"}}]}))
PS = _simple(b"200 OK", orjson.dumps({"models": [{
    "name": "bench-model:latest", "model": "bench-model:latest", "size": 1000, "digest": "0" * 64,
    "expires_at": "2099-01-01T00:00:00Z", "size_vram": 1000}]}))
VERSION = _simple(b"200 OK", b'{"version":"0.5.7"}')
SHOW = _simple(b"200 OK", orjson.dumps({"modelfile": "", "parameters": "", "template": "{{ .Prompt }}",
                                        "details": {"format": "gguf", "family": "llama"},
                                        "model_info": {"general.architecture": "llama", "llama.context_length": 8192},
                                        "capabilities": ["completion"]}))
ROOT = _simple(b"200 OK", b"Ollama is running", b"text/plain; charset=utf-8")
NOT_FOUND = _simple(b"404 Not Found", b'{"error":"not found"}')
BAD = _simple(b"400 Bad Request", b'{"error":"bad request"}')


class Http(asyncio.Protocol):
    __slots__ = ("transport", "buf", "task", "closed")

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buf = b""
        self.task: asyncio.Task | None = None
        self.closed = False

    def connection_made(self, transport) -> None:  # type: ignore[override]
        self.transport = transport

    def connection_lost(self, exc) -> None:
        self.closed = True
        if self.task is not None:
            self.task.cancel()

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if self.task is None:
            self._process()

    def _process(self) -> None:
        """Handle every complete request in the buffer; stop while a slow stream is running."""
        while not self.closed and self.task is None:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.buf[:end].decode("latin-1")
            lines = head.split("\r\n")
            try:
                method, target, _ = lines[0].split(" ", 2)
            except ValueError:
                self.transport.write(BAD)
                self.transport.close()
                return
            length = 0
            chunked = False
            close = False
            for line in lines[1:]:
                name, _, value = line.partition(":")
                name = name.strip().lower()
                if name == "content-length":
                    length = int(value)
                elif name == "transfer-encoding" and "chunked" in value.lower():
                    chunked = True
                elif name == "connection" and value.strip().lower() == "close":
                    close = True
            start = end + 4
            if chunked:
                body, used = _dechunk(self.buf, start)
                if body is None:
                    return
                self.buf = self.buf[used:]
            else:
                if len(self.buf) - start < length:
                    return
                body = self.buf[start:start + length]
                self.buf = self.buf[start + length:]
            self._handle(method, target.split("?", 1)[0], body)
            if close:
                if self.task is None:
                    self.transport.close()
                else:
                    self.task.add_done_callback(lambda _t: self.transport.close())
                self.closed = True
                return

    def _handle(self, method: str, path: str, body: bytes) -> None:
        STATE["requests"] += 1
        w = self.transport.write
        if path in ("/api/chat", "/api/generate") and method == "POST":
            try:
                req = orjson.loads(body)
                model = str(req.get("model", "bench-model")).encode()
                stream = req.get("stream", True) is not False
            except (orjson.JSONDecodeError, AttributeError):
                w(BAD)
                return
            parts = _responses(model, stream, path == "/api/generate")
            if not stream:
                w(parts[0])
            elif STATE["token_delay"] <= 0 and STATE["first_delay"] <= 0 and not HOLD:
                w(b"".join(parts))
            else:
                self.task = asyncio.ensure_future(self._slow_stream(parts))
        elif path == "/api/tags":
            w(TAGS)
        elif path == "/api/version":
            w(VERSION)
        elif path == "/api/ps":
            w(PS)
        elif path == "/api/show":
            w(SHOW)
        elif path == "/" and method in ("GET", "HEAD"):
            w(ROOT if method == "GET" else ROOT[:ROOT.index(b"\r\n\r\n") + 4])
        elif path == "/_bench/mode" and method == "POST":
            cfg = orjson.loads(body or b"{}")
            STATE["token_delay"] = float(cfg.get("token_delay_ms", 0)) / 1000
            STATE["first_delay"] = float(cfg.get("first_token_delay_ms", cfg.get("token_delay_ms", 0))) / 1000
            STATE["tokens"] = max(1, int(cfg.get("tokens", TOKENS)))
            if HOLD:
                HOLD.pop().set()
            if cfg.get("hold"):
                HOLD.append(asyncio.Event())
            w(_simple(b"200 OK", orjson.dumps({"ok": True})))
        elif path == "/_bench/release" and method == "POST":
            if HOLD:
                HOLD.pop().set()
            w(_simple(b"200 OK", orjson.dumps({"ok": True})))
        elif path == "/_bench/stats":
            w(_simple(b"200 OK", orjson.dumps({"requests": STATE["requests"],
                                               "active_streams": STATE["active_streams"],
                                               "held": STATE["held"],
                                               "unknown_paths": UNKNOWN})))
        else:
            UNKNOWN[f"{method} {path}"] = UNKNOWN.get(f"{method} {path}", 0) + 1
            w(NOT_FOUND)

    async def _slow_stream(self, parts: tuple[bytes, ...]) -> None:
        STATE["active_streams"] += 1
        try:
            w = self.transport.write
            held = HOLD[0] if HOLD else None
            if held is None:
                w(parts[0])
            else:  # a held stream closes its connection at the end: thousands of proxies' pooled
                # connections would otherwise stay open (and hold ephemeral ports) after the cell
                w(parts[0].replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n", 1))
                STATE["held"] += 1
                try:
                    await held.wait()
                finally:
                    STATE["held"] -= 1
            delay, first = STATE["token_delay"], STATE["first_delay"]
            tokens = len(parts) - 2
            for i, chunk in enumerate(parts[1:]):
                if i < tokens:  # the last part (done line) follows the last token immediately
                    d = first if i == 0 else delay
                    if d > 0:
                        await asyncio.sleep(d)
                if self.transport.is_closing():
                    return
                w(chunk)
            if held is not None:
                self.closed = True
                self.transport.close()
        finally:
            STATE["active_streams"] -= 1
            self.task = None
            if not self.closed and self.buf:
                asyncio.get_running_loop().call_soon(self._process)


def _dechunk(buf: bytes, pos: int) -> tuple[bytes | None, int]:
    out = []
    while True:
        eol = buf.find(b"\r\n", pos)
        if eol < 0:
            return None, 0
        size = int(buf[pos:eol].split(b";", 1)[0], 16)
        pos = eol + 2
        if size == 0:
            end = buf.find(b"\r\n", pos)  # no trailers expected
            if end < 0:
                return None, 0
            return b"".join(out), end + 2
        if len(buf) < pos + size + 2:
            return None, 0
        out.append(buf[pos:pos + size])
        pos += size + 2


def _raise_nofile() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


async def serve(host: str, port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(Http, host, port, backlog=4096, reuse_address=True)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(f"fake ollama listening on http://{host}:{port}", flush=True)
    async with server:
        await stop.wait()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=11434)
    ap.add_argument("--token-delay-ms", type=float, default=0.0)
    ap.add_argument("--first-token-delay-ms", type=float, default=None,
                    help="delay before the first token (default: the token delay)")
    args = ap.parse_args(argv)
    STATE["token_delay"] = args.token_delay_ms / 1000
    STATE["first_delay"] = (args.token_delay_ms if args.first_token_delay_ms is None
                            else args.first_token_delay_ms) / 1000
    _raise_nofile()
    try:
        import uvloop
        runner = uvloop.run
    except ImportError:  # pragma: no cover
        runner = asyncio.run
    runner(serve(args.host, args.port))


if __name__ == "__main__":
    main()
