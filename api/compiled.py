"""The compiled read path in front of Strawberry (schema.compiled): a query the compiler knows is answered
with one SQL statement whose text is the response; everything else goes on to the executor unchanged.

`C360_API_COMPILED`: `on` (the default), `off` (every request through the executor), or `verify` (the test
suite's mode: each compiled answer is checked against the executor's, and a difference is an error)."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from functools import lru_cache
from typing import Any

import orjson
from graphql import GraphQLSchema
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.auth import Principal
from api.persisted import replay
from schema.compiled import Build, Fallback, Prepared, coerce_variables, prepare

log = logging.getLogger("c360.api")

CACHE_SIZE = 512  # distinct documents kept (LRU), as the executor's parse and validation caches
# The compiler's binds (:p0, :p1, ...): a GraphQL response key or SQL literal in its text never has one.
BIND = re.compile(r"(?<![:\w]):(p\d+)\b")


class CompiledReads:
    def __init__(
        self, app: ASGIApp, strawberry_schema: Any, max_tokens: int, rules: list[Any], mode: str = "on"
    ) -> None:
        self.app = app
        self.strawberry_schema = strawberry_schema
        self.schema: GraphQLSchema = strawberry_schema._schema
        self.max_tokens = max_tokens
        self.rules = rules
        self.mode = mode
        # Documents parsed, validated and checked once (LRU), as the executor's own caches.
        self.prepared = lru_cache(maxsize=CACHE_SIZE)(self._prepare)
        self.compiled = 0  # requests answered by the compiled path (for tests and the bench)
        # Called with each statement run (tests pin their number; SQLAlchemy's events do not see these).
        self.listeners: list[Callable[..., None]] = []

    def _prepare(self, query: str, operation: str | None) -> Prepared | None:
        return prepare(self.schema, query, operation, self.max_tokens, self.rules)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.mode == "off" or scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        body = await _read(receive)
        answer = None
        try:
            answer = await self.answer(scope, body)
        except Fallback:
            answer = None
        except Exception:
            # The executor answers it (and masks what it cannot do as an internal error with an id); a
            # failure here is logged with its traceback but costs the client nothing.
            log.exception("compiled read failed; the executor answers the request")
            answer = None
        if answer is None:
            await self.app(scope, replay(body, receive), send)
            return
        if self.mode == "verify":
            answer = await self.verify(scope, body, receive, answer)
        self.compiled += 1
        await send({"type": "http.response.start", "status": 200, "headers": [
            (b"content-type", b"application/json"), (b"content-length", str(len(answer)).encode()),
            (b"x-c360-execution", b"compiled")]})  # fmt: skip
        await send({"type": "http.response.body", "body": answer})

    async def answer(self, scope: Scope, body: bytes) -> bytes | None:
        """The response body from one statement, or None when the executor must answer."""
        try:
            payload = orjson.loads(body)
        except orjson.JSONDecodeError:
            return None
        if not isinstance(payload, dict):
            return None
        query, operation, variables = (
            payload.get("query"),
            payload.get("operationName"),
            payload.get("variables"),
        )
        if not isinstance(query, str) or not (operation is None or isinstance(operation, str)):
            return None
        if not (variables is None or isinstance(variables, dict)):
            return None
        principal: Principal | None = scope.get("state", {}).get("principal")
        if principal is None:
            return None
        prepared = self.prepared(query, operation)
        if prepared is None:
            return None
        values = coerce_variables(self.schema, prepared, variables or {})
        sql, params = Build(self.schema, self.strawberry_schema, prepared, values, principal).statement()
        text, names = numbered(sql)
        for listener in self.listeners:
            listener(None, None, text)
        # The pool's connection, used through asyncpg itself: one statement outside a transaction, and
        # SQLAlchemy's execution layer would cost a fifth of the request (bench/api.py --profile).
        async with scope["app"].state.engine.connect() as conn:
            raw = await conn.get_raw_connection()
            result: str = await raw.driver_connection.fetchval(text, *[params[n] for n in names])
        return b'{"data":' + result.encode() + b"}"

    async def verify(self, scope: Scope, body: bytes, receive: Receive, compiled: bytes) -> bytes:
        """The executor's answer to the same request; the compiled one must be identical, keys in order."""
        status, executed = await _capture(self.app, scope, replay(body, receive))
        mine = orjson.dumps(orjson.loads(compiled))
        theirs = orjson.dumps(orjson.loads(executed)) if executed else b""
        if status == 200 and mine == theirs:
            return compiled
        log.error(
            "compiled read path differs from the executor: compiled %s executor %s",
            mine[:2000],
            theirs[:2000],
        )
        message = f"compiled read path differs from the executor at {_first_difference(mine, theirs)}"
        return orjson.dumps({"errors": [{"message": message, "extensions": {"code": "COMPILED_MISMATCH"}}]})


@lru_cache(maxsize=CACHE_SIZE)
def numbered(sql: str) -> tuple[str, tuple[str, ...]]:
    """The compiler's SQL with asyncpg's $N placeholders, and the bind names in their order."""
    names: list[str] = []

    def number(match: re.Match[str]) -> str:
        names.append(match.group(1))
        return f"${len(names)}"

    return BIND.sub(number, sql), tuple(names)


async def _read(receive: Receive) -> bytes:
    chunks = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            return b"".join(chunks)


async def _capture(app: ASGIApp, scope: Scope, receive: Receive) -> tuple[int, bytes]:
    status, chunks = 0, []

    async def send(message: Message) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
        elif message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))

    await app(scope, receive, send)
    return status, b"".join(chunks)


def _first_difference(a: bytes, b: bytes) -> str:
    for i, (x, y) in enumerate(zip(a, b, strict=False)):
        if x != y:
            return f"byte {i}: compiled …{a[max(0, i - 60) : i + 40].decode(errors='replace')}… executor …{b[max(0, i - 60) : i + 40].decode(errors='replace')}…"
    return f"length {len(a)} vs {len(b)}"
