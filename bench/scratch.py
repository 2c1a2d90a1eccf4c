"""A scratch database for the CRM benchmarks: created and migrated, made the product's database for
the run, filled by set-based SQL, dropped at the end even when the bench fails."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine

from bench.sync_ingest import free_port, server_url


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


def start_api(url: str) -> tuple[subprocess.Popen[bytes], int]:
    """`c360 serve` on the scratch database on a free port, as an operator starts it, with no rate limit
    (the bench is the only caller) and quiet logs: the server process and its port."""
    port = free_port()
    env = {**os.environ, "C360_DATABASE_URL": url, "C360_PORT": str(port), "C360_ENV": "development",
           "C360_API_RATE_PER_MINUTE": "1000000", "C360_LOG_LEVEL": "WARNING"}  # fmt: skip
    server = subprocess.Popen(
        [sys.executable, "-m", "api.cli", "serve", "--no-migrate", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return server, port
