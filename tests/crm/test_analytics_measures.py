"""Measures, RFM quintiles and cells, value tiers, ABC and lifecycle on crafted data with known answers."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from crm.analytics.config import AnalyticsConfigError, load_config
from crm.analytics.service import recompute_in
from tests.crm.analytics_support import history, metrics, rules
from tests.crm.loyalty_support import add_customer, add_identity, add_order, add_product, add_refund, one

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


async def test_measures_count_purchases_net_of_refunds(conn: AsyncConnection) -> None:
    config = rules()
    c = await add_customer(conn, birth_date=date(1990, 3, 5), city="上海市", gender="f")
    await add_identity(conn, c, "wechat")
    await add_product(conn, "SKU-BED", "bedding")
    await add_product(conn, "SKU-CUP", "kitchen")
    day = NOW - timedelta(days=10)
    await add_order(conn, c, 30_000, day - timedelta(days=20), lines=[("SKU-BED", 30_000)], channel="tmall")
    await add_order(conn, c, 10_000, day - timedelta(days=5), lines=[("SKU-CUP", 10_000)], channel="tmall")
    partly = await add_order(conn, c, 20_000, day, lines=[("SKU-BED", 20_000)], channel="jd")
    await add_refund(conn, partly, 5_000)
    whole = await add_order(conn, c, 40_000, day, channel="jd")  # refunded in full: not a purchase
    await add_refund(conn, whole, 40_000)
    await add_order(conn, c, 90_000, day, status="cancelled", channel="jd")
    await add_order(conn, c, 90_000, day, status="pending", channel="jd")
    await conn.execute(sa.text("update orders set discount_fen = 500 where id = :o"), {"o": partly})

    await recompute_in(conn, config, {c}, NOW)
    m = await metrics(conn, c)
    assert m["order_count"] == 3
    assert m["total_spent_fen"] == 100_000  # paid of the counted orders, the refunded one included
    assert m["refunded_fen"] == 45_000
    assert m["net_spent_fen"] == 55_000
    assert m["average_order_value_fen"] == 18_333
    assert m["first_order_at"] == day - timedelta(days=20)
    assert m["last_order_at"] == day
    assert m["recency_days"] == 10
    assert m["preferred_channel"] == "tmall"  # two orders of three
    assert m["preferred_category"] == "bedding"  # 500 yuan of bedding against 100 of kitchen
    assert m["categories"] == ["bedding", "kitchen"]
    assert m["order_channels"] == ["jd", "tmall"]
    assert m["channels"] == ["wechat"]
    assert m["price_sensitivity"] == pytest.approx(1 / 3)
    assert m["age_band"] == "35-44"  # 36 on 1 June 2026
    assert m["city_tier"] == "tier1"
    assert m["purchase_frequency"] == pytest.approx(3.0)  # three orders in a tenure under a year
    assert m["lifecycle_stage"] == "new"
    assert m["value_tier"] == "low"  # 550 yuan net < 1000
    assert m["clv_historical_fen"] == 55_000


async def test_rfm_quintiles_and_cells_over_the_base(conn: AsyncConnection) -> None:
    """Customer i (1..10) last bought 10*i days ago and has 11 - i orders of 100 yuan: recency cut points
    28/46/64/82 days, frequency 2.8/4.6/6.4/8.2 orders, so the scores and cells are known."""
    config = rules()
    ids = []
    for i in range(1, 11):
        c = await add_customer(conn)
        ids.append(c)
        last = NOW - timedelta(days=10 * i)
        for k in range(11 - i):
            await add_order(conn, c, 10_000, last - timedelta(days=3 * k))
    potential = await add_customer(conn)
    await recompute_in(conn, config, None, NOW)

    cuts = await one(conn, "select parameters from analytics_model where kind = 'rfm'")
    assert cuts["recency_days"] == pytest.approx([28, 46, 64, 82])
    assert cuts["frequency"] == pytest.approx([2.8, 4.6, 6.4, 8.2])
    assert cuts["monetary_fen"] == pytest.approx([28_000, 46_000, 64_000, 82_000])
    got = [
        (m["r_score"], m["f_score"], m["m_score"], m["rfm_cell"])
        for m in [await metrics(conn, c) for c in ids]
    ]
    assert got == [
        (5, 5, 5, "champions"),
        (5, 5, 5, "champions"),
        (4, 4, 4, "champions"),
        (4, 4, 4, "champions"),
        (3, 3, 3, "loyal"),
        (3, 3, 3, "loyal"),
        (2, 2, 2, "about_to_sleep"),
        (2, 2, 2, "about_to_sleep"),
        (1, 1, 1, "lost"),
        (1, 1, 1, "lost"),
    ]
    p = await metrics(conn, potential)
    assert (p["r_score"], p["rfm_cell"], p["value_tier"], p["lifecycle_stage"]) == (
        None,
        "prospect",
        None,
        "potential",
    )

    # An incremental run scores against the stored cut points: the lapsed customer comes back today.
    await add_order(conn, ids[-1], 10_000, NOW)
    await recompute_in(conn, config, {ids[-1]}, NOW)
    m = await metrics(conn, ids[-1])
    assert (m["r_score"], m["f_score"], m["rfm_cell"]) == (5, 1, "new_customers")
    assert (await one(conn, "select parameters from analytics_model where kind = 'rfm'")) == cuts


async def test_value_tiers_and_abc_by_spend(conn: AsyncConnection) -> None:
    config = rules()
    spend = {"high": 700_000, "mid": 150_000, "low": 50_000}
    ids = {k: await add_customer(conn) for k in spend}
    for k, fen in spend.items():
        await add_order(conn, ids[k], fen, NOW - timedelta(days=3))
    refunded = await add_customer(conn)
    o = await add_order(conn, refunded, 600_000, NOW - timedelta(days=3))
    await add_refund(conn, o, 200_000)  # 6000 paid, 4000 net: mid, not high
    await recompute_in(conn, config, None, NOW)
    tiers = {k: (await metrics(conn, c))["value_tier"] for k, c in ids.items()}
    assert tiers == {"high": "high", "mid": "mid", "low": "low"}
    assert (await metrics(conn, refunded))["value_tier"] == "mid"
    # Spend 7000, 4000, 1500, 500 of 13000: A brings the first 70% (7000 + 4000 crosses it), B to 90%.
    abc = [(await metrics(conn, c))["abc_class"] for c in (ids["high"], refunded, ids["mid"], ids["low"])]
    assert abc == ["A", "A", "B", "C"]


def at(day: int) -> datetime:
    return T0 + timedelta(days=day)


T0 = datetime(2025, 1, 1, 10, 0, tzinfo=UTC)


async def test_lifecycle_over_a_simulated_year_with_won_back(conn: AsyncConnection) -> None:
    """Weekly runs over 800 days. Orders on days 0, 30, 500 and 600: new, active after 90 days, at risk 180
    days after the last order, churned after 365, won back by the order after the long gap, active again
    when the won-back period ends, at risk again. Each stage starts on the day the history implies."""
    config = rules()
    c = await add_customer(conn, created_at=at(-10))
    orders = {0, 30, 500, 600}
    for day in range(-7, 801, 7):
        for o in sorted(orders):
            if day - 7 < o <= day:
                await add_order(conn, c, 10_000, at(o))
        await recompute_in(conn, config, {c}, at(day))
    got = [(f, s, (start - T0).days) for f, s, start, _ in await history(conn, c)]
    assert got == [
        (None, "potential", -10),
        ("potential", "new", 0),
        ("new", "active", 90),
        ("active", "at_risk", 210),
        ("at_risk", "churned", 395),
        ("churned", "won_back", 500),
        ("won_back", "active", 680),
        ("active", "at_risk", 780),
    ]
    rows = await history(conn, c)
    # Each stage ends when the next begins; only the current one is open.
    assert [r[3] for r in rows[:-1]] == [r[2] for r in rows[1:]] and rows[-1][3] is None
    m = await metrics(conn, c)
    assert (m["lifecycle_stage"], (m["lifecycle_since"] - T0).days) == ("at_risk", 780)


async def test_merged_customers_lose_their_measures(conn: AsyncConnection) -> None:
    config = rules()
    a, b = await add_customer(conn), await add_customer(conn)
    await add_order(conn, b, 10_000, NOW - timedelta(days=1))
    await recompute_in(conn, config, None, NOW)
    await conn.execute(
        sa.text("update golden_customer set status = 'merged', merged_into = :a where id = :b"),
        {"a": a, "b": b},
    )
    await conn.execute(sa.text("update orders set customer_id = :a where customer_id = :b"), {"a": a, "b": b})
    await recompute_in(conn, config, {a, b}, NOW)
    assert await one(conn, "select count(*) from customer_metrics where customer_id = :b", b=b) == 0
    assert (await metrics(conn, a))["order_count"] == 1


def test_a_bad_file_names_the_key(tmp_path: object) -> None:
    from pathlib import Path

    path = Path(str(tmp_path)) / "analytics.toml"
    text = (Path(__file__).resolve().parents[2] / "config" / "analytics.toml").read_text(encoding="utf-8")
    path.write_text(
        text.replace(
            'code = "lost"\nname = "已流失"\nr = [1, 1]', 'code = "lost"\nname = "已流失"\nr = [2, 2]'
        )
    )
    with pytest.raises(AnalyticsConfigError, match=r"rfm: .*\(r=1, f=1\) is in no cell"):
        load_config(path)
    path.write_text(text.replace("high_min_yuan = 5000", "high_min_yuan = 500"))
    with pytest.raises(
        AnalyticsConfigError, match="value_tier: .*mid_min_yuan must be less than high_min_yuan"
    ):
        load_config(path)
    path.write_text(text.replace('rule = { lifecycle = ["churned"] }', 'rule = { lifecycle = ["asleep"] }'))
    with pytest.raises(AnalyticsConfigError, match=r"tags\[1\]\.rule\.lifecycle\[0\]"):
        load_config(path)
