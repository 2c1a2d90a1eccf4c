"""The database itself protects what users rely on: no duplicate channel records, no double-applied
points, no negative balance, and money that keeps its exact value."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlmodel import func, select
from sqlmodel.ext.asyncio.session import AsyncSession

from infra.models import Order, PointsBalance, PointsLedgerEntry, SourceIdentity
from tests.factories import create_customer, create_identity, create_order, earn_points


async def test_duplicate_source_identity_per_channel_is_rejected(session: AsyncSession) -> None:
    await create_identity(session, "tmall", "buyer-1")
    with pytest.raises(IntegrityError, match="uq_source_identity_channel_external"):
        await create_identity(session, "tmall", "buyer-1")


async def test_same_external_id_in_another_channel_is_a_different_identity(session: AsyncSession) -> None:
    a = await create_identity(session, "tmall", "u-42")
    b = await create_identity(session, "jd", "u-42")
    assert a.id != b.id


async def test_duplicate_order_per_channel_is_rejected(session: AsyncSession) -> None:
    await create_order(session, "jd", "9001")
    with pytest.raises(IntegrityError, match="uq_orders_channel_external"):
        await create_order(session, "jd", "9001")


async def test_duplicate_idempotency_key_is_rejected(session: AsyncSession) -> None:
    customer = await create_customer(session)
    assert customer.id is not None
    await earn_points(session, customer.id, 100, key="order:tmall:1:earn")
    with pytest.raises(IntegrityError, match="idempotency_key"):
        await earn_points(session, customer.id, 100, key="order:tmall:1:earn")


async def test_balance_follows_the_ledger(session: AsyncSession) -> None:
    customer = await create_customer(session)
    assert customer.id is not None
    await earn_points(session, customer.id, 300)
    session.add(PointsLedgerEntry(customer_id=customer.id, kind="redeem", points=-120, idempotency_key="r-1"))
    await session.flush()
    balance = await session.get(PointsBalance, customer.id)
    assert balance is not None
    await session.refresh(balance)
    assert (balance.balance, balance.lifetime_earned) == (180, 300)


async def test_negative_points_balance_is_rejected(session: AsyncSession) -> None:
    customer = await create_customer(session)
    assert customer.id is not None
    await earn_points(session, customer.id, 50)
    session.add(
        PointsLedgerEntry(customer_id=customer.id, kind="redeem", points=-51, idempotency_key="r-over")
    )
    with pytest.raises(IntegrityError, match="ck_points_balance_non_negative"):
        await session.flush()


async def test_redeem_must_be_negative_and_earn_positive(session: AsyncSession) -> None:
    customer = await create_customer(session)
    assert customer.id is not None
    session.add(
        PointsLedgerEntry(customer_id=customer.id, kind="earn", points=-5, idempotency_key="bad-earn")
    )
    with pytest.raises(IntegrityError, match="ck_points_ledger_sign"):
        await session.flush()


async def test_money_keeps_its_exact_value(session: AsyncSession) -> None:
    # 12,345,678,901.23 yuan in fen: beyond float's exact integer range for cents-as-float arithmetic.
    order = await create_order(
        session, total_fen=1_234_567_890_123, paid_fen=1_234_567_890_123, discount_fen=1
    )
    session.expunge_all()
    row = (await session.exec(select(Order.total_fen, Order.discount_fen).where(Order.id == order.id))).one()
    assert row == (1_234_567_890_123, 1)
    column_type = Order.__table__.c.total_fen.type  # type: ignore[attr-defined]
    assert isinstance(column_type, sa.BigInteger)


async def test_negative_order_amount_is_rejected(session: AsyncSession) -> None:
    with pytest.raises(IntegrityError, match="ck_orders_amounts_non_negative"):
        await create_order(session, total_fen=-1)


async def test_merged_customer_must_name_its_survivor(session: AsyncSession) -> None:
    with pytest.raises(IntegrityError, match="ck_golden_customer_merged_into"):
        await create_customer(session, status="merged")


async def test_each_test_starts_clean_because_the_previous_one_rolled_back(session: AsyncSession) -> None:
    # The earlier tests created identities and orders; the per-test transaction discarded them.
    count = (await session.exec(select(func.count()).select_from(SourceIdentity))).one()
    assert count == 0
