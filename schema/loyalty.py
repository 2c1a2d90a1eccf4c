"""Loyalty in the graph: `Customer.points`, `.membership`, `.coupons`, `.referrals`; the point, tier,
coupon and referral mutations; `campaigns`, `campaignReport`, `referralReport`.

Reads go through per-request DataLoaders (one statement per kind of row for every customer in the query).
Mutations run crm.loyalty.service in one transaction; a refusal rolls it back and comes back as a
userError with a stable code. Point mutations and coupon grants take an idempotencyKey.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
import strawberry
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from strawberry.dataloader import DataLoader

from crm.loyalty import service
from crm.loyalty.campaigns import report
from crm.loyalty.config import CouponSpec, LoyaltyConfig, get_config
from crm.loyalty.service import LoyaltyRefusal, Redemption
from schema.context import Info
from schema.errors import BadInput, Forbidden, UserError
from schema.loaders import PageArgs, _by, customer_page_sql, customer_pages, fetch_page, rows
from schema.permissions import IsStaff, IsStaffAdmin, acting_customer, customer_visible
from schema.relay import Connection, Node, connection, int_id, page_size, time_keyset, to_global_id
from schema.scalars import Money

LEDGER_COLUMNS = "x.id, x.kind, x.points, x.owed_points, x.reason, x.actor, x.rule_version, x.order_id, x.lot_id, x.created_at"
COUPON_COLUMNS = (
    "x.id, x.code, x.kind, x.value_fen, x.percent_off, x.min_spend_fen, x.state, x.issued_at, x.expires_at,"
    " x.redeemed_at, x.redeemed_order_id, x.campaign_id, x.reason"
)
COUPON_FILTERS = (("state", "x.state = :state", "state"),)


class LoyaltyLoaders:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self.balance = DataLoader(self._balances)
        self.lots = DataLoader(self._lots)
        self.membership = DataLoader(self._memberships)
        self.history = DataLoader(self._histories)
        self.referrals = DataLoader(self._referrals)
        self.ledger_page: DataLoader[tuple[int, PageArgs], Any] = DataLoader(
            self._ledger_pages, cache_key_fn=lambda k: k
        )
        self.coupons_page: DataLoader[tuple[int, PageArgs], Any] = DataLoader(
            self._coupon_pages, cache_key_fn=lambda k: k
        )

    async def _balances(self, ids: Sequence[int]) -> list[dict[str, Any]]:
        found = await rows(
            self.engine,
            """
select c.id, coalesce(b.balance, 0) as balance, coalesce(b.debt, 0) as debt,
       coalesce(b.lifetime_earned, 0) as lifetime_earned,
       coalesce((select sum(points_remaining) from points_lot l
                 where l.customer_id = c.id and l.released_at is null and l.points_remaining > 0), 0) as pending
from unnest(cast(:ids as bigint[])) as c(id) left join points_balance b on b.customer_id = c.id
""",
            ids=list(ids),
        )
        by_id = {r["id"]: r for r in found}
        return [by_id[i] for i in ids]

    async def _lots(self, ids: Sequence[int]) -> list[list[dict[str, Any]]]:
        found = await rows(
            self.engine,
            "select customer_id, id, points_earned, points_remaining, earned_at, expires_at, available_at,"
            " released_at, order_id from points_lot"
            " where customer_id = any(cast(:ids as bigint[])) and points_remaining > 0"
            " order by customer_id, released_at is null, expires_at, id",
            ids=list(ids),
        )
        grouped = _by("customer_id", found)
        return [grouped.get(i, []) for i in ids]

    async def _memberships(self, ids: Sequence[int]) -> list[dict[str, Any] | None]:
        found = await rows(
            self.engine,
            "select m.*, g.tier_code as effective from membership m join golden_customer g on g.id = m.customer_id"
            " where m.customer_id = any(cast(:ids as bigint[]))",
            ids=list(ids),
        )
        by_id = {r["customer_id"]: r for r in found}
        return [by_id.get(i) for i in ids]

    async def _histories(self, ids: Sequence[int]) -> list[list[dict[str, Any]]]:
        found = await rows(
            self.engine,
            "select customer_id, from_tier, to_tier, reason, actor, rule_version, changed_at from ("
            " select h.*, row_number() over (partition by customer_id order by changed_at desc, id desc) n"
            " from tier_history h where customer_id = any(cast(:ids as bigint[]))) h where n <= 20"
            " order by customer_id, changed_at desc, n",
            ids=list(ids),
        )
        grouped = _by("customer_id", found)
        return [grouped.get(i, []) for i in ids]

    async def _referrals(self, ids: Sequence[int]) -> list[dict[str, Any]]:
        found = await rows(
            self.engine,
            """
select c.id,
       (select code from referral_code r where r.customer_id = c.id) as code,
       (select referrer_id from referral f where f.referee_id = c.id) as referred_by,
       coalesce((select jsonb_agg(jsonb_build_object('referee_id', f.referee_id, 'referred_at', f.referred_at,
                                                     'rewarded', f.rewarded_at is not null) order by f.id)
                 from referral f where f.referrer_id = c.id), '[]'::jsonb) as referred
from unnest(cast(:ids as bigint[])) as c(id)
""",
            ids=list(ids),
        )
        by_id = {r["id"]: r for r in found}
        return [by_id[i] for i in ids]

    async def _ledger_pages(self, keys: Sequence[tuple[int, PageArgs]]) -> list[Any]:
        return await customer_pages(
            self.engine,
            keys,
            lambda filters, after: customer_page_sql(
                "points_ledger_entry", LEDGER_COLUMNS, "x.created_at", (), filters, after
            ),
        )

    async def _coupon_pages(self, keys: Sequence[tuple[int, PageArgs]]) -> list[Any]:
        return await customer_pages(
            self.engine,
            keys,
            lambda filters, after: customer_page_sql(
                "coupon", COUPON_COLUMNS, "x.issued_at", COUPON_FILTERS, filters, after
            ),
        )


def loyalty_loaders(info: Info) -> LoyaltyLoaders:
    found = info.context.domain_loaders.get("loyalty")
    if found is None:
        found = info.context.domain_loaders["loyalty"] = LoyaltyLoaders(info.context.engine)
    return found


# --------------------------------------------------------------------------- types


@strawberry.type(
    description="Points earned together: they expire together; redemptions take the soonest first."
)
class PointsLot:
    points_earned: int
    points_remaining: int
    earned_at: datetime
    expires_at: datetime | None = strawberry.field(description="Null: these points never expire.")
    available_at: datetime | None = strawberry.field(description="When pending points enter the balance.")
    pending: bool
    order_id: strawberry.ID | None


@strawberry.type(description="One ledger entry. The ledger is append-only and sums to the balance.")
class PointsEntry(Node):
    kind: str = strawberry.field(description="earn, redeem, expire, adjust or reverse.")
    points: int
    owed_points: int = strawberry.field(description="Debt this entry created (+) or paid off (-).")
    reason: str | None
    actor: str | None = strawberry.field(description="customer, staff subject, rule or sync.")
    rule_version: str | None
    order_id: strawberry.ID | None
    created_at: datetime


def _entry(r: dict[str, Any]) -> PointsEntry:
    return PointsEntry(
        id=to_global_id("PointsEntry", r["id"]),
        kind=r["kind"],
        points=r["points"],
        owed_points=r["owed_points"],
        reason=r["reason"],
        actor=r["actor"],
        rule_version=r["rule_version"],
        order_id=to_global_id("Order", r["order_id"]) if r["order_id"] else None,
        created_at=r["created_at"],
    )


def _time_key(column: str) -> Any:
    return lambda r: [r[column].isoformat(), r["id"]]


def _never(ts: datetime | None) -> datetime | None:
    return None if ts is None or ts.year >= 9999 or ts == datetime.max.replace(tzinfo=UTC) else ts


@strawberry.type(description="A customer's points: available balance, pending, debt, lots and ledger.")
class Points:
    customer_pk: strawberry.Private[int]
    balance: int = strawberry.field(description="Available now.")
    pending: int = strawberry.field(description="Locked until the return window of their orders closes.")
    debt: int = strawberry.field(
        description="Points a refund took back after they were spent; paid off first."
    )
    lifetime_earned: int

    @strawberry.field(description="Points that expire within `days` (default: the programme's setting).")
    async def expiring_soon(self, info: Info, days: int | None = None) -> int:
        horizon = days if days is not None else get_config().expiry.expiring_soon_days
        if horizon < 0 or horizon > 3650:
            raise BadInput("days must be between 0 and 3650", field="days")
        until = datetime.now(UTC) + timedelta(days=horizon)
        lots = await loyalty_loaders(info).lots.load(self.customer_pk)
        return sum(
            r["points_remaining"] for r in lots if r["released_at"] is not None and r["expires_at"] <= until
        )

    @strawberry.field(description="Open lots, available first by soonest expiry, then pending ones.")
    async def lots(self, info: Info, first: int | None = None) -> list[PointsLot]:
        n = page_size(first)
        found = await loyalty_loaders(info).lots.load(self.customer_pk)
        return [
            PointsLot(
                points_earned=r["points_earned"],
                points_remaining=r["points_remaining"],
                earned_at=r["earned_at"],
                expires_at=_never(r["expires_at"]),
                available_at=r["available_at"],
                pending=r["released_at"] is None,
                order_id=to_global_id("Order", r["order_id"]) if r["order_id"] else None,
            )
            for r in found[:n]
        ]

    @strawberry.field(description="The ledger, newest first.")
    async def ledger(
        self, info: Info, first: int | None = None, after: str | None = None
    ) -> Connection[PointsEntry]:
        n = page_size(first)
        page = await loyalty_loaders(info).ledger_page.load((self.customer_pk, ((), n, time_keyset(after))))
        result: Connection[PointsEntry] = connection(page, n, after, _time_key("created_at"), _entry)
        return result


@strawberry.type
class TierBenefits:
    discount_pct: int
    free_delivery: bool
    priority_service: bool
    member_days: bool
    points_multiplier: float


@strawberry.type(description="A membership level of the programme.")
class Tier:
    code: str
    name: str
    rank: int
    benefits: TierBenefits


def tier_of(config: LoyaltyConfig, code: str | None) -> Tier | None:
    if code is None:
        return None
    for rank, lv in enumerate(config.tiers.levels):
        if lv.code == code:
            return Tier(
                code=lv.code,
                name=lv.name,
                rank=rank,
                benefits=TierBenefits(
                    discount_pct=lv.discount_pct,
                    free_delivery=lv.free_delivery,
                    priority_service=lv.priority_service,
                    member_days=lv.member_days,
                    points_multiplier=lv.points_multiplier,
                ),
            )
    return None


@strawberry.type(description="How far the customer is from the next tier on one qualifying measure.")
class TierProgress:
    tier: str = strawberry.field(description="The next tier's code.")
    metric: str = strawberry.field(description="spend_fen, orders or points_earned, over the rolling window.")
    current: int
    needed: int


@strawberry.type
class TierChange:
    from_tier: str | None
    to_tier: str | None
    reason: str | None
    actor: str | None
    rule_version: str | None
    changed_at: datetime


@strawberry.type(description="A manual tier, with the expiry it must have.")
class TierOverride:
    tier: str
    expires_at: datetime
    reason: str | None


@strawberry.type(description="The customer's tier, why, and what is next.")
class Membership:
    customer_pk: strawberry.Private[int]
    row: strawberry.Private[dict[str, Any]]

    @strawberry.field(description="The tier in force (an active override included).")
    def tier(self) -> Tier | None:
        return tier_of(get_config(), self.row["effective"])

    @strawberry.field
    def benefits(self) -> TierBenefits | None:
        t = tier_of(get_config(), self.row["effective"])
        return t.benefits if t else None

    @strawberry.field(description="Since when the held tier is held.")
    def since(self) -> datetime:
        return self.row["since"]

    @strawberry.field(description="What the rolling window qualifies for at the last evaluation.")
    def qualified_tier(self) -> str:
        return str(self.row["qualified_tier"])

    @strawberry.field(description="When the customer first qualified below the held tier (grace running).")
    def below_since(self) -> datetime | None:
        return self.row["below_since"]

    @strawberry.field
    def next_review_at(self) -> datetime | None:
        return self.row["next_review_at"]

    @strawberry.field
    def override(self) -> TierOverride | None:
        r = self.row
        if r["override_tier"] is None or r["override_expires_at"] is None:
            return None
        return TierOverride(
            tier=r["override_tier"], expires_at=r["override_expires_at"], reason=r["override_reason"]
        )

    @strawberry.field(description="Per qualifying measure, the next tier's threshold; empty at the top tier.")
    def progress_to_next(self) -> list[TierProgress]:
        config = get_config()
        codes = [lv.code for lv in config.tiers.levels]
        current = self.row["effective"]
        if current not in codes or codes.index(current) + 1 >= len(codes):
            return []
        nxt = config.tiers.levels[codes.index(current) + 1]
        on = config.tiers.qualify_on
        measures = {
            "spend_fen": (int(self.row["window_spend_fen"]), nxt.min_spend_yuan * 100),
            "orders": (int(self.row["window_orders"]), nxt.min_orders),
            "points_earned": (int(self.row["window_points"]), nxt.min_points),
        }
        wanted = {"spend": ["spend_fen"], "orders": ["orders"], "points_earned": ["points_earned"]}.get(
            on, ["spend_fen", "orders"]
        )
        return [
            TierProgress(tier=nxt.code, metric=m, current=measures[m][0], needed=measures[m][1])
            for m in wanted
        ]

    @strawberry.field(description="Tier changes, newest first (the latest 20).")
    async def history(self, info: Info) -> list[TierChange]:
        found = await loyalty_loaders(info).history.load(self.customer_pk)
        return [
            TierChange(
                from_tier=r["from_tier"],
                to_tier=r["to_tier"],
                reason=r["reason"],
                actor=r["actor"],
                rule_version=r["rule_version"],
                changed_at=r["changed_at"],
            )
            for r in found
        ]


@strawberry.enum
class CouponState(enum.Enum):
    ISSUED = "issued"
    REDEEMED = "redeemed"
    EXPIRED = "expired"
    VOID = "void"


@strawberry.type(description="A coupon granted to a customer.")
class Coupon(Node):
    code: str = strawberry.field(description="What the customer shows at the till or enters in the app.")
    kind: str = strawberry.field(description="amount or percent.")
    value: Money | None
    percent_off: int | None
    min_spend: Money
    state: CouponState
    issued_at: datetime
    expires_at: datetime
    redeemed_at: datetime | None
    redeemed_order_id: strawberry.ID | None
    campaign_id: strawberry.ID | None
    reason: str | None


def _coupon(r: dict[str, Any]) -> Coupon:
    return Coupon(
        id=to_global_id("Coupon", r["id"]),
        code=r["code"],
        kind=r["kind"],
        value=Money(fen=r["value_fen"]) if r["kind"] == "amount" else None,
        percent_off=r["percent_off"] if r["kind"] == "percent" else None,
        min_spend=Money(fen=r["min_spend_fen"]),
        state=CouponState(r["state"]),
        issued_at=r["issued_at"],
        expires_at=r["expires_at"],
        redeemed_at=r["redeemed_at"],
        redeemed_order_id=to_global_id("Order", r["redeemed_order_id"]) if r["redeemed_order_id"] else None,
        campaign_id=to_global_id("Campaign", r["campaign_id"]) if r["campaign_id"] else None,
        reason=r["reason"],
    )


@strawberry.type
class ReferredCustomer:
    customer_id: strawberry.ID
    referred_at: datetime
    rewarded: bool = strawberry.field(description="Both sides got their points (after the first paid order).")


@strawberry.type(description="The customer's referral code, who referred them, and whom they referred.")
class Referrals:
    code: str | None
    referred_by: strawberry.ID | None
    referred: list[ReferredCustomer]
    count: int


@strawberry.type
class LoyaltyFields:
    """Customer's loyalty fields (a CUSTOMER_MIXINS member: resolvers read self.pk)."""

    pk: strawberry.Private[int]

    @strawberry.field(description="Balance, pending points, debt, lots and the ledger.")
    async def points(self, info: Info) -> Points | None:
        if not customer_visible(info, self.pk):
            return None
        r = await loyalty_loaders(info).balance.load(self.pk)
        return Points(
            customer_pk=self.pk,
            balance=int(r["balance"]),
            pending=int(r["pending"]),
            debt=int(r["debt"]),
            lifetime_earned=int(r["lifetime_earned"]),
        )

    @strawberry.field(description="Tier, benefits, progress to the next tier, history.")
    async def membership(self, info: Info) -> Membership | None:
        if not customer_visible(info, self.pk):
            return None
        row = await loyalty_loaders(info).membership.load(self.pk)
        return None if row is None else Membership(customer_pk=self.pk, row=row)

    @strawberry.field(description="Coupons, newest first; `state` filters.")
    async def coupons(
        self, info: Info, state: CouponState | None = None, first: int | None = None, after: str | None = None
    ) -> Connection[Coupon] | None:
        if not customer_visible(info, self.pk):
            return None
        n = page_size(first)
        filters = (("state", state.value),) if state else ()
        page = await loyalty_loaders(info).coupons_page.load((self.pk, (filters, n, time_keyset(after))))
        result: Connection[Coupon] = connection(page, n, after, _time_key("issued_at"), _coupon)
        return result

    @strawberry.field
    async def referrals(self, info: Info) -> Referrals | None:
        if not customer_visible(info, self.pk):
            return None
        r = await loyalty_loaders(info).referrals.load(self.pk)
        referred = [
            ReferredCustomer(
                customer_id=to_global_id("Customer", x["referee_id"]),
                referred_at=datetime.fromisoformat(x["referred_at"]),
                rewarded=bool(x["rewarded"]),
            )
            for x in r["referred"]
        ]
        return Referrals(
            code=r["code"],
            referred_by=to_global_id("Customer", r["referred_by"]) if r["referred_by"] else None,
            referred=referred,
            count=len(referred),
        )


# --------------------------------------------------------------------------- campaigns and reports


@strawberry.type
class Campaign(Node):
    code: str
    name: str
    holdout_pct: int
    starts_at: datetime
    ends_at: datetime | None
    launched_at: datetime | None


@strawberry.type(
    description="A campaign's outcome: coupons, redemptions, revenue, and repurchase against the holdout."
)
class CampaignReport:
    campaign: Campaign
    coupons_granted: int
    coupons_redeemed: int
    redemption_rate: float | None
    attributed_revenue: Money
    treated: int = strawberry.field(description="Members who got a coupon.")
    held_out: int = strawberry.field(description="Members held out: they got nothing.")
    treated_repurchase_rate: float | None
    holdout_repurchase_rate: float | None
    lift: float | None = strawberry.field(description="treated minus holdout repurchase rate.")


@strawberry.enum
class ReferralGrouping(enum.Enum):
    TIER = "tier"
    SEGMENT = "segment"


@strawberry.type
class ReferralGroup:
    group: str
    referrers: int
    referrals: int
    rewarded: int


def _campaign(r: dict[str, Any]) -> Campaign:
    return Campaign(
        id=to_global_id("Campaign", r["id"]),
        code=r["code"],
        name=r["name"],
        holdout_pct=r["holdout_pct"],
        starts_at=r["starts_at"],
        ends_at=r["ends_at"],
        launched_at=r["launched_at"],
    )


async def resolve_campaigns(
    info: Info, first: int | None = None, after: str | None = None
) -> Connection[Campaign]:
    n = page_size(first)
    key = time_keyset(after)
    params: dict[str, Any] = {"lim": n + 1}
    cond = ""
    if key is not None:
        params["after_ts"], params["after_id"] = datetime.fromisoformat(key[0]), key[1]
        cond = "where (x.starts_at, x.id) < (:after_ts, :after_id)"
    sql = (
        "select t.total as _total, p.* from (select count(*) as total from campaign) t left join lateral ("
        f" select x.* from campaign x {cond} order by x.starts_at desc, x.id desc limit :lim) p on true"
    )
    page = await fetch_page(info.context.engine, sql, **params)
    result: Connection[Campaign] = connection(page, n, after, _time_key("starts_at"), _campaign)
    return result


async def resolve_campaign_report(info: Info, id: strawberry.ID) -> CampaignReport | None:
    async with info.context.engine.connect() as conn:
        r = await report(conn, int_id(id, "Campaign"))
        if r is None:
            return None
        row = (
            (await conn.execute(sa.text("select * from campaign where id = :i"), {"i": r["id"]}))
            .mappings()
            .one()
        )
    return CampaignReport(
        campaign=_campaign(dict(row)),
        coupons_granted=r["granted"],
        coupons_redeemed=r["redeemed"],
        redemption_rate=r["redemption_rate"],
        attributed_revenue=Money(fen=int(r["revenue_fen"])),
        treated=r["treated"],
        held_out=r["held_out"],
        treated_repurchase_rate=r["treated_repurchase_rate"],
        holdout_repurchase_rate=r["holdout_repurchase_rate"],
        lift=r["lift"],
    )


async def resolve_referral_report(
    info: Info, by: ReferralGrouping = ReferralGrouping.TIER
) -> list[ReferralGroup]:
    if by is ReferralGrouping.TIER:
        group_sql = (
            "select coalesce(g.tier_code, 'none') as grp, f.* from referral f"
            " join golden_customer g on g.id = f.referrer_id"
        )
    else:
        group_sql = (
            "select s.code as grp, f.* from referral f join segment_membership m on m.customer_id = f.referrer_id"
            " join segment s on s.id = m.segment_id"
        )
    found = await rows(
        info.context.engine,
        f"select grp, count(distinct referrer_id) as referrers, count(*) as referrals,"
        f" count(*) filter (where rewarded_at is not null) as rewarded from ({group_sql}) x group by grp order by grp",
    )
    return [
        ReferralGroup(
            group=r["grp"], referrers=r["referrers"], referrals=r["referrals"], rewarded=r["rewarded"]
        )
        for r in found
    ]


# --------------------------------------------------------------------------- mutations


@strawberry.type(description="The outcome of a points mutation.")
class PointsPayload:
    points: int | None = strawberry.field(description="Points moved by this call.")
    balance: int | None
    debt: int | None
    replayed: bool = strawberry.field(
        description="True when this idempotencyKey was seen: nothing was redone."
    )
    user_errors: list[UserError]


@strawberry.input
class RedeemPointsInput:
    customer_id: strawberry.ID | None = strawberry.field(
        default=None, description="Omitted with a member token: yourself."
    )
    points: int | None = None
    reward_code: str | None = strawberry.field(
        default=None, description="A gift or service of the programme."
    )
    cash_offset_fen: int | None = strawberry.field(default=None, description="Yuan off an order, in fen.")
    order_id: strawberry.ID | None = None
    idempotency_key: str


@strawberry.input
class PointsInput:
    customer_id: strawberry.ID
    points: int
    reason: str
    idempotency_key: str


@strawberry.input
class OverrideTierInput:
    customer_id: strawberry.ID
    tier: str | None = strawberry.field(description="Null lifts an override.")
    expires_at: datetime | None = strawberry.field(default=None, description="Required with a tier.")
    reason: str


@strawberry.type
class MembershipPayload:
    tier: str | None
    user_errors: list[UserError]


@strawberry.input
class GrantCouponInput:
    customer_id: strawberry.ID
    kind: str = strawberry.field(description="amount or percent.")
    value_fen: int = 0
    percent_off: int = 0
    min_spend_fen: int = 0
    valid_days: int = 30
    reason: str
    idempotency_key: str


@strawberry.type
class CouponPayload:
    coupon: Coupon | None
    replayed: bool
    user_errors: list[UserError]


@strawberry.input
class RedeemCouponInput:
    code: str
    order_id: strawberry.ID | None = None


@strawberry.input
class RegisterReferralInput:
    code: str
    customer_id: strawberry.ID | None = strawberry.field(
        default=None, description="Omitted with a member token."
    )


@strawberry.type
class ReferralPayload:
    registered: bool
    user_errors: list[UserError]


def _refusal(exc: LoyaltyRefusal) -> list[UserError]:
    return [UserError(field=[exc.field] if exc.field else None, message=exc.message, code=exc.code)]


async def _points_call(info: Info, work: Any) -> PointsPayload:
    try:
        result = await service.in_transaction(info.context.engine, work)
    except LoyaltyRefusal as exc:
        return PointsPayload(points=None, balance=None, debt=None, replayed=False, user_errors=_refusal(exc))
    info.context.domain_loaders.pop("loyalty", None)
    return PointsPayload(
        points=result["points"], balance=result["balance"], debt=result["debt"], replayed=bool(result["replayed"]),
        user_errors=[],
    )  # fmt: skip


async def redeem_points(info: Info, input: RedeemPointsInput) -> PointsPayload:
    customer = acting_customer(info, input.customer_id)
    what = Redemption(
        points=input.points,
        reward_code=input.reward_code,
        cash_offset_fen=input.cash_offset_fen,
        order_id=int_id(input.order_id, "Order") if input.order_id else None,
    )
    actor = info.context.principal.actor

    async def work(conn: AsyncConnection) -> dict[str, Any]:
        return await service.redeem(
            conn, get_config(), customer, what, key=input.idempotency_key, actor=actor, now=datetime.now(UTC)
        )

    return await _points_call(info, work)


def _points_mutation(kind: str) -> Any:
    async def mutate(info: Info, input: PointsInput) -> PointsPayload:
        customer = int_id(input.customer_id, "Customer")
        actor = info.context.principal.actor

        async def work(conn: AsyncConnection) -> dict[str, Any]:
            return await service.adjust(
                conn, get_config(), customer, input.points, kind=kind, reason=input.reason,
                key=input.idempotency_key, actor=actor, now=datetime.now(UTC),
            )  # fmt: skip

        return await _points_call(info, work)

    return mutate


async def override_tier_mutation(info: Info, input: OverrideTierInput) -> MembershipPayload:
    customer = int_id(input.customer_id, "Customer")
    actor = info.context.principal.actor

    async def work(conn: AsyncConnection) -> str:
        return await service.override_tier(
            conn, get_config(), customer, input.tier, expires_at=input.expires_at, reason=input.reason,
            actor=actor, now=datetime.now(UTC),
        )  # fmt: skip

    try:
        tier = await service.in_transaction(info.context.engine, work)
    except LoyaltyRefusal as exc:
        return MembershipPayload(tier=None, user_errors=_refusal(exc))
    return MembershipPayload(tier=tier, user_errors=[])


async def _coupon_by_id(engine: AsyncEngine, coupon_id: int) -> Coupon:
    found = await rows(engine, f"select {COUPON_COLUMNS} from coupon x where x.id = :i", i=coupon_id)
    return _coupon(found[0])


async def _coupon_call(info: Info, work: Any) -> CouponPayload:
    """Run a coupon operation in one transaction; a refusal becomes a userError."""
    try:
        result = await service.in_transaction(info.context.engine, work)
    except LoyaltyRefusal as exc:
        return CouponPayload(coupon=None, replayed=False, user_errors=_refusal(exc))
    return CouponPayload(
        coupon=await _coupon_by_id(info.context.engine, int(result["coupon_id"])),
        replayed=bool(result["replayed"]),
        user_errors=[],
    )


async def grant_coupon_mutation(info: Info, input: GrantCouponInput) -> CouponPayload:
    customer = int_id(input.customer_id, "Customer")
    actor = info.context.principal.actor
    if input.kind not in ("amount", "percent") or input.value_fen % 100:
        return CouponPayload(coupon=None, replayed=False, user_errors=[UserError(
            field=["kind"], message="kind is amount (valueFen in whole yuan) or percent", code="BAD_COUPON")])  # fmt: skip
    try:
        spec = CouponSpec(
            kind=input.kind,
            value_yuan=input.value_fen // 100,
            percent_off=input.percent_off,
            min_spend_yuan=input.min_spend_fen // 100,
            valid_days=input.valid_days,
        )
    except ValueError as exc:
        return CouponPayload(coupon=None, replayed=False, user_errors=[UserError(field=None, message=str(exc), code="BAD_COUPON")])  # fmt: skip

    async def work(conn: AsyncConnection) -> dict[str, Any]:
        return await service.grant_coupon(
            conn,
            customer,
            spec,
            reason=input.reason,
            key=input.idempotency_key,
            actor=actor,
            now=datetime.now(UTC),
        )

    return await _coupon_call(info, work)


async def redeem_coupon_mutation(info: Info, input: RedeemCouponInput) -> CouponPayload:
    p = info.context.principal
    if not (p.is_member or p.role in ("staff", "staff_admin", "service")):
        raise Forbidden("not allowed")
    order = int_id(input.order_id, "Order") if input.order_id else None

    async def work(conn: AsyncConnection) -> dict[str, Any]:
        return await service.redeem_coupon(
            conn,
            input.code,
            order_id=order,
            customer_id=p.member_customer_id,
            actor=p.actor,
            now=datetime.now(UTC),
        )

    return await _coupon_call(info, work)


async def register_referral_mutation(info: Info, input: RegisterReferralInput) -> ReferralPayload:
    customer = acting_customer(info, input.customer_id)

    async def work(conn: AsyncConnection) -> int:
        return await service.register_referral(conn, customer, input.code, now=datetime.now(UTC))

    try:
        await service.in_transaction(info.context.engine, work)
    except LoyaltyRefusal as exc:
        return ReferralPayload(registered=False, user_errors=_refusal(exc))
    return ReferralPayload(registered=True, user_errors=[])


@strawberry.type
class Query:
    campaigns: Connection[Campaign] = strawberry.field(
        resolver=resolve_campaigns, permission_classes=[IsStaff], description="Campaigns, newest start first."
    )
    campaign_report: CampaignReport | None = strawberry.field(
        resolver=resolve_campaign_report, permission_classes=[IsStaff]
    )
    referral_report: list[ReferralGroup] = strawberry.field(
        resolver=resolve_referral_report,
        permission_classes=[IsStaff],
        description="Referrals by referrer's tier or segment.",
    )


@strawberry.type
class Mutation:
    redeem_points: PointsPayload = strawberry.field(
        resolver=redeem_points,
        description="Spend points (a reward, a cash offset or an amount); a member redeems their own.",
    )
    earn_points: PointsPayload = strawberry.field(
        resolver=_points_mutation("earn"),
        permission_classes=[IsStaff],
        description="Credit points by hand (staff).",
    )
    adjust_points: PointsPayload = strawberry.field(
        resolver=_points_mutation("adjust"),
        permission_classes=[IsStaffAdmin],
        description="Add or take points with a reason (staff_admin).",
    )
    override_tier: MembershipPayload = strawberry.field(
        resolver=override_tier_mutation,
        permission_classes=[IsStaffAdmin],
        description="A manual tier until an expiry.",
    )
    grant_coupon: CouponPayload = strawberry.field(
        resolver=grant_coupon_mutation, permission_classes=[IsStaff]
    )
    redeem_coupon: CouponPayload = strawberry.field(
        resolver=redeem_coupon_mutation, description="Use a coupon (a member only their own)."
    )
    register_referral: ReferralPayload = strawberry.field(
        resolver=register_referral_mutation,
        description="Record who referred the customer (once, before the first order).",
    )


__all__ = ["LoyaltyFields", "Mutation", "Query"]
