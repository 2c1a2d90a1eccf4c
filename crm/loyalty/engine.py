"""The points engine and tier evaluation as set-based SQL: each step is a constant number of statements
for any number of customers (none loops over customers in Python).

Bookkeeping (docs/loyalty.md):
- An order earns one lot (unique per order), locked until `available_at`; releasing it writes the `earn`
  ledger entry and puts it in the balance. Pending points are in lots only, never in the balance.
- Every entry that takes points is written per lot it takes from (`lot_id`, the lot's source identity), so
  a lot's remaining points are its entries' sum and rows that follow an identity through a merge or an
  unmerge keep ledger, lots and balance in agreement: sum(ledger) = balance = sum(open lots' remaining).
- A refund reverses in proportion (cumulative per lot, so a second partial refund takes only the
  difference). What it cannot take back because it was spent becomes `owed_points` (debt, paid off by
  later earnings) or is written off at the floor, on a zero-point `reverse` entry that says so.
- The balance row follows the ledger by a trigger (a statement trigger for inserts, migration 0011): no
  code here writes points_balance.
- Every entry carries the rule version that produced it and a unique idempotency key, so a step that runs
  twice, or an order that arrives twice, writes nothing the second time.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from crm.loyalty.config import LoyaltyConfig
from crm.timing import TimedSteps

# The customers a step covers: every active customer, or the given ids.
SCOPE = "(cast(:all_customers as boolean) or {col} = any(cast(:ids as bigint[])))"


def scope_params(customer_ids: set[int] | None) -> dict[str, Any]:
    return {"all_customers": customer_ids is None, "ids": sorted(customer_ids or ())}


def expiry_sql(config: LoyaltyConfig, ts: str) -> str:
    """When points earned at `ts` expire (an instant; 'infinity' for never), in the retailer's zone."""
    e = config.expiry
    local = f"({ts} at time zone :tz)"
    if e.policy == "never":
        return "cast('infinity' as timestamptz)"
    if e.policy == "days":
        return f"({ts} + make_interval(days => {int(e.days)}))"
    if e.policy == "year_end":
        # Points of a year expire when the following year ends.
        return f"((date_trunc('year', {local}) + make_interval(years => 2)) at time zone :tz)"
    # end_of_month_after: points of March 2026 with months = 12 expire as March 2027 ends.
    return f"((date_trunc('month', {local}) + make_interval(months => {int(e.months) + 1})) at time zone :tz)"


def _base(config: LoyaltyConfig, now: datetime) -> dict[str, Any]:
    return {"tz": config.timezone, "now": now, "version": config.version}


@dataclass
class StepCounts(TimedSteps):
    lots_created: int = 0
    released: int = 0
    reversed: int = 0
    expired: int = 0
    debt_paid: int = 0
    # Wall seconds per step, so a slow daily run says where its time went (logged and benchmarked).
    seconds: dict[str, float] = field(default_factory=dict)


async def sync_tiers(conn: AsyncConnection, config: LoyaltyConfig) -> None:
    """The configured levels into membership_tier (ranks 0..n by their order in the file)."""
    levels = [
        {
            "code": lv.code,
            "name": lv.name,
            "rank": rank,
            "min_points": lv.min_points,
            "min_spend_fen": lv.min_spend_yuan * 100,
            "mult": round(lv.points_multiplier * 100),
            "benefits": json.dumps(
                {
                    "discount_pct": lv.discount_pct,
                    "free_delivery": lv.free_delivery,
                    "priority_service": lv.priority_service,
                    "member_days": lv.member_days,
                    "min_orders": lv.min_orders,
                }
            ),
        }
        for rank, lv in enumerate(config.tiers.levels)
    ]
    # Ranks are unique: move every existing rank out of the way first, then write the configured ones.
    await conn.execute(sa.text("update membership_tier set rank = -1000 - rank where rank >= 0"))
    await conn.execute(
        sa.text(
            "insert into membership_tier (code, name, rank, min_points, min_spend_fen, earn_multiplier_pct, benefits)"
            " select code, name, rank, min_points, min_spend_fen, mult, benefits from jsonb_to_recordset(cast(:levels as jsonb))"
            " as t(code text, name text, rank int, min_points int, min_spend_fen bigint, mult int, benefits jsonb)"
            " on conflict (code) do update set name = excluded.name, rank = excluded.rank,"
            " min_points = excluded.min_points, min_spend_fen = excluded.min_spend_fen,"
            " earn_multiplier_pct = excluded.earn_multiplier_pct, benefits = excluded.benefits"
        ),
        {"levels": json.dumps(levels)},
    )


async def earn_from_orders(
    conn: AsyncConnection, config: LoyaltyConfig, customer_ids: set[int] | None, now: datetime
) -> int:
    """One lot for every paid order of the customers that has none yet: base points per yuan paid, times
    the order's line-weighted product multiplier, the customer's tier multiplier and the member-day
    multiplier; capped per order and per customer per local day (counting lots already earned that day)."""
    earn = config.earn
    sku_mult = [{"k": m.sku, "m": m.multiplier} for m in earn.multipliers if m.sku]
    cat_mult = [{"k": m.category, "m": m.multiplier} for m in earn.multipliers if m.category]
    days = [
        {"dom": d.day_of_month, "dow": d.weekday, "m": d.multiplier, "tiers": d.tiers}
        for d in earn.member_days
    ]
    sql = f"""
with o as (
    select o.id, o.customer_id, o.source_identity_id, o.paid_fen, coalesce(o.paid_at, o.placed_at) as paid_at
    from orders o
    where o.customer_id is not null and o.paid_fen > 0 and o.status = any(cast(:earning as text[]))
      and {SCOPE.format(col="o.customer_id")}
      and not exists (select 1 from points_lot l where l.order_id = o.id)
), product_mult as (
    select ol.order_id,
           sum(ol.amount_fen * coalesce(s.m, c.m, 1.0)) / nullif(sum(ol.amount_fen), 0) as m
    from order_line ol
    join o on o.id = ol.order_id
    left join product p on p.id = ol.product_id
    left join jsonb_to_recordset(cast(:sku_mult as jsonb)) as s(k text, m numeric) on s.k = ol.sku
    left join jsonb_to_recordset(cast(:cat_mult as jsonb)) as c(k text, m numeric) on c.k = p.category
    group by ol.order_id
), day_mult as (
    select o.id, max(d.m) as m
    from o
    join golden_customer g on g.id = o.customer_id
    join jsonb_to_recordset(cast(:days as jsonb)) as d(dom int, dow int, m numeric, tiers text[])
      on (d.dom = extract(day from o.paid_at at time zone :tz) or d.dow = extract(isodow from o.paid_at at time zone :tz))
     and (cardinality(d.tiers) = 0 or g.tier_code = any(d.tiers))
    group by o.id
), raw as (
    select o.*, (o.paid_at at time zone :tz)::date as local_day,
           least(:per_order, floor(o.paid_fen / 100.0 * :per_yuan * coalesce(pm.m, 1.0)
                 * coalesce(t.earn_multiplier_pct, 100) / 100.0 * coalesce(dm.m, 1.0)))::int as points
    from o
    left join product_mult pm on pm.order_id = o.id
    left join day_mult dm on dm.id = o.id
    left join golden_customer g on g.id = o.customer_id
    left join membership_tier t on t.code = g.tier_code
), earlier as (
    select l.customer_id, (l.earned_at at time zone :tz)::date as local_day, sum(l.points_earned) as points
    from points_lot l
    where l.order_id is not null
      and (l.customer_id, (l.earned_at at time zone :tz)::date) in (select customer_id, local_day from raw)
    group by 1, 2
), capped as (
    select r.*, greatest(0, least(r.points, :per_day - coalesce(e.points, 0)
           - (sum(r.points) over w - r.points)))::int as granted
    from raw r left join earlier e using (customer_id, local_day)
    window w as (partition by r.customer_id, r.local_day order by r.paid_at, r.id)
)
insert into points_lot (customer_id, source_identity_id, points_earned, points_remaining, earned_at, expires_at,
                        order_id, basis_fen, available_at, rule_version)
select customer_id, source_identity_id, granted, granted, paid_at, {expiry_sql(config, "paid_at")},
       id, paid_fen, paid_at + make_interval(days => :pending_days), :version
from capped where granted > 0
on conflict (order_id) do nothing
"""
    result = await conn.execute(
        sa.text(sql),
        {
            **_base(config, now),
            **scope_params(customer_ids),
            "earning": earn.earning_statuses,
            "sku_mult": json.dumps(sku_mult),
            "cat_mult": json.dumps(cat_mult),
            "days": json.dumps(days),
            "per_order": earn.max_points_per_order,
            "per_day": earn.max_points_per_day,
            "per_yuan": earn.points_per_yuan,
            "pending_days": earn.pending_days,
        },
    )
    return result.rowcount or 0


async def release_pending(
    conn: AsyncConnection, config: LoyaltyConfig, customer_ids: set[int] | None, now: datetime
) -> int:
    """Lots whose return window has closed go into the balance, each with its `earn` entry."""
    sql = f"""
with due as (
    update points_lot l set released_at = :now
    where l.released_at is null and l.available_at <= :now and {SCOPE.format(col="l.customer_id")}
    returning l.id, l.customer_id, l.source_identity_id, l.points_remaining, l.order_id, l.rule_version
), entries as (
    insert into points_ledger_entry (customer_id, source_identity_id, kind, points, idempotency_key, order_id,
                                     lot_id, reason, actor, rule_version)
    select customer_id, source_identity_id, 'earn', points_remaining, 'earn:lot:' || id, order_id, id,
           'order paid; return window closed', 'rule', coalesce(rule_version, :version)
    from due where points_remaining > 0
    on conflict (idempotency_key) do nothing
    returning customer_id, points, points as earned, 0 as owed
)
select count(*) from due
"""
    return int(
        (await conn.execute(sa.text(sql), {**_base(config, now), **scope_params(customer_ids)})).scalar_one()
    )


def consume_sql(shortfall: str | None) -> str:
    """Take `points` from each demand's customer, first-expiring-first (the demand's preferred lot first), one
    ledger entry per lot taken from. `shortfall` says what to do with what the open lots cannot cover:
    None (the caller checked the balance: nothing is short), 'debt' (owed, paid off later) or 'floor'
    (written off). Demands: jsonb rows {customer_id, points, prefer_lot, key, order_id, reason}; at most one
    per customer per statement."""
    short_sql = ""
    if shortfall in ("debt", "floor"):
        owed = "d.points - coalesce(t.taken, 0)" if shortfall == "debt" else "0"
        note = (
            "' points could not be taken back (already spent) and are owed'"
            if shortfall == "debt"
            else "' points could not be taken back (already spent) and were written off at the floor'"
        )
        short_sql = f""",
short as (
    insert into points_ledger_entry (customer_id, source_identity_id, kind, points, idempotency_key, order_id, reason,
                                     actor, rule_version, owed_points)
    select d.customer_id, (select l.source_identity_id from points_lot l where l.id = d.prefer_lot), :kind, 0,
           d.key || '#short', d.order_id,
           d.reason || '; ' || (d.points - coalesce(t.taken, 0)) || {note}, :actor, :version, {owed}
    from d left join (select key, sum(take) as taken from take group by key) t on t.key = d.key
    where d.points > coalesce(t.taken, 0)
    on conflict (idempotency_key) do nothing
    returning customer_id, 0 as points, 0 as earned, owed_points as owed
)"""
    return f"""
with d as (
    select * from jsonb_to_recordset(cast(:demands as jsonb))
        as d(customer_id bigint, points int, prefer_lot bigint, key text, order_id bigint, reason text)
    where d.points > 0
), avail as (
    select l.id, l.customer_id, l.source_identity_id, l.points_remaining, d.points as want, d.key, d.order_id,
           d.reason,
           sum(l.points_remaining) over (
               partition by l.customer_id
               order by (l.id is not distinct from d.prefer_lot) desc, l.expires_at, l.id
           ) as cum
    from points_lot l join d on d.customer_id = l.customer_id
    where l.released_at is not null and l.points_remaining > 0 and l.expires_at > :now
), take as (
    select id, customer_id, source_identity_id, key, order_id, reason,
           least(points_remaining, want - (cum - points_remaining))::int as take
    from avail where cum - points_remaining < want
), lots as (
    update points_lot l set points_remaining = l.points_remaining - t.take from take t where l.id = t.id
    returning l.id
), entries as (
    insert into points_ledger_entry (customer_id, source_identity_id, kind, points, idempotency_key, order_id,
                                     lot_id, reason, actor, rule_version, owed_points)
    select t.customer_id, t.source_identity_id, :kind, -t.take, t.key || '#lot' || t.id, t.order_id, t.id,
           t.reason, :actor, :version, 0
    from take t
    returning customer_id, points, 0 as earned, owed_points as owed
){short_sql}
select coalesce(sum(-points), 0) from entries
"""


async def consume(
    conn: AsyncConnection,
    config: LoyaltyConfig,
    demands: list[dict[str, Any]],
    *,
    kind: str,
    actor: str,
    now: datetime,
    shortfall: str | None = None,
) -> int:
    """Run consume_sql over `demands` in rounds of one demand per customer; returns points taken."""
    taken = 0
    pending = list(demands)
    while pending:
        seen: set[int] = set()
        batch: list[dict[str, Any]] = []
        rest: list[dict[str, Any]] = []
        for d in pending:
            (rest if d["customer_id"] in seen else batch).append(d)
            seen.add(d["customer_id"])
        taken += int(
            (
                await conn.execute(
                    sa.text(consume_sql(shortfall)),
                    {**_base(config, now), "demands": json.dumps(batch), "kind": kind, "actor": actor},
                )
            ).scalar_one()
        )
        pending = rest
    return taken


async def reverse_refunds(
    conn: AsyncConnection, config: LoyaltyConfig, customer_ids: set[int] | None, now: datetime
) -> int:
    """Reverse points in proportion to what was refunded of each earning order (refund rows in a done
    status, or the whole order once it is refunded or cancelled), cumulatively per lot."""
    earn = config.earn
    due = (
        await conn.execute(
            sa.text(
                f"""
with r as (
    select l.id as lot_id, l.customer_id, l.order_id, l.points_earned, l.points_reversed, l.released_at,
           floor(l.points_earned * least(l.basis_fen, greatest(
               coalesce((select sum(f.amount_fen) from refund f
                         where f.order_id = l.order_id and f.status = any(cast(:refund_statuses as text[]))), 0),
               case when o.status = any(cast(:reversing as text[])) then l.basis_fen else 0 end
           ))::numeric / nullif(l.basis_fen, 0))::int as target
    from points_lot l join orders o on o.id = l.order_id
    where l.order_id in (
            select id from orders where status = any(cast(:reversing as text[]))
            union
            select order_id from refund where status = any(cast(:refund_statuses as text[])))
      and l.points_reversed < l.points_earned and {SCOPE.format(col="l.customer_id")}
), moved as (
    update points_lot l set points_reversed = r.target,
        points_remaining = case when l.released_at is null
                                then greatest(0, l.points_remaining - (r.target - l.points_reversed))
                                else l.points_remaining end
    from r where l.id = r.lot_id and r.target > r.points_reversed
    returning l.id, l.customer_id, l.order_id, r.target - r.points_reversed as delta, r.target, l.released_at
)
select id, customer_id, order_id, delta, target from moved where released_at is not null
"""
            ),
            {
                **_base(config, now),
                **scope_params(customer_ids),
                "refund_statuses": earn.refund_statuses,
                "reversing": earn.reversing_statuses,
            },
        )
    ).all()
    demands = [
        {
            "customer_id": c,
            "points": int(delta),
            "prefer_lot": lot,
            # The lot's cumulative reversed total names the step: two equal refunds in one run (or two
            # runs at one instant) are two steps, while a replay of the same step collides.
            "key": f"reverse:order:{order}:lot:{lot}:to:{int(target)}",
            "order_id": order,
            "reason": f"refund of order {order}: {int(delta)} points reversed",
        }
        for lot, c, order, delta, target in due
    ]
    if not demands:
        return 0
    await consume(
        conn, config, demands, kind="reverse", actor="sync", now=now, shortfall=config.refunds.on_spent
    )
    return len(demands)


async def pay_off_debts(
    conn: AsyncConnection, config: LoyaltyConfig, customer_ids: set[int] | None, now: datetime
) -> int:
    """Customers who owe points and have some now: take what they owe (up to their balance)."""
    rows = (
        await conn.execute(
            sa.text(
                f"select customer_id, least(debt, balance),"
                f" (select max(e.id) from points_ledger_entry e where e.customer_id = b.customer_id)"
                f" from points_balance b where debt > 0 and balance > 0 and {SCOPE.format(col='customer_id')}"
            ),
            scope_params(customer_ids),
        )
    ).all()
    demands = [
        {
            "customer_id": c,
            "points": int(p),
            "prefer_lot": None,
            # After the customer's latest entry: one payoff per state of the books, however many runs
            # share an instant.
            "key": f"payoff:{c}:after:{last}",
            "order_id": None,
            "reason": "pays off points owed after a refund",
        }
        for c, p, last in rows
    ]
    if not demands:
        return 0
    paid = await consume(conn, config, demands, kind="reverse", actor="rule", now=now)
    await settle_debts(conn, config, demands, now)
    return paid


async def settle_debts(
    conn: AsyncConnection, config: LoyaltyConfig, demands: list[dict[str, Any]], now: datetime
) -> None:
    """Zero-point entries that lower the debt by what was paid, spread over the identities that owe it
    (so an unmerge gives each side back only its own debt, never a negative one)."""
    await conn.execute(
        sa.text(
            """
with pay as (
    select * from jsonb_to_recordset(cast(:demands as jsonb)) as p(customer_id bigint, points int, key text)
), owed as (
    select e.customer_id, e.source_identity_id as sid, sum(e.owed_points) as owed
    from points_ledger_entry e join pay using (customer_id)
    group by 1, 2 having sum(e.owed_points) > 0
), alloc as (
    select o.*, p.points as paid, p.key,
           sum(o.owed) over (partition by o.customer_id order by o.sid nulls first) as cum
    from owed o join pay p using (customer_id)
)
insert into points_ledger_entry (customer_id, source_identity_id, kind, points, idempotency_key, reason, actor,
                                 rule_version, owed_points)
select customer_id, sid, 'reverse', 0, key || '#settle' || coalesce(sid, 0), 'points owed paid off', 'rule',
       :version, -least(owed, paid - (cum - owed))::int
from alloc where cum - owed < paid
"""
        ),
        {"demands": json.dumps(demands), "version": config.version},
    )


async def expire_lots(
    conn: AsyncConnection, config: LoyaltyConfig, customer_ids: set[int] | None, now: datetime
) -> int:
    """Every released lot past its expiry gives up what is left, with an `expire` entry."""
    sql = f"""
with gone as (
    select id, customer_id, source_identity_id, points_remaining from points_lot l
    where l.released_at is not null and l.points_remaining > 0 and l.expires_at <= :now
      and {SCOPE.format(col="l.customer_id")}
    for update
), lots as (
    update points_lot l set points_remaining = 0 from gone g where l.id = g.id returning l.id
), entries as (
    insert into points_ledger_entry (customer_id, source_identity_id, kind, points, idempotency_key, lot_id,
                                     reason, actor, rule_version)
    select customer_id, source_identity_id, 'expire', -points_remaining, 'expire:lot:' || id, id,
           'points expired', 'rule', :version
    from gone
    returning customer_id, points, 0 as earned, 0 as owed
)
select count(*) from entries
"""
    return int(
        (await conn.execute(sa.text(sql), {**_base(config, now), **scope_params(customer_ids)})).scalar_one()
    )


async def run_points(
    conn: AsyncConnection, config: LoyaltyConfig, customer_ids: set[int] | None, now: datetime
) -> StepCounts:
    """Earn, reverse, release, pay off, expire: in this order, so an order paid and refunded between two
    runs reverses its pending lot before it is ever released."""
    counts = StepCounts()
    with counts.timed("earn"):
        counts.lots_created = await earn_from_orders(conn, config, customer_ids, now)
    with counts.timed("reverse"):
        counts.reversed = await reverse_refunds(conn, config, customer_ids, now)
    with counts.timed("release"):
        counts.released = await release_pending(conn, config, customer_ids, now)
    with counts.timed("pay_off"):
        counts.debt_paid = await pay_off_debts(conn, config, customer_ids, now)
    with counts.timed("expire"):
        counts.expired = await expire_lots(conn, config, customer_ids, now)
    return counts
