"""Helpers for the analytics tests: rules built from the demo file with overrides, and readers of the
measures a run wrote. Customers, orders and refunds come from tests.crm.loyalty_support's factories."""

from __future__ import annotations

import tomllib
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from crm.analytics.config import AnalyticsConfig
from infra.settings import PROJECT_ROOT
from tests.crm.loyalty_support import _merge


def rules(
    *, tags: bool | list[Any] = False, segments: bool | list[Any] = False, **overrides: Any
) -> AnalyticsConfig:
    """The demo rules, without its tags and segments unless asked (True: the demo's; a list: these), with
    `overrides` merged in."""
    raw = tomllib.loads((PROJECT_ROOT / "config" / "analytics.toml").read_text(encoding="utf-8"))
    for key, given in (("tags", tags), ("segments", segments)):
        if isinstance(given, list):
            raw[key] = given
        elif not given:
            raw[key] = []
    return AnalyticsConfig.model_validate(_merge(raw, overrides))


async def metrics(conn: AsyncConnection, customer_id: int) -> dict[str, Any]:
    row = (
        (
            await conn.execute(
                sa.text("select * from customer_metrics where customer_id = :c"), {"c": customer_id}
            )
        )
        .mappings()
        .one()
    )
    return dict(row)


async def history(conn: AsyncConnection, customer_id: int) -> list[tuple[str | None, str, Any, Any]]:
    found = await conn.execute(
        sa.text(
            "select from_stage, stage, started_at, ended_at from lifecycle_history where customer_id = :c order by id"
        ),
        {"c": customer_id},
    )
    return [tuple(r) for r in found.all()]
