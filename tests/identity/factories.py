"""Small factories for identity tests: channels, landed source identities, customers with activity."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from identity.standardize import STANDARDIZED_ATTRIBUTES, standardize_frame
from sync.landing import CHANNEL_FAMILIES

SI_COLUMNS = STANDARDIZED_ATTRIBUTES


async def create_channels(conn: AsyncConnection) -> None:
    """The product's channel rows (trust ranks included), as landing creates them."""
    await conn.execute(
        sa.text(
            "insert into channel (code, family, name, trust_rank) values (:c, :f, :n, :r) on conflict do nothing"
        ),
        [{"c": c, "f": f, "n": n, "r": r} for c, (f, n, r) in CHANNEL_FAMILIES.items()],
    )


async def land_identities(
    conn: AsyncConnection, records: pd.DataFrame, standardized: bool = False
) -> list[int]:
    """Insert records (contract columns, `source` = channel code) as source identities; ids in order."""
    std = records if standardized else standardize_frame(records)
    std = std.astype(object).where(std.notna(), None)
    base = datetime(2026, 1, 1, tzinfo=UTC)
    params = []
    for i, row in enumerate(std.to_dict("records")):
        params.append(
            {
                **{c: row[c] for c in SI_COLUMNS},
                "phone_verified": bool(row["phone_verified"]),
                "channel_code": row["source"],
                "external_id": str(row["record_id"]),
                "observed": base + timedelta(minutes=i),
            }
        )
    cols = ", ".join(SI_COLUMNS)
    values = ", ".join(f":{c}" for c in SI_COLUMNS)
    await conn.execute(
        sa.text(
            f"insert into source_identity (channel_code, external_id, {cols}, source_updated_at)"  # noqa: S608 - fixed column names
            f" values (:channel_code, :external_id, {values}, :observed)"
        ),
        params,
    )
    rows = (
        await conn.execute(
            sa.text("select external_id, id from source_identity where external_id = any(:e)"),
            {"e": [p["external_id"] for p in params]},
        )
    ).all()
    by_external = {e: int(i) for e, i in rows}
    return [by_external[p["external_id"]] for p in params]


async def customer_of(conn: AsyncConnection, identity_ids: list[int]) -> dict[int, int]:
    rows = (
        await conn.execute(
            sa.text("select id, customer_id from source_identity where id = any(:ids)"), {"ids": identity_ids}
        )
    ).all()
    return {int(i): int(c) for i, c in rows}


async def add_activity(
    conn: AsyncConnection, customer_id: int, identity_id: int, tag: str, earn: int, redeem: int = 0
) -> None:
    """An order, earned (and redeemed) points with a lot, an interaction, a service case and a consent."""
    now = datetime(2026, 3, 1, tzinfo=UTC)
    order_id = (
        await conn.execute(
            sa.text(
                "insert into orders (channel_code, external_id, source_identity_id, customer_id, status, total_fen, paid_fen, placed_at, currency)"
                " values ('app', :e, :i, :c, 'completed', 10000, 10000, :t, 'CNY') returning id"
            ),
            {"e": f"o-{tag}", "i": identity_id, "c": customer_id, "t": now},
        )
    ).scalar_one()
    lot_id = (
        await conn.execute(
            sa.text(
                "insert into points_lot (customer_id, source_identity_id, points_earned, points_remaining, expires_at)"
                " values (:c, :i, :p, :r, :t) returning id"
            ),
            {
                "c": customer_id,
                "i": identity_id,
                "p": earn,
                "r": earn - redeem,
                "t": now + timedelta(days=365),
            },
        )
    ).scalar_one()
    await conn.execute(
        sa.text(
            "insert into points_ledger_entry (customer_id, source_identity_id, kind, points, idempotency_key, order_id, lot_id)"
            " values (:c, :i, 'earn', :p, :k, :o, :l)"
        ),
        {"c": customer_id, "i": identity_id, "p": earn, "k": f"earn-{tag}", "o": order_id, "l": lot_id},
    )
    if redeem:
        await conn.execute(
            sa.text(
                "insert into points_ledger_entry (customer_id, source_identity_id, kind, points, idempotency_key)"
                " values (:c, null, 'redeem', :p, :k)"
            ),
            {"c": customer_id, "p": -redeem, "k": f"redeem-{tag}"},
        )
    await conn.execute(
        sa.text(
            "insert into interaction (channel_code, external_id, source_identity_id, customer_id, type, occurred_at, direction)"
            " values ('wechat', :e, :i, :c, 'message', :t, 'inbound')"
        ),
        {"e": f"m-{tag}", "i": identity_id, "c": customer_id, "t": now},
    )
    await conn.execute(
        sa.text(
            "insert into service_case (case_no, customer_id, source_identity_id, type, subject, status, priority)"
            " values (:n, :c, :i, 'inquiry', 'where is my sofa', 'open', 'normal')"
        ),
        {"n": f"C-{tag}", "c": customer_id, "i": identity_id},
    )
    await conn.execute(
        sa.text(
            "insert into consent (customer_id, source_identity_id, purpose, status, source)"
            " values (:c, :i, 'marketing_sms', 'granted', 'app')"
        ),
        {"c": customer_id, "i": identity_id},
    )


async def state_of(conn: AsyncConnection) -> dict[str, Any]:
    """Everything a merge may touch, without timestamps that legitimately move."""
    queries = {
        "golden": "select id, status, merged_into, name, phone, email, birth_date, tier_code, lineage from golden_customer order by id",
        "identities": "select id, customer_id from source_identity order by id",
        "orders": "select id, customer_id, source_identity_id from orders order by id",
        "ledger": "select id, customer_id, points from points_ledger_entry order by id",
        "lots": "select id, customer_id, points_remaining from points_lot order by id",
        "balances": "select customer_id, balance, lifetime_earned from points_balance order by customer_id",
        "interactions": "select id, customer_id from interaction order by id",
        "cases": "select id, customer_id from service_case order by id",
        "consents": "select id, customer_id from consent order by id",
    }
    return {k: [tuple(r) for r in (await conn.execute(sa.text(q))).all()] for k, q in queries.items()}
