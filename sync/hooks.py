"""What runs after landing and linking, for the golden customers a sync touched."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncEngine

from crm.registry import recompute


async def recompute_customers(engine: AsyncEngine, customer_ids: set[int]) -> int:
    """Recompute points, tier and segments for `customer_ids` (crm.registry's domains, in order);
    returns how many were recomputed."""
    if not customer_ids:
        return 0
    return await recompute(engine, customer_ids)
