"""Care triggers: each kind writes its actions once per customer and period (a rerun writes nothing new),
checks consent as it writes (marketing needs a granted consent, service stops on a withdrawn one) and
records why an action was suppressed; win-back follows the analytics lifecycle stages."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from crm.care.triggers import run_triggers
from crm.loyalty import config as loyalty_config
from crm.loyalty.engine import sync_tiers
from crm.service.cases import transition_case
from tests.crm.loyalty_support import add_customer, add_identity, one
from tests.crm.service_support import new_case, path_to, role_for, rules, step_for

NOW = datetime(2026, 12, 10, 2, 0, tzinfo=UTC)  # 10:00 on 10 December in Shanghai


async def consent(conn: AsyncConnection, customer: int, purpose: str, status: str, at: datetime) -> None:
    await conn.execute(
        sa.text("insert into consent (customer_id, purpose, status, source, recorded_at) values (:c, :p, :s, 'app', :t)"),
        {"c": customer, "p": purpose, "s": status, "t": at},
    )  # fmt: skip


async def actions(conn: AsyncConnection) -> dict[tuple[int, str], tuple[str, str | None]]:
    found = (
        await conn.execute(sa.text("select customer_id, kind, state, suppressed_reason from care_action"))
    ).all()
    return {(r[0], r[1]): (r[2], r[3]) for r in found}


async def test_every_trigger_once_with_consent_checked(conn: AsyncConnection) -> None:
    config = rules()
    born_today = date(1990, 12, 10)
    # Birthday greetings are marketing on WeChat: granted consent and an openid, or suppressed with a reason.
    fan = await add_customer(conn, name="甲", birth_date=born_today, phone="+8613800000011")
    await conn.execute(
        sa.text("update source_identity set wechat_openid = 'o-1' where id = :i"),
        {"i": await add_identity(conn, fan)},
    )
    await consent(conn, fan, "marketing_wechat", "granted", NOW - timedelta(days=30))
    withdrew = await add_customer(conn, name="乙", birth_date=born_today, phone="+8613800000012")
    await consent(conn, withdrew, "marketing_wechat", "granted", NOW - timedelta(days=30))
    await consent(conn, withdrew, "marketing_wechat", "withdrawn", NOW - timedelta(days=1))
    silent = await add_customer(conn, name="丙", birth_date=born_today)
    not_today = await add_customer(conn, name="丁", birth_date=date(1990, 12, 11))
    # Points expiring in 20 days (service SMS): one with a phone, one without, one who stopped service contact.
    expiring = []
    for n, phone in enumerate(("+8613800000021", None, "+8613800000023")):
        c = await add_customer(conn, name=f"戊{n}", phone=phone)
        await conn.execute(
            sa.text(
                "insert into points_lot (customer_id, points_earned, points_remaining, earned_at, expires_at,"
                " available_at, released_at) values (:c, 500, 400, :e, :x, :e, :e)"
            ),
            {"c": c, "e": NOW - timedelta(days=300), "x": NOW + timedelta(days=20)},
        )
        expiring.append(c)
    await consent(conn, expiring[2], "service_contact", "withdrawn", NOW - timedelta(days=2))
    # A complaint closed four days ago gets a follow-up call and a survey invitation.
    complainer = await add_customer(conn, name="己", phone="+8613800000031")
    closed_at = NOW - timedelta(days=4)
    case_id = await new_case(conn, config, complainer, "complaint", closed_at - timedelta(hours=5))
    ctype = config.types["complaint"]
    for n, t in enumerate(
        p for p in ctype.transitions if not (p.invalid or p.reopen or p.name == "sent back")
    ):
        await transition_case(conn, config, case_id, step_for(t), actor="staff:x", role=role_for(t),
                              now=closed_at - timedelta(hours=6 - n), key=f"t{n}")  # fmt: skip
    assert path_to(ctype, "closed")
    # A high-value order eight days ago gets a follow-up call; a small one does not.
    buyer = await add_customer(conn, name="庚", phone="+8613800000041")
    await add_identity(conn, buyer)
    for paid in (500_000, 1_000):
        await conn.execute(
            sa.text(
                "insert into orders (channel_code, external_id, customer_id, status, total_fen, paid_fen, placed_at, currency)"
                " values ('tmall', 'o-' || gen_random_uuid(), :c, 'completed', :p, :p, :t, 'CNY')"
            ),
            {"c": buyer, "p": paid, "t": NOW - timedelta(days=8)},
        )
    # A gold member is called back once per interval; a tier change three days ago is announced.
    gold = await add_customer(conn, name="辛", phone="+8613800000051", tier_code=None)
    await sync_tiers(conn, loyalty_config.get_config())
    await conn.execute(sa.text("update golden_customer set tier_code = 'gold' where id = :c"), {"c": gold})
    await conn.execute(
        sa.text("insert into tier_history (customer_id, from_tier, to_tier, changed_at) values (:c, 'silver', 'gold', :t)"),
        {"c": gold, "t": NOW - timedelta(days=3)},
    )  # fmt: skip

    first = await run_triggers(conn, config, NOW)
    got = await actions(conn)
    assert got[(fan, "birthday")] == ("pending", None)
    assert got[(withdrew, "birthday")] == ("suppressed", "no_marketing_consent:marketing_wechat")
    assert got[(silent, "birthday")] == ("suppressed", "no_marketing_consent:marketing_wechat")
    assert (not_today, "birthday") not in got
    code = await one(
        conn,
        "select payload->>'coupon_code' from care_action where customer_id = :c and kind = 'birthday'",
        c=fan,
    )
    assert code == await one(
        conn, "select code from coupon where customer_id = :c and reason = 'birthday 2026'", c=fan
    )
    assert got[(expiring[0], "points_expiring")] == ("pending", None)
    assert got[(expiring[1], "points_expiring")] == ("suppressed", "no_phone")
    assert got[(expiring[2], "points_expiring")] == (
        "suppressed",
        "service_contact_withdrawn:service_contact",
    )
    assert got[(complainer, "case_followup")] == ("pending", None)
    assert got[(complainer, "survey_invite")] == ("pending", None)
    assert got[(complainer, "case_update")] == ("pending", None)
    assert (
        await one(
            conn,
            "select count(*) from care_action where customer_id = :c and kind = 'purchase_followup'",
            c=buyer,
        )
        == 1
    )
    assert got[(gold, "regular_visit")] == ("pending", None)
    assert got[(gold, "tier_change")] == ("pending", None)
    assert first["written"]["winback"] == 0  # nobody has turned at-risk in this data
    total = await one(conn, "select count(*) from care_action")

    # Reruns the same day and the next write nothing new: each action is once per customer, kind and period.
    again = await run_triggers(conn, config, NOW + timedelta(hours=1))
    assert sum(again["written"].values()) == 0
    later = await run_triggers(conn, config, NOW + timedelta(days=1))
    assert later["written"]["birthday"] == 1  # 丁's birthday is the next day
    assert later["written"]["points_expiring"] == 0
    assert later["written"]["regular_visit"] == 0 and later["written"]["tier_change"] == 0
    assert await one(conn, "select count(*) from care_action") == total + sum(later["written"].values())
    # Ninety days on, the gold member is due a regular visit again.
    assert (await run_triggers(conn, config, NOW + timedelta(days=91)))["written"]["regular_visit"] == 1


async def test_winback_for_customers_turning_at_risk(conn: AsyncConnection) -> None:
    """Win-back goes to a customer whose current stage turned at-risk within 30 days, once per stage, and
    only with marketing consent on its channel (SMS)."""

    async def stage(customer: int, name: str, started: datetime, ended: datetime | None = None) -> None:
        await conn.execute(
            sa.text(
                "insert into lifecycle_history (customer_id, stage, started_at, ended_at)"
                " values (:c, :s, :b, :e)"
            ),
            {"c": customer, "s": name, "b": started, "e": ended},
        )

    lapsing = await add_customer(conn, name="甲", phone="+8613800000031")
    await consent(conn, lapsing, "marketing_sms", "granted", NOW - timedelta(days=100))
    await stage(lapsing, "active", NOW - timedelta(days=200), NOW - timedelta(days=5))
    await stage(lapsing, "at_risk", NOW - timedelta(days=5))
    no_consent = await add_customer(conn, name="乙", phone="+8613800000032")
    await stage(no_consent, "at_risk", NOW - timedelta(days=2))
    long_ago = await add_customer(conn, name="丙", phone="+8613800000033")
    await consent(conn, long_ago, "marketing_sms", "granted", NOW - timedelta(days=100))
    await stage(long_ago, "at_risk", NOW - timedelta(days=90))
    came_back = await add_customer(conn, name="丁", phone="+8613800000034")
    await consent(conn, came_back, "marketing_sms", "granted", NOW - timedelta(days=100))
    await stage(came_back, "at_risk", NOW - timedelta(days=20), NOW - timedelta(days=1))
    await stage(came_back, "won_back", NOW - timedelta(days=1))

    off = await run_triggers(conn, rules(care={"winback": {"enabled": False}}), NOW)
    assert "winback" not in off["written"]
    first = await run_triggers(conn, rules(), NOW)
    got = await actions(conn)
    assert got[(lapsing, "winback")] == ("pending", None)
    assert got[(no_consent, "winback")] == ("suppressed", "no_marketing_consent:marketing_sms")
    assert (long_ago, "winback") not in got and (came_back, "winback") not in got
    assert first["written"]["winback"] == 2
    assert (await run_triggers(conn, rules(), NOW + timedelta(days=1)))["written"]["winback"] == 0
