"""Test harness: one fresh database per test session, migrated once; each test runs in a rolled-back
transaction. Tests use DATABASE_URL when it is set, the embedded server otherwise.

With C360_TEST_TEMPLATE_DB=NAME (`tools/mutation.py --template-db` sets it) a session copies the database
NAME, migrated by the first session that finds it missing and kept on the server (`create database ...
template`), instead of migrating its own. Whoever sets it drops NAME afterwards."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
# Before anything imports prefect: keep its home inside the project and its analytics off.
os.environ.setdefault("PREFECT_HOME", str(ROOT / ".prefect"))
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
os.environ["C360_ENV"] = "test"

import asyncpg  # noqa: E402
import pytest  # noqa: E402
import sqlalchemy as sa  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine  # noqa: E402
from sqlalchemy.pool import NullPool  # noqa: E402
from sqlmodel import SQLModel  # noqa: E402
from sqlmodel.ext.asyncio.session import AsyncSession  # noqa: E402

import infra.models  # noqa: E402, F401 - every table on SQLModel.metadata (committed_db truncates them all)
from infra import db as infra_db  # noqa: E402
from infra.migrate import upgrade  # noqa: E402
from infra.settings import get_settings, to_async_url  # noqa: E402


def server_url() -> str:
    """The server the tests run on: DATABASE_URL if set, else the project's embedded PostgreSQL."""
    if os.environ.get("DATABASE_URL"):
        return to_async_url(os.environ["DATABASE_URL"])
    from infra.embedded import embedded_url

    return embedded_url(get_settings().pgdata)


def _dsn(url: str) -> str:
    """asyncpg's own DSN form of a SQLAlchemy URL (unix-socket query args included)."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


async def create_database(base_url: str, prefix: str) -> str:
    """Create a uniquely named database on the test server and return its URL."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(_dsn(str(make_url(base_url).set(database="postgres"))))
    try:
        await admin.execute(f'create database "{name}"')
    finally:
        await admin.close()
    return make_url(base_url).set(database=name).render_as_string(hide_password=False)


async def drop_database(url: str) -> None:
    name = make_url(url).database
    admin = await asyncpg.connect(_dsn(str(make_url(url).set(database="postgres"))))
    try:
        await admin.execute(f'drop database if exists "{name}" with (force)')
    finally:
        await admin.close()


# Any fixed key: serializes the sessions that may all find the template missing at once.
TEMPLATE_LOCK = 360_1801


async def create_from_template(base_url: str, prefix: str, template: str) -> str:
    """A new database copied from the migrated template `template`, made first if it is not there yet."""
    admin = await asyncpg.connect(_dsn(str(make_url(base_url).set(database="postgres"))))
    try:
        await admin.execute("select pg_advisory_lock($1)", TEMPLATE_LOCK)
        try:
            if not await admin.fetchval("select 1 from pg_database where datname = $1", template):
                building = f"{template}_building"
                await admin.execute(f'drop database if exists "{building}" with (force)')
                await admin.execute(f'create database "{building}"')
                url = make_url(base_url).set(database=building).render_as_string(hide_password=False)
                try:
                    await asyncio.to_thread(upgrade, url, "heads")
                except BaseException:
                    await admin.execute(f'drop database if exists "{building}" with (force)')
                    raise
                # Renamed only once migrated: a template that exists is complete.
                await admin.execute(f'alter database "{building}" rename to "{template}"')
        finally:
            await admin.execute("select pg_advisory_unlock($1)", TEMPLATE_LOCK)
        name = f"{prefix}_{uuid.uuid4().hex[:10]}"
        await admin.execute(f'create database "{name}" template "{template}"')
    finally:
        await admin.close()
    return make_url(base_url).set(database=name).render_as_string(hide_password=False)


@pytest.fixture(scope="session")
async def database_url() -> AsyncIterator[str]:
    """A database of this session's own, migrated to head, dropped at the end. The product's own
    engine (infra.db.get_engine) is pointed at it too, so code under test and tests share it."""
    template = os.environ.get("C360_TEST_TEMPLATE_DB")
    if template:
        url = await create_from_template(server_url(), "c360_test", template)
    else:
        url = await create_database(server_url(), "c360_test")
    try:
        if not template:
            # Inside the try: a migration that fails must not leave the database behind on the shared server.
            await asyncio.to_thread(upgrade, url, "heads")
        os.environ["C360_DATABASE_URL"] = url
        get_settings.cache_clear()
        await infra_db.dispose_engine()
        yield url
    finally:
        await infra_db.dispose_engine()
        await drop_database(url)


async def fetch_rows(engine: AsyncEngine, sql: str, **params: Any) -> list[tuple[Any, ...]]:
    """The rows of one query, as tuples."""
    async with engine.connect() as conn:
        return [tuple(r) for r in (await conn.execute(sa.text(sql), params)).all()]


@pytest.fixture(scope="session")
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    eng = create_async_engine(database_url, poolclass=NullPool)
    yield eng
    await eng.dispose()


@pytest.fixture
async def conn(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """A connection inside a transaction that is rolled back after the test."""
    async with engine.connect() as connection:
        transaction = await connection.begin()
        try:
            yield connection
        finally:
            await transaction.rollback()


@pytest.fixture
async def session(conn: AsyncConnection) -> AsyncIterator[AsyncSession]:
    """An ORM session on the rolled-back connection; code that commits commits to a savepoint."""
    async with AsyncSession(bind=conn, join_transaction_mode="create_savepoint", expire_on_commit=False) as s:
        yield s


@pytest.fixture
async def committed_db(engine: AsyncEngine) -> AsyncIterator[AsyncEngine]:
    """For tests whose code under test opens its own connections (HTTP servers, Prefect flows): data
    is really committed, and every table is truncated afterwards."""
    yield engine
    tables = ", ".join(f'"{t.name}"' for t in SQLModel.metadata.sorted_tables)
    async with engine.begin() as connection:
        await connection.execute(sa.text(f"truncate {tables} restart identity cascade"))
