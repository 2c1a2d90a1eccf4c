"""Statistics on a crafted data set whose answers are worked out by hand (in the comments)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from crm.loyalty import config as loyalty_config
from crm.loyalty.engine import sync_tiers
from crm.service.stats import satisfaction_stats, service_stats
from tests.crm.loyalty_support import add_customer

T = datetime(2026, 11, 3, 2, 0, tzinfo=UTC)
RANGE: dict[str, Any] = {
    "start": datetime(2026, 11, 1, tzinfo=UTC),
    "end": datetime(2026, 12, 1, tzinfo=UTC),
    "tz": "Asia/Shanghai",
}


async def case(conn: AsyncConnection, customer: int, **values: Any) -> None:
    cols = {"case_no": f"CS{values.pop('no')}", "customer_id": customer, "status": "closed", "priority": "normal",
            "subject": "s", "opened_at": T, **values}  # fmt: skip
    names = ", ".join(cols)
    await conn.execute(
        sa.text(f"insert into service_case ({names}) values ({', '.join(':' + k for k in cols)})"),  # noqa: S608 - the test's own columns
        cols,
    )


def hours(n: float) -> datetime:
    return T + timedelta(hours=n)


async def stores(conn: AsyncConnection, *codes: str) -> list[int]:
    found = []
    for code in codes:
        found.append(
            int(
                (
                    await conn.execute(
                        sa.text("insert into store (code, name) values (:c, :c) returning id"), {"c": code}
                    )
                ).scalar_one()
            )
        )
    return found


async def channels(conn: AsyncConnection, *codes: str) -> None:
    for code in codes:
        await conn.execute(
            sa.text(
                "insert into channel (code, family, name, trust_rank) values (:c, 'marketplace', :c, 50)"
                " on conflict do nothing"
            ),
            {"c": code},
        )


async def test_service_stats_by_type_and_department(conn: AsyncConnection) -> None:
    c = await add_customer(conn, name="统计")
    await case(conn, c, no=1, type="complaint", department="quality", first_response_at=hours(2), resolved_at=hours(10),
               closed_at=hours(10), outcome="resolved", resolution_type="compensation")  # fmt: skip
    await case(conn, c, no=2, type="complaint", department="logistics", first_response_at=hours(4),
               resolved_at=hours(30), closed_at=hours(30), outcome="resolved", resolution_type="exchange",
               resolve_breached_at=hours(24), reopen_count=1)  # fmt: skip
    await case(conn, c, no=3, type="inquiry", status="open", first_response_at=hours(1))
    await case(conn, c, no=4, type="complaint", department="quality", first_response_at=hours(6), resolved_at=hours(6),
               closed_at=hours(6), outcome="invalid")  # fmt: skip
    await case(
        conn, c, no=5, type="complaint", opened_at=T - timedelta(days=10), first_response_at=T
    )  # out of range
    by_type = {r["grp"]: r for r in await service_stats(conn, group_by="type", **RANGE)}
    complaint, inquiry = by_type["complaint"], by_type["inquiry"]
    assert set(by_type) == {"complaint", "inquiry"}
    assert complaint["volume"] == 3
    assert float(complaint["first_response_hours"]) == pytest.approx(4)  # (2 + 4 + 6) / 3
    assert complaint["first_response_median_hours"] == pytest.approx(4)
    assert float(complaint["resolve_hours"]) == pytest.approx(46 / 3)  # (10 + 30 + 6) / 3
    assert complaint["resolve_median_hours"] == pytest.approx(10)
    assert complaint["breach_rate"] == pytest.approx(1 / 3)
    assert complaint["reopen_rate"] == pytest.approx(1 / 3)  # one of the three closed at least once
    assert complaint["outcomes"] == {"compensation": 1, "exchange": 1, "invalid": 1}
    assert inquiry["volume"] == 1 and inquiry["resolve_hours"] is None and inquiry["reopen_rate"] is None
    assert inquiry["outcomes"] == {"open": 1} and inquiry["breach_rate"] == 0
    by_dept = {r["grp"]: r["volume"] for r in await service_stats(conn, group_by="department", **RANGE)}
    assert by_dept == {"quality": 2, "logistics": 1, "(none)": 1}


async def response(conn: AsyncConnection, customer: int, kind: str, score: int, exp: int | None = None,
                   per: int | None = None, when: datetime = T, store: int | None = None) -> None:  # fmt: skip
    await conn.execute(
        sa.text(
            "insert into survey_response (customer_id, survey_code, subject_key, kind, score, expected_score,"
            " perceived_score, responded_at, store_id)"
            " values (:c, :s, gen_random_uuid()::text, :k, :score, :e, :p, :t, :store)"
        ),
        {"c": customer, "s": "case-csat" if kind == "csat" else "order-nps", "k": kind, "score": score, "e": exp,
         "p": per, "t": when, "store": store},
    )  # fmt: skip


async def invites(conn: AsyncConnection, customer: int, n: int, state: str = "pending") -> None:
    await conn.execute(
        sa.text(
            "insert into care_action (customer_id, kind, period, channel, purpose, state, suppressed_reason, payload,"
            " created_at) select :c, 'survey_invite', 'p' || gen_random_uuid(), 'app_push', 'service', cast(:s as text),"
            " case when cast(:s as text) = 'suppressed' then 'no_phone' end, '{\"survey\": \"case-csat\"}', :t"
            " from generate_series(1, :n)"
        ),
        {"c": customer, "s": state, "t": T, "n": n},
    )


async def test_satisfaction_by_tier_is_perceived_over_expected(conn: AsyncConnection) -> None:
    await sync_tiers(conn, loyalty_config.get_config())
    gold = await add_customer(conn, name="金", tier_code="gold")
    silver = await add_customer(conn, name="银", tier_code="silver")
    silver2 = await add_customer(conn, name="银二", tier_code="silver")
    await response(conn, gold, "csat", 5, exp=8, per=10)
    await response(conn, gold, "nps", 10, exp=5, per=5)
    await response(conn, silver, "csat", 3, exp=10, per=6)
    await response(conn, silver, "nps", 6)
    await response(conn, silver2, "nps", 8)
    await response(conn, silver2, "nps", 0, when=T - timedelta(days=30))  # out of range
    await invites(conn, gold, 2)
    await invites(conn, silver, 4)
    await invites(conn, silver2, 1, state="suppressed")  # never sent: not an invitation
    by_tier = {r["grp"]: r for r in await satisfaction_stats(conn, group_by="tier", **RANGE)}
    g, s = by_tier["gold"], by_tier["silver"]
    assert (g["responses"], s["responses"]) == (2, 3)
    assert (g["csat"], s["csat"]) == (1.0, 0.0)
    assert g["nps"] == 100.0 and s["nps"] == pytest.approx(-50.0)  # silver: 0 promoters, 1 detractor of 2
    assert g["index"] == pytest.approx(15 / 13) and s["index"] == pytest.approx(0.6)  # (10+5)/(8+5); 6/10
    assert (g["response_rate"], s["response_rate"]) == (1.0, 0.75)
    by_month = {r["grp"]: r["responses"] for r in await satisfaction_stats(conn, group_by="month", **RANGE)}
    assert by_month == {"2026-11": 5}
    by_channel = await satisfaction_stats(conn, group_by="channel", **RANGE)
    assert [(r["grp"], r["responses"], r["response_rate"]) for r in by_channel] == [("(none)", 5, None)]


async def test_service_stats_by_cause_channel_and_store(conn: AsyncConnection) -> None:
    c = await add_customer(conn, name="分组")
    sh, bj = await stores(conn, "SH01", "BJ02")
    await channels(conn, "tmall", "jd")
    await case(conn, c, no=11, type="complaint", cause="dye", channel_code="tmall", store_id=sh,
               first_response_at=hours(2), resolved_at=hours(10), closed_at=hours(10), outcome="resolved",
               resolution_type="compensation")  # fmt: skip
    await case(conn, c, no=12, type="complaint", cause="dye", source="wechat", store_id=sh,
               first_response_at=hours(4), resolved_at=hours(30), closed_at=hours(30), outcome="resolved",
               resolution_type="exchange", resolve_breached_at=hours(24), reopen_count=1)  # fmt: skip
    await case(conn, c, no=13, type="complaint", status="assigned", cause="late delivery", channel_code="jd",
               first_response_at=hours(1), first_response_breached_at=hours(0.5))  # fmt: skip
    await case(conn, c, no=14, type="complaint", channel_code="tmall", store_id=bj, first_response_at=hours(6),
               resolved_at=hours(6), closed_at=hours(6), outcome="invalid")  # fmt: skip
    await case(conn, c, no=15, type="complaint", cause="dye", channel_code="tmall", store_id=sh,
               opened_at=T - timedelta(days=10))  # out of range  # fmt: skip

    by_cause = {r["grp"]: r for r in await service_stats(conn, group_by="cause", **RANGE)}
    assert set(by_cause) == {"dye", "late delivery", "(not analysed)"}
    dye = by_cause["dye"]
    assert dye["volume"] == 2
    assert float(dye["first_response_hours"]) == pytest.approx(3)  # (2 + 4) / 2
    assert float(dye["resolve_hours"]) == pytest.approx(20)  # (10 + 30) / 2
    assert dye["resolve_median_hours"] == pytest.approx(20)
    assert dye["breach_rate"] == pytest.approx(0.5) and dye["reopen_rate"] == pytest.approx(0.5)
    assert dye["outcomes"] == {"compensation": 1, "exchange": 1}
    late = by_cause["late delivery"]
    assert (late["volume"], late["breach_rate"], late["resolve_hours"], late["reopen_rate"]) == (
        1,
        1.0,
        None,
        None,
    )
    assert late["outcomes"] == {"open": 1}
    assert by_cause["(not analysed)"]["outcomes"] == {"invalid": 1}

    # The channel is the channel's code, or the source a case came in by when it has none.
    by_channel = {r["grp"]: r for r in await service_stats(conn, group_by="channel", **RANGE)}
    assert {k: r["volume"] for k, r in by_channel.items()} == {"tmall": 2, "wechat": 1, "jd": 1}
    tmall = by_channel["tmall"]
    assert float(tmall["first_response_hours"]) == pytest.approx(4)  # (2 + 6) / 2
    assert float(tmall["resolve_hours"]) == pytest.approx(8)  # (10 + 6) / 2
    assert tmall["breach_rate"] == 0 and tmall["reopen_rate"] == 0
    assert tmall["outcomes"] == {"compensation": 1, "invalid": 1}
    assert by_channel["wechat"]["reopen_rate"] == 1.0 and by_channel["jd"]["breach_rate"] == 1.0

    by_store = {r["grp"]: r for r in await service_stats(conn, group_by="store", **RANGE)}
    assert {k: r["volume"] for k, r in by_store.items()} == {"SH01": 2, "BJ02": 1, "(none)": 1}
    assert float(by_store["SH01"]["resolve_hours"]) == pytest.approx(20)
    assert by_store["SH01"]["breach_rate"] == pytest.approx(0.5)
    assert by_store["BJ02"]["outcomes"] == {"invalid": 1} and by_store["(none)"]["outcomes"] == {"open": 1}


async def segment(conn: AsyncConnection, code: str, *members: int) -> None:
    sid = (
        await conn.execute(
            sa.text("insert into segment (code, name, kind, definition) values (:c, :c, 'custom', '{}') returning id"),
            {"c": code},
        )
    ).scalar_one()  # fmt: skip
    for m in members:
        await conn.execute(
            sa.text("insert into segment_membership (segment_id, customer_id, scores) values (:s, :c, '{}')"),
            {"s": sid, "c": m},
        )


async def test_satisfaction_by_segment_and_store(conn: AsyncConnection) -> None:
    a = await add_customer(conn, name="甲")
    b = await add_customer(conn, name="乙")
    c = await add_customer(conn, name="丙")
    await segment(conn, "vip", a, b)
    await segment(conn, "newcomers", b)  # b counts in both segments; c is in none
    sh, bj = await stores(conn, "SH01", "BJ02")
    await response(conn, a, "csat", 5, exp=8, per=10, store=sh)
    await response(conn, a, "nps", 9, exp=6, per=6)
    await response(conn, b, "csat", 2, exp=10, per=5, store=sh)
    await response(conn, b, "nps", 3, store=bj)
    await response(conn, c, "csat", 4, exp=5, per=5, store=bj)
    await response(conn, a, "nps", 0, when=T - timedelta(days=30), store=sh)  # out of range
    await invites(conn, a, 2)
    await invites(conn, b, 4)
    await invites(conn, c, 1)
    await invites(conn, c, 1, state="suppressed")

    by_segment = {r["grp"]: r for r in await satisfaction_stats(conn, group_by="segment", **RANGE)}
    assert set(by_segment) == {"vip", "newcomers"}
    vip, new = by_segment["vip"], by_segment["newcomers"]
    assert vip["responses"] == 4
    assert vip["csat"] == 0.5 and vip["csat_mean"] == pytest.approx(3.5)  # a 5 satisfied, b 2 not
    assert vip["nps"] == 0.0  # a 9 promoter, b 3 detractor
    assert vip["index"] == pytest.approx(21 / 24)  # (10 + 6 + 5) / (8 + 6 + 10)
    assert vip["invitations"] == 6 and vip["response_rate"] == pytest.approx(4 / 6)
    assert (new["responses"], new["csat"], new["nps"]) == (2, 0.0, -100.0)
    assert new["index"] == pytest.approx(0.5)  # 5 / 10
    assert new["invitations"] == 4 and new["response_rate"] == pytest.approx(0.5)

    by_store = {r["grp"]: r for r in await satisfaction_stats(conn, group_by="store", **RANGE)}
    assert set(by_store) == {"SH01", "BJ02", "(none)"}
    s1, s2, none = by_store["SH01"], by_store["BJ02"], by_store["(none)"]
    assert (s1["responses"], s1["csat"], s1["nps"]) == (2, 0.5, None)
    assert s1["index"] == pytest.approx(15 / 18)  # (10 + 5) / (8 + 10)
    assert (s2["responses"], s2["csat"], s2["nps"], s2["index"]) == (2, 1.0, -100.0, 1.0)  # c 4; b 3; 5 / 5
    assert (none["responses"], none["csat"], none["nps"], none["index"]) == (1, None, 100.0, 1.0)
    # Invitations are not kept by store: no rate rather than a wrong one.
    assert all(r["invitations"] is None and r["response_rate"] is None for r in by_store.values())
