"""The Starlette application: /healthz and /graphql (GraphiQL in development)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.websockets import WebSocket
from strawberry.asgi import GraphQL

from infra.db import check_database, ensure_reachable, make_engine, resolve_database_url
from infra.settings import Settings, get_settings
from schema import schema
from schema.context import Context


class C360GraphQL(GraphQL[Context, None]):
    def __init__(self, graphiql: bool) -> None:
        super().__init__(schema, graphql_ide="graphiql" if graphiql else None, allow_queries_via_get=False)

    async def get_context(self, request: Request | WebSocket, response: Response | WebSocket) -> Context:
        return Context(engine=request.app.state.engine, request=request)


def create_app(settings: Settings | None = None, engine: AsyncEngine | None = None) -> Starlette:
    """Build the API. With no engine given, one is made from the settings and checked at start-up, so
    a bad C360_DATABASE_URL fails before the first request with a message naming it."""
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        owned = engine is None
        if owned:
            url = resolve_database_url(settings)
            app.state.engine = make_engine(url, settings.db_pool_size, settings.db_connect_timeout)
            await ensure_reachable(app.state.engine, url, settings.db_connect_timeout)
        else:
            app.state.engine = engine
        try:
            yield
        finally:
            if owned:
                await app.state.engine.dispose()

    async def healthz(request: Request) -> JSONResponse:
        health = await check_database(request.app.state.engine)
        body: dict[str, Any] = {"status": "ok" if health.ok else "degraded", "database": health.ok}
        if health.ok:
            body["serverVersion"] = health.server_version
        return JSONResponse(body, status_code=200 if health.ok else 503)

    graphql_app = C360GraphQL(graphiql=settings.graphiql)
    routes = [Route("/healthz", healthz), Route("/graphql", graphql_app, methods=["GET", "POST"])]
    return Starlette(routes=routes, lifespan=lifespan)
