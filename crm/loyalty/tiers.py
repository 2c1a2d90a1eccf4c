"""Membership tiers, evaluated set-based for any number of customers.

Qualification counts what the rolling window shows (net spend after refunds, orders, points earned), never
the current balance. Three tiers are kept apart:
- the qualified tier: what the window earns today (membership.qualified_tier);
- the held tier (membership.tier_code): goes up at once on qualification, and down only at a scheduled
  review, after the customer has qualified below it for the grace period;
- the effective tier (golden_customer.tier_code): the held tier, or a manual override while the override
  has not expired and is higher. An override is not a floor: when it expires the held tier shows again.
Every change of the effective tier writes tier_history with the reason and the rule version.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from crm.loyalty.config import LoyaltyConfig
from crm.loyalty.engine import SCOPE, scope_params

QUALIFIES = {
    "spend": "w.spend >= lv.min_spend_fen",
    "orders": "w.orders >= lv.min_orders",
    "spend_or_orders": "(w.spend >= lv.min_spend_fen or w.orders >= lv.min_orders)",
    "spend_and_orders": "(w.spend >= lv.min_spend_fen and w.orders >= lv.min_orders)",
    "points_earned": "w.points >= lv.min_points",
}


def levels_json(config: LoyaltyConfig) -> str:
    return json.dumps(
        [
            {
                "code": lv.code,
                "rank": rank,
                "min_spend_fen": lv.min_spend_yuan * 100,
                "min_orders": lv.min_orders,
                "min_points": lv.min_points,
            }
            for rank, lv in enumerate(config.tiers.levels)
        ]
    )


def window_sql(config: LoyaltyConfig, customers: str) -> str:
    """Per customer of `customers` (a relation with customer_id): net spend, orders and points earned in the
    window ending at :now."""
    return f"""
select c.customer_id,
       coalesce(sum(greatest(0, o.paid_fen - least(o.paid_fen, greatest(coalesce(rf.fen, 0),
           case when o.status = any(cast(:reversing as text[])) then o.paid_fen else 0 end)))), 0)::bigint as spend,
       count(o.id) filter (where o.paid_fen > least(o.paid_fen, greatest(coalesce(rf.fen, 0),
           case when o.status = any(cast(:reversing as text[])) then o.paid_fen else 0 end)))::int as orders,
       coalesce(max(lp.points), 0)::bigint as points
from {customers} c
left join orders o on o.customer_id = c.customer_id and o.status = any(cast(:earning as text[]))
     and coalesce(o.paid_at, o.placed_at) > cast(:now as timestamptz) - make_interval(days => :window_days)
     and coalesce(o.paid_at, o.placed_at) <= :now
left join (select order_id, sum(amount_fen) as fen from refund
           where status = any(cast(:refund_statuses as text[])) group by order_id) rf on rf.order_id = o.id
left join (select l.customer_id, sum(l.points_earned - l.points_reversed) as points from points_lot l
           where l.customer_id in (select customer_id from {customers})
             and l.earned_at > cast(:now as timestamptz) - make_interval(days => :window_days) and l.earned_at <= :now
           group by l.customer_id) lp on lp.customer_id = c.customer_id
group by c.customer_id
"""


def window_params(config: LoyaltyConfig, now: datetime) -> dict[str, Any]:
    return {
        "now": now,
        "window_days": config.tiers.window_days,
        "earning": config.earn.earning_statuses,
        "reversing": config.earn.reversing_statuses,
        "refund_statuses": config.earn.refund_statuses,
        "levels": levels_json(config),
    }


async def evaluate_tiers(
    conn: AsyncConnection,
    config: LoyaltyConfig,
    customer_ids: set[int] | None,
    now: datetime,
    *,
    allow_downgrade: bool,
    actor: str = "rule",
) -> int:
    """Re-evaluate tiers; upgrades always, downgrades only when `allow_downgrade` (the scheduled review).
    Returns how many effective tiers changed."""
    t = config.tiers
    qualifies = QUALIFIES[t.qualify_on]
    await conn.execute(sa.text("drop table if exists pg_temp.tier_eval"))
    await conn.execute(
        sa.text(
            f"""
create temp table tier_eval on commit drop as
with c as (
    select g.id as customer_id, g.tier_code as effective_before from golden_customer g
    where g.status = 'active' and {SCOPE.format(col="g.id")}
), w as ({window_sql(config, "c")}),
lv as (
    select * from jsonb_to_recordset(cast(:levels as jsonb))
        as lv(code text, rank int, min_spend_fen bigint, min_orders int, min_points bigint)
), q as (
    -- Ranks by joins, not scalar subqueries: a dozen subplans per customer were most of this statement.
    select w.*, qual.code as qualified, qual.rank as qrank
    from w left join lateral (select lv.code, lv.rank from lv where {qualifies} order by lv.rank desc limit 1) qual
         on true
), base as (
    select q.*, c.effective_before, m.customer_id is not null as known,
           -- A merge gives the survivor the higher of the merged tiers (identity.merge): hold it.
           case when m.override_tier is null and le.rank > coalesce(lm.rank, -1) and m.customer_id is not null
                then c.effective_before else m.tier_code end as held_before,
           m.since,
           m.below_since, m.next_review_at, m.override_tier, m.override_expires_at, m.override_reason,
           case when m.override_tier is null and le.rank > coalesce(lm.rank, -1) then le.rank else lm.rank end
               as hrank,
           lo.rank as orank,
           (:allow_downgrade and m.next_review_at <= :now) as reviewing
    from q join c using (customer_id) left join membership m using (customer_id)
    left join lv le on le.code = c.effective_before
    left join lv lm on lm.code = m.tier_code
    left join lv lo on lo.code = m.override_tier
), held as (
    select b.*,
        case when not b.known or b.hrank is null or b.qrank > b.hrank then 'up'
             when b.qrank < b.hrank and b.reviewing and b.below_since is not null
                  and b.below_since <= cast(:now as timestamptz) - make_interval(days => :grace_days) then 'down'
             else 'keep' end as move
    from base b
)
select h.customer_id, h.spend, h.orders, h.points, h.qualified, h.effective_before, h.held_before,
       h.move, h.override_reason,
       case when h.move = 'keep' then h.held_before else h.qualified end as held,
       case when h.move = 'keep' then h.since else :now end as since,
       case when h.move = 'keep' and h.qrank < h.hrank then coalesce(h.below_since, :now) end as below_since,
       case when not h.known or h.reviewing or h.next_review_at is null
            then cast(:now as timestamptz) + make_interval(days => :review_days) else h.next_review_at end as next_review_at,
       h.override_expires_at > :now as override_active,
       h.override_tier is not null and not (h.override_expires_at > :now) as override_expired,
       case when h.override_expires_at > :now
                 and h.orank > case when h.move = 'keep' then h.hrank else h.qrank end
            then h.override_tier
            else case when h.move = 'keep' then h.held_before else h.qualified end end as effective
from held h
"""
        ),
        {
            **window_params(config, now),
            **scope_params(customer_ids),
            "allow_downgrade": allow_downgrade,
            "grace_days": t.grace_days,
            "review_days": t.review_every_days,
        },
    )
    changed = await conn.execute(
        sa.text(
            """
insert into tier_history (customer_id, from_tier, to_tier, reason, actor, rule_version, changed_at)
select customer_id, effective_before, effective,
       case when effective <> held then 'manual override: ' || coalesce(override_reason, '')
            when override_expired then 'manual override expired'
            when move = 'down' then 'downgraded after the grace period: qualifies for ' || qualified
            when effective_before is null then 'joined'
            else 'qualified: ' || (spend / 100) || ' yuan, ' || orders || ' orders in ' || cast(:window_days as int) || ' days'
       end,
       :actor, :version, :now
from tier_eval where effective is distinct from effective_before
"""
        ),
        {"now": now, "version": config.version, "window_days": t.window_days, "actor": actor},
    )
    await conn.execute(
        sa.text(
            """
insert into membership (customer_id, tier_code, since, qualified_tier, window_spend_fen, window_orders,
                        window_points, below_since, next_review_at, evaluated_at)
select customer_id, held, since, qualified, spend, orders, points, below_since, next_review_at, :now
from tier_eval
on conflict (customer_id) do update set
    tier_code = excluded.tier_code, since = excluded.since, qualified_tier = excluded.qualified_tier,
    window_spend_fen = excluded.window_spend_fen, window_orders = excluded.window_orders,
    window_points = excluded.window_points, below_since = excluded.below_since,
    next_review_at = excluded.next_review_at, evaluated_at = excluded.evaluated_at,
    override_tier = case when membership.override_expires_at > excluded.evaluated_at
                         then membership.override_tier end,
    override_expires_at = case when membership.override_expires_at > excluded.evaluated_at
                               then membership.override_expires_at end,
    override_reason = case when membership.override_expires_at > excluded.evaluated_at
                           then membership.override_reason end
"""
        ),
        {"now": now},
    )
    await conn.execute(
        sa.text(
            "update golden_customer g set tier_code = e.effective, updated_at = :now from tier_eval e"
            " where g.id = e.customer_id and g.tier_code is distinct from e.effective"
        ),
        {"now": now},
    )
    return changed.rowcount or 0


async def progress(
    conn: AsyncConnection, config: LoyaltyConfig, customer_ids: list[int], now: datetime
) -> Any:
    """The window figures of `customer_ids` now (for progressToNext): {id: (spend, orders, points)}."""
    rows = (
        await conn.execute(
            sa.text(
                f"with c as (select unnest(cast(:cids as bigint[])) as customer_id) {window_sql(config, 'c')}"
            ),
            {**window_params(config, now), "cids": customer_ids},
        )
    ).all()
    return {r[0]: (int(r[1]), int(r[2]), int(r[3])) for r in rows}
