"""SLAs: deadlines on the calendar or on business hours, the most specific rule winning; breaches flagged
once when the clock passes a deadline (the scheduled check), and a late answer flagged as it lands."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from crm.service.cases import transition_case
from crm.service.clock import deadline
from crm.service.sla import flag_breaches
from tests.crm.loyalty_support import add_customer, one
from tests.crm.service_support import new_case, path_to, rules, step_for

CONFIG = rules()
SHANGHAI = 8


def local(y: int, m: int, d: int, h: int, mi: int = 0) -> datetime:
    return (
        datetime(y, m, d, h - SHANGHAI, mi, tzinfo=UTC)
        if h >= SHANGHAI
        else datetime(y, m, d - 1, h + 16, mi, tzinfo=UTC)
    )


def test_business_hours_skip_nights_sundays_and_holidays() -> None:
    bh = CONFIG.business_hours  # Monday to Saturday 09:00-18:00, 1 January a holiday
    tz = CONFIG.timezone
    # Friday 17:00 + 8 business hours: 1 hour on Friday, 7 on Saturday -> Saturday 16:00.
    assert deadline(local(2026, 12, 4, 17), 8, "business", bh, tz) == local(2026, 12, 5, 16)
    # Saturday 17:30 + 2 hours: half an hour on Saturday, Sunday closed -> Monday 10:30.
    assert deadline(local(2026, 12, 5, 17, 30), 2, "business", bh, tz) == local(2026, 12, 7, 10, 30)
    # Opened at night: the clock starts at 09:00.
    assert deadline(local(2026, 12, 8, 3), 1, "business", bh, tz) == local(2026, 12, 8, 10)
    # Thursday 31 December 17:00 + 2 hours: Friday 1 January is a holiday -> Saturday 10:00.
    assert deadline(local(2026, 12, 31, 17), 2, "business", bh, tz) == local(2027, 1, 2, 10)
    assert deadline(local(2026, 12, 4, 17), 8, "calendar", bh, tz) == local(2026, 12, 5, 1)


def test_the_most_specific_sla_wins() -> None:
    assert CONFIG.sla_for("complaint", "urgent").first_response_hours == 2
    assert CONFIG.sla_for("complaint", "normal").first_response_hours == 24
    assert CONFIG.sla_for("inquiry", "low").clock == "business"
    assert CONFIG.sla_for("return", "high") == CONFIG.sla.default


async def test_a_breach_is_flagged_when_the_clock_passes_the_deadline(conn: AsyncConnection) -> None:
    opened = datetime(2026, 12, 1, 2, 0, tzinfo=UTC)
    customer = await add_customer(conn, name="陈静")
    slow = await new_case(conn, CONFIG, customer, "complaint", opened)
    answered = await new_case(conn, CONFIG, customer, "complaint", opened)
    late = await new_case(conn, CONFIG, customer, "complaint", opened)
    first = path_to(CONFIG.types["complaint"], "validated")[0]
    await transition_case(conn, CONFIG, answered, step_for(first), actor="staff:a", role="staff",
                          now=opened + timedelta(hours=3))  # fmt: skip
    due = await one(conn, "select first_response_due_at from service_case where id = :i", i=slow)
    assert due == opened + timedelta(hours=24)
    # Before the deadline nothing is flagged; just after it, the unanswered cases are, once.
    assert await flag_breaches(conn, opened + timedelta(hours=23, minutes=59)) == 0
    assert await flag_breaches(conn, opened + timedelta(hours=24, minutes=5)) == 2
    assert await flag_breaches(conn, opened + timedelta(hours=24, minutes=10)) == 0
    breached = await one(
        conn,
        "select array_agg(id order by id) from service_case where first_response_breached_at is not null",
    )
    assert breached == [slow, late]
    assert await one(conn, "select first_response_breached_at from service_case where id = :i", i=slow) == due
    events = (
        await conn.execute(
            sa.text("select case_id, action from case_event where kind = 'sla_breached' order by case_id"), {}
        )
    ).all()
    assert [tuple(e) for e in events] == [(slow, "first_response"), (late, "first_response")]
    # The resolution target (72 hours) passes for the two still open; the answered one is open too.
    assert await flag_breaches(conn, opened + timedelta(hours=73)) == 3


async def test_a_late_answer_is_a_breach_even_between_checks(conn: AsyncConnection) -> None:
    opened = datetime(2026, 12, 1, 2, 0, tzinfo=UTC)
    customer = await add_customer(conn, name="刘洋")
    case_id = await new_case(conn, CONFIG, customer, "complaint", opened, priority="urgent")
    first = path_to(CONFIG.types["complaint"], "validated")[0]
    await transition_case(conn, CONFIG, case_id, step_for(first), actor="staff:a", role="staff",
                          now=opened + timedelta(hours=3))  # fmt: skip
    row = (
        await conn.execute(
            sa.text(
                "select first_response_breached_at, first_response_at, sla_due_at, resolve_due_at"
                " from service_case where id = :i"
            ),
            {"i": case_id},
        )
    ).one()
    assert row[0] == opened + timedelta(hours=2) and row[1] == opened + timedelta(hours=3)
    assert row[2] == row[3] == opened + timedelta(hours=24)  # the queue now counts down to the resolution
