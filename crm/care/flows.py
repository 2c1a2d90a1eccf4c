"""The care triggers' daily run and the survey invitations as Prefect flows, scheduled by `c360 sync serve`
(SCHEDULES). Each run is one transaction and idempotent: a rerun writes nothing it wrote before.

Import this module only after `sync.prefect_setup.configure_prefect` has set Prefect's environment.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from prefect import flow, get_run_logger
from sqlalchemy.ext.asyncio import AsyncConnection

from crm.care.triggers import run_triggers, survey_invitations
from crm.loyalty.service import in_transaction
from crm.service.config import get_config
from infra.db import get_engine


async def daily_run(now: datetime | None = None) -> dict[str, Any]:
    config, when = get_config(), now or datetime.now(UTC)

    async def work(conn: AsyncConnection) -> dict[str, Any]:
        return await run_triggers(conn, config, when)

    return await in_transaction(get_engine(), work)


async def invitations_run(now: datetime | None = None) -> dict[str, Any]:
    config, when = get_config(), now or datetime.now(UTC)

    async def work(conn: AsyncConnection) -> dict[str, Any]:
        return {"survey_invite": await survey_invitations(conn, config, when)}

    return await in_transaction(get_engine(), work)


@flow(name="care-daily", log_prints=False)
async def care_daily() -> dict[str, Any]:
    from sync.flows import die_with_serve

    die_with_serve()
    result = await daily_run()
    get_run_logger().info("care: actions written %s (rules %s)", result["written"], result["rule_version"])
    return result


@flow(name="survey-invitations", log_prints=False)
async def survey_invitations_flow() -> dict[str, Any]:
    from sync.flows import die_with_serve

    die_with_serve()
    result = await invitations_run()
    get_run_logger().info("surveys: %(survey_invite)s invitations written", result)
    return result


# 09:30 in the retailer's zone: after the loyalty run (tiers, birthday coupons), when messages may go out.
SCHEDULES = [(care_daily, "30 9 * * *"), (survey_invitations_flow, "15 * * * *")]
