"""The care triggers: each kind selects its customers and periods in one set-based statement and writes
them to the outbox (crm.care.outbox.write_actions), so a rerun on the same day writes nothing new.

Periods make the idempotency: a birthday greeting per local year, a points reminder per earliest expiry
date, a follow-up per closed case (and round) or per order, a regular visit per interval bucket, a tier
notice per tier change, a win-back per lifecycle entry, a survey invitation per survey and subject.
"""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from crm.care.outbox import write_actions
from crm.loyalty import campaigns
from crm.loyalty import config as loyalty_config
from crm.service.config import ServiceConfig

BIRTHDAY = """
with today as (select (cast(:now as timestamptz) at time zone :tz)::date as d)
select g.id as customer_id, extract(year from today.d)::int::text as period,
       jsonb_build_object('coupon_code', k.code, 'coupon_expires_at', k.expires_at) as payload,
       cast(:now as timestamptz) as due_at
from golden_customer g cross join today
left join lateral (select code, expires_at from coupon k
                   where k.customer_id = g.id and k.reason = 'birthday ' || extract(year from today.d)
                   order by k.id desc limit 1) k on true
where g.status = 'active' and g.birth_date is not null
  and (extract(month from g.birth_date), extract(day from g.birth_date)) in (
      (extract(month from today.d), extract(day from today.d)),
      (case when extract(month from today.d) = 2 and extract(day from today.d) = 28
             and extract(day from (today.d + 1)) = 1 then 2 end, 29))
"""

POINTS_EXPIRING = """
select l.customer_id, 'expiry:' || to_char(min(l.expires_at) at time zone :tz, 'YYYY-MM-DD') as period,
       jsonb_build_object('points', sum(l.points_remaining), 'expires_at', min(l.expires_at)) as payload,
       cast(:now as timestamptz) as due_at
from points_lot l
where l.released_at is not null and l.points_remaining > 0
  and l.expires_at > :now and l.expires_at <= cast(:now as timestamptz) + make_interval(days => :days_ahead)
group by l.customer_id
having sum(l.points_remaining) >= :min_points
"""

CASE_FOLLOWUP = """
select s.customer_id, 'case:' || s.id || ':' || s.reopen_count as period,
       jsonb_build_object('case_no', s.case_no, 'type', s.type, 'closed_at', s.closed_at) as payload,
       cast(:now as timestamptz) as due_at
from service_case s
where s.customer_id is not null and s.outcome = 'resolved' and s.closed_at is not null
  and s.closed_at <= cast(:now as timestamptz) - make_interval(days => :delay_days)
  and s.closed_at > cast(:now as timestamptz) - make_interval(days => :delay_days + 30)
"""

PURCHASE_FOLLOWUP = """
select o.customer_id, 'order:' || o.id as period,
       jsonb_build_object('order_id', o.id, 'paid_fen', o.paid_fen, 'placed_at', o.placed_at) as payload,
       cast(:now as timestamptz) as due_at
from orders o
where o.customer_id is not null and o.paid_fen >= :min_paid_fen and o.status in ('paid', 'shipped', 'completed')
  and o.placed_at <= cast(:now as timestamptz) - make_interval(days => :delay_days)
  and o.placed_at > cast(:now as timestamptz) - make_interval(days => :delay_days + 30)
"""

# Each customer's interval starts on a day of its own (id mod interval), so the calls spread over the days.
REGULAR_VISIT = """
with today as (select ((cast(:now as timestamptz) at time zone :tz)::date - date '2000-01-01') as n)
select g.id as customer_id, 'visit:' || ((today.n + g.id % :interval_days) / :interval_days) as period,
       jsonb_build_object('tier', g.tier_code) as payload, cast(:now as timestamptz) as due_at
from golden_customer g cross join today
where g.status = 'active' and g.tier_code = any(cast(:tiers as text[]))
"""

TIER_CHANGE = """
select h.customer_id, 'tier:' || h.id as period,
       jsonb_build_object('from_tier', h.from_tier, 'to_tier', h.to_tier, 'changed_at', h.changed_at) as payload,
       cast(:now as timestamptz) as due_at
from tier_history h
where h.from_tier is not null and h.to_tier is distinct from h.from_tier
  and h.changed_at <= :now and h.changed_at > cast(:now as timestamptz) - interval '7 days'
"""

# A customer whose current lifecycle stage (crm/analytics) turned at-risk in the last 30 days, once per stage.
WINBACK = """
select h.customer_id, 'lifecycle:' || h.id as period, jsonb_build_object('stage', h.stage) as payload,
       cast(:now as timestamptz) as due_at
from lifecycle_history h
where h.stage = :stage and h.ended_at is null
  and h.started_at <= :now and h.started_at > cast(:now as timestamptz) - interval '30 days'
"""

SURVEY_AFTER_CASE = """
select s.customer_id, 'survey:' || :survey || ':case:' || s.id as period,
       jsonb_build_object('survey', :survey, 'case_no', s.case_no, 'case_id', s.id) as payload,
       cast(:now as timestamptz) as due_at
from service_case s
where s.customer_id is not null and s.outcome is not null and s.closed_at is not null
  and s.closed_at <= :now and s.closed_at > cast(:now as timestamptz) - interval '14 days'
  and not exists (select 1 from survey_response r where r.survey_code = :survey and r.case_id = s.id)
"""

SURVEY_AFTER_ORDER = """
select o.customer_id, 'survey:' || :survey || ':order:' || o.id as period,
       jsonb_build_object('survey', :survey, 'order_id', o.id) as payload, cast(:now as timestamptz) as due_at
from orders o
where o.customer_id is not null and o.status = 'completed'
  and coalesce(o.source_updated_at, o.placed_at) <= :now
  and coalesce(o.source_updated_at, o.placed_at) > cast(:now as timestamptz) - interval '14 days'
  and not exists (select 1 from survey_response r where r.survey_code = :survey and r.order_id = o.id)
"""


async def survey_invitations(conn: AsyncConnection, config: ServiceConfig, now: datetime) -> int:
    """Invitations to the surveys triggered by a closed case or a delivered (completed) order."""
    if not config.care.survey_invite.enabled:
        return 0
    written = 0
    for survey in config.surveys:
        sql = {"case_closed": SURVEY_AFTER_CASE, "order_delivered": SURVEY_AFTER_ORDER}.get(survey.trigger)
        if sql is not None:
            written += await write_actions(
                conn, config, "survey_invite", sql, {"survey": survey.code}, now=now
            )
    return written


async def run_triggers(conn: AsyncConnection, config: ServiceConfig, now: datetime) -> dict[str, Any]:
    """Every enabled care trigger once; returns the actions written per kind and the seconds per step."""
    care = config.care
    written: dict[str, int] = {}
    seconds: dict[str, float] = {}
    skipped: dict[str, str] = {}
    # A full run's grouped scans (lots, orders) stay in memory; for this transaction only.
    await conn.execute(sa.text("set local work_mem = '64MB'"))

    async def step(kind: str, sql: str, params: dict[str, Any]) -> None:
        started = time.perf_counter()
        written[kind] = await write_actions(
            conn, config, kind, sql, {"tz": config.timezone, **params}, now=now
        )
        seconds[kind] = round(time.perf_counter() - started, 3)

    if care.birthday.enabled:
        programme = loyalty_config.get_config()
        # The greeting carries the programme's birthday coupon: granted here if the loyalty run has not yet.
        await campaigns.birthday_coupons(conn, programme, now)
        await step("birthday", BIRTHDAY, {"tz": programme.timezone})
    if care.points_expiring.enabled:
        k = care.points_expiring
        await step(
            "points_expiring", POINTS_EXPIRING, {"days_ahead": k.days_ahead, "min_points": k.min_points}
        )
    if care.case_followup.enabled:
        await step("case_followup", CASE_FOLLOWUP, {"delay_days": care.case_followup.delay_days})
    if care.purchase_followup.enabled:
        k = care.purchase_followup
        await step("purchase_followup", PURCHASE_FOLLOWUP,
                   {"delay_days": k.delay_days, "min_paid_fen": k.min_paid_yuan * 100})  # fmt: skip
    if care.regular_visit.enabled:
        k = care.regular_visit
        await step("regular_visit", REGULAR_VISIT, {"interval_days": k.interval_days, "tiers": k.tiers})
    if care.tier_change.enabled:
        await step("tier_change", TIER_CHANGE, {})
    if care.winback.enabled:
        await step("winback", WINBACK, {"stage": care.winback.stage})
    started = time.perf_counter()
    written["survey_invite"] = await survey_invitations(conn, config, now)
    seconds["survey_invite"] = round(time.perf_counter() - started, 3)
    return {"rule_version": config.version, "written": written, "seconds": seconds, "skipped": skipped}
