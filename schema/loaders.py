"""Per-request DataLoaders: each kind of row is fetched in one statement for every parent the query
reaches, so a query costs a constant number of statements however many customers or orders it lists
(pinned in tests/api). Connections nested under a list (each customer's orders) are one statement too: a
LATERAL join pages every parent at once with its own keyset and total."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine
from strawberry.dataloader import DataLoader

from schema.relay import Page

CUSTOMER_COLUMNS = (
    "id, status, merged_into, name, phone, email, birth_date, gender, member_no, province, city, district, "
    "address, tier_code, lineage, created_at, updated_at"
)
ORDER_COLUMNS = (
    "o.id, o.channel_code, o.external_id, o.customer_id, o.store_id, o.status, o.source_status, o.total_fen, "
    "o.paid_fen, o.discount_fen, o.shipping_fen, o.currency, o.placed_at, o.paid_at"
)
IDENTITY_COLUMNS = (
    "id, channel_code, external_id, customer_id, name, nickname, phone, phone_masked, phone_verified, email, "
    "member_no, wechat_unionid, province, city, district, link_score, link_rule, linked_at, source_updated_at"
)


async def rows(engine: AsyncEngine, sql: str, **params: Any) -> list[dict[str, Any]]:
    async with engine.connect() as conn:
        # A read is one statement: in autocommit it is one round trip, not BEGIN, it and ROLLBACK.
        await conn.execution_options(isolation_level="AUTOCOMMIT")
        result = await conn.execute(sa.text(sql), params)
        return [dict(r) for r in result.mappings().all()]


def _by(key: str, items: list[dict[str, Any]]) -> dict[Any, list[dict[str, Any]]]:
    out: dict[Any, list[dict[str, Any]]] = defaultdict(list)
    for item in items:
        out[item[key]].append(item)
    return out


# A connection's arguments for one parent: (filter items, first, after key); the loader groups parents
# that share them into one statement.
PageArgs = tuple[tuple[tuple[str, Any], ...], int, tuple[Any, ...] | None]


class Loaders:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self.customer = DataLoader(self._customers)
        self.order_summary = DataLoader(self._order_summaries)
        self.identities = DataLoader(self._identities_of)
        self.identity = DataLoader(self._identities_by_id)
        self.lines = DataLoader(self._lines)
        self.refunds = DataLoader(self._refunds)
        self.consents = DataLoader(self._consents)
        self.merges = DataLoader(self._merges)
        self.review = DataLoader(self._reviews)
        self.orders_page: DataLoader[tuple[int, PageArgs], Page] = DataLoader(
            self._orders_pages, cache_key_fn=lambda k: k
        )
        self.interactions_page: DataLoader[tuple[int, PageArgs], Page] = DataLoader(
            self._interactions_pages, cache_key_fn=lambda k: k
        )

    async def _customers(self, ids: Sequence[int]) -> list[dict[str, Any] | None]:
        found = await rows(
            self.engine,
            f"select {CUSTOMER_COLUMNS} from golden_customer where id = any(cast(:ids as bigint[]))",  # noqa: S608 - constant columns
            ids=list(ids),
        )
        by_id = {r["id"]: r for r in found}
        return [by_id.get(i) for i in ids]

    async def _order_summaries(self, ids: Sequence[int]) -> list[dict[str, Any]]:
        found = await rows(
            self.engine,
            """
            select customer_id, count(*) as order_count, coalesce(sum(paid_fen), 0) as total_spent_fen,
                   min(placed_at) as first_order_at, max(placed_at) as last_order_at
              from orders
             where customer_id = any(cast(:ids as bigint[])) and status <> 'cancelled'
             group by customer_id
            """,
            ids=list(ids),
        )
        by_id = {r["customer_id"]: r for r in found}
        empty = {"order_count": 0, "total_spent_fen": 0, "first_order_at": None, "last_order_at": None}
        return [by_id.get(i, empty) for i in ids]

    async def _identities_of(self, ids: Sequence[int]) -> list[list[dict[str, Any]]]:
        found = await rows(
            self.engine,
            f"select {IDENTITY_COLUMNS} from source_identity where customer_id = any(cast(:ids as bigint[])) "  # noqa: S608
            "order by channel_code, id",
            ids=list(ids),
        )
        grouped = _by("customer_id", found)
        return [grouped.get(i, []) for i in ids]

    async def _identities_by_id(self, ids: Sequence[int]) -> list[dict[str, Any] | None]:
        found = await rows(
            self.engine,
            f"select {IDENTITY_COLUMNS} from source_identity where id = any(cast(:ids as bigint[]))",  # noqa: S608
            ids=list(ids),
        )
        by_id = {r["id"]: r for r in found}
        return [by_id.get(i) for i in ids]

    async def _lines(self, order_ids: Sequence[int]) -> list[list[dict[str, Any]]]:
        found = await rows(
            self.engine,
            """
            select l.order_id, l.line_no, l.sku, l.title, l.quantity, l.unit_price_fen, l.discount_fen,
                   l.amount_fen, l.product_id, p.sku as product_sku, p.title as product_title, p.category as product_category
              from order_line l left join product p on p.id = l.product_id
             where l.order_id = any(cast(:ids as bigint[]))
             order by l.order_id, l.line_no
            """,
            ids=list(order_ids),
        )
        grouped = _by("order_id", found)
        return [grouped.get(i, []) for i in order_ids]

    async def _refunds(self, order_ids: Sequence[int]) -> list[list[dict[str, Any]]]:
        found = await rows(
            self.engine,
            """
            select id, order_id, channel_code, external_id, line_no, amount_fen, reason, status, requested_at
              from refund where order_id = any(cast(:ids as bigint[])) order by order_id, requested_at, id
            """,
            ids=list(order_ids),
        )
        grouped = _by("order_id", found)
        return [grouped.get(i, []) for i in order_ids]

    async def _consents(self, ids: Sequence[int]) -> list[list[dict[str, Any]]]:
        # The latest row per (customer, purpose) is the one in force.
        found = await rows(
            self.engine,
            """
            select distinct on (customer_id, purpose) customer_id, purpose, status, source, recorded_at
              from consent where customer_id = any(cast(:ids as bigint[]))
             order by customer_id, purpose, recorded_at desc, id desc
            """,
            ids=list(ids),
        )
        grouped = _by("customer_id", found)
        return [grouped.get(i, []) for i in ids]

    async def _merges(self, ids: Sequence[int]) -> list[list[dict[str, Any]]]:
        found = await rows(
            self.engine,
            """
            select c.cid as customer_id, m.id, m.kind, m.actor, m.reason, m.surviving_customer_id,
                   m.absorbed_customer_ids, m.evidence, m.undoes_event_id, m.undone_by_event_id, m.created_at
              from unnest(cast(:ids as bigint[])) as c(cid)
              join merge_event m on m.surviving_customer_id = c.cid or c.cid = any(m.absorbed_customer_ids)
             order by c.cid, m.created_at desc, m.id desc
            """,
            ids=list(ids),
        )
        grouped = _by("customer_id", found)
        return [grouped.get(i, []) for i in ids]

    async def _reviews(self, ids: Sequence[int]) -> list[dict[str, Any] | None]:
        found = await rows(
            self.engine,
            "select id, left_identity_id, right_identity_id, score, features, status, decided_by, created_at "
            "from identity_review where id = any(cast(:ids as bigint[]))",
            ids=list(ids),
        )
        by_id = {r["id"]: r for r in found}
        return [by_id.get(i) for i in ids]

    async def _orders_pages(self, keys: Sequence[tuple[int, PageArgs]]) -> list[Page]:
        return await self._pages(keys, _orders_page_sql)

    async def _interactions_pages(self, keys: Sequence[tuple[int, PageArgs]]) -> list[Page]:
        return await self._pages(keys, _interactions_page_sql)

    async def _pages(self, keys: Sequence[tuple[int, PageArgs]], build: Any) -> list[Page]:
        return await customer_pages(self.engine, keys, build)


async def customer_pages(engine: AsyncEngine, keys: Sequence[tuple[int, PageArgs]], build: Any) -> list[Page]:
    """One statement per distinct arguments (in one query, usually one): every parent paged at once.
    `build(filters, after)` gives the SQL (see customer_page_sql); other domains' loaders use it too."""
    groups: dict[PageArgs, list[int]] = defaultdict(list)
    for customer_id, args in keys:
        groups[args].append(customer_id)
    pages: dict[tuple[int, PageArgs], Page] = {}
    for args, customer_ids in groups.items():
        filters, first, after = args
        sql, params = build(dict(filters), after)
        found = await rows(engine, sql, ids=customer_ids, lim=first + 1, **params)
        grouped = _by("_cid", found)
        for cid in customer_ids:
            items = grouped.get(cid, [])
            total = int(items[0]["_total"]) if items else 0
            pages[(cid, args)] = Page(rows=[r for r in items if r.get("id") is not None], total=total)
    return [pages[k] for k in keys]


def keyset_condition(after: tuple[Any, ...] | None, ts: str, params: dict[str, Any]) -> str:
    if after is None:
        return ""
    params["after_ts"] = datetime.fromisoformat(after[0])
    params["after_id"] = int(after[1])
    return f" and ({ts}, x.id) < (:after_ts, :after_id)"


# (filter key, condition, parameter): the filters each per-customer connection accepts; fixed fragments only.
ORDER_FILTERS = (
    ("channel", "x.channel_code = :channel", "channel"),
    ("status", "x.status = :status", "status"),
    ("placed_after", "x.placed_at >= :placed_after", "placed_after"),
    ("placed_before", "x.placed_at < :placed_before", "placed_before"),
)
INTERACTION_FILTERS = (
    ("channel", "x.channel_code = :channel", "channel"),
    ("type", "x.type = :type", "type"),
    ("after", "x.occurred_at >= :occurred_after", "occurred_after"),
    ("before", "x.occurred_at < :occurred_before", "occurred_before"),
)
INTERACTION_COLUMNS = "x.id, x.channel_code, x.external_id, x.type, x.direction, x.occurred_at, x.summary"


def customer_page_sql(
    table: str,
    columns: str,
    ts: str,
    accepted: tuple[tuple[str, str, str], ...],
    filters: dict[str, Any],
    after: tuple[Any, ...] | None,
) -> tuple[str, dict[str, Any]]:
    """One statement paging every customer in :ids through `table`, newest `ts` first, with its total."""
    where, params = ["x.customer_id = c.cid"], {}
    for key, condition, param in accepted:
        if filters.get(key):
            where.append(condition)
            params[param] = filters[key]
    cond = " and ".join(where)  # fixed fragments only; every value is a bound parameter
    keyset = keyset_condition(after, ts, params)
    sql = f"""
        select c.cid as _cid, t.total as _total, p.*
          from unnest(cast(:ids as bigint[])) as c(cid)
         cross join lateral (select count(*) as total from {table} x where {cond}) t
          left join lateral (
                select {columns} from {table} x where {cond}{keyset}
                 order by {ts} desc, x.id desc limit :lim) p on true
         order by c.cid, p.{ts.removeprefix("x.")} desc nulls last, p.id desc
    """  # noqa: S608 - see cond; table, columns and ts are constants of this module
    return sql, params


def _orders_page_sql(filters: dict[str, Any], after: tuple[Any, ...] | None) -> tuple[str, dict[str, Any]]:
    columns = ORDER_COLUMNS.replace("o.", "x.")
    return customer_page_sql("orders", columns, "x.placed_at", ORDER_FILTERS, filters, after)


def _interactions_page_sql(
    filters: dict[str, Any], after: tuple[Any, ...] | None
) -> tuple[str, dict[str, Any]]:
    return customer_page_sql(
        "interaction", INTERACTION_COLUMNS, "x.occurred_at", INTERACTION_FILTERS, filters, after
    )


async def fetch_page(engine: AsyncEngine, sql: str, **params: Any) -> Page:
    """A top-level connection's page: `sql` selects `_total` beside the rows of a LEFT JOIN LATERAL page, so
    an empty page still carries its total."""
    found = await rows(engine, sql, **params)
    return Page(rows=[r for r in found if r["id"] is not None], total=int(found[0]["_total"]) if found else 0)
