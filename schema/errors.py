"""Errors, two kinds. A caller's mistake in a query (a bad id, a bad cursor, a page too large) is a
GraphQL error with `extensions.code` (BAD_USER_INPUT, FORBIDDEN, NOT_FOUND). A mutation's expected
failure (an illegal transition, not enough points) is data: its payload's `userErrors { field message
code }`, so clients can show it next to the field it concerns."""

from __future__ import annotations

from typing import Any

import strawberry
from graphql import GraphQLError


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
