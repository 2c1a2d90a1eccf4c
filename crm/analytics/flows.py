"""The analytics full run as a Prefect flow, scheduled by `c360 sync serve` (SCHEDULES): every customer's
measures, RFM cut points and scores, lifecycle, tags, segments, households and the CLV fit.

Import this module only after `sync.prefect_setup.configure_prefect` has set Prefect's environment.
"""

from __future__ import annotations

from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

from prefect import flow, get_run_logger
from sqlalchemy.ext.asyncio import AsyncConnection

from crm.analytics.config import get_config
from crm.analytics.service import recompute_in
from crm.loyalty.service import in_transaction
from infra.db import get_engine


async def daily_run(now: datetime | None = None) -> dict[str, Any]:
    """The full run for every customer, in one transaction (all or nothing; it can simply run again)."""
    config = get_config()
    when = now or datetime.now(UTC)

    async def work(conn: AsyncConnection) -> dict[str, Any]:
        counts = await recompute_in(conn, config, None, when)
        return {"rule_version": config.version, **asdict(counts)}

    return await in_transaction(get_engine(), work)


@flow(name="analytics-daily", log_prints=False)
async def analytics_daily() -> dict[str, Any]:
    from sync.flows import die_with_serve

    die_with_serve()
    result = await daily_run()
    get_run_logger().info(
        "analytics: %(measured)s customers measured, %(lifecycle_changes)s lifecycle changes, "
        "%(tags_added)s tags added, %(segment_entered)s entered and %(segment_left)s left segments, "
        "%(households)s households, %(clv_predicted)s CLV predictions (rules %(rule_version)s)",
        result,
    )
    return result


# 03:00 in the retailer's zone: after loyalty's daily run (02:30), so tiers are current for the segments.
SCHEDULES = [(analytics_daily, "0 3 * * *")]
