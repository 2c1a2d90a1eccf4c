"""The ledger-equals-balance invariant under randomized sequences of earn, refund, redeem, adjust, expiry,
merge and unmerge (hypothesis): after every step, for every customer, the ledger sums to the balance and to
the open lots, the debt is the ledger's owed points, and nothing is negative."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy.ext.asyncio import AsyncConnection

from crm.loyalty.engine import run_points, sync_tiers
from crm.loyalty.service import LoyaltyRefusal, Redemption, adjust, redeem
from identity.merge import MergeError, merge_customers, unmerge_event
from tests.crm.loyalty_support import (
    add_customer,
    add_identity,
    add_order,
    add_refund,
    one,
    points,
    programme,
)

T0 = datetime(2026, 1, 5, 4, 0, tzinfo=UTC)
WHO = st.integers(0, 2)
OPS = st.one_of(
    st.tuples(st.just("order"), WHO, st.integers(100, 90_000)),
    st.tuples(st.just("refund"), st.integers(0, 9), st.integers(1, 100)),
    st.tuples(st.just("redeem"), WHO, st.integers(1, 900)),
    st.tuples(st.just("adjust"), WHO, st.integers(-300, 300)),
    st.tuples(st.just("time"), st.integers(1, 200)),
    st.tuples(st.just("merge"), WHO, WHO),
    st.tuples(st.just("unmerge")),
)


async def check_books(conn: AsyncConnection) -> None:
    for (cid,) in (await conn.execute(sa.text("select id from golden_customer"))).all():
        await points(conn, cid)
    # Per identity too: what an unmerge would hand back is consistent on its own.
    bad = await one(
        conn,
        """select count(*) from (
             select l.source_identity_id, sum(l.points_remaining) as lots,
                    (select coalesce(sum(e.points), 0) from points_ledger_entry e
                      where e.source_identity_id is not distinct from l.source_identity_id and e.lot_id is not null) as entries
             from points_lot l where l.released_at is not null group by l.source_identity_id) x
           where lots <> entries""",
    )
    assert bad == 0


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(ops=st.lists(OPS, min_size=1, max_size=14), on_spent=st.sampled_from(["debt", "floor"]))
async def test_the_books_balance_after_any_sequence(
    conn: AsyncConnection, ops: list[Any], on_spent: str
) -> None:
    config = programme(
        earn={"pending_days": 3}, refunds={"on_spent": on_spent}, expiry={"policy": "days", "days": 120}
    )
    savepoint = await conn.begin_nested()
    try:
        await sync_tiers(conn, config)
        identities = []
        for _ in range(3):
            c = await add_customer(conn)
            identities.append(await add_identity(conn, c))
        orders: list[tuple[int, int]] = []
        merges: list[int] = []
        now = T0
        key = 0

        async def owner(i: int) -> int:
            return int(
                await one(conn, "select customer_id from source_identity where id = :i", i=identities[i])
            )

        for op in ops:
            key += 1
            kind = op[0]
            if kind == "order":
                c = await owner(op[1])
                orders.append((await add_order(conn, c, op[2], now, identity_id=identities[op[1]]), op[2]))
            elif kind == "refund" and orders:
                order_id, paid = orders[op[1] % len(orders)]
                await add_refund(conn, order_id, paid * op[2] // 100)
            elif kind == "redeem":
                c = await owner(op[1])
                try:
                    async with conn.begin_nested():
                        await redeem(
                            conn, config, c, Redemption(points=op[2]), key=f"r{key}", actor="t", now=now
                        )
                except LoyaltyRefusal:
                    pass
            elif kind == "adjust" and op[2] != 0:
                c = await owner(op[1])
                try:
                    async with conn.begin_nested():
                        await adjust(
                            conn,
                            config,
                            c,
                            op[2],
                            kind="adjust",
                            reason="test",
                            key=f"a{key}",
                            actor="t",
                            now=now,
                        )
                except LoyaltyRefusal:
                    pass
            elif kind == "time":
                now += timedelta(days=op[1])
            elif kind == "merge":
                a, b = await owner(op[1]), await owner(op[2])
                if a != b:
                    merged = await merge_customers(conn, [a, b], actor="t", reason="same")
                    assert merged.merge_event_id is not None
                    merges.append(merged.merge_event_id)
            elif kind == "unmerge" and merges:
                try:
                    async with conn.begin_nested():
                        await unmerge_event(conn, merges.pop(), actor="t", reason="apart")
                except MergeError:
                    pass
            await run_points(conn, config, None, now)
            await check_books(conn)
    finally:
        await savepoint.rollback()


async def test_a_debt_follows_merge_and_unmerge(conn: AsyncConnection) -> None:
    """A owes 300 points after a refund; merged with B, B's points pay it off; the unmerge gives A no debt
    and B what is left, and every side's books still balance."""
    config = programme(earn={"pending_days": 0}, refunds={"on_spent": "debt"})
    await sync_tiers(conn, config)
    a, b = await add_customer(conn), await add_customer(conn)
    ia, ib = await add_identity(conn, a), await add_identity(conn, b, channel="app")
    order = await add_order(conn, a, 60_000, T0, identity_id=ia)
    await add_order(conn, b, 50_000, T0, identity_id=ib)
    await run_points(conn, config, None, T0 + timedelta(hours=1))
    await redeem(conn, config, a, Redemption(points=600), key="spend", actor="t", now=T0 + timedelta(hours=2))
    await add_refund(conn, order, 30_000)
    await run_points(conn, config, None, T0 + timedelta(hours=3))
    assert await points(conn, a) == {"balance": 0, "debt": 300, "pending": 0}
    merged = await merge_customers(conn, [a, b], actor="t", reason="same")
    survivor = merged.surviving_customer_id
    assert (await points(conn, survivor))["debt"] == 300
    await run_points(conn, config, None, T0 + timedelta(hours=4))
    assert await points(conn, survivor) == {"balance": 200, "debt": 0, "pending": 0}
    assert merged.merge_event_id is not None
    await unmerge_event(conn, merged.merge_event_id, actor="t", reason="apart")
    assert await points(conn, a) == {"balance": 0, "debt": 0, "pending": 0}
    assert await points(conn, b) == {"balance": 200, "debt": 0, "pending": 0}
    await check_books(conn)


async def test_an_expired_adjustment_splits_back_on_unmerge(conn: AsyncConnection) -> None:
    """Found by the sequence above: a manual credit expires while merged; the unmerge hands back the credit
    and its expiry together, so neither side goes negative."""
    config = programme(
        earn={"pending_days": 3}, refunds={"on_spent": "debt"}, expiry={"policy": "days", "days": 120}
    )
    await sync_tiers(conn, config)
    a, b = await add_customer(conn), await add_customer(conn)
    await add_identity(conn, a)
    await add_identity(conn, b)
    await adjust(conn, config, b, 1, kind="adjust", reason="test", key="a1", actor="t", now=T0)
    await run_points(conn, config, None, T0)
    merged = await merge_customers(conn, [a, b], actor="t", reason="same")
    await run_points(conn, config, None, T0)
    await run_points(conn, config, None, T0 + timedelta(days=120))
    await check_books(conn)
    assert merged.merge_event_id is not None
    await unmerge_event(conn, merged.merge_event_id, actor="t", reason="apart")
    await run_points(conn, config, None, T0 + timedelta(days=120))
    for c in (a, b):
        assert await points(conn, c) == {"balance": 0, "debt": 0, "pending": 0}
    await check_books(conn)
