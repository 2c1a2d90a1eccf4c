"""`customers(filter, first, after)`: search the golden records with and/or/not over their attributes and
order figures, paged by id. The filter compiles to one parameterized WHERE clause: the SQL text is made
only of fixed fragments, every value is a bound parameter."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import strawberry
from strawberry.scalars import JSON

from identity.standardize import standardize_email, standardize_phone
from schema.analytics import filter_parts
from schema.context import Info
from schema.customer import Customer, customer_node
from schema.errors import BadInput
from schema.loaders import CUSTOMER_COLUMNS, fetch_page
from schema.permissions import IsStaffOrService
from schema.relay import Connection, connection, decode_cursor, page_size

MAX_FILTER_NODES = 50


@strawberry.input(description="Text match; given operators must all hold.")
class StringFilter:
    eq: str | None = None
    in_: list[str] | None = strawberry.field(default=None, name="in")
    starts_with: str | None = None
    contains: str | None = None


@strawberry.input(description="Number range; given bounds must all hold.")
class IntFilter:
    eq: int | None = None
    gte: int | None = None
    lte: int | None = None


@strawberry.input(description="Every given field must hold; `and`, `or` and `not` combine filters.")
class CustomerFilter:
    and_: list[CustomerFilter] | None = strawberry.field(default=None, name="and")
    or_: list[CustomerFilter] | None = strawberry.field(default=None, name="or")
    not_: CustomerFilter | None = strawberry.field(default=None, name="not")
    name: StringFilter | None = None
    province: StringFilter | None = None
    city: StringFilter | None = None
    district: StringFilter | None = None
    gender: str | None = None
    tier: StringFilter | None = None
    phone: str | None = strawberry.field(default=None, description="Any format a person types.")
    email: str | None = None
    status: str | None = strawberry.field(default=None, description="active (the default), merged or erased.")
    order_count: IntFilter | None = strawberry.field(default=None, description="Orders not cancelled.")
    total_spent_fen: IntFilter | None = None
    last_order_after: datetime | None = None
    last_order_before: datetime | None = None
    # Analytics (schema.analytics.filter_parts): the measures of the last run.
    lifecycle: list[str] | None = strawberry.field(default=None, description="Any of these lifecycle stages.")
    value_tier: list[str] | None = strawberry.field(default=None, description="Any of high, mid, low.")
    rfm_cell: list[str] | None = None
    abc_class: list[str] | None = None
    net_spent_fen: IntFilter | None = strawberry.field(default=None, description="Spend net of refunds.")
    average_order_value_fen: IntFilter | None = None
    days_since_last_order: IntFilter | None = None
    preferred_channel: str | None = None
    preferred_category: str | None = None
    tag: str | None = strawberry.field(default=None, description="Has this tag (system or manual).")
    segment: str | None = strawberry.field(default=None, description="Is in the segment with this code now.")
    rule: JSON | None = strawberry.field(
        default=None,
        description="A segment rule (docs/analytics.md): and/or/not over measures, tags, attributes.",
    )


COLUMNS = {
    "name": "g.name",
    "province": "g.province",
    "city": "g.city",
    "district": "g.district",
    "tier": "g.tier_code",
}
# Order figures per customer, as a correlated aggregate over the (customer_id, placed_at) index.
ORDER_FIGURES = {
    "order_count": "(select count(*) from orders o where o.customer_id = g.id and o.status <> 'cancelled')",
    "total_spent_fen": "(select coalesce(sum(o.paid_fen), 0) from orders o where o.customer_id = g.id and o.status <> 'cancelled')",
}
LAST_ORDER = "(select max(o.placed_at) from orders o where o.customer_id = g.id and o.status <> 'cancelled')"


@dataclass
class Compiler:
    params: dict[str, Any] = field(default_factory=dict)
    nodes: int = 0

    def bind(self, value: Any) -> str:
        name = f"p{len(self.params)}"
        self.params[name] = value
        return f":{name}"

    def string(self, column: str, f: StringFilter) -> list[str]:
        out = []
        if f.eq is not None:
            out.append(f"{column} = {self.bind(f.eq)}")
        if f.in_ is not None:
            out.append(f"{column} = any(cast({self.bind(list(f.in_))} as text[]))")
        if f.starts_with is not None:
            out.append(f"starts_with({column}, {self.bind(f.starts_with)})")
        if f.contains is not None:
            out.append(f"strpos({column}, {self.bind(f.contains)}) > 0")
        return out

    def number(self, expr: str, f: IntFilter) -> list[str]:
        out = []
        for op, value in (("=", f.eq), (">=", f.gte), ("<=", f.lte)):
            if value is not None:
                out.append(f"{expr} {op} {self.bind(value)}")
        return out

    def compile(self, f: CustomerFilter) -> str:
        self.nodes += 1
        if self.nodes > MAX_FILTER_NODES:
            raise BadInput(f"filter: at most {MAX_FILTER_NODES} filters may be combined", field="filter")
        parts: list[str] = []
        for key, column in COLUMNS.items():
            value = getattr(f, key)
            if value is not None:
                parts += self.string(column, value)
        if f.gender is not None:
            parts.append(f"g.gender = {self.bind(f.gender)}")
        if f.phone is not None:
            phone, _ = standardize_phone(f.phone)
            if phone is None:
                raise BadInput(f"filter.phone: {f.phone!r} is not a phone number", field="filter.phone")
            parts.append(f"g.phone = {self.bind(phone)}")
        if f.email is not None:
            email = standardize_email(f.email)
            if email is None:
                raise BadInput(f"filter.email: {f.email!r} is not an e-mail address", field="filter.email")
            parts.append(f"g.email = {self.bind(email)}")
        if f.status is not None:
            parts.append(f"g.status = {self.bind(f.status)}")
        for key, expr in ORDER_FIGURES.items():
            value = getattr(f, key)
            if value is not None:
                parts += self.number(expr, value)
        if f.last_order_after is not None:
            parts.append(f"{LAST_ORDER} >= {self.bind(f.last_order_after)}")
        if f.last_order_before is not None:
            parts.append(f"{LAST_ORDER} < {self.bind(f.last_order_before)}")
        parts += filter_parts(self, f)
        if f.and_:
            parts += [self.compile(sub) for sub in f.and_]
        if f.or_:
            parts.append("(" + " or ".join(self.compile(sub) for sub in f.or_) + ")")
        if f.not_ is not None:
            parts.append(f"not coalesce({self.compile(f.not_)}, false)")
        return "(" + " and ".join(parts) + ")" if parts else "true"


def _mentions_status(f: CustomerFilter | None) -> bool:
    if f is None:
        return False
    subs = [*(f.and_ or []), *(f.or_ or []), *([f.not_] if f.not_ else [])]
    return f.status is not None or any(_mentions_status(s) for s in subs)


async def search_customers(
    info: Info, filter: CustomerFilter | None = None, first: int | None = None, after: str | None = None
) -> Connection[Customer]:
    n = page_size(first)
    compiler = Compiler()
    where = compiler.compile(filter) if filter is not None else "true"
    if not _mentions_status(filter):
        where += " and g.status = 'active'"
    key = decode_cursor(after)
    keyset = ""
    if key is not None:
        if len(key) != 1 or not isinstance(key[0], int):
            raise BadInput(f"after: {after!r} is not a cursor of this connection")
        keyset = f" and g.id > {compiler.bind(key[0])}"
    columns = ", ".join(f"g.{c.strip()}" for c in CUSTOMER_COLUMNS.split(","))
    sql = f"""
        select t.total as _total, p.* from (select count(*) as total from golden_customer g where {where}) t
        left join lateral (select {columns} from golden_customer g where {where}{keyset} order by g.id limit :lim) p on true
    """  # noqa: S608 - fixed fragments; values are bound
    page = await fetch_page(info.context.engine, sql, lim=n + 1, **compiler.params)
    for r in page.rows:
        info.context.loaders.customer.prime(r["id"], {k: v for k, v in r.items() if k != "_total"})
    result: Connection[Customer] = connection(page, n, after, lambda r: [r["id"]], customer_node)
    return result


@strawberry.type
class Query:
    customers: Connection[Customer] = strawberry.field(
        resolver=search_customers,
        permission_classes=[IsStaffOrService],
        description="Search golden customers (active ones unless the filter names a status), by id.",
    )
