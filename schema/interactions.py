"""Interactions (follows, messages, comments, page views, ...) as one timeline across channels."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import strawberry

from schema.context import Info
from schema.relay import Connection, Node, connection, page_size, time_keyset, to_global_id


@strawberry.type
class Interaction(Node):
    channel: str
    external_id: str
    type: str = strawberry.field(description="follow, unfollow, message, comment, mention, page_view, ...")
    direction: str = strawberry.field(description="inbound or outbound.")
    occurred_at: datetime
    summary: str | None


@strawberry.input(description="Every field optional; given fields must all match.")
class InteractionFilter:
    channel: str | None = None
    type: str | None = None
    after: datetime | None = strawberry.field(default=None, description="Occurred at or after (inclusive).")
    before: datetime | None = strawberry.field(default=None, description="Occurred before (exclusive).")


def interaction_node(r: dict[str, Any]) -> Interaction:
    return Interaction(
        id=to_global_id("Interaction", r["id"]),
        channel=r["channel_code"],
        external_id=r["external_id"],
        type=r["type"],
        direction=r["direction"],
        occurred_at=r["occurred_at"],
        summary=r["summary"],
    )


async def interactions_of(
    info: Info, customer_id: int, filter: InteractionFilter | None, first: int | None, after: str | None
) -> Connection[Interaction]:
    n = page_size(first)
    cursor = time_keyset(after)
    given = {
        "channel": filter.channel if filter else None,
        "type": filter.type if filter else None,
        "after": filter.after if filter else None,
        "before": filter.before if filter else None,
    }
    filters = tuple(sorted((k, v) for k, v in given.items() if v is not None))
    page = await info.context.loaders.interactions_page.load((customer_id, (filters, n, cursor)))
    result: Connection[Interaction] = connection(
        page, n, after, lambda r: [r["occurred_at"].isoformat(), r["id"]], interaction_node
    )
    return result
