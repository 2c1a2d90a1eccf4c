"""Service and satisfaction statistics over a date range, grouped by one dimension, each one statement.

Service: volume, first-response and resolution times (mean and median hours), breach rate (either SLA),
reopen rate (of the cases closed at least once) and the outcome mix, by type, cause, department, channel,
store, source, priority or month of opening.

Satisfaction: responses, CSAT (share of CSAT answers scoring 4 or 5, and their mean), NPS (promoters 9-10
minus detractors 0-6, in points of 100), the satisfaction index (the sum of perceived over the sum of
expected scores), and the response rate (responses over survey invitations) where the dimension applies to
invitations, by segment, tier, channel, store, month or survey.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

# Fixed fragments only: the grouping column of each dimension.
SERVICE_GROUPS = {
    "type": "x.type",
    "cause": "coalesce(x.cause, '(not analysed)')",
    "department": "coalesce(x.department, '(none)')",
    "channel": "coalesce(x.channel_code, x.source)",
    "source": "x.source",
    "store": "coalesce((select code from store s where s.id = x.store_id), '(none)')",
    "priority": "x.priority",
    "month": "to_char(x.opened_at at time zone :tz, 'YYYY-MM')",
}
OUTCOME = (
    "case when x.outcome = 'invalid' then 'invalid' when x.resolution_type is not null then x.resolution_type"
    " when x.closed_at is null then 'open' else 'closed' end"
)

SATISFACTION_GROUPS = {
    "tier": ("coalesce(g.tier_code, '(none)')", "coalesce(g.tier_code, '(none)')"),
    "segment": ("sg.code", "sg.code"),
    "channel": ("coalesce(r.channel_code, '(none)')", None),
    "store": ("coalesce((select code from store s where s.id = r.store_id), '(none)')", None),
    "month": (
        "to_char(r.responded_at at time zone :tz, 'YYYY-MM')",
        "to_char(a.created_at at time zone :tz, 'YYYY-MM')",
    ),
    "survey": ("coalesce(r.survey_code, r.kind)", "a.payload->>'survey'"),
}


async def service_stats(
    conn: AsyncConnection, *, start: datetime, end: datetime, group_by: str, tz: str
) -> list[dict[str, Any]]:
    grp = SERVICE_GROUPS[group_by]
    sql = f"""
with c as (
    select {grp} as grp, {OUTCOME} as mix, x.* from service_case x
    where x.opened_at >= :start and x.opened_at < :end
), m as (select grp, mix, count(*) as n from c group by grp, mix)
select s.*, (select jsonb_object_agg(m.mix, m.n order by m.mix) from m where m.grp = s.grp) as outcomes
from (
    select grp, count(*) as volume,
           avg(extract(epoch from first_response_at - opened_at) / 3600) as first_response_hours,
           percentile_cont(0.5) within group (order by extract(epoch from first_response_at - opened_at) / 3600)
               as first_response_median_hours,
           avg(extract(epoch from resolved_at - opened_at) / 3600) as resolve_hours,
           percentile_cont(0.5) within group (order by extract(epoch from resolved_at - opened_at) / 3600)
               as resolve_median_hours,
           count(*) filter (where first_response_breached_at is not null or resolve_breached_at is not null)
               as breached,
           count(*) filter (where reopen_count > 0) as reopened,
           count(*) filter (where closed_at is not null or reopen_count > 0) as ever_closed
    from c group by grp
) s
order by s.grp
"""
    found = await conn.execute(sa.text(sql), {"start": start, "end": end, "tz": tz})
    out = []
    for r in found.mappings().all():
        row = dict(r)
        row["breach_rate"] = row["breached"] / row["volume"] if row["volume"] else None
        row["reopen_rate"] = row["reopened"] / row["ever_closed"] if row["ever_closed"] else None
        out.append(row)
    return out


async def satisfaction_stats(
    conn: AsyncConnection, *, start: datetime, end: datetime, group_by: str, tz: str
) -> list[dict[str, Any]]:
    grp, invite_grp = SATISFACTION_GROUPS[group_by]
    segment_join = (
        " join segment_membership sm on sm.customer_id = {c} join segment sg on sg.id = sm.segment_id"
        if group_by == "segment"
        else ""
    )
    invitations = (
        f"""select {invite_grp} as grp, count(*) as n from care_action a
            join golden_customer g on g.id = a.customer_id{segment_join.format(c="a.customer_id")}
            where a.kind = 'survey_invite' and a.state <> 'suppressed'
              and a.created_at >= :start and a.created_at < :end group by 1"""
        if invite_grp is not None
        else "select null::text as grp, null::bigint as n where false"
    )
    sql = f"""
with r as (
    select {grp} as grp, r.* from survey_response r
    left join golden_customer g on g.id = r.customer_id{segment_join.format(c="r.customer_id")}
    where r.responded_at >= :start and r.responded_at < :end
), i as ({invitations})
select s.*, i.n as invitations
from (
    select grp, count(*) as responses,
           count(*) filter (where kind = 'csat') as csat_responses,
           count(*) filter (where kind = 'csat' and score >= 4) as satisfied,
           avg(score) filter (where kind = 'csat') as csat_mean,
           count(*) filter (where kind = 'nps') as nps_responses,
           count(*) filter (where kind = 'nps' and score >= 9) as promoters,
           count(*) filter (where kind = 'nps' and score <= 6) as detractors,
           sum(perceived_score) filter (where expected_score is not null and perceived_score is not null)
               as perceived_sum,
           sum(expected_score) filter (where expected_score is not null and perceived_score is not null)
               as expected_sum,
           count(*) filter (where survey_code is not null) as surveyed
    from r group by grp
) s left join i on i.grp = s.grp
order by s.grp
"""
    found = await conn.execute(sa.text(sql), {"start": start, "end": end, "tz": tz})
    out = []
    for r in found.mappings().all():
        row = dict(r)
        row.update(satisfaction_measures(row))
        inv = row["invitations"]
        row["response_rate"] = row["surveyed"] / inv if inv else None
        out.append(row)
    return out


def satisfaction_measures(row: dict[str, Any]) -> dict[str, float | None]:
    """CSAT share, NPS and index from the counts and sums of satisfaction_stats (and Customer.satisfaction)."""
    csat = row["satisfied"] / row["csat_responses"] if row["csat_responses"] else None
    nps = (
        100 * (row["promoters"] - row["detractors"]) / row["nps_responses"] if row["nps_responses"] else None
    )
    index = float(row["perceived_sum"]) / float(row["expected_sum"]) if row["expected_sum"] else None
    mean = float(row["csat_mean"]) if row.get("csat_mean") is not None else None
    return {"csat": csat, "nps": nps, "index": index, "csat_mean": mean}
