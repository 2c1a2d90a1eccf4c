"""SLA breaches: a case whose first response or resolution came (or has not come) by its deadline is
flagged once, with the deadline as the breach time and an `sla_breached` case event. The scheduled check
runs this over every open case; a transition runs it for its own case first, so a late answer is a breach
even between two checks."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

# (deadline column, breach column, what reaching the milestone sets)
MILESTONES = (
    ("first_response_due_at", "first_response_breached_at", "first_response_at", "first_response"),
    ("resolve_due_at", "resolve_breached_at", "resolved_at", "resolution"),
)


async def flag_breaches(
    conn: AsyncConnection, now: datetime, *, case_ids: Sequence[int] | None = None, actor: str = "sla-check"
) -> int:
    """Flag every breach due by `now` (of `case_ids`, or of every case); returns how many were flagged."""
    scope = "" if case_ids is None else " and id = any(cast(:ids as bigint[]))"
    total = 0
    for due, breached, reached, what in MILESTONES:
        result = await conn.execute(
            sa.text(
                f"""
with hit as (
    update service_case set {breached} = {due}
    where {breached} is null and {due} is not null and {due} < coalesce({reached}, cast(:now as timestamptz)){scope}
    returning id, status, {due} as due
)
insert into case_event (case_id, kind, action, actor, from_status, to_status, note, detail, created_at)
select id, 'sla_breached', cast(:what as text), :actor, status, status,
       cast(:what as text) || ' SLA passed at ' || due::text,
       jsonb_build_object('milestone', cast(:what as text), 'due_at', due), cast(:now as timestamptz)
from hit
"""
            ),
            {"now": now, "ids": list(case_ids or []), "what": what, "actor": actor},
        )
        total += result.rowcount or 0
    return total
