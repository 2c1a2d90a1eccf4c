"""Helpers for the loyalty tests: a programme built from the demo file with overrides, orders with lines,
and the bookkeeping invariant every test checks."""

from __future__ import annotations

import tomllib
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from crm.loyalty.config import LoyaltyConfig
from infra.settings import PROJECT_ROOT


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def programme(**overrides: Any) -> LoyaltyConfig:
    """The demo programme without campaigns or member days unless asked, with `overrides` merged in."""
    raw = tomllib.loads((PROJECT_ROOT / "config" / "loyalty.toml").read_text(encoding="utf-8"))
    raw["campaigns"] = []
    raw["earn"]["member_days"] = []
    raw["earn"]["multipliers"] = []
    raw["birthday"] = {"enabled": False}
    return LoyaltyConfig.model_validate(_merge(raw, overrides))


async def one(conn: AsyncConnection, sql: str, **params: Any) -> Any:
    return (await conn.execute(sa.text(sql), params)).scalar()


async def add_customer(conn: AsyncConnection, **attrs: Any) -> int:
    cols = {"status": "active", **attrs}
    names = ", ".join(cols)
    values = ", ".join(f":{k}" for k in cols)
    sql = f"insert into golden_customer ({names}) values ({values}) returning id"  # noqa: S608 - test's own columns
    return int(await one(conn, sql, **cols))


async def add_identity(conn: AsyncConnection, customer_id: int, channel: str = "tmall") -> int:
    await conn.execute(
        sa.text(
            "insert into channel (code, family, name, trust_rank) values (:c, 'marketplace', :c, 50)"
            " on conflict do nothing"
        ),
        {"c": channel},
    )
    return int(
        await one(
            conn,
            "insert into source_identity (channel_code, external_id, customer_id, phone_verified)"
            " values (:ch, 'id-' || gen_random_uuid(), :c, false) returning id",
            ch=channel,
            c=customer_id,
        )
    )


async def add_product(conn: AsyncConnection, sku: str, category: str) -> int:
    return int(
        await one(
            conn,
            "insert into product (sku, title, category) values (:s, :s, :c)"
            " on conflict (sku) do update set category = excluded.category returning id",
            s=sku,
            c=category,
        )
    )


async def add_order(
    conn: AsyncConnection,
    customer_id: int,
    paid_fen: int,
    paid_at: datetime,
    *,
    status: str = "paid",
    lines: list[tuple[str, int]] | None = None,
    identity_id: int | None = None,
    channel: str = "tmall",
    tenders: str | None = None,
) -> int:
    """An order of `customer_id`; `lines` are (sku, amount_fen) of products made beforehand."""
    await conn.execute(
        sa.text(
            "insert into channel (code, family, name, trust_rank) values (:c, 'marketplace', :c, 50)"
            " on conflict do nothing"
        ),
        {"c": channel},
    )
    order_id = int(
        await one(
            conn,
            "insert into orders (channel_code, external_id, customer_id, source_identity_id, status, total_fen,"
            " paid_fen, currency, placed_at, paid_at, tenders)"
            " values (:ch, 'o-' || gen_random_uuid(), :c, :i, :s, :p, :p, 'CNY', :t, :t, cast(:tenders as jsonb))"
            " returning id",
            ch=channel,
            c=customer_id,
            i=identity_id,
            s=status,
            p=paid_fen,
            t=paid_at,
            tenders=tenders,
        )
    )
    for n, (sku, amount) in enumerate(lines or [], start=1):
        await conn.execute(
            sa.text(
                "insert into order_line (order_id, line_no, sku, product_id, quantity, unit_price_fen, amount_fen)"
                " values (:o, :n, :s, (select id from product where sku = :lookup), 1, :a, :a)"
            ),
            {"o": order_id, "n": n, "s": sku, "lookup": sku, "a": amount},
        )
    return order_id


async def add_refund(conn: AsyncConnection, order_id: int, amount_fen: int, status: str = "SUCCESS") -> None:
    await conn.execute(
        sa.text(
            "insert into refund (channel_code, external_id, order_id, amount_fen, status)"
            " select channel_code, 'r-' || gen_random_uuid(), id, :a, :s from orders where id = :o"
        ),
        {"o": order_id, "a": amount_fen, "s": status},
    )


async def points(conn: AsyncConnection, customer_id: int) -> dict[str, int]:
    """Balance, debt, pending points, and what the ledger and lots say; asserts the bookkeeping agrees:
    ledger sum = balance = open released lots; debt = owed points in the ledger."""
    row = (
        await conn.execute(
            sa.text(
                """
select coalesce((select balance from points_balance where customer_id = :c), 0),
       coalesce((select debt from points_balance where customer_id = :c), 0),
       coalesce((select sum(points) from points_ledger_entry where customer_id = :c), 0),
       coalesce((select sum(owed_points) from points_ledger_entry where customer_id = :c), 0),
       coalesce((select sum(points_remaining) from points_lot where customer_id = :c and released_at is not null), 0),
       coalesce((select sum(points_remaining) from points_lot where customer_id = :c and released_at is null), 0)
"""
            ),
            {"c": customer_id},
        )
    ).one()
    balance, debt, ledger, owed, lots, pending = (int(x) for x in row)
    assert ledger == balance == lots, f"ledger {ledger}, balance {balance}, open lots {lots}"
    assert owed == debt, f"owed {owed}, debt {debt}"
    assert balance >= 0 and debt >= 0
    return {"balance": balance, "debt": debt, "pending": pending}
