"""The loyalty programme's daily run as a Prefect flow, scheduled by `c360 sync serve` (SCHEDULES):
pending points released, refunds reversed, lots expired, tiers reviewed (downgrades after their grace
period), birthday coupons granted and unused coupons expired.

Import this module only after `sync.prefect_setup.configure_prefect` has set Prefect's environment.
"""

from __future__ import annotations

from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

from prefect import flow, get_run_logger

from crm.loyalty.config import get_config
from crm.loyalty.service import in_transaction, recompute_in
from infra.db import get_engine


async def daily_run(now: datetime | None = None) -> dict[str, Any]:
    """The daily run for every customer, in one transaction (all or nothing; it can simply run again)."""
    config = get_config()
    when = now or datetime.now(UTC)

    async def work(conn: Any) -> dict[str, Any]:
        counts = await recompute_in(conn, config, None, when, daily=True)
        return {"rule_version": config.version, **asdict(counts)}

    return await in_transaction(get_engine(), work)


@flow(name="loyalty-daily", log_prints=False)
async def loyalty_daily() -> dict[str, Any]:
    from sync.flows import die_with_serve

    die_with_serve()
    result = await daily_run()
    get_run_logger().info(
        "loyalty: %(lots_created)s lots earned, %(released)s released, %(reversed)s reversed, "
        "%(expired)s expired, %(debt_paid)s points of debt paid off (rules %(rule_version)s)",
        result,
    )
    return result


# 02:30 in the retailer's zone: after the night's syncs have landed the day's orders.
SCHEDULES = [(loyalty_daily, "30 2 * * *")]
