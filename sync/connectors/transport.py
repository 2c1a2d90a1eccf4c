"""An httpx transport for the connectors: HTTP/1.1 over asyncio Protocols, parsed by httptools (llhttp, C).

Connectors keep `httpx.AsyncClient` as their API (URLs, params, forms, headers, timeouts, redirects,
decoding, exceptions); this replaces what sits under it, httpcore + h11 + anyio, which cost more CPU per
100-trade page than validating it (a Python state machine per request, several awaits and a socket
poll per reuse). Here a request is one `write` of head and body, and the response is parsed in C as its
bytes arrive, straight from `data_received`, with no task or stream layer between.

What it does:
- keep-alive pool per origin (at most `max_connections` open, `max_keepalive_connections` idle, idle
  ones dropped after `keepalive_expiry` seconds or as soon as the server closes them);
- Content-Length, chunked and read-to-close response bodies; chunked request bodies for streamed uploads;
- httpx's timeouts: connect, pool, write (while the socket is flow-controlled) and read (the longest
  wait for the next bytes of the response);
- failures raised as httpx exceptions (ConnectError, ConnectTimeout, ReadTimeout, WriteTimeout,
  PoolTimeout, ReadError, RemoteProtocolError), so callers' retry logic is unchanged;
- http and https (TLS by asyncio with httpx's default SSL context, built on the first https request).

The response body is read whole before the response is returned (httpx decodes Content-Encoding as
usual): right for API pages, not meant for downloads of unbounded size. HTTP/2 and proxies are not
here: httpx still routes proxy URLs (trust_env) to its own transports.
"""

from __future__ import annotations

import asyncio
import ssl
from collections import deque
from typing import Any, cast

import httptools
import httpx

_Origin = tuple[bytes, bytes, int]
_DEFAULT_PORTS = {b"http": 80, b"https": 443}


class _Connection(asyncio.Protocol):
    """One HTTP/1.1 connection; at most one request in flight."""

    def __init__(self, loop: asyncio.AbstractEventLoop, origin: _Origin) -> None:
        self.loop = loop
        self.origin = origin
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.closed = False
        self.idle_since = 0.0
        self.last_io = 0.0
        self.waiter: asyncio.Future[None] | None = None
        self.head_request = False
        self.write_ready: asyncio.Future[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._reset()

    def _reset(self) -> None:
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self.body: list[bytes] = []
        self.headers_done = False
        self.complete = False
        self.keep_alive = False
        self.received = False

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        waiter = self.waiter
        if waiter is None or waiter.done():
            # Bytes nobody asked for (a late answer to a cancelled request): the connection is unusable.
            self.close()
            return
        self.received = True
        self.last_io = self.loop.time()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(httpx.RemoteProtocolError("the server switched protocols"))
        except httptools.HttpParserError as exc:
            self._fail(httpx.RemoteProtocolError(f"malformed HTTP response: {exc}"))

    def eof_received(self) -> bool | None:
        return None  # close the transport; connection_lost decides what the EOF meant

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            if self.headers_done and not self.complete and self._body_until_close():
                # A body delimited by the end of the connection (no Content-Length, not chunked).
                self.complete = True
                waiter.set_result(None)
            elif not self.received:
                waiter.set_exception(
                    httpx.RemoteProtocolError("Server disconnected without sending a response.")
                )
            else:
                waiter.set_exception(httpx.ReadError(f"connection closed mid-response: {exc or 'EOF'}"))
        if self.write_ready is not None and not self.write_ready.done():
            self.write_ready.set_exception(httpx.WriteError(f"connection closed while writing: {exc}"))

    def pause_writing(self) -> None:
        if self.write_ready is None or self.write_ready.done():
            self.write_ready = self.loop.create_future()

    def resume_writing(self) -> None:
        if self.write_ready is not None and not self.write_ready.done():
            self.write_ready.set_result(None)

    # httptools callbacks

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        self.headers_done = True
        self.status = self.parser.get_status_code()
        if self.head_request and self.status >= 200:
            # The answer to HEAD has no body whatever its Content-Length says; the parser cannot be told,
            # so the response ends here and the connection is closed after it.
            self.complete = True
            waiter = self.waiter
            if waiter is not None and not waiter.done():
                waiter.set_result(None)

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        if self.status < 200:
            # An informational answer (100 Continue): the real response follows on the same connection.
            self._reset()
            return
        self.complete = True
        self.keep_alive = self.parser.should_keep_alive()
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # helpers

    def _body_until_close(self) -> bool:
        for name, value in self.headers:
            lname = name.lower()
            if lname == b"content-length" or (lname == b"transfer-encoding" and b"chunked" in value.lower()):
                return False
        return True

    def _fail(self, exc: Exception) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)
        self.close()

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    def _read_timed_out(self, timeout: float) -> None:
        waiter = self.waiter
        if waiter is None or waiter.done():
            return
        quiet = self.loop.time() - self.last_io
        if quiet >= timeout:
            self._fail(httpx.ReadTimeout(f"no response bytes for {timeout:g}s"))
        else:
            self._timer = self.loop.call_later(timeout - quiet, self._read_timed_out, timeout)

    async def _write(self, data: bytes, seconds: float | None) -> None:
        if self.closed or self.transport is None:
            raise httpx.WriteError("connection closed")
        self.transport.write(data)
        ready = self.write_ready
        if ready is not None and not ready.done():
            try:
                await asyncio.wait_for(asyncio.shield(ready), seconds)
            except TimeoutError:
                raise httpx.WriteTimeout(f"request not sent within {seconds:g}s") from None

    async def exchange(self, request: httpx.Request, timeouts: dict[str, Any]) -> httpx.Response:
        """Send `request` and read its whole response."""
        self._reset()
        self.head_request = request.method == "HEAD"
        self.waiter = waiter = self.loop.create_future()
        self.last_io = self.loop.time()
        head = _request_head(request)
        write_timeout = timeouts.get("write")
        stream = request.stream
        if isinstance(stream, httpx.ByteStream):
            await self._write(head + request.content, write_timeout)
        else:
            await self._write(head, write_timeout)
            chunked = "content-length" not in request.headers
            async for chunk in stream:  # type: ignore[union-attr]
                if chunk:
                    await self._write(
                        b"%x\r\n%s\r\n" % (len(chunk), chunk) if chunked else chunk, write_timeout
                    )
            if chunked:
                await self._write(b"0\r\n\r\n", write_timeout)
        read_timeout = timeouts.get("read")
        self._timer = None
        if read_timeout is not None:
            self._timer = self.loop.call_later(read_timeout, self._read_timed_out, read_timeout)
        try:
            await waiter
        finally:
            if self._timer is not None:
                self._timer.cancel()
            self.waiter = None
        body = self.body[0] if len(self.body) == 1 else b"".join(self.body)
        if request.method == "HEAD" or not self.keep_alive:
            self.close()
        return httpx.Response(
            self.status,
            headers=self.headers,
            stream=httpx.ByteStream(body),
            extensions={"http_version": b"HTTP/1.1"},
        )


def _request_head(request: httpx.Request) -> bytes:
    url = request.url
    lines = [b"%s %s HTTP/1.1\r\n" % (request.method.encode("ascii"), url.raw_path)]
    lines.extend(b"%s: %s\r\n" % (name, value) for name, value in request.headers.raw)
    lines.append(b"\r\n")
    return b"".join(lines)


class HttptoolsTransport(httpx.AsyncBaseTransport):
    """See the module docstring. `limits` as httpx's; `verify` an SSLContext, True or False (https only)."""

    def __init__(self, limits: httpx.Limits | None = None, verify: ssl.SSLContext | bool = True) -> None:
        limits = limits or httpx.Limits()
        # None in httpx.Limits means no limit.
        self._max_connections = limits.max_connections if limits.max_connections is not None else 2**31
        self._max_idle = limits.max_keepalive_connections
        self._keepalive_expiry = limits.keepalive_expiry
        self._verify = verify
        self._ssl_context: ssl.SSLContext | None = None
        self._idle: deque[_Connection] = deque()
        self._open = 0
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._closed = False

    def _ssl(self) -> ssl.SSLContext:
        if self._ssl_context is None:
            verify = self._verify
            self._ssl_context = (
                verify if isinstance(verify, ssl.SSLContext) else httpx.create_ssl_context(verify)
            )
        return self._ssl_context

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if self._closed:
            raise RuntimeError("the transport is closed")
        url = request.url
        scheme = url.raw_scheme
        if scheme not in _DEFAULT_PORTS:
            raise httpx.UnsupportedProtocol(f"unsupported URL scheme {url.scheme!r}")
        origin = (scheme, url.raw_host, url.port or _DEFAULT_PORTS[scheme])
        timeouts: dict[str, Any] = request.extensions.get("timeout", {})
        conn = await self._acquire(origin, timeouts)
        try:
            response = await conn.exchange(request, timeouts)
        except BaseException:
            conn.close()
            self._release(conn)
            raise
        self._release(conn)
        return response

    async def _acquire(self, origin: _Origin, timeouts: dict[str, Any]) -> _Connection:
        loop = asyncio.get_running_loop()
        deadline = None
        while True:
            conn = self._take_idle(origin, loop)
            if conn is not None:
                return conn
            if self._open >= self._max_connections and self._idle:
                # Full of idle connections to other origins: make room.
                self._idle.popleft().close()
                self._open -= 1
            if self._open < self._max_connections:
                self._open += 1
                try:
                    return await self._connect(origin, loop, timeouts.get("connect"))
                except BaseException:
                    self._open -= 1
                    self._wake()
                    raise
            pool_timeout = timeouts.get("pool")
            if deadline is None and pool_timeout is not None:
                deadline = loop.time() + pool_timeout
            waiter = loop.create_future()
            self._waiters.append(waiter)
            try:
                await asyncio.wait_for(waiter, None if deadline is None else max(0.0, deadline - loop.time()))
            except TimeoutError:
                raise httpx.PoolTimeout("no connection free within the pool timeout") from None
            except BaseException:
                if waiter.done() and not waiter.cancelled():
                    self._wake()  # woken, then cancelled: pass the free slot on
                raise
            finally:
                if waiter in self._waiters:
                    self._waiters.remove(waiter)

    def _take_idle(self, origin: _Origin, loop: asyncio.AbstractEventLoop) -> _Connection | None:
        idle = self._idle
        if not idle:
            return None
        now = loop.time()
        found = None
        for conn in list(idle):
            expired = self._keepalive_expiry is not None and now - conn.idle_since > self._keepalive_expiry
            if conn.closed or expired or conn.loop is not loop:
                idle.remove(conn)
                conn.close()
                self._open -= 1
            elif found is None and conn.origin == origin:
                found = conn
        if found is not None:
            idle.remove(found)
        return found

    async def _connect(
        self, origin: _Origin, loop: asyncio.AbstractEventLoop, seconds: float | None
    ) -> _Connection:
        scheme, host, port = origin
        hostname = host.decode("ascii")
        tls = self._ssl() if scheme == b"https" else None
        try:
            async with asyncio.timeout(seconds):
                _, conn = await loop.create_connection(
                    lambda: _Connection(loop, origin),
                    hostname,
                    port,
                    ssl=tls,
                    server_hostname=hostname if tls is not None else None,
                )
        except TimeoutError:
            raise httpx.ConnectTimeout(f"no connection to {hostname}:{port} within {seconds:g}s") from None
        except (OSError, ssl.SSLError) as exc:
            raise httpx.ConnectError(f"cannot connect to {hostname}:{port}: {exc}") from exc
        return conn

    def _release(self, conn: _Connection) -> None:
        full = self._max_idle is not None and len(self._idle) >= self._max_idle
        if conn.closed or self._closed or full:
            conn.close()
            self._open -= 1
        else:
            conn.idle_since = conn.loop.time()
            self._idle.append(conn)
        self._wake()

    def _wake(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    async def aclose(self) -> None:
        self._closed = True
        while self._idle:
            self._idle.popleft().close()
            self._open -= 1
