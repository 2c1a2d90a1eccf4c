"""`customerChanges(after:, first:)`: the change feed downstream jobs poll for what changed since their
last read (created, updated, merged, erased), oldest first.

A feed keyed by a sequence alone can skip rows: a transaction that took id 10 may commit after a reader
already read id 11. So each change carries the id of the transaction that wrote it, and the feed serves
only changes of transactions older than every transaction still running (the snapshot's xmin): nothing
can ever commit behind a cursor. A change appears a moment later than it committed, never not at all."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import strawberry

from schema.context import Info
from schema.customer import Customer, load_customer
from schema.errors import BadInput
from schema.loaders import fetch_page
from schema.permissions import IsStaffOrService
from schema.relay import Connection, connection, decode_cursor, page_size


@strawberry.type
class CustomerChange:
    customer_id: int
    kind: str = strawberry.field(description="created, updated, merged or erased.")
    changed_at: datetime

    @strawberry.field(description="The customer as it is now (its survivor when merged; null when erased).")
    async def customer(self, info: Info) -> Customer | None:
        return await load_customer(info, self.customer_id)


async def customer_changes(
    info: Info, after: str | None = None, first: int | None = None
) -> Connection[CustomerChange]:
    n = page_size(first)
    key = decode_cursor(after)
    params: dict[str, Any] = {"lim": n + 1}
    keyset = ""
    if key is not None:
        try:
            params["x"], params["i"] = int(key[0]), int(key[1])
        except (IndexError, TypeError, ValueError) as exc:
            raise BadInput(f"after: {after!r} is not a cursor of this feed") from exc
        keyset = " and (c.xact_id, c.id) > (:x, :i)"
    # totalCount: the changes after the cursor that are safe to read now.
    sql = f"""
        with horizon as (select (pg_snapshot_xmin(pg_current_snapshot()))::text::bigint as xmin),
        visible as (select c.* from customer_change c, horizon h where c.xact_id < h.xmin{keyset})
        select t.total as _total, p.* from (select count(*) as total from visible) t
        left join lateral (select id, xact_id, customer_id, kind, changed_at from visible
                            order by xact_id, id limit :lim) p on true
    """  # noqa: S608 - keyset is a fixed fragment
    page = await fetch_page(info.context.engine, sql, **params)
    result: Connection[CustomerChange] = connection(
        page,
        n,
        after,
        lambda r: [r["xact_id"], r["id"]],
        lambda r: CustomerChange(customer_id=r["customer_id"], kind=r["kind"], changed_at=r["changed_at"]),
    )
    return result


@strawberry.type
class Query:
    customer_changes: Connection[CustomerChange] = strawberry.field(
        resolver=customer_changes,
        permission_classes=[IsStaffOrService],
        description="Customers created or changed, oldest first; poll with the last endCursor.",
    )
