"""Shared value types: Money in integer fen (never a float), times as ISO 8601 with their offset."""

from __future__ import annotations

from datetime import datetime

import strawberry


@strawberry.type(description="An amount of money. `fen` is exact; `yuan` is its decimal text (12.30).")
class Money:
    fen: int
    currency: str = "CNY"

    @strawberry.field(description="The amount in yuan as decimal text, e.g. '12.30' or '-0.05'.")
    def yuan(self) -> str:
        sign = "-" if self.fen < 0 else ""
        whole, cents = divmod(abs(self.fen), 100)
        return f"{sign}{whole}.{cents:02d}"


def money(fen: int | None, currency: str = "CNY") -> Money | None:
    return None if fen is None else Money(fen=int(fen), currency=currency)


def iso(value: datetime | None) -> datetime | None:
    """Strawberry serializes datetimes with `isoformat()`, which keeps the offset of an aware value; every
    timestamp column is timestamptz, so values arrive aware (UTC from asyncpg)."""
    return value
