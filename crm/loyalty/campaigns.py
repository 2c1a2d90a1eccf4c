"""Campaigns (coupons to an audience, with a holdout group), birthday coupons, coupons used at tills,
referral codes and rewards, and the campaign report. All set-based.

The holdout is drawn per (campaign, customer) from a hash, so it is stable across runs and the same
customer never moves between groups; a held-out member is recorded (campaign_member.holdout) and gets
nothing, which is what the repurchase rate is compared against.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from crm.loyalty.config import CouponSpec, LoyaltyConfig
from crm.loyalty.engine import SCOPE, expiry_sql, scope_params

# A coupon or referral code from the database's own randomness (no 0/O, 1/I).
RANDOM_CODE = (
    "{prefix} || (select string_agg(substr('ABCDEFGHJKLMNPQRSTUVWXYZ23456789', (1 + floor(random() * 32))::int, 1), '')"
    " from generate_series(1, 10) where {anchor} is not null)"
)


def _coupon_params(spec: CouponSpec) -> dict[str, Any]:
    return {
        "kind": spec.kind,
        "value_fen": spec.value_yuan * 100,
        "pct": spec.percent_off,
        "min_fen": spec.min_spend_yuan * 100,
        "days": spec.valid_days,
    }


async def upsert_campaigns(conn: AsyncConnection, config: LoyaltyConfig) -> None:
    if not config.campaigns:
        return
    await conn.execute(
        sa.text(
            "insert into campaign (code, name, audience, coupon, holdout_pct, starts_at, ends_at)"
            " select code, name, audience, coupon, holdout_pct, starts_at, ends_at"
            " from jsonb_to_recordset(cast(:c as jsonb)) as t(code text, name text, audience jsonb, coupon jsonb,"
            " holdout_pct int, starts_at timestamptz, ends_at timestamptz)"
            " on conflict (code) do update set name = excluded.name, audience = excluded.audience,"
            " coupon = excluded.coupon, holdout_pct = excluded.holdout_pct, starts_at = excluded.starts_at,"
            " ends_at = excluded.ends_at"
        ),
        {"c": json.dumps([c.model_dump(mode="json") for c in config.campaigns])},
    )


async def launch(
    conn: AsyncConnection, config: LoyaltyConfig, customer_ids: set[int] | None, now: datetime
) -> int:
    """Every running campaign takes in the customers of its audience it has not seen yet (of the scope):
    each is held out or gets the campaign's coupon. Returns coupons granted."""
    await upsert_campaigns(conn, config)
    granted = 0
    for spec in config.campaigns:
        if spec.starts_at > now or (spec.ends_at is not None and spec.ends_at <= now):
            continue
        a = spec.audience
        if a.tiers:
            audience = "select id from golden_customer where status = 'active' and tier_code = any(cast(:tiers as text[]))"
        elif a.segment:
            audience = (
                "select m.customer_id from segment_membership m join segment s on s.id = m.segment_id"
                " join golden_customer g on g.id = m.customer_id and g.status = 'active' where s.code = :segment"
            )
        else:
            audience = "select id from golden_customer where status = 'active' and id = any(cast(:listed as bigint[]))"
        sql = f"""
with c as (select id from campaign where code = :code), aud as ({audience}),
new as (
    insert into campaign_member (campaign_id, customer_id, holdout, assigned_at)
    select c.id, aud.id, (abs(hashtext(cast(:code as text) || '#' || aud.id)) % 100) < :holdout, :now
    from aud cross join c
    where {SCOPE.format(col="aud.id")}
    on conflict do nothing
    returning campaign_id, customer_id, holdout
), coupons as (
    insert into coupon (code, customer_id, campaign_id, kind, value_fen, percent_off, min_spend_fen, issued_at,
                        expires_at, reason)
    select {RANDOM_CODE.format(prefix="'C'", anchor="new.customer_id")}, customer_id, campaign_id, :kind,
           :value_fen, :pct, :min_fen, :now, least(cast(:now as timestamptz) + make_interval(days => :days), coalesce(cast(:ends as timestamptz), 'infinity')),
           'campaign ' || cast(:code as text)
    from new where not holdout
    returning id
)
update campaign set launched_at = coalesce(launched_at, :now) where code = :code
returning (select count(*) from coupons)
"""
        granted += int(
            (
                await conn.execute(
                    sa.text(sql),
                    {
                        **scope_params(customer_ids),
                        **_coupon_params(spec.coupon),
                        "code": spec.code,
                        "holdout": spec.holdout_pct,
                        "now": now,
                        "ends": spec.ends_at,
                        "tiers": a.tiers,
                        "segment": a.segment,
                        "listed": a.customers,
                    },
                )
            ).scalar_one()
        )
    return granted


async def birthday_coupons(conn: AsyncConnection, config: LoyaltyConfig, now: datetime) -> int:
    """Active customers whose birthday is today (local date; 29 February on 28 February in other years)
    get the birthday coupon once a year."""
    b = config.birthday
    if not b.enabled or b.coupon is None:
        return 0
    result = await conn.execute(
        sa.text(
            f"""
with today as (select (cast(:now as timestamptz) at time zone :tz)::date as d), born as (
    select g.id, 'birthday ' || extract(year from today.d) as reason from golden_customer g, today
    where g.status = 'active' and g.birth_date is not null
      and (extract(month from g.birth_date), extract(day from g.birth_date)) in (
          (extract(month from today.d), extract(day from today.d)),
          (case when extract(month from today.d) = 2 and extract(day from today.d) = 28
                 and extract(day from (today.d + 1)) = 1 then 2 end, 29))
)
insert into coupon (code, customer_id, kind, value_fen, percent_off, min_spend_fen, issued_at, expires_at, reason)
select {RANDOM_CODE.format(prefix="'B'", anchor="born.id")}, id, :kind, :value_fen, :pct, :min_fen, :now,
       cast(:now as timestamptz) + make_interval(days => :days), reason
from born
where not exists (select 1 from coupon c where c.customer_id = born.id and c.reason = born.reason)
"""
        ),
        {**_coupon_params(b.coupon), "now": now, "tz": config.timezone},
    )
    return result.rowcount or 0


async def expire_coupons(conn: AsyncConnection, now: datetime) -> int:
    result = await conn.execute(
        sa.text("update coupon set state = 'expired' where state = 'issued' and expires_at <= :now"),
        {"now": now},
    )
    return result.rowcount or 0


async def redeem_tendered_coupons(conn: AsyncConnection, customer_ids: set[int] | None, now: datetime) -> int:
    """Orders that carry a coupon in their tenders ({"type": "coupon", "code": ...}, as tills and apps send
    them) redeem it, which links the order to the coupon's campaign. Only the coupon's own customer's
    orders count, and only while it is unused."""
    result = await conn.execute(
        sa.text(
            f"""
update coupon c set state = 'redeemed', redeemed_at = coalesce(o.paid_at, o.placed_at), redeemed_order_id = o.id
from orders o cross join lateral jsonb_array_elements(coalesce(o.tenders, '[]'::jsonb)) t
where t->>'type' = 'coupon' and upper(t->>'code') = c.code and c.state = 'issued'
  and c.customer_id = o.customer_id and {SCOPE.format(col="o.customer_id")}
"""
        ),
        scope_params(customer_ids),
    )
    return result.rowcount or 0


async def ensure_referral_codes(conn: AsyncConnection, customer_ids: set[int] | None) -> None:
    # EXCEPT, not NOT EXISTS: while the table is empty by its statistics (the first run) the planner
    # anti-joins by scanning referral_code once per customer, over the rows this statement is inserting:
    # 109 s for 100k customers. The set difference reads each side once.
    await conn.execute(
        sa.text(
            "insert into referral_code (customer_id, code) select m.id, "
            + RANDOM_CODE.format(prefix="'R'", anchor="m.id")
            + " from (select g.id from golden_customer g where g.status = 'active' and "
            + SCOPE.format(col="g.id")
            + " except select customer_id from referral_code) m on conflict do nothing"
        ),
        scope_params(customer_ids),
    )


async def reward_referrals(
    conn: AsyncConnection, config: LoyaltyConfig, customer_ids: set[int] | None, now: datetime
) -> int:
    """A referral whose referee has a first paid order rewards both sides once (idempotency keys per side)."""
    r = config.referrals
    due = f"""
select f.id, f.referrer_id, f.referee_id, o.id as order_id from referral f
join lateral (select o.id from orders o where o.customer_id = f.referee_id and o.paid_fen > 0
              and o.status = any(cast(:earning as text[])) order by coalesce(o.paid_at, o.placed_at), o.id limit 1) o on true
where f.rewarded_at is null and ({SCOPE.format(col="f.referee_id")} or {SCOPE.format(col="f.referrer_id")})
"""
    sides = []
    if r.referrer_points:
        sides.append(("referrer_id", "referrer", r.referrer_points))
    if r.referee_points:
        sides.append(("referee_id", "referee", r.referee_points))
    params = {**scope_params(customer_ids), "earning": config.earn.earning_statuses, "now": now,
              "tz": config.timezone, "version": config.version}  # fmt: skip
    for column, side, points in sides:
        await conn.execute(
            sa.text(
                f"""
with due as ({due}), todo as (
    select due.*, nextval(pg_get_serial_sequence('points_lot', 'id')) as lot_id from due
    where not exists (select 1 from points_ledger_entry e where e.idempotency_key = 'referral:' || due.id || '#{side}')
), lots as (
    insert into points_lot (id, customer_id, points_earned, points_remaining, earned_at, expires_at, available_at,
                            released_at, rule_version)
    select lot_id, {column}, :p, :p, :now, {expiry_sql(config, "cast(:now as timestamptz)")}, :now, :now, :version
    from todo
), e as (
    insert into points_ledger_entry (customer_id, kind, points, idempotency_key, lot_id, reason, actor, rule_version)
    select {column}, 'earn', :p, 'referral:' || id || '#{side}', lot_id, 'referral reward ({side})', 'rule', :version
    from todo
    returning customer_id, points, points as earned, 0 as owed
)
select count(*) from e
"""
            ),
            {**params, "p": points},
        )
    result = await conn.execute(
        sa.text(f"with due as ({due}) update referral f set rewarded_at = :now, first_order_id = due.order_id"
                " from due where f.id = due.id"),
        params,
    )  # fmt: skip
    return result.rowcount or 0


async def report(conn: AsyncConnection, campaign_id: int) -> dict[str, Any] | None:
    """Coupons granted and redeemed, redemption rate, revenue of the orders that redeemed them, and the
    repurchase rate of the treated group against the holdout (any paid order after assignment, within the
    campaign's window)."""
    row = (
        (
            await conn.execute(
                sa.text(
                    """
with c as (select * from campaign where id = :id),
m as (
    select cm.customer_id, cm.holdout, cm.assigned_at,
           exists (select 1 from orders o, c where o.customer_id = cm.customer_id and o.paid_fen > 0
                   and coalesce(o.paid_at, o.placed_at) >= cm.assigned_at
                   and (c.ends_at is null or coalesce(o.paid_at, o.placed_at) <= c.ends_at)
                   and o.status not in ('pending', 'cancelled')) as bought
    from campaign_member cm where cm.campaign_id = :id
)
select c.id, c.code, c.name, c.holdout_pct,
       (select count(*) from coupon where campaign_id = c.id) as granted,
       (select count(*) from coupon where campaign_id = c.id and state = 'redeemed') as redeemed,
       (select coalesce(sum(o.paid_fen), 0) from coupon k join orders o on o.id = k.redeemed_order_id
        where k.campaign_id = c.id) as revenue_fen,
       (select count(*) from m where not holdout) as treated,
       (select count(*) from m where holdout) as held_out,
       (select count(*) from m where not holdout and bought) as treated_bought,
       (select count(*) from m where holdout and bought) as holdout_bought
from c
"""
                ),
                {"id": campaign_id},
            )
        )
        .mappings()
        .first()
    )
    if row is None:
        return None
    out = dict(row)
    out["redemption_rate"] = out["redeemed"] / out["granted"] if out["granted"] else None
    out["treated_repurchase_rate"] = out["treated_bought"] / out["treated"] if out["treated"] else None
    out["holdout_repurchase_rate"] = out["holdout_bought"] / out["held_out"] if out["held_out"] else None
    t, h = out["treated_repurchase_rate"], out["holdout_repurchase_rate"]
    out["lift"] = t - h if t is not None and h is not None else None
    return out
