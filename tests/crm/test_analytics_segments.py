"""System tags from rules, manual tags kept, and rule segments whose members enter and leave with dates and
a size per day."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from crm.analytics.service import recompute_in
from tests.crm.analytics_support import rules
from tests.crm.loyalty_support import add_customer, add_identity, add_order, add_refund, one

NOW = datetime(2026, 6, 1, 4, 0, tzinfo=UTC)


async def tags_of(conn: AsyncConnection, c: int) -> dict[str, str]:
    found = await conn.execute(
        sa.text(
            "select t.name, ct.source from customer_tag ct join tag t on t.id = ct.tag_id where ct.customer_id = :c"
        ),
        {"c": c},
    )
    return dict([tuple(r) for r in found.all()])


async def test_system_tags_follow_their_rules_and_manual_tags_stay(conn: AsyncConnection) -> None:
    config = rules(tags=True)
    big = await add_customer(conn, birth_date=date(1988, 6, 20))
    await add_identity(conn, big, "tmall")
    await add_identity(conn, big, "wechat")
    await add_order(conn, big, 600_000, NOW - timedelta(days=2))
    sleeper = await add_customer(conn, birth_date=date(1988, 7, 20))
    await add_order(conn, sleeper, 10_000, NOW - timedelta(days=400))
    await conn.execute(sa.text("insert into tag (name) values ('VIP服务') on conflict do nothing"))
    await conn.execute(
        sa.text(
            "insert into customer_tag (customer_id, tag_id, source, added_by)"
            " select :c, id, 'manual', 'staff-1' from tag where name = 'VIP服务'"
        ),
        {"c": sleeper},
    )
    await recompute_in(conn, config, None, NOW)
    assert await tags_of(conn, big) == {
        "高价值": "system",
        "生日本月": "system",
        "多渠道": "system",
        "新客": "system",
    }
    assert await tags_of(conn, sleeper) == {"沉睡": "system", "VIP服务": "manual"}

    # The big spender returns everything: no longer high value nor a buyer; the birthday month passes.
    o = await one(conn, "select id from orders where customer_id = :c", c=big)
    await add_refund(conn, o, 600_000)
    await recompute_in(conn, config, {big, sleeper}, NOW + timedelta(days=31))
    assert await tags_of(conn, big) == {"多渠道": "system", "潜在客户": "system"}
    assert await tags_of(conn, sleeper) == {"沉睡": "system", "VIP服务": "manual", "生日本月": "system"}


async def test_rule_segments_enter_and_leave_with_dates_and_sizes(conn: AsyncConnection) -> None:
    config = rules(
        segments=[
            {
                "code": "repeat-not-shanghai",
                "name": "repeat buyers outside Shanghai",
                "rule": {
                    "and": [
                        {"measure": "order_count", "gte": 2},
                        {"not": {"attribute": "city", "in": ["上海"]}},
                    ]
                },
            },
            {
                "code": "tmall-or-big",
                "name": "t",
                "rule": {"or": [{"channel": "tmall"}, {"value_tier": ["high"]}]},
            },
        ]
    )
    c = await add_customer(conn, city="杭州市")
    sh = await add_customer(conn, city="上海市")
    nobody = await add_customer(conn)  # no city: `not city in [上海]` holds
    for who in (c, sh, nobody):
        await add_order(conn, who, 10_000, NOW - timedelta(days=5))
    await recompute_in(conn, config, None, NOW)
    seg = await one(conn, "select id from segment where code = 'repeat-not-shanghai'")
    assert await one(conn, "select count(*) from segment_membership where segment_id = :s", s=seg) == 0

    day2 = NOW + timedelta(days=1)
    second = await add_order(conn, c, 10_000, day2)
    for who in (sh, nobody):
        await add_order(conn, who, 10_000, day2)
    await recompute_in(conn, config, {c, sh, nobody}, day2)
    members = await conn.execute(
        sa.text("select customer_id, entered_at from segment_membership where segment_id = :s order by 1"),
        {"s": seg},
    )
    assert [tuple(r) for r in members.all()] == [(c, day2), (nobody, day2)]

    day3 = NOW + timedelta(days=2)
    await add_refund(conn, second, 10_000)  # refunded in full: back to one purchase
    await recompute_in(conn, config, {c}, day3)
    left = await conn.execute(
        sa.text(
            "select customer_id, entered_at, left_at from segment_membership_history where segment_id = :s"
        ),
        {"s": seg},
    )
    assert [tuple(r) for r in left.all()] == [(c, day2, day3)]
    sizes = await conn.execute(
        sa.text("select day, size from segment_size where segment_id = :s order by day"), {"s": seg}
    )
    assert [tuple(r) for r in sizes.all()] == [
        (date(2026, 6, 1), 0),
        (date(2026, 6, 2), 2),
        (date(2026, 6, 3), 1),
    ]
    other = await one(conn, "select id from segment where code = 'tmall-or-big'")
    # add_order lands on tmall, but `channel` means the customer's identities: none here.
    assert await one(conn, "select count(*) from segment_membership where segment_id = :s", s=other) == 0
