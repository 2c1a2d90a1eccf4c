"""Errors, two kinds. A caller's mistake in a query (a bad id, a bad cursor, a page too large) is a
GraphQL error with `extensions.code` (BAD_USER_INPUT, FORBIDDEN, NOT_FOUND). A mutation's expected
failure (an illegal transition, not enough points) is data: its payload's `userErrors { field message
code }`, so clients can show it next to the field it concerns."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from typing import Any

import strawberry
from graphql import GraphQLError
from strawberry.extensions import SchemaExtension

log = logging.getLogger("c360.api")


class ApiError(GraphQLError):
    code = "INTERNAL"

    def __init__(self, message: str, **extensions: Any) -> None:
        super().__init__(message, extensions={"code": self.code, **extensions})


class BadInput(ApiError):
    code = "BAD_USER_INPUT"


class Forbidden(ApiError):
    code = "FORBIDDEN"


class NotFound(ApiError):
    code = "NOT_FOUND"


@strawberry.type(description="Why a mutation did not do what was asked; `field` is the input path.")
class UserError:
    field: list[str] | None
    message: str
    code: str


def is_internal(error: GraphQLError) -> bool:
    """A bug or an outage, not the caller's mistake: the resolver raised something that is not an API error
    (validation, parse, permission and ApiError failures are GraphQLErrors or have no original)."""
    original = error.original_error
    return original is not None and not isinstance(original, GraphQLError)


def error_id(error: GraphQLError) -> str:
    """One id per internal error, the same in the log line and in the answer the client gets."""
    found: str | None = getattr(error, "_c360_error_id", None)
    if found is None:
        found = uuid.uuid4().hex[:12]
        error._c360_error_id = found  # type: ignore[attr-defined]
    return found


def log_errors(errors: list[GraphQLError]) -> None:
    """Internal errors at ERROR with their id, path and traceback; a client's mistakes (an unknown field,
    a bad argument, a forbidden field) only at DEBUG: they are answered plainly and are not our fault."""
    for error in errors:
        if is_internal(error):
            original = error.original_error
            assert original is not None
            log.error(
                "internal error %s at %s: %s",
                error_id(error),
                ".".join(map(str, error.path or [])) or "-",
                type(original).__name__,
                exc_info=(type(original), original, original.__traceback__),
            )
        else:
            log.debug("client error: %s", error.message)


class MaskInternalErrors(SchemaExtension):
    """The client gets `internal error (id ...)` with code INTERNAL instead of the exception's own text,
    which can carry data or internals; the id finds the traceback in the log."""

    def on_operation(self) -> Iterator[None]:
        yield
        result = self.execution_context.result
        if result is not None and result.errors:
            result.errors = [_masked(e) if is_internal(e) else e for e in result.errors]


def _masked(error: GraphQLError) -> GraphQLError:
    eid = error_id(error)
    return GraphQLError(
        f"internal error (id {eid}); it has been logged",
        nodes=error.nodes,
        source=error.source,
        positions=error.positions,
        path=error.path,
        extensions={"code": "INTERNAL", "errorId": eid},
    )
