"""The CRM domains that recompute per customer, in the order they run: loyalty first (tiers feed
segments), analytics next (segments feed care triggers), care last.

Each module named here exposes

    async def recompute(engine: AsyncEngine, customer_ids: set[int] | None, *, now: datetime) -> int

which brings its derived tables up to date for `customer_ids` (None: every customer) as set-based SQL and
returns how many customers it touched. Sync's hook calls it for the customers a run touched;
`c360 crm recompute` calls it by hand; the full daily runs are the modules' scheduled flows
(sync.schedules.SCHEDULE_MODULES).
"""

from __future__ import annotations

import importlib
from datetime import UTC, datetime

from sqlalchemy.ext.asyncio import AsyncEngine

RECOMPUTE_MODULES: tuple[str, ...] = ("crm.loyalty", "crm.analytics")


async def recompute(
    engine: AsyncEngine, customer_ids: set[int] | None, *, now: datetime | None = None
) -> int:
    """Run every domain's recompute for `customer_ids` (None: all); returns the largest count touched."""
    when = now or datetime.now(UTC)
    touched = 0
    for name in RECOMPUTE_MODULES:
        module = importlib.import_module(name)
        touched = max(touched, await module.recompute(engine, customer_ids, now=when))
    return touched
