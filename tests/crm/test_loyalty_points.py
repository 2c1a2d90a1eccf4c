"""The points engine on real PostgreSQL: earn, pending, refunds, redemption, expiry, debts."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from crm.loyalty.engine import run_points, sync_tiers
from crm.loyalty.service import LoyaltyRefusal, Redemption, adjust, redeem
from tests.crm.loyalty_support import add_customer, add_order, add_product, add_refund, one, points, programme

T0 = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)  # a Tuesday, not the 8th


async def run(conn: AsyncConnection, config: object, now: datetime, ids: set[int] | None = None) -> None:
    await sync_tiers(conn, config)  # type: ignore[arg-type]
    await run_points(conn, config, ids, now)  # type: ignore[arg-type]


async def test_an_order_earns_once_after_its_return_window(conn: AsyncConnection) -> None:
    config = programme(earn={"pending_days": 7})
    c = await add_customer(conn)
    order = await add_order(conn, c, 35_050, T0)  # 350.50 yuan: 350 points
    await run(conn, config, T0 + timedelta(hours=1))
    assert await points(conn, c) == {"balance": 0, "debt": 0, "pending": 350}
    await run(conn, config, T0 + timedelta(days=6))
    assert (await points(conn, c))["balance"] == 0
    await run(conn, config, T0 + timedelta(days=7, minutes=1))
    assert await points(conn, c) == {"balance": 350, "debt": 0, "pending": 0}
    # The order arrives again (a later status) and the runs repeat: nothing is earned twice.
    await conn.execute(sa.text("update orders set status = 'completed' where id = :o"), {"o": order})
    await run(conn, config, T0 + timedelta(days=8))
    await run(conn, config, T0 + timedelta(days=8))
    assert await points(conn, c) == {"balance": 350, "debt": 0, "pending": 0}
    assert await one(conn, "select count(*) from points_ledger_entry where customer_id = :c", c=c) == 1
    version = await one(conn, "select rule_version from points_ledger_entry where customer_id = :c", c=c)
    assert version == config.version


async def test_unpaid_and_cancelled_orders_earn_nothing(conn: AsyncConnection) -> None:
    config = programme(earn={"pending_days": 0})
    c = await add_customer(conn)
    await add_order(conn, c, 10_000, T0, status="pending")
    await add_order(conn, c, 10_000, T0, status="cancelled")
    await run(conn, config, T0 + timedelta(hours=1))
    assert (await points(conn, c))["balance"] == 0


async def test_multipliers_for_products_tiers_and_member_days(conn: AsyncConnection) -> None:
    config = programme(
        earn={
            "pending_days": 0,
            "multipliers": [
                {"category": "bedding", "multiplier": 2.0},
                {"sku": "SKU-POT", "multiplier": 3.0},
            ],
            "member_days": [{"day_of_month": 8, "multiplier": 2.0}],
        }
    )
    await add_product(conn, "SKU-DUVET", "bedding")
    await add_product(conn, "SKU-POT", "kitchen")
    await add_product(conn, "SKU-LAMP", "decor")
    c = await add_customer(conn)
    # Half bedding (x2), half decor (x1): 1.5 x 200 yuan = 300.
    await add_order(conn, c, 20_000, T0, lines=[("SKU-DUVET", 10_000), ("SKU-LAMP", 10_000)])
    await run(conn, config, T0 + timedelta(hours=1))
    assert (await points(conn, c))["balance"] == 300
    # A SKU multiplier; on member day (the 8th, in Shanghai) doubled: 100 yuan x 3 x 2 = 600.
    member_day = datetime(2026, 4, 7, 17, 0, tzinfo=UTC)  # 01:00 on 8 April in Shanghai
    await add_order(conn, c, 10_000, member_day, lines=[("SKU-POT", 10_000)])
    await run(conn, config, member_day + timedelta(hours=1))
    assert (await points(conn, c))["balance"] == 900
    # A gold member earns 1.5x (the tier's multiplier).
    g = await add_customer(conn, tier_code="gold")
    await add_order(conn, g, 10_000, T0)
    await run(conn, config, T0 + timedelta(hours=1))
    assert (await points(conn, g))["balance"] == 150


async def test_caps_per_order_and_per_day(conn: AsyncConnection) -> None:
    config = programme(earn={"pending_days": 0, "max_points_per_order": 500, "max_points_per_day": 800})
    c = await add_customer(conn)
    await add_order(conn, c, 100_000, T0)  # 1000 -> 500 (per order)
    await add_order(conn, c, 40_000, T0 + timedelta(minutes=5))  # 400 -> 300 left today
    await run(conn, config, T0 + timedelta(hours=1))
    assert (await points(conn, c))["balance"] == 800
    # Later the same day, in another run: the day's cap counts what was already earned.
    await add_order(conn, c, 10_000, T0 + timedelta(hours=2))
    await run(conn, config, T0 + timedelta(hours=3))
    assert (await points(conn, c))["balance"] == 800
    # The next day earns again.
    await add_order(conn, c, 10_000, T0 + timedelta(days=1))
    await run(conn, config, T0 + timedelta(days=1, hours=1))
    assert (await points(conn, c))["balance"] == 900


async def test_redemption_takes_first_expiring_lots_first(conn: AsyncConnection) -> None:
    config = programme(earn={"pending_days": 0}, expiry={"policy": "days", "days": 100})
    c = await add_customer(conn)
    late = await add_order(conn, c, 50_000, T0 + timedelta(days=10))
    early = await add_order(conn, c, 30_000, T0)
    await run(conn, config, T0 + timedelta(days=11))
    result = await redeem(
        conn, config, c, Redemption(points=400), key="k1", actor="staff:1", now=T0 + timedelta(days=12)
    )
    assert result["balance"] == 400
    left: dict[int, int] = dict(
        (
            await conn.execute(
                sa.text("select order_id, points_remaining from points_lot where customer_id = :c"), {"c": c}
            )
        ).all()
    )
    assert left == {early: 0, late: 400}
    assert await points(conn, c) == {"balance": 400, "debt": 0, "pending": 0}


async def test_a_redemption_beyond_the_balance_is_refused(conn: AsyncConnection) -> None:
    config = programme(earn={"pending_days": 0})
    c = await add_customer(conn)
    await add_order(conn, c, 10_000, T0)
    await run(conn, config, T0 + timedelta(hours=1))
    with pytest.raises(LoyaltyRefusal) as refused:
        await redeem(conn, config, c, Redemption(points=101), key="k", actor="a", now=T0 + timedelta(hours=2))
    assert refused.value.code == "INSUFFICIENT_POINTS"


async def test_points_past_expiry_are_not_spent_before_the_expiry_run(conn: AsyncConnection) -> None:
    """A lot past its expiry still counts in the balance until the daily run expires it, but it cannot
    be spent: the redemption is refused and takes nothing."""
    config = programme(earn={"pending_days": 0}, expiry={"policy": "days", "days": 30})
    c = await add_customer(conn)
    await add_order(conn, c, 10_000, T0)  # 100 points, expiring at T0 + 30 days
    await add_order(conn, c, 5_000, T0 + timedelta(days=20))  # 50 points, expiring later
    await run(conn, config, T0 + timedelta(days=21))
    after_expiry = T0 + timedelta(days=31)
    with pytest.raises(LoyaltyRefusal) as refused:
        async with conn.begin_nested():
            await redeem(conn, config, c, Redemption(points=120), key="k", actor="a", now=after_expiry)
    assert refused.value.code == "INSUFFICIENT_POINTS" and "50 points are spendable" in refused.value.message
    assert await points(conn, c) == {"balance": 150, "debt": 0, "pending": 0}
    spent = await redeem(conn, config, c, Redemption(points=50), key="k2", actor="a", now=after_expiry)
    assert spent["balance"] == 100 == (await points(conn, c))["balance"]


async def test_rewards_and_cash_offset(conn: AsyncConnection) -> None:
    config = programme(earn={"pending_days": 0})
    c = await add_customer(conn)
    order = await add_order(conn, c, 800_000, T0)  # 8000 points
    await run(conn, config, T0 + timedelta(hours=1))
    gift = await redeem(
        conn, config, c, Redemption(reward_code="towel-set"), key="g", actor="a", now=T0 + timedelta(hours=2)
    )
    assert gift["points"] == 1500
    # 100 points per yuan: 12.34 yuan costs 1234 points; at most half of the order.
    cash = await redeem(
        conn,
        config,
        c,
        Redemption(cash_offset_fen=1234, order_id=order),
        key="c",
        actor="a",
        now=T0 + timedelta(hours=2),
    )
    assert cash["points"] == 1234 and cash["balance"] == 8000 - 1500 - 1234
    with pytest.raises(LoyaltyRefusal) as refused:
        await redeem(
            conn, config, c, Redemption(cash_offset_fen=400_001, order_id=order), key="c2", actor="a", now=T0
        )
    assert refused.value.code == "OFFSET_OVER_CAP"


async def test_an_idempotency_key_replays_and_refuses_other_input(conn: AsyncConnection) -> None:
    config = programme(earn={"pending_days": 0})
    c = await add_customer(conn)
    await add_order(conn, c, 100_000, T0)
    await run(conn, config, T0 + timedelta(hours=1))
    first = await redeem(
        conn, config, c, Redemption(points=100), key="same", actor="a", now=T0 + timedelta(hours=2)
    )
    again = await redeem(
        conn, config, c, Redemption(points=100), key="same", actor="a", now=T0 + timedelta(hours=3)
    )
    assert again["replayed"] and again["balance"] == first["balance"] == 900
    assert (await points(conn, c))["balance"] == 900
    with pytest.raises(LoyaltyRefusal) as refused:
        await redeem(conn, config, c, Redemption(points=200), key="same", actor="a", now=T0)
    assert refused.value.code == "IDEMPOTENCY_KEY_REUSED"
    # Another caller's key of the same text is its own.
    other = await redeem(
        conn, config, c, Redemption(points=200), key="same", actor="b", now=T0 + timedelta(hours=3)
    )
    assert other["balance"] == 700


@pytest.mark.parametrize("on_spent", ["debt", "floor"])
async def test_partial_refund_after_partial_redemption(conn: AsyncConnection, on_spent: str) -> None:
    config = programme(earn={"pending_days": 0}, refunds={"on_spent": on_spent})
    c = await add_customer(conn)
    order = await add_order(conn, c, 100_000, T0)  # 1000 points
    await run(conn, config, T0 + timedelta(hours=1))
    await redeem(conn, config, c, Redemption(points=800), key="r", actor="a", now=T0 + timedelta(hours=2))
    await add_refund(conn, order, 50_000)  # half refunded: 500 points back, only 200 are left
    await add_refund(conn, order, 10_000, status="WAIT_SELLER_AGREE")  # not done yet: no effect
    await run(conn, config, T0 + timedelta(days=1))
    state = await points(conn, c)
    assert state["balance"] == 0
    assert state["debt"] == (300 if on_spent == "debt" else 0)
    note = await one(
        conn,
        "select reason from points_ledger_entry where customer_id = :c and idempotency_key like '%#short'",
        c=c,
    )
    assert "300 points could not be taken back" in note
    # A second partial refund reverses only the difference (another 10% = 100 points).
    await add_refund(conn, order, 10_000)
    await run(conn, config, T0 + timedelta(days=2))
    state = await points(conn, c)
    assert state["debt"] == (400 if on_spent == "debt" else 0)
    # Later earnings pay the debt off first.
    await add_order(conn, c, 100_000, T0 + timedelta(days=3))
    await run(conn, config, T0 + timedelta(days=3, hours=1))
    assert await points(conn, c) == {"balance": 600 if on_spent == "debt" else 1000, "debt": 0, "pending": 0}


async def test_equal_refunds_and_payoffs_at_one_instant_each_count(conn: AsyncConnection) -> None:
    """Runs that share a clock reading (a rerun, a catch-up) are still separate steps: two equal partial
    refunds reverse twice, and a debt that reappears is paid off again, all at one `now`."""
    config = programme(earn={"pending_days": 0}, refunds={"on_spent": "debt"})
    c = await add_customer(conn)
    order = await add_order(conn, c, 100_000, T0)  # 1000 points
    at = T0 + timedelta(hours=1)
    await run(conn, config, at)
    await add_refund(conn, order, 10_000)
    await run(conn, config, at)
    await add_refund(conn, order, 10_000)
    await run(conn, config, at)
    assert (await points(conn, c))["balance"] == 800
    await redeem(conn, config, c, Redemption(points=800), key="all", actor="a", now=at)
    await add_order(conn, c, 10_000, T0)  # 100 points, released at once
    for _ in range(2):
        await add_refund(conn, order, 10_000)  # 100 more owed each time
        await run(conn, config, at)
    state = await points(conn, c)
    assert state == {"balance": 0, "debt": 100, "pending": 0}
    await run(conn, config, at)  # nothing changed: nothing more happens
    assert await points(conn, c) == state


async def test_an_order_that_arrives_already_refunded_earns_nothing_in_the_end(conn: AsyncConnection) -> None:
    config = programme(earn={"pending_days": 7})
    c = await add_customer(conn)
    await add_order(conn, c, 20_000, T0, status="refunded")
    await run(conn, config, T0 + timedelta(hours=1))
    await run(conn, config, T0 + timedelta(days=8))
    assert await points(conn, c) == {"balance": 0, "debt": 0, "pending": 0}
    # Paid, then refunded in full after release: all taken back.
    o = await add_order(conn, c, 20_000, T0 + timedelta(days=1))
    await run(conn, config, T0 + timedelta(days=9))
    assert (await points(conn, c))["balance"] == 200
    await conn.execute(sa.text("update orders set status = 'refunded' where id = :o"), {"o": o})
    await run(conn, config, T0 + timedelta(days=10))
    assert await points(conn, c) == {"balance": 0, "debt": 0, "pending": 0}


async def test_a_refund_inside_the_return_window_shrinks_the_pending_points(conn: AsyncConnection) -> None:
    config = programme(earn={"pending_days": 7})
    c = await add_customer(conn)
    o = await add_order(conn, c, 40_000, T0)
    await run(conn, config, T0 + timedelta(hours=1))
    await add_refund(conn, o, 10_000)
    await run(conn, config, T0 + timedelta(days=1))
    assert await points(conn, c) == {"balance": 0, "debt": 0, "pending": 300}
    await run(conn, config, T0 + timedelta(days=8))
    assert await points(conn, c) == {"balance": 300, "debt": 0, "pending": 0}


@pytest.mark.parametrize(
    ("policy", "extra", "alive_until", "gone_at"),
    [
        ("end_of_month_after", {"months": 12}, "2027-03-31T23:59:00+08:00", "2027-04-01T00:00:00+08:00"),
        ("days", {"days": 30}, "2026-04-09T11:59:59+00:00", "2026-04-09T12:00:00+00:00"),
        ("year_end", {}, "2027-12-31T23:59:00+08:00", "2028-01-01T00:00:00+08:00"),
    ],
)
async def test_expiry_policies(
    conn: AsyncConnection, policy: str, extra: dict[str, int], alive_until: str, gone_at: str
) -> None:
    config = programme(earn={"pending_days": 0}, expiry={"policy": policy, **extra})
    c = await add_customer(conn)
    await add_order(conn, c, 10_000, T0)
    await run(conn, config, T0 + timedelta(hours=1))
    await run(conn, config, datetime.fromisoformat(alive_until))
    assert (await points(conn, c))["balance"] == 100
    await run(conn, config, datetime.fromisoformat(gone_at))
    assert (await points(conn, c))["balance"] == 0
    kinds = (
        await conn.execute(
            sa.text("select kind, points from points_ledger_entry where customer_id = :c order by id"),
            {"c": c},
        )
    ).all()
    assert [tuple(k) for k in kinds] == [("earn", 100), ("expire", -100)]


async def test_points_that_never_expire(conn: AsyncConnection) -> None:
    config = programme(earn={"pending_days": 0}, expiry={"policy": "never"})
    c = await add_customer(conn)
    await add_order(conn, c, 10_000, T0)
    await run(conn, config, T0 + timedelta(days=1))
    await run(conn, config, T0 + timedelta(days=20 * 365))
    assert (await points(conn, c))["balance"] == 100


async def test_staff_adjustments_need_a_reason_and_stay_in_the_books(conn: AsyncConnection) -> None:
    config = programme(earn={"pending_days": 0})
    c = await add_customer(conn)
    with pytest.raises(LoyaltyRefusal) as refused:
        await adjust(conn, config, c, 50, kind="adjust", reason=" ", key="a1", actor="staff:9", now=T0)
    assert refused.value.code == "REASON_REQUIRED"
    await adjust(
        conn,
        config,
        c,
        50,
        kind="adjust",
        reason="goodwill for a late delivery",
        key="a1",
        actor="staff:9",
        now=T0,
    )
    await adjust(
        conn, config, c, -20, kind="adjust", reason="duplicate goodwill", key="a2", actor="staff:9", now=T0
    )
    assert (await points(conn, c))["balance"] == 30
    with pytest.raises(LoyaltyRefusal):
        await adjust(
            conn, config, c, -31, kind="adjust", reason="too much", key="a3", actor="staff:9", now=T0
        )
    actors = await one(
        conn, "select array_agg(distinct actor) from points_ledger_entry where customer_id = :c", c=c
    )
    assert actors == ["staff:9"]
