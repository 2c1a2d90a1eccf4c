"""Analytics queries and mutations: `segments`, `segment(id)`, `analyticsOverview`; `defineSegment`,
`tagCustomer`, `untagCustomer`, `confirmHousehold`, `splitHousehold`.

Kept apart from schema.analytics (Customer's fields) because these return Customer, which is built from
that module's mixin.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
import strawberry
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from strawberry.dataloader import DataLoader
from strawberry.scalars import JSON

from crm.analytics import segments as segment_engine
from crm.analytics.config import SegmentSpec, check_cells, get_config
from crm.loyalty.service import in_transaction
from schema.analytics import CustomerTag, Household, household_of
from schema.context import Info
from schema.customer import Customer, customer_node
from schema.errors import BadInput, NotFound, UserError
from schema.loaders import CUSTOMER_COLUMNS, fetch_page, rows
from schema.permissions import IsStaff, IsStaffAdmin, IsStaffOrService
from schema.relay import Connection, Node, Page, connection, decode_cursor, int_id, page_size, to_global_id

SEGMENT_COLUMNS = "x.id, x.code, x.name, x.kind, x.source, x.definition, x.created_by, x.updated_at"


class SegmentLoaders:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self.sizes = DataLoader(self._sizes)
        self.history: DataLoader[tuple[int, int], list[dict[str, Any]]] = DataLoader(
            self._histories, cache_key_fn=lambda k: k
        )
        self.members: DataLoader[tuple[int, int, int | None], Page] = DataLoader(
            self._members, cache_key_fn=lambda k: k
        )

    async def _sizes(self, ids: Sequence[int]) -> list[int]:
        found = await rows(
            self.engine,
            "select segment_id, count(*) as n from segment_membership"
            " where segment_id = any(cast(:ids as bigint[])) group by segment_id",
            ids=list(ids),
        )
        by_id = {r["segment_id"]: int(r["n"]) for r in found}
        return [by_id.get(i, 0) for i in ids]

    async def _histories(self, keys: Sequence[tuple[int, int]]) -> list[list[dict[str, Any]]]:
        longest = max(days for _, days in keys)
        found = await rows(
            self.engine,
            "select segment_id, day, size from segment_size where segment_id = any(cast(:ids as bigint[]))"
            " and day > current_date - cast(:days as int) order by segment_id, day",
            ids=sorted({i for i, _ in keys}),
            days=longest,
        )
        grouped: dict[int, list[dict[str, Any]]] = defaultdict(list)
        for r in found:
            grouped[r["segment_id"]].append(r)
        today = datetime.now(UTC).date()
        return [[r for r in grouped.get(i, []) if (today - r["day"]).days < days] for i, days in keys]

    async def _members(self, keys: Sequence[tuple[int, int, int | None]]) -> list[Page]:
        """Every segment's page of members in one statement per distinct (first, after)."""
        groups: dict[tuple[int, int | None], list[int]] = defaultdict(list)
        for sid, first, after in keys:
            groups[(first, after)].append(sid)
        pages: dict[tuple[int, int, int | None], Page] = {}
        columns = ", ".join(f"g.{c.strip()}" for c in CUSTOMER_COLUMNS.split(","))
        for (first, after), sids in groups.items():
            found = await rows(
                self.engine,
                f"""
select s.id as _sid, (select count(*) from segment_membership c where c.segment_id = s.id) as _total, p.*
from unnest(cast(:ids as bigint[])) as s(id)
left join lateral (
    select {columns} from segment_membership sm join golden_customer g on g.id = sm.customer_id
    where sm.segment_id = s.id and (cast(:after as bigint) is null or sm.customer_id > :after)
    order by sm.customer_id limit :lim
) p on true
""",  # noqa: S608 - constant columns
                ids=sids,
                after=after,
                lim=first + 1,
            )
            by_segment: dict[int, list[dict[str, Any]]] = defaultdict(list)
            for r in found:
                by_segment[r["_sid"]].append(r)
            for sid in sids:
                items = by_segment.get(sid, [])
                total = int(items[0]["_total"]) if items else 0
                members = [
                    {k: v for k, v in r.items() if k not in ("_sid", "_total")}
                    for r in items
                    if r.get("id") is not None
                ]
                pages[(sid, first, after)] = Page(rows=members, total=total)
        return [pages[k] for k in keys]


def segment_loaders(info: Info) -> SegmentLoaders:
    found = info.context.domain_loaders.get("segments")
    if found is None:
        found = info.context.domain_loaders["segments"] = SegmentLoaders(info.context.engine)
    return found


@strawberry.type
class SegmentSizePoint:
    day: str = strawberry.field(description="The retailer's local date, YYYY-MM-DD.")
    size: int


@strawberry.type(description="A rule segment: its filter, members now and size over time.")
class Segment(Node):
    pk: strawberry.Private[int]
    code: str
    name: str
    kind: str
    source: str = strawberry.field(description="config (config/analytics.toml) or api (defineSegment).")
    rule: JSON | None = strawberry.field(description="The filter, in the rule language of docs/analytics.md.")
    created_by: str | None
    updated_at: datetime

    @strawberry.field(description="Members now.")
    async def size(self, info: Info) -> int:
        return await segment_loaders(info).sizes.load(self.pk)

    @strawberry.field(description="Size per day, oldest first, over the last `days` days.")
    async def history(self, info: Info, days: int = 90) -> list[SegmentSizePoint]:
        if not 1 <= days <= 3660:
            raise BadInput("days must be between 1 and 3660", field="days")
        found = await segment_loaders(info).history.load((self.pk, days))
        return [SegmentSizePoint(day=r["day"].isoformat(), size=int(r["size"])) for r in found]

    @strawberry.field(description="Members now, by customer id.")
    async def members(
        self, info: Info, first: int | None = None, after: str | None = None
    ) -> Connection[Customer]:
        n = page_size(first)
        key = decode_cursor(after)
        if key is not None and (len(key) != 1 or not isinstance(key[0], int)):
            raise BadInput(f"after: {after!r} is not a cursor of this connection", field="after")
        page = await segment_loaders(info).members.load((self.pk, n, key[0] if key else None))
        for r in page.rows:
            info.context.loaders.customer.prime(r["id"], r)
        result: Connection[Customer] = connection(page, n, after, lambda r: [r["id"]], customer_node)
        return result


def segment_of(r: dict[str, Any]) -> Segment:
    return Segment(
        id=to_global_id("Segment", r["id"]),
        pk=r["id"],
        code=r["code"],
        name=r["name"],
        kind=r["kind"],
        source=r["source"],
        rule=(r["definition"] or {}).get("rule"),
        created_by=r["created_by"],
        updated_at=r["updated_at"],
    )


async def resolve_segments(
    info: Info, first: int | None = None, after: str | None = None
) -> Connection[Segment]:
    n = page_size(first)
    key = decode_cursor(after)
    if key is not None and (len(key) != 1 or not isinstance(key[0], str)):
        raise BadInput(f"after: {after!r} is not a cursor of this connection", field="after")
    sql = (
        "select t.total as _total, p.* from (select count(*) as total from segment) t left join lateral ("  # noqa: S608
        f" select {SEGMENT_COLUMNS} from segment x where (cast(:after as text) is null or x.code > :after)"
        " order by x.code limit :lim) p on true"
    )
    page = await fetch_page(info.context.engine, sql, after=key[0] if key else None, lim=n + 1)
    result: Connection[Segment] = connection(page, n, after, lambda r: [r["code"]], segment_of)
    return result


async def resolve_segment(info: Info, id: strawberry.ID) -> Segment | None:
    found = await rows(
        info.context.engine,
        f"select {SEGMENT_COLUMNS} from segment x where x.id = :i",  # noqa: S608 - constant columns
        i=int_id(id, "Segment"),
    )
    return segment_of(found[0]) if found else None


# --------------------------------------------------------------------------- overview


@strawberry.type
class Count:
    key: str
    count: int


@strawberry.type(description="One square of the RFM grid: recency score x frequency score.")
class RfmGridCell:
    recency: int
    frequency: int
    cell: str
    count: int


@strawberry.type(
    description="The quintile cut points of the last full run, for recency (days), frequency, monetary."
)
class RfmCutPoints:
    recency_days: list[float]
    frequency: list[float]
    monetary_yuan: list[float]
    fitted_at: datetime
    customers: int


@strawberry.type(
    description="How the base divides: by lifecycle stage, value tier, RFM cell, ABC and channel."
)
class AnalyticsOverview:
    customers: int = strawberry.field(description="Active golden customers measured.")
    by_lifecycle: list[Count]
    by_value_tier: list[Count]
    by_rfm_cell: list[Count]
    by_abc_class: list[Count]
    by_channel: list[Count] = strawberry.field(description="By preferred channel (purchasing customers).")
    rfm_grid: list[RfmGridCell]
    rfm_cut_points: RfmCutPoints | None


OVERVIEW_SQL = """
with m as (select * from customer_metrics)
select (select count(*) from m) as customers,
       (select coalesce(jsonb_agg(jsonb_build_array(k, n) order by n desc, k), '[]') from
           (select lifecycle_stage as k, count(*) as n from m group by 1) x) as lifecycle,
       (select coalesce(jsonb_agg(jsonb_build_array(k, n) order by n desc, k), '[]') from
           (select value_tier as k, count(*) as n from m where value_tier is not null group by 1) x) as tiers,
       (select coalesce(jsonb_agg(jsonb_build_array(k, n) order by n desc, k), '[]') from
           (select rfm_cell as k, count(*) as n from m where rfm_cell is not null group by 1) x) as cells,
       (select coalesce(jsonb_agg(jsonb_build_array(k, n) order by k), '[]') from
           (select abc_class as k, count(*) as n from m where abc_class is not null group by 1) x) as abc,
       (select coalesce(jsonb_agg(jsonb_build_array(k, n) order by n desc, k), '[]') from
           (select preferred_channel as k, count(*) as n from m where preferred_channel is not null group by 1) x)
           as channels,
       (select coalesce(jsonb_agg(jsonb_build_array(r, f, c, n) order by r desc, f), '[]') from
           (select r_score as r, f_score as f, min(rfm_cell) as c, count(*) as n from m
             where r_score is not null group by 1, 2) x) as grid,
       (select jsonb_build_object('p', parameters, 'at', fitted_at) from analytics_model where kind = 'rfm') as rfm
"""


def _counts(pairs: list[list[Any]]) -> list[Count]:
    return [Count(key=str(k), count=int(n)) for k, n in pairs]


async def overview_row(engine: AsyncEngine) -> dict[str, Any]:
    return (await rows(engine, OVERVIEW_SQL))[0]


async def resolve_overview(info: Info) -> AnalyticsOverview:
    r = await overview_row(info.context.engine)
    cuts = None
    if r["rfm"]:
        p = r["rfm"]["p"]
        cuts = RfmCutPoints(
            recency_days=[float(x) for x in p["recency_days"]],
            frequency=[float(x) for x in p["frequency"]],
            monetary_yuan=[round(float(x) / 100, 2) for x in p["monetary_fen"]],
            fitted_at=datetime.fromisoformat(r["rfm"]["at"]),
            customers=int(p.get("customers") or 0),
        )
    return AnalyticsOverview(
        customers=int(r["customers"]),
        by_lifecycle=_counts(r["lifecycle"]),
        by_value_tier=_counts(r["tiers"]),
        by_rfm_cell=_counts(r["cells"]),
        by_abc_class=_counts(r["abc"]),
        by_channel=_counts(r["channels"]),
        rfm_grid=[RfmGridCell(recency=g[0], frequency=g[1], cell=g[2], count=g[3]) for g in r["grid"]],
        rfm_cut_points=cuts,
    )


# --------------------------------------------------------------------------- mutations


@strawberry.input
class DefineSegmentInput:
    code: str = strawberry.field(
        description="Lower-case letters, digits, - and _; defining a code again replaces it."
    )
    name: str
    rule: JSON = strawberry.field(
        description="The filter: and/or/not over measures, tags, tiers and attributes."
    )


@strawberry.type
class SegmentPayload:
    segment: Segment | None
    user_errors: list[UserError]


@strawberry.input
class TagInput:
    customer_id: strawberry.ID
    tag: str


@strawberry.type
class TagPayload:
    tags: list[CustomerTag] | None
    user_errors: list[UserError]


@strawberry.input
class HouseholdInput:
    household_id: strawberry.ID
    customer_ids: list[strawberry.ID] | None = strawberry.field(
        default=None, description="splitHousehold: the members to take out; omitted: dissolve the household."
    )


@strawberry.type
class HouseholdPayload:
    household: Household | None
    user_errors: list[UserError]


def _rule_errors(exc: ValidationError) -> list[UserError]:
    out = []
    for err in exc.errors():
        path = [str(p) for p in err["loc"]]
        out.append(
            UserError(
                field=path or None, message=f"{'.'.join(path) or 'input'}: {err['msg']}", code="BAD_RULE"
            )
        )
    return out


async def define_segment(info: Info, input: DefineSegmentInput) -> SegmentPayload:
    config = get_config()
    try:
        spec = SegmentSpec.model_validate({"code": input.code, "name": input.name, "rule": input.rule})
    except ValidationError as exc:
        return SegmentPayload(segment=None, user_errors=_rule_errors(exc))
    unknown = check_cells(spec.rule, set(config.rfm.names()))
    if unknown:
        return SegmentPayload(
            segment=None,
            user_errors=[
                UserError(field=["rule"], message=f"unknown RFM cells {sorted(unknown)}", code="BAD_RULE")
            ],
        )
    actor = info.context.principal.actor
    now = datetime.now(UTC)

    async def work(conn: AsyncConnection) -> dict[str, Any] | None:
        found = (
            (
                await conn.execute(
                    sa.text(
                        "insert into segment (code, name, kind, definition, source, created_by)"  # noqa: S608
                        " values (:code, :name, 'custom', cast(:d as jsonb), 'api', :actor)"
                        " on conflict (code) do update set name = excluded.name, definition = excluded.definition,"
                        " created_by = excluded.created_by, updated_at = now() where segment.source = 'api'"
                        f" returning {SEGMENT_COLUMNS.replace('x.', '')}"
                    ),
                    {
                        "code": spec.code,
                        "name": spec.name,
                        "d": json.dumps({"rule": spec.rule.as_json()}),
                        "actor": actor,
                    },
                )
            )
            .mappings()
            .first()
        )
        if found is None:
            return None
        # Everyone is measured already: the new segment's members are known at once.
        await segment_engine.apply_segments(conn, config, None, now, only=int(found["id"]))
        return dict(found)

    row = await in_transaction(info.context.engine, work)
    if row is None:
        return SegmentPayload(
            segment=None,
            user_errors=[
                UserError(
                    field=["code"],
                    message=f"segment {spec.code} is defined in the configuration file; change it there",
                    code="CONFIG_SEGMENT",
                )
            ],
        )
    return SegmentPayload(segment=segment_of(row), user_errors=[])


async def _tags_now(conn: AsyncConnection, customer_id: int) -> list[CustomerTag]:
    found = await conn.execute(
        sa.text(
            "select t.name, ct.source, ct.added_by, ct.created_at from customer_tag ct join tag t on t.id = ct.tag_id"
            " where ct.customer_id = :c order by t.name"
        ),
        {"c": customer_id},
    )
    return [
        CustomerTag(name=r[0], source=r[1] or "manual", added_by=r[2], added_at=r[3]) for r in found.all()
    ]


def _tag_name(tag: str) -> str:
    name = tag.strip()
    if not 1 <= len(name) <= 64:
        raise BadInput("tag: a tag is 1 to 64 characters", field="tag")
    return name


async def _tag_call(info: Info, input: TagInput, add: bool) -> TagPayload:
    customer = int_id(input.customer_id, "Customer")
    name = _tag_name(input.tag)
    actor = info.context.principal.actor

    async def work(conn: AsyncConnection) -> TagPayload:
        status = (
            await conn.execute(sa.text("select status from golden_customer where id = :c"), {"c": customer})
        ).scalar()
        if status != "active":
            raise NotFound(f"customerId: no active customer {input.customer_id}")
        system = (await conn.execute(sa.text("select system from tag where name = :n"), {"n": name})).scalar()
        if system:
            return TagPayload(
                tags=None,
                user_errors=[
                    UserError(
                        field=["tag"], message=f"{name} is set by its rule, not by hand", code="SYSTEM_TAG"
                    )
                ],
            )
        if add:
            await conn.execute(
                sa.text("insert into tag (name) values (:n) on conflict (name) do nothing"), {"n": name}
            )
            await conn.execute(
                sa.text(
                    "insert into customer_tag (customer_id, tag_id, source, added_by)"
                    " select :c, id, 'manual', :actor from tag where name = :n on conflict do nothing"
                ),
                {"c": customer, "n": name, "actor": actor},
            )
        else:
            await conn.execute(
                sa.text(
                    "delete from customer_tag ct using tag t where t.id = ct.tag_id and t.name = :n"
                    " and ct.customer_id = :c and ct.source = 'manual'"
                ),
                {"c": customer, "n": name},
            )
        return TagPayload(tags=await _tags_now(conn, customer), user_errors=[])

    result = await in_transaction(info.context.engine, work)
    info.context.domain_loaders.pop("analytics", None)
    return result


async def tag_customer(info: Info, input: TagInput) -> TagPayload:
    return await _tag_call(info, input, add=True)


async def untag_customer(info: Info, input: TagInput) -> TagPayload:
    return await _tag_call(info, input, add=False)


async def _household_row(
    conn: AsyncConnection, household_id: int, customer_id: int | None
) -> dict[str, Any] | None:
    found = (
        (
            await conn.execute(
                sa.text(
                    "select h.id, h.key_kind, h.status,"
                    " coalesce((select role from household_member where household_id = h.id and customer_id = :c), 'member')"
                    " as role,"
                    " (select jsonb_agg(jsonb_build_object('customer_id', x.customer_id, 'role', x.role,"
                    " 'net_spent_fen', coalesce(m.net_spent_fen, 0)) order by x.customer_id)"
                    " from household_member x left join customer_metrics m on m.customer_id = x.customer_id"
                    " where x.household_id = h.id and not x.excluded) as members"
                    " from household h where h.id = :h"
                ),
                {"h": household_id, "c": customer_id},
            )
        )
        .mappings()
        .first()
    )
    return None if found is None else dict(found)


async def _household_call(info: Info, input: HouseholdInput, *, split: bool) -> HouseholdPayload:
    household = int_id(input.household_id, "Household")
    actor = info.context.principal.actor
    taken = [int_id(c, "Customer") for c in input.customer_ids or []]

    async def work(conn: AsyncConnection) -> HouseholdPayload:
        status = (
            await conn.execute(
                sa.text("select status from household where id = :h for update"), {"h": household}
            )
        ).scalar()
        if status is None:
            raise NotFound(f"householdId: no household {input.household_id}")
        if split and taken:
            result = await conn.execute(
                sa.text(
                    "update household_member set excluded = true where household_id = :h"
                    " and customer_id = any(cast(:ids as bigint[])) and not excluded"
                ),
                {"h": household, "ids": taken},
            )
            if (result.rowcount or 0) != len(set(taken)):
                return HouseholdPayload(
                    household=None,
                    user_errors=[
                        UserError(
                            field=["customerIds"], message="not all of these are members", code="NOT_A_MEMBER"
                        )
                    ],
                )
        # Members taken out stay out (excluded); with none named the whole household is dissolved.
        new_status = "confirmed" if not split else ("split" if not taken else status)
        await conn.execute(
            sa.text(
                "update household set status = :s, decided_by = :a, decided_at = now(), updated_at = now() where id = :h"
            ),
            {"s": new_status, "a": actor, "h": household},
        )
        row = await _household_row(conn, household, None)
        assert row is not None
        return HouseholdPayload(household=household_of(row), user_errors=[])

    result = await in_transaction(info.context.engine, work)
    info.context.domain_loaders.pop("analytics", None)
    return result


async def confirm_household(info: Info, input: HouseholdInput) -> HouseholdPayload:
    if input.customer_ids:
        raise BadInput("customerIds: confirmHousehold confirms the whole household", field="customerIds")
    return await _household_call(info, input, split=False)


async def split_household(info: Info, input: HouseholdInput) -> HouseholdPayload:
    return await _household_call(info, input, split=True)


@strawberry.type
class Query:
    segments: Connection[Segment] = strawberry.field(
        resolver=resolve_segments,
        permission_classes=[IsStaffOrService],
        description="Rule segments, by code.",
    )
    segment: Segment | None = strawberry.field(
        resolver=resolve_segment, permission_classes=[IsStaffOrService]
    )
    analytics_overview: AnalyticsOverview = strawberry.field(
        resolver=resolve_overview,
        permission_classes=[IsStaffOrService],
        description="Counts by lifecycle stage, value tier, RFM cell, ABC class and channel; the RFM grid.",
    )


@strawberry.type
class Mutation:
    define_segment: SegmentPayload = strawberry.field(
        resolver=define_segment,
        permission_classes=[IsStaffAdmin],
        description="Define or replace a rule segment (staff_admin); its members are computed at once.",
    )
    tag_customer: TagPayload = strawberry.field(
        resolver=tag_customer,
        permission_classes=[IsStaff],
        description="Add a manual tag (again: no change).",
    )
    untag_customer: TagPayload = strawberry.field(
        resolver=untag_customer, permission_classes=[IsStaff], description="Remove a manual tag."
    )
    confirm_household: HouseholdPayload = strawberry.field(
        resolver=confirm_household,
        permission_classes=[IsStaff],
        description="Confirm a household: recomputes keep it as it is.",
    )
    split_household: HouseholdPayload = strawberry.field(
        resolver=split_household,
        permission_classes=[IsStaff],
        description="Take members out of a household (kept out), or dissolve it when no customerIds are given.",
    )


__all__ = ["Mutation", "Query"]
