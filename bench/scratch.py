"""A scratch database for the CRM benchmarks: created and migrated, made the product's database for
the run, filled by set-based SQL, dropped at the end even when the bench fails."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine

from bench.sync_ingest import server_url


@asynccontextmanager
async def scratch_database(name: str) -> AsyncIterator[tuple[str, str]]:
    """(url, database name) of a fresh, migrated database that `C360_DATABASE_URL` points at."""
    from infra.migrate import upgrade
    from infra.settings import get_settings
    from tests.conftest import create_database, drop_database

    url = await create_database(server_url(), name)
    try:
        await asyncio.to_thread(upgrade, url, "heads")
        os.environ["C360_DATABASE_URL"] = url
        get_settings.cache_clear()
        yield url, url.rsplit("/", 1)[1].split("?")[0]
    finally:
        await drop_database(url)


async def generate(url: str, statements: Sequence[str], params: dict[str, Any]) -> float:
    """Runs the data-generating statements in one transaction; the seconds they took."""
    engine = create_async_engine(url)
    started = time.perf_counter()
    try:
        async with engine.begin() as conn:
            for statement in statements:
                await conn.execute(sa.text(statement), params)
    finally:
        await engine.dispose()
    return round(time.perf_counter() - started, 1)
