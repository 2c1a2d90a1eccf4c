"""What runs after landing and linking, for the golden customers a sync touched."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncEngine


async def recompute_customers(engine: AsyncEngine, customer_ids: set[int]) -> int:
    """Recompute points, tier and segments for `customer_ids`; returns how many were recomputed.

    A no-op only until the CRM issue lands (`crm/` has no recomputation entry point yet); sync_all
    already calls it with the right customers, so wiring CRM in is a change to this function alone.
    """
    return 0
