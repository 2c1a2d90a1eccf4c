"""The SLA check as a Prefect flow, scheduled by `c360 sync serve` (SCHEDULES) every five minutes: breaches
are flagged when they happen, not when someone next looks at the case.

Import this module only after `sync.prefect_setup.configure_prefect` has set Prefect's environment.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from prefect import flow, get_run_logger
from sqlalchemy.ext.asyncio import AsyncConnection

from crm.loyalty.service import in_transaction
from crm.service.sla import flag_breaches
from infra.db import get_engine


async def sla_check(now: datetime | None = None) -> dict[str, Any]:
    when = now or datetime.now(UTC)

    async def work(conn: AsyncConnection) -> dict[str, Any]:
        return {"breaches_flagged": await flag_breaches(conn, when), "checked_at": when.isoformat()}

    return await in_transaction(get_engine(), work)


@flow(name="service-sla-check", log_prints=False)
async def service_sla_check() -> dict[str, Any]:
    from sync.flows import die_with_serve

    die_with_serve()
    result = await sla_check()
    get_run_logger().info("service: %(breaches_flagged)s SLA breaches flagged", result)
    return result


SCHEDULES = [(service_sla_check, "*/5 * * * *")]
