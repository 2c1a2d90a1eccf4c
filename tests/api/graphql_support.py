"""The API as clients use it: a uvicorn server on loopback, a real GraphQL client (gql over httpx) with a
token per role, and a counter of the SQL statements the server ran (to pin each query's cost)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from gql import Client, gql
from gql.transport.httpx import HTTPXAsyncTransport
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

from api.app import create_app
from api.auth import Role, issue_token
from infra.settings import Settings
from tests.support import live_server


@dataclass
class StatementCounter:
    count: int = 0
    statements: list[str] = field(default_factory=list)

    def __call__(self, conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        self.count += 1
        self.statements.append(statement)

    def reset(self) -> None:
        self.count = 0
        self.statements.clear()


@dataclass
class Api:
    base: str
    settings: Settings
    statements: StatementCounter
    reads: Any = None  # api.compiled.CompiledReads: `reads.compiled` counts requests it answered

    def token(self, role: Role, subject: str = "tester", scopes: list[str] | None = None) -> str:
        return issue_token(self.settings, subject, role, scopes)

    @asynccontextmanager
    async def client(
        self,
        role: Role = "staff",
        subject: str = "tester",
        scopes: list[str] | None = None,
        token: str | None = None,
    ) -> AsyncIterator[Any]:
        headers = {"Authorization": f"Bearer {token or self.token(role, subject, scopes)}"}
        transport = HTTPXAsyncTransport(url=self.base + "/graphql", headers=headers, timeout=30)
        async with Client(transport=transport, fetch_schema_from_transport=False) as session:
            yield session

    async def query(
        self,
        document: str,
        role: Role = "staff",
        subject: str = "tester",
        scopes: list[str] | None = None,
        **variables: Any,
    ) -> dict[str, Any]:
        async with self.client(role, subject, scopes) as session:
            request = gql(document)
            request.variable_values = variables or None
            result: dict[str, Any] = await session.execute(request)
            return result


@contextmanager
def api_server(database_url: str, **settings: Any) -> Iterator[Api]:
    """The app under uvicorn on a free port, on its own engine whose statements are counted."""
    # Every query the tests send that the compiled read path knows runs through both paths and must
    # answer the same (api.compiled, verify mode); a test pins one path by passing api_compiled.
    settings.setdefault("api_compiled", "verify")
    config = Settings(database_url=database_url, env=settings.pop("env", "test"), **settings)
    # NullPool: the server runs on its own thread and loop, where pooled connections could not be closed.
    engine: AsyncEngine = create_async_engine(str(config.database_url), poolclass=NullPool)
    counter = StatementCounter()
    sa.event.listen(engine.sync_engine, "before_cursor_execute", counter)
    try:
        app = create_app(config, engine=engine)
        app.state.compiled_reads.listeners.append(counter)
        with live_server(app, "/healthz") as base:
            yield Api(base=base, settings=config, statements=counter, reads=app.state.compiled_reads)
    finally:
        sa.event.remove(engine.sync_engine, "before_cursor_execute", counter)
