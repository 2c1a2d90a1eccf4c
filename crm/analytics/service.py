"""The analytics run for a set of customers or for all: measures, scores and lifecycle, system tags, rule
segments, households and CLV, in one transaction (crm.registry's `recompute`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from crm.analytics import clv, households, measures, segments
from crm.analytics.config import AnalyticsConfig, get_config
from crm.loyalty.service import in_transaction
from crm.timing import TimedSteps


@dataclass
class RunCounts(TimedSteps):
    measured: int = 0
    lifecycle_changes: int = 0
    tags_added: int = 0
    segment_entered: int = 0
    segment_left: int = 0
    households: int = 0
    clv_predicted: int = 0
    # Wall seconds per step, so a slow run says where its time went (logged and benchmarked).
    seconds: dict[str, float] = field(default_factory=dict)


async def recompute_in(
    conn: AsyncConnection, config: AnalyticsConfig, customer_ids: set[int] | None, now: datetime
) -> RunCounts:
    """Every analytics rule for the customers (None: all, refitting what is fitted over the whole base)."""
    counts = RunCounts()
    if customer_ids is None:
        # A full run sorts and aggregates every order: let it stay in memory. For this transaction only.
        await conn.execute(sa.text("set local work_mem = '64MB'"))
    with counts.timed("definitions"):
        await segments.sync_definitions(conn, config)
    with counts.timed("measures"):
        m = await measures.measure(conn, config, customer_ids, now)
        counts.measured, counts.lifecycle_changes = m["measured"], m["lifecycle_changes"]
    with counts.timed("clv"):
        counts.clv_predicted = await clv.predict(conn, config, customer_ids, now)
    with counts.timed("households"):
        counts.households = await households.group(conn, config, customer_ids, now)
    with counts.timed("tags"):
        counts.tags_added = await segments.apply_tags(conn, config, customer_ids, now)
    with counts.timed("segments"):
        s = await segments.apply_segments(conn, config, customer_ids, now)
        counts.segment_entered, counts.segment_left = s["entered"], s["left"]
    return counts


async def recompute(
    engine: AsyncEngine, customer_ids: set[int] | None, *, now: datetime | None = None
) -> int:
    """crm.registry's entry point: after a sync for the customers it touched, or for all (None)."""
    config = get_config()
    when = now or datetime.now(UTC)

    async def work(conn: AsyncConnection) -> int:
        counts = await recompute_in(conn, config, customer_ids, when)
        return counts.measured

    return await in_transaction(engine, work)
