"""Fixtures for sync tests: the channel simulator on loopback (real uvicorn, real HTTP), sync settings
pointed at it with short backoffs, and helpers to read back what landed."""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from sync.canonical import Batch
from sync.config import SyncSettings
from sync.connectors.base import Connector
from sync.connectors.registry import make_connector
from sync.prefect_setup import ensure_database
from sync.runner import run_connector
from sync.simulator import CST, SimulatorConfig, create_simulator_app
from tests.conftest import create_database, drop_database
from tests.support import live_server

# Small enough for fast tests, large enough for several pages on every feed.
SMALL = SimulatorConfig(seed=11, people=240, orders=1600, days=12, start=datetime(2026, 9, 1, tzinfo=CST))
SINCE = datetime(2026, 8, 31, tzinfo=CST)


@contextmanager
def simulator(config: SimulatorConfig = SMALL) -> Iterator[str]:
    with live_server(create_simulator_app(config)) as base:
        yield base


@pytest.fixture
def sim() -> Iterator[str]:
    """A fresh simulator (its clock and faults are per test) on a free loopback port."""
    with simulator() as base:
        yield base


@pytest.fixture
def settings_for(tmp_path: Path) -> Callable[..., SyncSettings]:
    """SyncSettings pointed at a simulator, with backoffs short enough for tests."""

    def make(base_url: str, **overrides: Any) -> SyncSettings:
        base = SyncSettings().pointed_at_simulator(base_url)
        data = base.model_dump()
        data.update(
            backoff_base_seconds=0.01,
            backoff_max_seconds=0.2,
            request_timeout_seconds=5.0,
            batch_size=300,
            pos_drop_dir=tmp_path / "pos_drop",
            # The first run reaches back to just before the simulated history starts.
            initial_lookback_days=(datetime.now(CST) - SINCE).days + 1,
        )
        data.update(overrides)
        return SyncSettings.model_validate(data)

    return make


async def sim_post(base: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=base, timeout=30) as client:
        response = await client.post(path, json=body or {})
        response.raise_for_status()
        result: dict[str, Any] = response.json()
        return result


async def sim_get(base: str, path: str) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=base, timeout=30) as client:
        response = await client.get(path)
        response.raise_for_status()
        result: dict[str, Any] = response.json()
        return result


async def sim_truth(base: str) -> dict[str, str]:
    """The simulator's ground truth at its current clock: record id (`channel:external id`) -> true person."""
    async with httpx.AsyncClient(base_url=base, timeout=30) as client:
        response = await client.get("/_sim/truth")
        response.raise_for_status()
    return {r["record_id"]: r["true_person_id"] for r in csv.DictReader(io.StringIO(response.text))}


async def run(
    engine: AsyncEngine, settings: SyncSettings, channel: str, since: datetime | None = None, **kw: Any
) -> dict[str, Any]:
    """Run every stream of `channel` once; returns per-stream counts and the connector's request stats."""
    connector: Connector = make_connector(channel, settings)
    try:
        result = await run_connector(engine, connector, since=since, **kw)
    finally:
        await connector.aclose()
    result["_requests"] = connector.client.stats
    return result


async def snapshot(engine: AsyncEngine) -> dict[str, list[tuple[Any, ...]]]:
    """Every landed row, without surrogate ids and landing times: what 'the same data' means."""
    queries = {
        "orders": "select o.channel_code, o.external_id, si.external_id, o.status, o.source_status, o.total_fen, "
        "o.paid_fen, o.discount_fen, o.shipping_fen, o.placed_at, o.paid_at, o.source_updated_at, st.code, "
        "o.cashier_code, o.tenders::text "
        "from orders o left join source_identity si on si.id = o.source_identity_id "
        "left join store st on st.id = o.store_id order by 1, 2",
        "order_line": "select o.channel_code, o.external_id, l.line_no, l.sku, l.quantity, l.unit_price_fen, "
        "l.discount_fen, l.amount_fen, l.product_id is not null, l.external_id "
        "from order_line l join orders o on o.id = l.order_id order by 1, 2, 3",
        "refund": "select r.channel_code, r.external_id, o.external_id, r.line_no, r.amount_fen, r.status, "
        "r.source_updated_at from refund r left join orders o on o.id = r.order_id order by 1, 2",
        "source_identity": "select channel_code, external_id, raw, name, phone, phone_masked, email, member_no, "
        "wechat_unionid, wechat_openid, province, city, source_updated_at from source_identity order by 1, 2",
        "interaction": "select i.channel_code, i.external_id, si.external_id, i.type, i.occurred_at, i.summary "
        "from interaction i left join source_identity si on si.id = i.source_identity_id order by 1, 2",
        "consent": "select si.channel_code, si.external_id, c.purpose, c.status, c.recorded_at from consent c "
        "join source_identity si on si.id = c.source_identity_id order by 1, 2, 3, 5, 4",
        "quarantine": "select channel_code, entity, external_id, payload_hash, reason from quarantine order by 1, 4",
    }
    out: dict[str, list[tuple[Any, ...]]] = {}
    async with engine.connect() as conn:
        for name, query in queries.items():
            out[name] = [tuple(r) for r in (await conn.execute(sa.text(query))).all()]
    return out


async def count(engine: AsyncEngine, sql: str, **params: Any) -> int:
    async with engine.connect() as conn:
        return int((await conn.execute(sa.text(sql), params)).scalar_one())


async def truncate_landed(engine: AsyncEngine) -> None:
    from sqlmodel import SQLModel

    tables = ", ".join(f'"{t.name}"' for t in SQLModel.metadata.sorted_tables)
    async with engine.begin() as connection:
        await connection.execute(sa.text(f"truncate {tables} restart identity cascade"))


@pytest.fixture
async def clean_db(committed_db: AsyncEngine) -> AsyncIterator[AsyncEngine]:
    """committed_db, also emptied before the test (a previous test may have left rows behind)."""
    await truncate_landed(committed_db)
    yield committed_db


def list_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file()) if folder.is_dir() else []


def assert_same_orders(fast: Batch, slow: Batch) -> None:
    """A connector's fast path gave the slow path's orders: nothing quarantined on either side, equal records,
    and times that are real datetimes with the same offsets (equality alone would accept other zones)."""
    assert slow.quarantined == [] and fast.quarantined == []
    assert fast.orders == slow.orders
    for f, s in zip(fast.orders, slow.orders, strict=True):
        for name in ("placed_at", "paid_at", "source_updated_at"):
            a, b = getattr(f, name), getattr(s, name)
            assert (a is None) == (b is None)
            if a is not None:
                assert type(a) is datetime and a.utcoffset() == b.utcoffset()


@asynccontextmanager
async def prefect_server(database_url: str) -> AsyncIterator[str]:
    """Like prefect_test_harness, but on `database_url`: PostgreSQL avoids 'database is locked' under
    concurrent flows."""
    from prefect.server.api.server import SubprocessASGIServer
    from prefect.settings import PREFECT_API_URL, PREFECT_SERVER_DATABASE_CONNECTION_URL, temporary_settings

    with temporary_settings(updates={PREFECT_SERVER_DATABASE_CONNECTION_URL: database_url}):
        server = SubprocessASGIServer()
        server.start(timeout=120)
        try:
            with temporary_settings(updates={PREFECT_API_URL: server.api_url}):
                yield server.api_url
        finally:
            from prefect.logging.handlers import APILogHandler

            await APILogHandler.aflush()  # send the run's logs before the server goes away
            server.stop()


@pytest.fixture
async def prefect_db(database_url: str, tmp_path: Path) -> AsyncIterator[str]:
    """Prefect's own database, chosen as `sync.prefect_setup` chooses it for the product: on the test server
    when it has pg_trgm (Prefect's schema needs it), else a SQLite file. The embedded server, which tests use
    without DATABASE_URL, has no pg_trgm."""
    url = await create_database(database_url, "c360_prefect_test")
    try:
        if await ensure_database(url):
            yield make_url(url).set(drivername="postgresql+asyncpg").render_as_string(hide_password=False)
        else:
            yield f"sqlite+aiosqlite:///{tmp_path / 'prefect.db'}"
    finally:
        await drop_database(url)
