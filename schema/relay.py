"""Relay conventions: opaque global ids, `node(id:)`, and keyset-paginated connections (never OFFSET).

A cursor is the opaque encoding of the sort key of its row (e.g. `placed_at` and `id`): the next page is the
rows after that key in the connection's order, so pages stay stable while rows are added.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, TypeVar

import orjson
import strawberry

from schema.errors import BadInput

T = TypeVar("T")
DEFAULT_PAGE = 20
MAX_PAGE = 100


def to_global_id(type_name: str, pk: int | str) -> strawberry.ID:
    return strawberry.ID(base64.urlsafe_b64encode(f"{type_name}:{pk}".encode()).decode().rstrip("="))


def from_global_id(global_id: str, expected: str | None = None) -> tuple[str, str]:
    """(type name, primary key) of a global id; BadInput for anything that is not one of ours."""
    try:
        padded = global_id + "=" * (-len(global_id) % 4)
        type_name, _, pk = base64.urlsafe_b64decode(padded.encode()).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError, ValueError) as exc:
        raise BadInput(f"{global_id!r} is not an id of this API") from exc
    if not type_name or not pk:
        raise BadInput(f"{global_id!r} is not an id of this API")
    if expected is not None and type_name != expected:
        raise BadInput(f"{global_id!r} is a {type_name} id, not a {expected} id")
    return type_name, pk


def int_id(global_id: str, expected: str) -> int:
    _, pk = from_global_id(global_id, expected)
    if not pk.isdigit():
        raise BadInput(f"{global_id!r} is not a {expected} id")
    return int(pk)


def encode_cursor(key: list[Any]) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(key)).decode().rstrip("=")


def decode_cursor(cursor: str | None) -> list[Any] | None:
    if cursor is None:
        return None
    try:
        key = orjson.loads(base64.urlsafe_b64decode((cursor + "=" * (-len(cursor) % 4)).encode()))
    except (binascii.Error, orjson.JSONDecodeError, ValueError) as exc:
        raise BadInput(f"after: {cursor!r} is not a cursor of this connection") from exc
    if not isinstance(key, list):
        raise BadInput(f"after: {cursor!r} is not a cursor of this connection")
    return key


def time_keyset(after: str | None) -> tuple[str, int] | None:
    """The (ISO time, id) key of a cursor of a connection ordered newest first."""
    key = decode_cursor(after)
    if key is None:
        return None
    try:
        if len(key) != 2:
            raise ValueError(key)
        datetime.fromisoformat(str(key[0]))
        return str(key[0]), int(key[1])
    except (TypeError, ValueError) as exc:
        raise BadInput(f"after: {after!r} is not a cursor of this connection") from exc


def page_size(first: int | None) -> int:
    if first is None:
        return DEFAULT_PAGE
    if first < 0 or first > MAX_PAGE:
        raise BadInput(f"first must be between 0 and {MAX_PAGE}, got {first}")
    return first


@strawberry.interface(description="An object with a global id, fetchable with `node(id:)`.")
class Node:
    id: strawberry.ID


@strawberry.type
class PageInfo:
    has_next_page: bool
    has_previous_page: bool
    start_cursor: str | None
    end_cursor: str | None


@strawberry.type
class Edge(Generic[T]):
    cursor: str
    node: T


@strawberry.type
class Connection(Generic[T]):
    edges: list[Edge[T]]
    page_info: PageInfo
    total_count: int = strawberry.field(description="Rows matching the filter, over all pages.")


@dataclass
class Page:
    """What a keyset query returns for one connection: up to first+1 rows, their keys, and the total."""

    rows: list[dict[str, Any]]
    total: int


def connection(page: Page, first: int, after: str | None, key: Any, node: Any) -> Any:
    """A Connection from a Page fetched with LIMIT first+1: the extra row only says a next page exists."""
    rows = page.rows[:first]
    edges = [Edge(cursor=encode_cursor(key(r)), node=node(r)) for r in rows]
    return Connection(
        edges=edges,
        page_info=PageInfo(
            has_next_page=len(page.rows) > first,
            has_previous_page=after is not None,
            start_cursor=edges[0].cursor if edges else None,
            end_cursor=edges[-1].cursor if edges else None,
        ),
        total_count=page.total,
    )
