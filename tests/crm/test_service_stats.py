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
                   per: int | None = None, when: datetime = T) -> None:  # fmt: skip
    await conn.execute(
        sa.text(
            "insert into survey_response (customer_id, survey_code, subject_key, kind, score, expected_score,"
            " perceived_score, responded_at) values (:c, :s, gen_random_uuid()::text, :k, :score, :e, :p, :t)"
        ),
        {"c": customer, "s": "case-csat" if kind == "csat" else "order-nps", "k": kind, "score": score, "e": exp,
         "p": per, "t": when},
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
