"""The connectors' HTTP transport (sync/connectors/transport.py) over real loopback sockets: keep-alive reuse,
Content-Length, chunked and read-to-close bodies, servers closing connections, timeouts, gzip, uploads, and
429/500/dropped connections/timeouts/4xx through ChannelClient's retry logic.

The server is a scripted HTTP/1.1 server on asyncio streams, so each test can make it misbehave on purpose
(the simulator's own fault injection is exercised through the connectors in test_resilience.py)."""

from __future__ import annotations

import asyncio
import gzip
import ssl
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from sync.connectors.base import ChannelClient, PermanentError, SyncError, form_urlencoded
from sync.connectors.transport import HttptoolsTransport
from tests.support import free_port


class ScriptedServer:
    """Answers by path; counts connections and requests per path."""

    def __init__(self) -> None:
        self.connections = 0
        self.hits: Counter[str] = Counter()
        self.bodies: list[bytes] = []
        self.stalled = asyncio.Event()
        self._writers: list[asyncio.StreamWriter] = []

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self._writers.append(writer)
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                request_line, *header_lines = head.decode("latin-1").split("\r\n")
                method, target, _ = request_line.split(" ")
                headers = {
                    k.strip().lower(): v.strip() for k, v in (h.split(":", 1) for h in header_lines if h)
                }
                body = await self._read_body(reader, headers)
                self.bodies.append(body)
                path = target.split("?")[0]
                self.hits[path] += 1
                keep = await self.answer(path, method, target, headers, body, writer)
                if not keep:
                    writer.close()
                    return
        finally:
            writer.close()

    @staticmethod
    async def _read_body(reader: asyncio.StreamReader, headers: dict[str, str]) -> bytes:
        if "content-length" in headers:
            return await reader.readexactly(int(headers["content-length"]))
        if headers.get("transfer-encoding") == "chunked":
            parts: list[bytes] = []
            while True:
                size = int((await reader.readuntil(b"\r\n")).strip(), 16)
                chunk = await reader.readexactly(size + 2)
                if size == 0:
                    return b"".join(parts)
                parts.append(chunk[:-2])
        return b""

    async def answer(
        self,
        path: str,
        method: str,
        target: str,
        headers: dict[str, str],
        body: bytes,
        w: asyncio.StreamWriter,
    ) -> bool:
        def send(status: str, payload: bytes, extra: str = "") -> None:
            head = f"HTTP/1.1 {status}\r\nContent-Length: {len(payload)}\r\n{extra}\r\n".encode()
            w.write(head if method == "HEAD" else head + payload)  # a HEAD answer has no body

        hit = self.hits[path]
        if path == "/len":
            send("200 OK", b"hello")
        elif path == "/chunked":
            w.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
            for part in (b"he", b"llo ", b"chunked", b" world"):
                w.write(b"%x\r\n%s\r\n" % (len(part), part))
                await w.drain()
                await asyncio.sleep(0.01)
            w.write(b"0\r\n\r\n")
        elif path == "/big":
            send("200 OK", b"x" * 1_000_000 + b"end")
        elif path == "/close":
            send("200 OK", b"bye", "Connection: close\r\n")
            await w.drain()
            return False
        elif path == "/eof-body":
            w.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil the end")
            await w.drain()
            return False
        elif path == "/idle-close":
            send("200 OK", b"then idle")
            await w.drain()
            await asyncio.sleep(0.05)
            return False  # the server drops the idle keep-alive connection
        elif path == "/drop":
            return False
        elif path == "/drop-once" and hit == 1:
            return False
        elif path == "/stall" or (path == "/stall-once" and hit == 1):
            self.stalled.set()
            await asyncio.sleep(3600)
        elif path == "/slow-body":
            w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial")
            await w.drain()
            await asyncio.sleep(3600)
        elif path == "/gzip":
            send("200 OK", gzip.compress(b'{"zipped": true}'), "Content-Encoding: gzip\r\n")
        elif path == "/echo":
            echo = {"method": method, "target": target, "body": body.decode(), "headers": headers}
            send("200 OK", orjson.dumps(echo), "Content-Type: application/json\r\n")
        elif path == "/flaky-500" and hit <= 2:
            send("500 Internal Server Error", b"boom")
        elif path == "/flaky-429" and hit <= 1:
            send("429 Too Many Requests", b'{"error": "too_many_requests"}', "Retry-After: 0\r\n")
        elif path == "/bad-request":
            send("400 Bad Request", b'{"error": "bad"}')
        elif path == "/garbage":
            w.write(b"NOT HTTP AT ALL\r\n\r\n")
        else:
            send("200 OK", b'{"ok": true}', "Content-Type: application/json\r\n")
        await w.drain()
        return True

    def close_all(self) -> None:
        for w in self._writers:
            w.close()


@asynccontextmanager
async def scripted(tls: ssl.SSLContext | None = None) -> AsyncIterator[tuple[ScriptedServer, str]]:
    state = ScriptedServer()
    server = await asyncio.start_server(state.handle, "127.0.0.1", 0, ssl=tls)
    port = server.sockets[0].getsockname()[1]
    try:
        yield state, f"{'https' if tls else 'http'}://127.0.0.1:{port}"
    finally:
        state.close_all()
        server.close()


def client(base: str, timeout: float = 5.0, **limits: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=base, timeout=timeout, transport=HttptoolsTransport(limits=httpx.Limits(**limits))
    )


async def test_keep_alive_connections_are_reused_and_bounded():
    async with scripted() as (server, base), client(base, max_connections=2) as http:
        for _ in range(5):
            reply = await http.get("/len")
            assert reply.status_code == 200 and reply.content == b"hello"
            assert reply.http_version == "HTTP/1.1" and reply.headers["content-length"] == "5"
        assert server.connections == 1
        replies = await asyncio.gather(*(http.get("/chunked") for _ in range(6)))
        assert all(r.text == "hello chunked world" for r in replies)
        assert server.connections == 2


async def test_chunked_large_and_read_to_close_bodies():
    async with scripted() as (server, base), client(base) as http:
        assert (await http.get("/chunked")).text == "hello chunked world"
        big = await http.get("/big")
        assert len(big.content) == 1_000_003 and big.content.endswith(b"xend")
        assert (await http.get("/eof-body")).text == "until the end"
        assert (await http.get("/gzip")).json() == {"zipped": True}


async def test_a_connection_the_server_closes_is_not_reused():
    async with scripted() as (server, base), client(base) as http:
        assert (await http.get("/close")).text == "bye"
        assert (await http.get("/len")).text == "hello"
        assert server.connections == 2
        assert (await http.get("/idle-close")).text == "then idle"
        await asyncio.sleep(0.2)  # the server has dropped that idle connection by now
        assert (await http.get("/len")).text == "hello"
        assert server.connections == 3


async def test_idle_connections_expire():
    async with scripted() as (server, base), client(base, keepalive_expiry=0.05) as http:
        await http.get("/len")
        await asyncio.sleep(0.15)
        await http.get("/len")
        assert server.connections == 2


async def test_failures_are_httpx_transport_errors():
    async with scripted() as (server, base), client(base, timeout=0.3) as http:
        with pytest.raises(httpx.RemoteProtocolError, match="without sending a response"):
            await http.get("/drop")
        with pytest.raises(httpx.RemoteProtocolError, match="malformed"):
            await http.get("/garbage")
        with pytest.raises(httpx.ReadTimeout):
            await http.get("/stall")
        with pytest.raises(httpx.ReadTimeout):
            await http.get("/slow-body")
        # Nothing of a failed exchange is left behind: the next request gets a clean connection.
        assert (await http.get("/len")).text == "hello"
    async with client(f"http://127.0.0.1:{free_port()}") as http:
        with pytest.raises(httpx.ConnectError):
            await http.get("/len")


async def test_a_full_pool_times_out_and_a_cancelled_request_frees_its_slot():
    async with scripted() as (server, base), client(base, max_connections=1) as http:
        stuck = asyncio.ensure_future(http.get("/stall"))
        await server.stalled.wait()
        with pytest.raises(httpx.PoolTimeout):
            await http.get("/len", timeout=httpx.Timeout(5.0, pool=0.1))
        stuck.cancel()
        with pytest.raises(asyncio.CancelledError):
            await stuck
        assert (await http.get("/len")).text == "hello"
        assert server.connections == 2


async def test_request_bodies_queries_and_headers_are_sent():
    async with scripted() as (server, base), client(base) as http:
        reply = await http.post(
            "/echo", params={"q": "一 二"}, data={"a": "1", "b": "两"}, headers={"X-Test": "y"}
        )
        echo = reply.json()
        assert echo["method"] == "POST" and echo["target"] == "/echo?q=%E4%B8%80+%E4%BA%8C"
        assert echo["body"] == "a=1&b=%E4%B8%A4"
        assert echo["headers"]["x-test"] == "y" and echo["headers"]["host"] == base.removeprefix("http://")

        async def stream() -> AsyncIterator[bytes]:
            for part in (b"streamed ", b"upload"):
                yield part

        echo = (await http.post("/echo", content=stream())).json()
        assert echo["body"] == "streamed upload" and echo["headers"]["transfer-encoding"] == "chunked"
        assert (await http.head("/len")).status_code == 200
        assert (await http.get("/len")).text == "hello"


def self_signed(tmp_path: Path) -> Path:
    """A certificate for 127.0.0.1 and its key, in one PEM file."""
    crypto = pytest.importorskip("cryptography")  # installed with prefect
    del crypto
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(IPv4Address("127.0.0.1"))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    pem = tmp_path / "cert.pem"
    pem.write_bytes(
        cert.public_bytes(serialization.Encoding.PEM)
        + key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return pem


async def test_https_verifies_the_certificate_and_keeps_connections_alive(tmp_path):
    pem = self_signed(tmp_path)
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(pem)
    async with scripted(server_tls) as (server, base):
        trusting = ssl.create_default_context(cafile=str(pem))
        async with httpx.AsyncClient(base_url=base, transport=HttptoolsTransport(verify=trusting)) as http:
            for _ in range(3):
                assert (await http.get("/chunked")).text == "hello chunked world"
            assert server.connections == 1
        async with httpx.AsyncClient(base_url=base, transport=HttptoolsTransport()) as http:
            with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
                await http.get("/len")


@pytest.fixture
def channel_client(settings_for: Callable[..., Any]) -> Callable[[str], ChannelClient]:
    def make(base: str) -> ChannelClient:
        return ChannelClient("test", base, settings_for(base, request_timeout_seconds=0.3, max_retries=3))

    return make


@pytest.mark.parametrize(
    ("path", "cause"),
    [
        ("/flaky-500", "http 500"),
        ("/flaky-429", "429"),
        ("/drop-once", "transport"),
        ("/stall-once", "timeout"),
    ],
)
async def test_channel_client_retries_transient_failures(path, cause, channel_client):
    async with scripted() as (server, base):
        async with channel_client(base) as http:
            body = await http.request_json("GET", path)
            assert body == {"ok": True}
            assert http.stats.causes == {cause: server.hits[path] - 1}
            assert http.stats.retries >= 1


async def test_channel_client_does_not_retry_4xx_and_gives_up_on_persistent_failures(channel_client):
    async with scripted() as (server, base):
        async with channel_client(base) as http:
            with pytest.raises(PermanentError, match="HTTP 400"):
                await http.request_json("GET", "/bad-request")
            assert server.hits["/bad-request"] == 1 and http.stats.retries == 0
            with pytest.raises(SyncError, match="after 3 retries"):
                await http.request_json("GET", "/drop")
            assert server.hits["/drop"] == 4


FORMS: list[dict[str, Any]] = [
    {
        "method": "taobao.trades.sold.increment.get",
        "timestamp": "2026-11-23 01:00:00",
        "fields": "tid,status",
    },
    {"a": "两 三", "b": "x&y=z+/?%#", "c": True, "d": False, "e": None, "f": 3, "g": 1.5, "h": ""},
    {"list": ["p", "q r"], "tuple": ("t",), "k k": "~-._*'()!", "ws": "\n\t", "emoji": "😀"},
    {},
]


@pytest.mark.parametrize("form", FORMS)
async def test_channel_client_sends_forms_and_paths_as_httpx_would(form, channel_client):
    assert form_urlencoded(form) == httpx.Request("POST", "http://h/", data=form).content
    async with scripted() as (server, base):
        async with channel_client(base) as http:
            for _ in range(2):  # the second time from the cached URL
                echo = await http.request_json("POST", "/echo", data=form)
                assert echo["body"].encode() == httpx.Request("POST", "http://h/", data=form).content
                assert echo["headers"]["content-type"] == "application/x-www-form-urlencoded"
                assert echo["target"] == "/echo"
        async with channel_client(base) as http:
            echo = await http.request_json("GET", "/echo", params={"q": "一"}, headers={"X-A": "b"})
            assert echo["target"] == "/echo?q=%E4%B8%80" and echo["headers"]["x-a"] == "b"
            signed = await http.request_json("POST", "/echo", sign=lambda: {"sign": "AB CD"})
            assert signed["body"] == "sign=AB+CD" and signed["target"] == "/echo"
