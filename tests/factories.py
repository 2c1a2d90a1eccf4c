"""Small factories for test data (polar style): each creates one row and returns it, flushed."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from itertools import count

from sqlmodel.ext.asyncio.session import AsyncSession

from infra.models import Channel, GoldenCustomer, Order, PointsLedgerEntry, PointsLot, SourceIdentity

_seq = count(1)


async def create_channel(session: AsyncSession, code: str = "tmall", family: str = "marketplace") -> Channel:
    existing = await session.get(Channel, code)
    if existing is not None:
        return existing
    channel = Channel(code=code, family=family, name=code.title())
    session.add(channel)
    await session.flush()
    return channel


async def create_customer(session: AsyncSession, **attrs: object) -> GoldenCustomer:
    customer = GoldenCustomer(**attrs)  # type: ignore[arg-type]
    session.add(customer)
    await session.flush()
    return customer


async def create_identity(
    session: AsyncSession, channel: str = "tmall", external_id: str | None = None, **attrs: object
) -> SourceIdentity:
    await create_channel(session, channel)
    identity = SourceIdentity(channel_code=channel, external_id=external_id or f"ext-{next(_seq)}", **attrs)  # type: ignore[arg-type]
    session.add(identity)
    await session.flush()
    return identity


async def create_order(
    session: AsyncSession, channel: str = "tmall", external_id: str | None = None, **attrs: object
) -> Order:
    await create_channel(session, channel)
    values: dict[str, object] = {"status": "paid", "placed_at": datetime.now(UTC)}
    values.update(attrs)
    order = Order(channel_code=channel, external_id=external_id or f"o-{next(_seq)}", **values)  # type: ignore[arg-type]
    session.add(order)
    await session.flush()
    return order


async def earn_points(
    session: AsyncSession, customer_id: int, points: int, key: str | None = None, days_valid: int = 365
) -> PointsLedgerEntry:
    lot = PointsLot(
        customer_id=customer_id,
        points_earned=points,
        points_remaining=points,
        expires_at=datetime.now(UTC) + timedelta(days=days_valid),
    )
    session.add(lot)
    await session.flush()
    entry = PointsLedgerEntry(
        customer_id=customer_id,
        kind="earn",
        points=points,
        idempotency_key=key or f"earn-{next(_seq)}",
        lot_id=lot.id,
    )
    session.add(entry)
    await session.flush()
    return entry
