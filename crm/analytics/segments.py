"""System tags and rule segments, kept from their rules as set-based SQL: per tag and per segment a fixed
number of statements, whatever the number of customers.

System tags carry `source = 'system'`; a manual tag by staff (`source = 'manual'`) is never removed by a rule.
A segment's members are in segment_membership with the time they entered; one who no longer matches moves to
segment_membership_history with entered and left times; segment_size keeps the size per local day.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from crm.analytics.config import AnalyticsConfig, Rule
from crm.analytics.measures import SCOPE, scope_params
from crm.analytics.rules import Binder, compile_rule

# One customer's row the rules read: measures and golden attributes.
MATCHING = "select 1 from customer_metrics m join golden_customer g on g.id = m.customer_id"


async def sync_definitions(conn: AsyncConnection, config: AnalyticsConfig) -> None:
    """The configuration's system tags and segments into their tables (a changed rule replaces the old)."""
    await conn.execute(
        sa.text(
            "insert into tag (name, system) select n, true from unnest(cast(:names as text[])) n"
            " on conflict (name) do update set system = true"
        ),
        {"names": [t.name for t in config.tags]},
    )
    await conn.execute(
        sa.text("update tag set system = false where system and name <> all(cast(:names as text[]))"),
        {"names": [t.name for t in config.tags]},
    )
    if config.segments:
        await conn.execute(
            sa.text(
                "insert into segment (code, name, kind, definition, source)"
                " select code, name, 'custom', jsonb_build_object('rule', rule), 'config'"
                " from jsonb_to_recordset(cast(:s as jsonb)) as t(code text, name text, rule jsonb)"
                " on conflict (code) do update set name = excluded.name, definition = excluded.definition,"
                " updated_at = now() where segment.definition is distinct from excluded.definition"
                " or segment.name is distinct from excluded.name"
            ),
            {
                "s": json.dumps(
                    [{"code": s.code, "name": s.name, "rule": s.rule.as_json()} for s in config.segments]
                )
            },
        )


async def apply_tags(
    conn: AsyncConnection, config: AnalyticsConfig, customer_ids: set[int] | None, now: datetime
) -> int:
    """Every system tag on exactly the customers its rule matches; returns tags added."""
    scope = scope_params(customer_ids)
    added = 0
    # A rule taken out of the file takes its tag off everyone.
    await conn.execute(
        sa.text(
            "delete from customer_tag ct using tag t where t.id = ct.tag_id and not t.system"  # noqa: S608
            f" and ct.source = 'system' and {SCOPE.format(col='ct.customer_id')}"
        ),
        scope,
    )
    for tag in config.tags:
        b = Binder("t")
        predicate = compile_rule(tag.rule, b, now=now, timezone=config.timezone)
        params = {**scope, **b.params, "tag": tag.name}
        await conn.execute(
            sa.text(
                "delete from customer_tag ct using tag t where t.id = ct.tag_id and t.name = :tag"  # noqa: S608
                f" and ct.source = 'system' and {SCOPE.format(col='ct.customer_id')}"
                f" and not exists ({MATCHING} where m.customer_id = ct.customer_id and {predicate})"
            ),
            params,
        )
        result = await conn.execute(
            sa.text(
                "insert into customer_tag (customer_id, tag_id, source, created_at)"  # noqa: S608
                " select m.customer_id, (select id from tag where name = :tag), 'system', :now"
                f" from customer_metrics m join golden_customer g on g.id = m.customer_id"
                f" where {SCOPE.format(col='m.customer_id')} and g.status = 'active' and {predicate}"
                " on conflict (customer_id, tag_id) do nothing"
            ),
            {**params, "now": now},
        )
        added += result.rowcount or 0
    return added


def segment_rule(definition: dict[str, Any]) -> Rule:
    return Rule.model_validate(definition["rule"])


async def apply_segments(
    conn: AsyncConnection,
    config: AnalyticsConfig,
    customer_ids: set[int] | None,
    now: datetime,
    *,
    only: int | None = None,
) -> dict[str, int]:
    """Membership of every rule segment (or segment `only`) for the customers; the day's sizes."""
    scope = scope_params(customer_ids)
    found = await conn.execute(
        sa.text(
            "select id, definition from segment where kind = 'custom' and definition -> 'rule' is not null"
            " and (cast(:only as bigint) is null or id = :only) order by id"
        ),
        {"only": only},
    )
    entered = left = 0
    segment_ids = []
    for segment_id, definition in found.all():
        segment_ids.append(segment_id)
        b = Binder("s")
        predicate = compile_rule(segment_rule(definition), b, now=now, timezone=config.timezone)
        params = {**scope, **b.params, "sid": segment_id, "now": now}
        gone = await conn.execute(
            sa.text(
                "with gone as (delete from segment_membership sm where sm.segment_id = :sid"  # noqa: S608
                f" and {SCOPE.format(col='sm.customer_id')}"
                f" and not exists ({MATCHING} where m.customer_id = sm.customer_id and g.status = 'active'"
                f" and {predicate}) returning sm.customer_id, sm.entered_at)"
                " insert into segment_membership_history (segment_id, customer_id, entered_at, left_at)"
                " select :sid, customer_id, entered_at, :now from gone"
                " where exists (select 1 from golden_customer g where g.id = gone.customer_id)"
            ),
            params,
        )
        came = await conn.execute(
            sa.text(
                "insert into segment_membership (segment_id, customer_id, computed_at, entered_at)"  # noqa: S608
                " select :sid, m.customer_id, :now, :now"
                " from customer_metrics m join golden_customer g on g.id = m.customer_id"
                f" where {SCOPE.format(col='m.customer_id')} and g.status = 'active' and {predicate}"
                " on conflict (segment_id, customer_id) do nothing"
            ),
            params,
        )
        left += gone.rowcount or 0
        entered += came.rowcount or 0
    if segment_ids:
        await conn.execute(
            sa.text(
                "insert into segment_size (segment_id, day, size, computed_at)"
                " select s.id, cast((cast(:now as timestamptz) at time zone :tz) as date),"
                " (select count(*) from segment_membership sm where sm.segment_id = s.id), :now"
                " from segment s where s.id = any(cast(:ids as bigint[]))"
                " on conflict (segment_id, day) do update set size = excluded.size, computed_at = excluded.computed_at"
            ),
            {"now": now, "tz": config.timezone, "ids": segment_ids},
        )
    return {"entered": entered, "left": left, "segments": len(segment_ids)}
