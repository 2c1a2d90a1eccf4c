"""Tiers: qualification on the rolling window (never the balance), upgrades at once, downgrades only at a
review after the grace period, overrides that expire; campaigns against a holdout; referrals."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from crm.loyalty.campaigns import report
from crm.loyalty.service import (
    LoyaltyRefusal,
    Redemption,
    override_tier,
    recompute_in,
    redeem,
    register_referral,
)
from tests.crm.loyalty_support import add_customer, add_order, add_refund, one, points, programme

T0 = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)


async def tier(conn: AsyncConnection, c: int) -> str:
    return str(await one(conn, "select tier_code from golden_customer where id = :c", c=c))


async def history(conn: AsyncConnection, c: int) -> list[tuple[str | None, str | None]]:
    rows = await conn.execute(
        sa.text("select from_tier, to_tier from tier_history where customer_id = :c order by id"), {"c": c}
    )
    return [tuple(r) for r in rows.all()]


async def test_upgrade_at_once_on_spend_not_on_balance(conn: AsyncConnection) -> None:
    config = programme(earn={"pending_days": 0}, tiers={"qualify_on": "spend"})
    c = await add_customer(conn)
    await recompute_in(conn, config, {c}, T0, daily=False)
    assert await tier(conn, c) == "ordinary"
    await add_order(conn, c, 250_000, T0)  # 2500 yuan: silver (2000)
    await recompute_in(conn, config, {c}, T0 + timedelta(minutes=1), daily=False)
    assert await tier(conn, c) == "silver"
    # Spending the points does not demote: qualification counts spend, not the balance.
    await redeem(conn, config, c, Redemption(points=2500), key="k", actor="a", now=T0 + timedelta(minutes=2))
    await recompute_in(conn, config, {c}, T0 + timedelta(days=200), daily=True)
    assert await tier(conn, c) == "silver"
    assert await history(conn, c) == [(None, "ordinary"), ("ordinary", "silver")]


async def test_a_refund_lowers_qualifying_spend(conn: AsyncConnection) -> None:
    config = programme(earn={"pending_days": 0}, tiers={"qualify_on": "spend"})
    c = await add_customer(conn)
    o = await add_order(conn, c, 250_000, T0)
    await add_refund(conn, o, 100_000)
    await recompute_in(conn, config, {c}, T0 + timedelta(minutes=1), daily=False)
    assert await tier(conn, c) == "ordinary"


async def test_downgrade_only_at_review_after_grace(conn: AsyncConnection) -> None:
    config = programme(
        earn={"pending_days": 0},
        tiers={"qualify_on": "spend", "window_days": 30, "review_every_days": 10, "grace_days": 15},
    )
    c = await add_customer(conn)
    await add_order(conn, c, 900_000, T0)  # gold
    await recompute_in(conn, config, {c}, T0 + timedelta(minutes=1), daily=True)
    assert await tier(conn, c) == "gold"
    # Day 31: the order left the window. Sync's recomputations never downgrade.
    await recompute_in(conn, config, {c}, T0 + timedelta(days=31), daily=False)
    assert await tier(conn, c) == "gold"
    # The daily review notices (the grace period starts), but does not downgrade yet.
    await recompute_in(conn, config, {c}, T0 + timedelta(days=32), daily=True)
    assert await tier(conn, c) == "gold"
    below = await one(conn, "select below_since from membership where customer_id = :c", c=c)
    assert below is not None
    await recompute_in(conn, config, {c}, T0 + timedelta(days=45), daily=True)
    assert await tier(conn, c) == "gold"
    # Grace over and a review due: down to what the window qualifies for.
    await recompute_in(conn, config, {c}, T0 + timedelta(days=60), daily=True)
    assert await tier(conn, c) == "ordinary"
    reason = await one(
        conn, "select reason from tier_history where customer_id = :c order by id desc limit 1", c=c
    )
    assert "grace" in reason


async def test_qualifying_again_during_grace_cancels_the_downgrade(conn: AsyncConnection) -> None:
    config = programme(
        earn={"pending_days": 0},
        tiers={"qualify_on": "spend", "window_days": 30, "review_every_days": 1, "grace_days": 15},
    )
    c = await add_customer(conn)
    await add_order(conn, c, 300_000, T0)
    await recompute_in(conn, config, {c}, T0 + timedelta(minutes=1), daily=True)
    await recompute_in(conn, config, {c}, T0 + timedelta(days=35), daily=True)
    assert await one(conn, "select below_since from membership where customer_id = :c", c=c) is not None
    await add_order(conn, c, 300_000, T0 + timedelta(days=40))
    await recompute_in(conn, config, {c}, T0 + timedelta(days=41), daily=True)
    assert await one(conn, "select below_since from membership where customer_id = :c", c=c) is None
    await recompute_in(conn, config, {c}, T0 + timedelta(days=60), daily=True)
    assert await tier(conn, c) == "silver"


async def test_an_override_expires_and_is_not_a_floor(conn: AsyncConnection) -> None:
    config = programme(earn={"pending_days": 0})
    c = await add_customer(conn)
    await recompute_in(conn, config, {c}, T0, daily=True)
    with pytest.raises(LoyaltyRefusal) as refused:
        await override_tier(conn, config, c, "gold", expires_at=None, reason="VIP", actor="staff:1", now=T0)
    assert refused.value.code == "EXPIRY_REQUIRED"
    await override_tier(
        conn,
        config,
        c,
        "gold",
        expires_at=T0 + timedelta(days=30),
        reason="store opening VIP",
        actor="staff:1",
        now=T0,
    )
    assert await tier(conn, c) == "gold"
    actor, reason = (
        await conn.execute(
            sa.text("select actor, reason from tier_history where customer_id = :c order by id desc limit 1"),
            {"c": c},
        )
    ).one()
    assert actor == "staff:1" and "store opening VIP" in reason
    assert await one(
        conn, "select count(*) from audit_log where action = 'override_tier' and subject_id = :s", s=str(c)
    )
    await recompute_in(conn, config, {c}, T0 + timedelta(days=29), daily=True)
    assert await tier(conn, c) == "gold"
    await recompute_in(conn, config, {c}, T0 + timedelta(days=31), daily=True)
    assert await tier(conn, c) == "ordinary"
    assert await one(conn, "select override_tier from membership where customer_id = :c", c=c) is None


async def test_campaign_coupons_holdout_and_attribution(conn: AsyncConnection) -> None:
    start = T0 - timedelta(days=1)
    config = programme(
        earn={"pending_days": 0},
        campaigns=[
            {
                "code": "spring",
                "name": "Spring",
                "audience": {"tiers": ["ordinary"]},
                "holdout_pct": 50,
                "starts_at": start.isoformat(),
                "ends_at": (T0 + timedelta(days=30)).isoformat(),
                "coupon": {"kind": "amount", "value_yuan": 20, "min_spend_yuan": 100, "valid_days": 20},
            }
        ],
    )
    customers = [await add_customer(conn) for _ in range(40)]
    await recompute_in(conn, config, None, T0, daily=False)
    held = {
        r[0]
        for r in (await conn.execute(sa.text("select customer_id from campaign_member where holdout"))).all()
    }
    treated = [c for c in customers if c not in held]
    assert 5 < len(held) < 35  # about half, by a stable hash
    assert await one(conn, "select count(*) from coupon where customer_id = any(:h)", h=list(held)) == 0
    # Running again grants nothing twice and keeps the groups.
    await recompute_in(conn, config, None, T0 + timedelta(hours=1), daily=False)
    assert await one(conn, "select count(*) from coupon") == len(treated)
    # Four treated customers redeem at a till (the code in the order's tenders); two held-out ones buy anyway.
    codes: dict[int, str] = dict((await conn.execute(sa.text("select customer_id, code from coupon"))).all())
    for c in treated[:4]:
        await add_order(
            conn,
            c,
            15_000,
            T0 + timedelta(days=2),
            tenders=f'[{{"type": "coupon", "code": "{codes[c].lower()}"}}]',
        )
    for c in list(held)[:2]:
        await add_order(conn, c, 15_000, T0 + timedelta(days=2))
    await recompute_in(conn, config, None, T0 + timedelta(days=3), daily=False)
    campaign_id = await one(conn, "select id from campaign where code = 'spring'")
    r = await report(conn, campaign_id)
    assert r is not None
    assert (r["granted"], r["redeemed"], r["revenue_fen"]) == (len(treated), 4, 60_000)
    assert r["redemption_rate"] == pytest.approx(4 / len(treated))
    assert r["treated_repurchase_rate"] == pytest.approx(4 / len(treated))
    assert r["holdout_repurchase_rate"] == pytest.approx(2 / len(held))
    # Unused coupons expire at the daily run.
    await recompute_in(conn, config, None, T0 + timedelta(days=25), daily=True)
    assert await one(conn, "select count(*) from coupon where state = 'expired'") == len(treated) - 4


async def test_referral_rewards_both_sides_once(conn: AsyncConnection) -> None:
    config = programme(earn={"pending_days": 0})
    referrer = await add_customer(conn)
    referee = await add_customer(conn)
    await recompute_in(conn, config, {referrer, referee}, T0, daily=False)
    code = await one(conn, "select code from referral_code where customer_id = :c", c=referrer)
    assert code and code.startswith("R")
    with pytest.raises(LoyaltyRefusal):
        await register_referral(conn, referrer, code, now=T0)
    await register_referral(conn, referee, code.lower(), now=T0)
    await add_order(conn, referee, 10_000, T0 + timedelta(days=1))
    for hours in (1, 2):
        await recompute_in(conn, config, {referee}, T0 + timedelta(days=1, hours=hours), daily=False)
    assert (await points(conn, referrer))["balance"] == 300
    assert (await points(conn, referee))["balance"] == 100 + 200
    assert await one(conn, "select first_order_id is not null from referral where referee_id = :c", c=referee)


async def test_birthday_coupon_once_a_year(conn: AsyncConnection) -> None:
    config = programme(
        birthday={"enabled": True, "coupon": {"kind": "amount", "value_yuan": 30, "valid_days": 30}}
    )
    c = await add_customer(conn, birth_date=datetime(1990, 3, 11).date())
    other = await add_customer(conn, birth_date=datetime(1990, 3, 12).date())
    morning = datetime(2026, 3, 10, 17, 0, tzinfo=UTC)  # 01:00 on 11 March in Shanghai
    await recompute_in(conn, config, None, morning, daily=True)
    await recompute_in(conn, config, None, morning + timedelta(hours=5), daily=True)
    assert await one(conn, "select count(*) from coupon where customer_id = :c", c=c) == 1
    assert await one(conn, "select count(*) from coupon where customer_id = :c", c=other) == 0
