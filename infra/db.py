"""Async engine, sessions and the database health check.

The engine is created once per process from the settings: an external server when
`C360_DATABASE_URL` is set, otherwise the embedded one.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine
from sqlmodel.ext.asyncio.session import AsyncSession

from infra.embedded import embedded_url
from infra.settings import Settings, get_settings, mask_url


class DatabaseConfigError(RuntimeError):
    """Bad database configuration: the message names the setting and the fix."""


def resolve_database_url(settings: Settings | None = None) -> str:
    """The URL the product talks to: the configured one, or the embedded server's."""
    settings = settings or get_settings()
    if settings.database_url is not None:
        try:
            make_url(settings.database_url)
        except Exception as exc:
            raise DatabaseConfigError(
                f"C360_DATABASE_URL is not a valid URL ({exc}); expected postgresql://user:pass@host:port/db"
            ) from exc
        return settings.database_url
    return embedded_url(settings.pgdata)


def make_engine(
    url: str,
    pool_size: int = 10,
    connect_timeout: float = 10.0,
    pre_ping: bool = True,
    max_overflow: int | None = None,
) -> AsyncEngine:
    return create_async_engine(
        url,
        pool_size=pool_size,
        max_overflow=pool_size if max_overflow is None else max_overflow,
        pool_pre_ping=pre_ping,
        # Without a ping, a connection the server closed is found on use: SQLAlchemy then drops every
        # pooled connection older than it, so a restart of PostgreSQL costs the requests in flight only.
        pool_recycle=1800,
        # JIT off: the CRM's set-based statements have large estimated costs but run in well under a
        # second, and PostgreSQL's JIT then spends seconds compiling them (3.2 s of a 4.2 s tier evaluation
        # over 10k customers, bench/loyalty.py); the API's statements gain nothing from it either.
        connect_args={
            "timeout": connect_timeout,
            "server_settings": {"application_name": "c360", "jit": "off"},
        },
    )


_engine: AsyncEngine | None = None


def get_engine() -> AsyncEngine:
    global _engine
    if _engine is None:
        settings = get_settings()
        _engine = make_engine(
            resolve_database_url(settings), settings.db_pool_size, settings.db_connect_timeout
        )
    return _engine


async def dispose_engine() -> None:
    global _engine
    if _engine is not None:
        await _engine.dispose()
        _engine = None


def session_factory(engine: AsyncEngine | None = None) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine or get_engine(), class_=AsyncSession, expire_on_commit=False)


@asynccontextmanager
async def session_scope(engine: AsyncEngine | None = None) -> AsyncIterator[AsyncSession]:
    """One unit of work: commits on success, rolls back on error."""
    async with session_factory(engine)() as session:
        try:
            yield session
            await session.commit()
        except BaseException:
            await session.rollback()
            raise


@dataclass(frozen=True)
class DatabaseHealth:
    ok: bool
    server_version: str | None
    error: str | None = None


async def check_database(engine: AsyncEngine | None = None) -> DatabaseHealth:
    """Ask the server for its version; never raises, so /healthz can report a down database."""
    engine = engine or get_engine()
    try:
        async with engine.connect() as conn:
            version = (await conn.execute(sa.text("show server_version"))).scalar_one()
        return DatabaseHealth(ok=True, server_version=str(version))
    except Exception as exc:  # noqa: BLE001
        return DatabaseHealth(ok=False, server_version=None, error=f"{type(exc).__name__}: {exc}")


async def ensure_reachable(engine: AsyncEngine, url: str, wait_seconds: float) -> str:
    """Fail fast at start-up with one message that names the setting, instead of a traceback later."""
    try:
        async with asyncio.timeout(wait_seconds + 1):
            async with engine.connect() as conn:
                return str((await conn.execute(sa.text("show server_version"))).scalar_one())
    except Exception as exc:
        reason = str(exc) or type(exc).__name__
        raise DatabaseConfigError(
            f"cannot reach PostgreSQL at C360_DATABASE_URL={mask_url(url)}: {reason}. "
            "Check host, port and credentials, or unset C360_DATABASE_URL to use the embedded server."
        ) from exc
