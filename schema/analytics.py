"""Analytics on Customer: `metrics`, `rfm`, `valueTier`, `abcClass`, `lifecycle`, `clv`, `portrait`, `tags`,
`segments`, `household`.

Every field reads through a per-request DataLoader: one statement per kind of row for every customer in
the query. A member sees their own `metrics` only; the labels marketing puts on people (RFM cell, tier,
lifecycle, CLV, portrait, tags, segments, household) are for staff and service tokens.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import strawberry
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncEngine
from strawberry.dataloader import DataLoader

from crm.analytics.config import Rule, get_config
from crm.analytics.rules import Binds, compile_rule
from crm.rules_file import describe
from schema.context import Info
from schema.errors import BadInput
from schema.loaders import _by, rows
from schema.permissions import IsStaffOrService, customer_visible
from schema.relay import to_global_id
from schema.scalars import Money

METRIC_COLUMNS = (
    "m.customer_id, m.order_count, m.total_spent_fen, m.refunded_fen, m.net_spent_fen, m.average_order_value_fen,"
    " m.purchase_frequency, m.first_order_at, m.last_order_at, m.preferred_channel, m.preferred_category,"
    " m.channels, m.order_channels, m.categories, m.price_sensitivity, m.age_band, m.city_tier, m.recency_days,"
    " m.r_score, m.f_score, m.m_score, m.rfm_cell, m.value_tier, m.abc_class, m.lifecycle_stage,"
    " m.lifecycle_since, m.clv_historical_fen, m.clv_predicted_fen, m.expected_orders, m.computed_at,"
    " s.code as preferred_store, g.gender, g.city"
)


class AnalyticsLoaders:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self.metrics = DataLoader(self._metrics)
        self.history = DataLoader(self._histories)
        self.tags = DataLoader(self._tags)
        self.segments = DataLoader(self._segments)
        self.households = DataLoader(self._households)
        self.models = DataLoader(self._models)

    async def _metrics(self, ids: Sequence[int]) -> list[dict[str, Any] | None]:
        found = await rows(
            self.engine,
            f"select {METRIC_COLUMNS} from customer_metrics m join golden_customer g on g.id = m.customer_id"  # noqa: S608 - constant columns
            " left join store s on s.id = m.preferred_store_id where m.customer_id = any(cast(:ids as bigint[]))",
            ids=list(ids),
        )
        by_id = {r["customer_id"]: r for r in found}
        return [by_id.get(i) for i in ids]

    async def _histories(self, ids: Sequence[int]) -> list[list[dict[str, Any]]]:
        found = await rows(
            self.engine,
            "select customer_id, stage, from_stage, started_at, ended_at from ("
            " select h.*, row_number() over (partition by customer_id order by started_at desc, id desc) n"
            " from lifecycle_history h where customer_id = any(cast(:ids as bigint[]))) h where n <= 20"
            " order by customer_id, n",
            ids=list(ids),
        )
        grouped = _by("customer_id", found)
        return [grouped.get(i, []) for i in ids]

    async def _tags(self, ids: Sequence[int]) -> list[list[dict[str, Any]]]:
        found = await rows(
            self.engine,
            "select ct.customer_id, t.name, ct.source, ct.added_by, ct.created_at from customer_tag ct"
            " join tag t on t.id = ct.tag_id where ct.customer_id = any(cast(:ids as bigint[]))"
            " order by ct.customer_id, t.name",
            ids=list(ids),
        )
        grouped = _by("customer_id", found)
        return [grouped.get(i, []) for i in ids]

    async def _segments(self, ids: Sequence[int]) -> list[list[dict[str, Any]]]:
        found = await rows(
            self.engine,
            "select sm.customer_id, s.id, s.code, s.name, sm.entered_at from segment_membership sm"
            " join segment s on s.id = sm.segment_id where sm.customer_id = any(cast(:ids as bigint[]))"
            " order by sm.customer_id, s.code",
            ids=list(ids),
        )
        grouped = _by("customer_id", found)
        return [grouped.get(i, []) for i in ids]

    async def _households(self, ids: Sequence[int]) -> list[dict[str, Any] | None]:
        # A customer's household: a confirmed one first, then the largest (address and phone may both group).
        found = await rows(
            self.engine,
            """
select c.id as customer_id, h.* from unnest(cast(:ids as bigint[])) as c(id)
cross join lateral (
    select h.id, h.key_kind, h.status, me.role,
           (select jsonb_agg(jsonb_build_object('customer_id', x.customer_id, 'role', x.role,
                                                'net_spent_fen', coalesce(m.net_spent_fen, 0)) order by x.customer_id)
              from household_member x left join customer_metrics m on m.customer_id = x.customer_id
             where x.household_id = h.id and not x.excluded) as members
    from household_member me join household h on h.id = me.household_id
    where me.customer_id = c.id and not me.excluded and h.status <> 'split'
    order by h.status = 'confirmed' desc,
             (select count(*) from household_member y where y.household_id = h.id and not y.excluded) desc, h.id
    limit 1
) h
""",
            ids=list(ids),
        )
        by_id = {r["customer_id"]: r for r in found}
        return [by_id.get(i) for i in ids]

    async def _models(self, kinds: Sequence[str]) -> list[dict[str, Any] | None]:
        found = await rows(
            self.engine,
            "select kind, fitted_at, customers, rule_version, parameters from analytics_model"
            " where kind = any(cast(:kinds as text[]))",
            kinds=list(kinds),
        )
        by_kind = {r["kind"]: r for r in found}
        return [by_kind.get(k) for k in kinds]


def analytics_loaders(info: Info) -> AnalyticsLoaders:
    found = info.context.domain_loaders.get("analytics")
    if found is None:
        found = info.context.domain_loaders["analytics"] = AnalyticsLoaders(info.context.engine)
    return found


# --------------------------------------------------------------------------- types


@strawberry.type(description="What the customer bought: counts, spend net of refunds, habits.")
class CustomerMetrics:
    row: strawberry.Private[dict[str, Any]]

    @strawberry.field(description="Purchases: counted orders not refunded in full.")
    def order_count(self) -> int:
        return int(self.row["order_count"])

    @strawberry.field(description="Paid for counted orders, before refunds.")
    def total_spent(self) -> Money:
        return Money(fen=int(self.row["total_spent_fen"]))

    @strawberry.field
    def refunded(self) -> Money:
        return Money(fen=int(self.row["refunded_fen"]))

    @strawberry.field(description="totalSpent minus refunds.")
    def net_spent(self) -> Money:
        return Money(fen=int(self.row["net_spent_fen"]))

    @strawberry.field(description="netSpent per purchase.")
    def average_order_value(self) -> Money:
        return Money(fen=int(self.row["average_order_value_fen"]))

    @strawberry.field(description="Purchases per year over the customer's tenure (at least a year).")
    def purchase_frequency(self) -> float | None:
        value = self.row["purchase_frequency"]
        return None if value is None else round(float(value), 3)

    @strawberry.field
    def first_order_at(self) -> datetime | None:
        value: datetime | None = self.row["first_order_at"]
        return value

    @strawberry.field
    def last_order_at(self) -> datetime | None:
        value: datetime | None = self.row["last_order_at"]
        return value

    @strawberry.field(description="Whole days since the last purchase, as of now.")
    def days_since_last_order(self) -> int | None:
        last: datetime | None = self.row["last_order_at"]
        return None if last is None else (datetime.now(UTC) - last).days

    @strawberry.field(description="The channel of most purchases.")
    def preferred_channel(self) -> str | None:
        value: str | None = self.row["preferred_channel"]
        return value

    @strawberry.field(description="The store code of most store purchases.")
    def preferred_store(self) -> str | None:
        value: str | None = self.row["preferred_store"]
        return value

    @strawberry.field(description="The product category with the most spend.")
    def preferred_category(self) -> str | None:
        value: str | None = self.row["preferred_category"]
        return value

    @strawberry.field(description="When the measures were last computed.")
    def computed_at(self) -> datetime:
        value: datetime = self.row["computed_at"]
        return value


@strawberry.type(description="RFM quintile scores over the whole base (5 = best) and the classic cell.")
class Rfm:
    recency: int | None = strawberry.field(description="5: among the most recent buyers; null: never bought.")
    frequency: int | None
    monetary: int | None
    cell: str = strawberry.field(
        description="champions, loyal, at_risk, hibernating, ... (config); prospect: never bought."
    )
    cell_name: str
    recency_days: int | None = strawberry.field(description="Days since the last purchase at the last run.")


@strawberry.type
class LifecycleStage:
    stage: str
    from_stage: str | None
    started_at: datetime
    ended_at: datetime | None = strawberry.field(description="Null: the current stage.")


@strawberry.type(description="potential, new, active, at_risk, churned or won_back, since when, and before.")
class Lifecycle:
    customer_pk: strawberry.Private[int]
    stage: str
    since: datetime

    @strawberry.field(description="Stages newest first (the latest 20).")
    async def history(self, info: Info) -> list[LifecycleStage]:
        found = await analytics_loaders(info).history.load(self.customer_pk)
        return [
            LifecycleStage(
                stage=r["stage"],
                from_stage=r["from_stage"],
                started_at=r["started_at"],
                ended_at=r["ended_at"],
            )
            for r in found
        ]


@strawberry.type(
    description="Lifetime value: what the customer has spent, and a BG/NBD + Gamma-Gamma forecast."
)
class Clv:
    historical: Money = strawberry.field(description="Net spend so far.")
    predicted12m: Money | None = strawberry.field(
        name="predicted12m", description="Expected spend over the model's horizon (default 365 days)."
    )
    expected_orders12m: float | None = strawberry.field(name="expectedOrders12m")
    model_fitted_at: datetime | None


@strawberry.type(description="Who the customer is, in the terms segments use.")
class Portrait:
    age_band: str | None = strawberry.field(description="From the birthday, e.g. 25-34.")
    gender: str | None
    city: str | None
    city_tier: str | None = strawberry.field(description="tier1, new_tier1, tier2 (config); null: other.")
    channels: list[str] = strawberry.field(description="Channels the customer is known on (social included).")
    order_channels: list[str]
    categories: list[str] = strawberry.field(description="Product categories bought.")
    price_sensitivity: float | None = strawberry.field(
        description="Share of purchases with a discount or a coupon."
    )


@strawberry.type(description="A tag on the customer: set by a rule (system) or by staff (manual).")
class CustomerTag:
    name: str
    source: str = strawberry.field(description="system or manual.")
    added_by: str | None
    added_at: datetime


@strawberry.type(description="A rule segment the customer is in now.")
class SegmentMembership:
    segment_id: strawberry.ID
    code: str
    name: str
    entered_at: datetime


@strawberry.type
class HouseholdMember:
    customer_id: strawberry.ID
    role: str = strawberry.field(
        description="orderer (places the orders), recipient (named on deliveries), member."
    )
    net_spent: Money


@strawberry.type(
    description="Customers sharing a delivery address or a family phone: a relation, never a merge."
)
class Household:
    id: strawberry.ID
    kind: str = strawberry.field(description="address or phone: what the members share.")
    status: str = strawberry.field(description="auto, or confirmed by staff.")
    role: str = strawberry.field(description="This customer's role in it.")
    members: list[HouseholdMember]
    total_spent: Money = strawberry.field(description="The members' net spend together.")


def lifecycle_of(pk: int, row: dict[str, Any]) -> Lifecycle:
    return Lifecycle(customer_pk=pk, stage=row["lifecycle_stage"], since=row["lifecycle_since"])


@strawberry.type
class AnalyticsFields:
    """Customer's analytics fields (a CUSTOMER_MIXINS member: resolvers read self.pk)."""

    pk: strawberry.Private[int]

    async def _row(self, info: Info) -> dict[str, Any] | None:
        if not customer_visible(info, self.pk):
            return None
        row: dict[str, Any] | None = await analytics_loaders(info).metrics.load(self.pk)
        return row

    @strawberry.field(
        description="Order count, spend, AOV, frequency, recency, preferences (null before a run)."
    )
    async def metrics(self, info: Info) -> CustomerMetrics | None:
        row = await self._row(info)
        return None if row is None else CustomerMetrics(row=row)

    @strawberry.field(
        permission_classes=[IsStaffOrService], description="Null before the first analytics run."
    )
    async def rfm(self, info: Info) -> Rfm | None:
        row = await self._row(info)
        if row is None or row["rfm_cell"] is None:
            return None
        cells = get_config().rfm.names()
        return Rfm(
            recency=row["r_score"],
            frequency=row["f_score"],
            monetary=row["m_score"],
            cell=row["rfm_cell"],
            cell_name=cells.get(row["rfm_cell"], row["rfm_cell"]),
            recency_days=row["recency_days"],
        )

    @strawberry.field(
        permission_classes=[IsStaffOrService], description="high, mid or low by net spend (config)."
    )
    async def value_tier(self, info: Info) -> str | None:
        row = await self._row(info)
        return None if row is None else row["value_tier"]

    @strawberry.field(
        permission_classes=[IsStaffOrService], description="A, B or C: share of the base's spend."
    )
    async def abc_class(self, info: Info) -> str | None:
        row = await self._row(info)
        return None if row is None else row["abc_class"]

    @strawberry.field(permission_classes=[IsStaffOrService])
    async def lifecycle(self, info: Info) -> Lifecycle | None:
        row = await self._row(info)
        return None if row is None else lifecycle_of(self.pk, row)

    @strawberry.field(permission_classes=[IsStaffOrService])
    async def clv(self, info: Info) -> Clv | None:
        row = await self._row(info)
        if row is None:
            return None
        model = await analytics_loaders(info).models.load("clv")
        predicted = row["clv_predicted_fen"]
        return Clv(
            historical=Money(fen=int(row["clv_historical_fen"])),
            predicted12m=None if predicted is None else Money(fen=int(predicted)),
            expected_orders12m=None
            if row["expected_orders"] is None
            else round(float(row["expected_orders"]), 3),
            model_fitted_at=model["fitted_at"] if model else None,
        )

    @strawberry.field(permission_classes=[IsStaffOrService])
    async def portrait(self, info: Info) -> Portrait | None:
        row = await self._row(info)
        if row is None:
            return None
        sensitivity = row["price_sensitivity"]
        return Portrait(
            age_band=row["age_band"],
            gender=row["gender"],
            city=row["city"],
            city_tier=row["city_tier"],
            channels=list(row["channels"]),
            order_channels=list(row["order_channels"]),
            categories=list(row["categories"]),
            price_sensitivity=None if sensitivity is None else round(float(sensitivity), 4),
        )

    @strawberry.field(permission_classes=[IsStaffOrService], description="System and manual tags, by name.")
    async def tags(self, info: Info) -> list[CustomerTag] | None:
        if not customer_visible(info, self.pk):
            return None
        found = await analytics_loaders(info).tags.load(self.pk)
        return [
            CustomerTag(
                name=r["name"],
                source=r["source"] or "manual",
                added_by=r["added_by"],
                added_at=r["created_at"],
            )
            for r in found
        ]

    @strawberry.field(
        permission_classes=[IsStaffOrService], description="Rule segments the customer is in now."
    )
    async def segments(self, info: Info) -> list[SegmentMembership] | None:
        if not customer_visible(info, self.pk):
            return None
        found = await analytics_loaders(info).segments.load(self.pk)
        return [
            SegmentMembership(
                segment_id=to_global_id("Segment", r["id"]),
                code=r["code"],
                name=r["name"],
                entered_at=r["entered_at"],
            )
            for r in found
        ]

    @strawberry.field(permission_classes=[IsStaffOrService], description="Null when in no household.")
    async def household(self, info: Info) -> Household | None:
        if not customer_visible(info, self.pk):
            return None
        h = await analytics_loaders(info).households.load(self.pk)
        if h is None:
            return None
        return household_of(h)


def household_of(h: dict[str, Any]) -> Household:
    members = [
        HouseholdMember(
            customer_id=to_global_id("Customer", x["customer_id"]),
            role=x["role"],
            net_spent=Money(fen=int(x["net_spent_fen"])),
        )
        for x in h["members"] or []
    ]
    return Household(
        id=to_global_id("Household", h["id"]),
        kind=h["key_kind"],
        status=h["status"],
        role=h["role"],
        members=members,
        total_spent=Money(fen=sum(int(x["net_spent_fen"]) for x in h["members"] or [])),
    )


# customers(filter): the analytics fields of CustomerFilter (schema.search), each an EXISTS over the
# customer's measures so a customer never measured matches none of them.
LIST_FILTERS = {
    "lifecycle": "m.lifecycle_stage",
    "value_tier": "m.value_tier",
    "rfm_cell": "m.rfm_cell",
    "abc_class": "m.abc_class",
}
NUMBER_FILTERS = {
    "net_spent_fen": "m.net_spent_fen",
    "average_order_value_fen": "m.average_order_value_fen",
    "days_since_last_order": "floor(extract(epoch from (now() - m.last_order_at)) / 86400)",
}


def filter_parts(binder: Binds, f: Any) -> list[str]:
    """SQL conditions on `g` (golden_customer) for the analytics fields set on filter `f`."""
    conds: list[str] = []
    for key, column in LIST_FILTERS.items():
        values = getattr(f, key)
        if values is not None:
            conds.append(f"{column} = any(cast({binder.bind(list(values))} as text[]))")
    for key, expr in NUMBER_FILTERS.items():
        bounds = getattr(f, key)
        if bounds is not None:
            for op, value in (("=", bounds.eq), (">=", bounds.gte), ("<=", bounds.lte)):
                if value is not None:
                    conds.append(f"{expr} {op} {binder.bind(value)}")
    for key, column in (
        ("preferred_channel", "m.preferred_channel"),
        ("preferred_category", "m.preferred_category"),
    ):
        value = getattr(f, key)
        if value is not None:
            conds.append(f"{column} = {binder.bind(value)}")
    if f.rule is not None:
        try:
            rule = Rule.model_validate(f.rule)
        except ValidationError as exc:
            raise BadInput(f"filter.rule: {describe(exc)}", field="filter.rule") from None
        conds.append(compile_rule(rule, binder, now=datetime.now(UTC), timezone=get_config().timezone))
    parts = []
    if conds:
        parts.append(
            "exists (select 1 from customer_metrics m where m.customer_id = g.id and "  # noqa: S608 - fixed fragments
            + " and ".join(conds)
            + ")"
        )
    if f.tag is not None:
        parts.append(
            "exists (select 1 from customer_tag ct join tag t on t.id = ct.tag_id"  # noqa: S608 - bound value
            f" where ct.customer_id = g.id and t.name = {binder.bind(f.tag)})"
        )
    if f.segment is not None:
        parts.append(
            "exists (select 1 from segment_membership sm join segment s on s.id = sm.segment_id"  # noqa: S608
            f" where sm.customer_id = g.id and s.code = {binder.bind(f.segment)})"
        )
    return parts


__all__ = ["AnalyticsFields", "analytics_loaders", "filter_parts"]
