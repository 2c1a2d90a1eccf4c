"""The Starlette application: /healthz and /graphql (GraphiQL in development)."""

from __future__ import annotations

import gc
import json
import math
import time
from collections import OrderedDict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.websockets import WebSocket
from strawberry.asgi import GraphQL
from strawberry.http.ides import get_graphql_ide_html

from api.auth import AuthError, Principal, check_production_secret, issue_token, verify
from api.compiled import CompiledReads
from api.persisted import PersistedQueries, load_store
from api.ratelimit import RateLimiter
from infra.db import check_database, ensure_reachable, make_engine, resolve_database_url
from infra.settings import Settings, get_settings
from schema import build_schema
from schema.context import Context
from schema.limits import validation_rules
from schema.service import validate_rules

VERIFIED_TOKENS = 4096
NOBODY = Principal(subject="0", role="member")  # a member of no customer


class C360GraphQL(GraphQL[Context, None]):
    def __init__(self, settings: Settings, rules: list[Any]) -> None:
        super().__init__(
            build_schema(settings.api_max_depth, settings.api_max_tokens, rules),
            graphql_ide="graphiql" if settings.graphiql else None,
            allow_queries_via_get=False,
        )
        self.settings = settings

    async def render_graphql_ide(self, request: Request) -> HTMLResponse:
        return HTMLResponse(graphiql_page(self.settings))

    async def get_context(self, request: Request | WebSocket, response: Response | WebSocket) -> Context:
        # Only the GraphiQL page (which executes nothing) arrives without a principal; NOBODY can read nothing.
        principal = getattr(request.state, "principal", NOBODY)
        return Context(engine=request.app.state.engine, principal=principal, request=request)


STATIC = Path(__file__).resolve().parent / "static" / "graphiql"
# Strawberry's GraphiQL page loads these from unpkg; the same files (same integrity hashes) are served here.
GRAPHIQL_ASSETS = {
    "https://unpkg.com/react@18.2.0/umd/react.production.min.js": "react.production.min.js",
    "https://unpkg.com/react-dom@18.2.0/umd/react-dom.production.min.js": "react-dom.production.min.js",
    "https://unpkg.com/js-cookie@3.0.5/dist/js.cookie.min.js": "js.cookie.min.js",
    "https://unpkg.com/graphiql@3.8.3/graphiql.min.css": "graphiql.min.css",
    "https://unpkg.com/@graphiql/plugin-explorer@1.0.2/dist/style.css": "explorer.css",
    "https://unpkg.com/graphiql@3.8.3/graphiql.min.js": "graphiql.min.js",
    "https://unpkg.com/@graphiql/plugin-explorer@1.0.2/dist/index.umd.js": "explorer.umd.js",
}


def graphiql_page(settings: Settings) -> str:
    """Strawberry's GraphiQL page with its assets served locally (it works offline) and, in development,
    a staff token (PII masked) already in the headers editor, so the first query just runs."""
    html = get_graphql_ide_html("graphiql")
    for remote, local in GRAPHIQL_ASSETS.items():
        if remote not in html:
            raise RuntimeError(f"Strawberry's GraphiQL page no longer loads {remote}; update GRAPHIQL_ASSETS")
        html = html.replace(remote, f"/graphiql/{local}")
    token = issue_token(settings, "graphiql", "staff", ttl_seconds=12 * 3600)
    headers = json.dumps(json.dumps({"Authorization": f"Bearer {token}"}, indent=2))
    return html.replace(
        "React.useState(parameters.headers)", f"React.useState(parameters.headers || {headers})", 1
    )


class Authenticated:
    """Every GraphQL request needs a bearer token (401 naming what is wrong otherwise); only the GraphiQL
    page itself (a GET for HTML, in development) is served without one. A class, not a function: Starlette
    treats a plain function endpoint as request -> response."""

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.settings = settings
        self.limiter = RateLimiter(settings.api_rate_per_minute)
        # Verified headers until their token expires: checking an HS256 signature costs a request more
        # than the compiled read it guards, and clients send the same token many times. Bounded (LRU).
        self.verified: OrderedDict[str, tuple[Principal, float]] = OrderedDict()

    def principal(self, authorization: str | None) -> Principal:
        if authorization is not None:
            hit = self.verified.get(authorization)
            if hit is not None and hit[1] > time.time():
                self.verified.move_to_end(authorization)
                return hit[0]
        principal, expires = verify(self.settings, authorization)
        if authorization is not None:
            self.verified[authorization] = (principal, expires)
            if len(self.verified) > VERIFIED_TOKENS:
                self.verified.popitem(last=False)
        return principal

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        app, settings = self.app, self.settings
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        request = Request(scope)
        if settings.graphiql and request.method == "GET" and "text/html" in request.headers.get("accept", ""):
            await app(scope, receive, send)
            return
        try:
            principal = self.principal(request.headers.get("authorization"))
        except AuthError as exc:
            body = {"errors": [{"message": str(exc), "extensions": {"code": "UNAUTHENTICATED"}}]}
            reply = JSONResponse(body, status_code=401, headers={"WWW-Authenticate": 'Bearer realm="c360"'})
            await reply(scope, receive, send)
            return
        wait = self.limiter.take(principal.actor)
        if wait > 0:
            seconds = max(1, math.ceil(wait))
            body = {"errors": [{"message": f"rate limit of {settings.api_rate_per_minute} requests a minute "
                                f"exceeded; retry in {seconds} s", "extensions": {"code": "RATE_LIMITED"}}]}  # fmt: skip
            reply = JSONResponse(body, status_code=429, headers={"Retry-After": str(seconds)})
            await reply(scope, receive, send)
            return
        scope.setdefault("state", {})["principal"] = principal
        await app(scope, receive, send)


def create_app(settings: Settings | None = None, engine: AsyncEngine | None = None) -> Starlette:
    """Build the API. With no engine given, one is made from the settings and checked at start-up, so
    a bad C360_DATABASE_URL fails before the first request with a message naming it."""
    settings = settings or get_settings()
    check_production_secret(settings)
    # A bad service rules file stops the start with the key that is wrong, not the first case opened.
    validate_rules(settings.service_config)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        owned = engine is None
        if owned:
            url = resolve_database_url(settings)
            # No ping per checkout: with asyncpg it is BEGIN, a statement and ROLLBACK, three round trips
            # before each of a query's statements (a third of the server's time in bench/api.py).
            # No overflow: a request beyond the pool waits for a connection (as PostGraphile's pool does).
            # Overflow connections are closed as soon as the pool has enough idle ones, so under steady
            # load above the pool size every few requests paid for a new backend (bench/api.py saw a new
            # connection every few milliseconds at 16 clients and a pool of 10).
            app.state.engine = make_engine(
                url, settings.db_pool_size, settings.db_connect_timeout, pre_ping=False, max_overflow=0
            )
            await ensure_reachable(app.state.engine, url, settings.db_connect_timeout)
        else:
            app.state.engine = engine
        # The schema, caches and modules live as long as the process: moved out of the collector's
        # generations, a full collection no longer walks them in the middle of a request (tail latency).
        gc.collect()
        gc.freeze()
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

    store = load_store(settings.api_persisted_queries)
    rules = validation_rules(settings.api_max_depth)
    executor = C360GraphQL(settings, rules)
    reads = CompiledReads(executor, executor.schema, settings.api_max_tokens, rules, settings.api_compiled)
    graphql_app = Authenticated(PersistedQueries(reads, store, settings.api_persisted_only), settings)
    routes: list[BaseRoute] = [
        Route("/healthz", healthz),
        Route("/graphql", graphql_app, methods=["GET", "POST"]),
    ]
    if settings.graphiql:
        routes.append(Mount("/graphiql", StaticFiles(directory=STATIC), name="graphiql"))
    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.compiled_reads = reads
    return app
