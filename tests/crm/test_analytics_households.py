"""Households from shared delivery addresses and family phones, never from a shop's own address typed by a
cashier or an address shared by too many; never merging; staff decisions kept by later runs."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from crm.analytics.service import recompute_in
from tests.crm.analytics_support import rules
from tests.crm.loyalty_support import add_customer, add_order, one

NOW = datetime(2026, 6, 1, tzinfo=UTC)
HOME = {"province": "上海市", "city": "上海市", "district": "徐汇区"}


async def identity(conn: AsyncConnection, customer: int, channel: str = "tmall", **attrs: Any) -> None:
    await conn.execute(
        sa.text(
            "insert into channel (code, family, name, trust_rank) values (:c, 'marketplace', :c, 50)"
            " on conflict do nothing"
        ),
        {"c": channel},
    )
    cols = {"channel_code": channel, "customer_id": customer, "phone_verified": False, **attrs}
    names = ", ".join(cols)
    values = ", ".join(f":{k}" for k in cols)
    sql = f"insert into source_identity (external_id, {names}) values ('x-' || gen_random_uuid(), {values})"  # noqa: S608 - test's own columns
    await conn.execute(sa.text(sql), cols)


async def households(conn: AsyncConnection) -> list[tuple[str, str, list[tuple[int, str]]]]:
    found = await conn.execute(
        sa.text(
            "select h.key_kind, h.status, array_agg(array[hm.customer_id::text, hm.role] order by hm.customer_id)"
            " from household h join household_member hm on hm.household_id = h.id and not hm.excluded"
            " group by h.id order by h.id"
        )
    )
    return [(k, s, [(int(c), r) for c, r in members]) for k, s, members in found.all()]


async def test_shared_addresses_make_households_but_a_shops_address_does_not(conn: AsyncConnection) -> None:
    config = rules()
    mother, son = await add_customer(conn), await add_customer(conn)
    # The same flat written two ways: full-width digits and spaces do not matter.
    await identity(conn, mother, **HOME, address_detail="漕溪北路88号 3栋1201")
    await identity(conn, son, "jd", **HOME, address_detail="漕溪北路８８号3栋1201")
    await add_order(conn, mother, 20_000, NOW - timedelta(days=3))
    await add_order(conn, mother, 20_000, NOW - timedelta(days=2))
    # Walk-ins whose cashier typed the store's own address.
    await conn.execute(
        sa.text(
            "insert into store (code, name, province, city, district, address)"
            " values ('S01', '徐汇店', '上海市', '上海市', '徐汇区', '肇嘉浜路1111号')"
        )
    )
    walk_ins = [await add_customer(conn) for _ in range(3)]
    for c in walk_ins:
        await identity(conn, c, "pos", **HOME, address_detail="肇嘉浜路1111号")
    # A parcel locker everyone ships to: more customers than a family.
    locker = [await add_customer(conn) for _ in range(7)]
    for c in locker:
        await identity(conn, c, **HOME, address_detail="虹桥路1号丰巢柜")
    await recompute_in(conn, config, None, NOW)
    assert await households(conn) == [("address", "auto", [(mother, "orderer"), (son, "recipient")])]
    # Never a merge: both stay active golden customers.
    assert (
        await one(
            conn,
            "select count(*) from golden_customer where id in (:a, :b) and status = 'active'",
            a=mother,
            b=son,
        )
        == 2
    )


async def test_a_family_phone_and_incremental_regrouping(conn: AsyncConnection) -> None:
    config = rules()
    wife, husband, friend = await add_customer(conn), await add_customer(conn), await add_customer(conn)
    await identity(conn, wife, phone="+8613800000001")
    await identity(conn, husband, "jd", phone="+8613800000001")
    await identity(conn, friend, **HOME, address_detail="天钥桥路100号")
    await recompute_in(conn, config, None, NOW)
    assert await households(conn) == [("phone", "auto", [(wife, "recipient"), (husband, "recipient")])]
    # The wife's app profile gives the friend's flat as hers: an incremental run for her alone finds the
    # friend, who was measured before (their evidence is kept per customer).
    await identity(conn, wife, "app", **HOME, address_detail="天钥桥路100号")
    await add_order(conn, friend, 10_000, NOW)
    await recompute_in(conn, config, {wife}, NOW)
    assert ("address", "auto", [(wife, "recipient"), (friend, "recipient")]) in await households(conn)
    await recompute_in(conn, config, {friend}, NOW)
    got = await households(conn)
    assert ("address", "auto", [(wife, "recipient"), (friend, "orderer")]) in got
    # The husband's identity moves its phone: the phone household dissolves on his next run.
    await conn.execute(
        sa.text("update source_identity set phone = '+8613900000002' where customer_id = :c"), {"c": husband}
    )
    await recompute_in(conn, config, {husband}, NOW)
    assert [h[0] for h in await households(conn)] == ["address"]


async def test_staff_decisions_survive_recomputes(conn: AsyncConnection) -> None:
    config = rules()
    a, b, c = await add_customer(conn), await add_customer(conn), await add_customer(conn)
    for who in (a, b, c):
        await identity(conn, who, **HOME, address_detail="龙华中路500弄2号")
    await recompute_in(conn, config, None, NOW)
    hid = await one(conn, "select id from household")
    # Staff split c off: c stays out on every later run.
    await conn.execute(
        sa.text("update household_member set excluded = true where customer_id = :c"), {"c": c}
    )
    await recompute_in(conn, config, None, NOW + timedelta(days=1))
    assert await households(conn) == [("address", "auto", [(a, "recipient"), (b, "recipient")])]
    # Dissolved: nobody is grouped again under that address.
    await conn.execute(sa.text("update household set status = 'split' where id = :h"), {"h": hid})
    await conn.execute(sa.text("delete from household_member where household_id = :h"), {"h": hid})
    await recompute_in(conn, config, None, NOW + timedelta(days=2))
    assert await households(conn) == []
