"""The service step of `c360 demo`: a small, real story on the synced data, through the same functions the
API calls, so that GraphiQL has something to show right away.

1. A complaint about an order moves through all eight steps; its compensation (a coupon and points) is
   granted through the loyalty engine, and a retried execution (same idempotency key) grants nothing more.
2. A second complaint is left half-way with its resolution SLA passed: it was opened longer ago than the
   SLA (worked out on its configured clock, crm.service.clock) and the breach check flags it.
3. An inquiry of a customer who withdrew service contact is answered and closed.
4. The care triggers run: follow-ups and survey invitations wait in the outbox, and the withdrawn
   customer's are suppressed with the reason.
5. Surveys with expected and perceived scores are answered; feedback is recorded and classified (a
   high-priority complaint in it opens a case) and one item is acknowledged by staff.

Each run picks customers who have no case yet, so running the demo again tells the story again.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from crm.care.triggers import run_triggers
from crm.service.cases import CaseOpening, Resolution, Step, open_case, transition_case
from crm.service.clock import deadline
from crm.service.config import ServiceConfig
from crm.service.feedback import classify_feedback, record_feedback
from crm.service.sla import flag_breaches
from crm.service.surveys import submit_survey

DESK = ("staff:demo-desk", "staff")
LEAD = ("staff_admin:demo-lead", "staff_admin")

# The complaint's seven steps after `recorded`, with what each one records and who takes it.
COMPLAINT_STEPS: tuple[tuple[tuple[str, str], Step], ...] = (
    (DESK, Step(to="validated", note="the photos show the colour ran in the first wash")),
    (DESK, Step(to="assigned", department="quality", note="quality owns textile defects")),
    (
        DESK,
        Step(
            to="analysed",
            cause="a dye batch not fixed at the supplier",
            responsible_party="supplier Jiangsu Textiles",
        ),
    ),  # fmt: skip
    (
        DESK,
        Step(
            to="proposed",
            resolution=Resolution(
                kind="compensation",
                compensation_fen=5000,
                points=300,
                note="a replacement set, a 50 yuan coupon and 300 points",
            ),
        ),
    ),  # fmt: skip
    (LEAD, Step(to="approved", note="within the desk's compensation limits")),
    (DESK, Step(to="executed", note="customer told by SMS; feedback requested")),
    (
        DESK,
        Step(
            to="closed",
            summary="replacement sent, 50 yuan coupon and 300 points granted",
            customer_feedback="满意，处理得很快",
        ),
    ),  # fmt: skip
)

# (customer slot, body): the classifier's answers are in the docstring of tests/crm/test_service_demo.py.
FEEDBACK = (
    (1, "物流太慢，包装破损，我要投诉，退款！"),
    (0, "客服态度差，很失望"),
    (2, "很喜欢这款四件套，已经推荐给朋友和家人了"),
)


@dataclass
class DemoResult:
    complaint: dict[str, Any] = field(default_factory=dict)
    breached: dict[str, Any] = field(default_factory=dict)
    inquiry: dict[str, Any] = field(default_factory=dict)
    care: dict[str, Any] = field(default_factory=dict)
    outbox: dict[str, Any] = field(default_factory=dict)
    surveys: list[dict[str, Any]] = field(default_factory=list)
    satisfaction: dict[str, Any] = field(default_factory=dict)
    feedback: list[dict[str, Any]] = field(default_factory=list)


async def demo_customers(conn: AsyncConnection) -> list[dict[str, Any]]:
    """Three active customers with no case yet, those with an order first; each with their latest order."""
    found = await conn.execute(
        sa.text(
            """
select g.id, o.id as order_id
from golden_customer g
left join lateral (select o.id from orders o where o.customer_id = g.id and o.status <> 'cancelled'
                   order by o.placed_at desc, o.id desc limit 1) o on true
where g.status = 'active' and not exists (select 1 from service_case s where s.customer_id = g.id)
order by o.id is null, g.id
limit 3
"""
        )
    )
    return [dict(r) for r in found.mappings().all()]


async def run_demo(conn: AsyncConnection, config: ServiceConfig, now: datetime) -> DemoResult:
    """The whole story in `conn`'s transaction; returns what each part left behind."""
    people = await demo_customers(conn)
    if len(people) < 3:
        raise ValueError("the service demo needs three active customers without a case: sync some first")
    first, second, third = people
    out = DemoResult()

    # 1. The complaint: recorded five days ago, closed the next morning (so its follow-up call is due now).
    opened_at = now - timedelta(days=5)
    opened = await open_case(
        conn, config,
        CaseOpening(customer_id=first["id"], type="complaint", subject="四件套第一次洗就褪色",
                    description="The duvet cover set faded in the first wash.", request="换货并补偿",
                    source="service_desk", order_id=first["order_id"]),
        actor=DESK[0], now=opened_at,
    )  # fmt: skip
    case_id = int(opened["id"])
    when = opened_at
    for (actor, role), step in COMPLAINT_STEPS:
        when += timedelta(hours=2)
        result = await transition_case(
            conn,
            config,
            case_id,
            step,
            actor=actor,
            role=role,
            now=when,
            key=f"demo-case-{case_id}-{step.to}",
        )
        if step.to == "executed":
            # The desk's double click: the same key again is a replay, nothing is granted twice.
            again = await transition_case(conn, config, case_id, step, actor=actor, role=role, now=when,
                                          key=f"demo-case-{case_id}-{step.to}")  # fmt: skip
            out.complaint.update(granted=result["granted"], retry_replayed=again["replayed"])
    out.complaint.update(
        id=case_id, case_no=opened["case_no"], status=result["status"], customer_id=first["id"]
    )

    # 2. A complaint opened longer ago than its resolution SLA on its own clock, answered and assigned, then
    # left there: the breach check flags it and the queue shows it first.
    sla = config.sla_for("complaint", "normal")
    late_at = now - timedelta(hours=sla.resolve_hours + 2)
    while deadline(late_at, sla.resolve_hours, sla.clock, config.business_hours, config.timezone) >= now:
        late_at -= timedelta(days=1)  # a business-hours clock needs more calendar time
    late = await open_case(
        conn, config,
        CaseOpening(customer_id=second["id"], type="complaint", subject="配送延误一周", source="wechat",
                    request="尽快送达", order_id=second["order_id"]),
        actor=DESK[0], now=late_at,
    )  # fmt: skip
    late_id = int(late["id"])
    for hours, step in ((1, Step(to="validated")), (3, Step(to="assigned", department="logistics"))):
        await transition_case(conn, config, late_id, step, actor=DESK[0], role=DESK[1],
                              now=late_at + timedelta(hours=hours))  # fmt: skip
    flagged = await flag_breaches(conn, now)
    due = (
        await conn.execute(
            sa.text("select status, resolve_due_at, resolve_breached_at from service_case where id = :i"),
            {"i": late_id},
        )
    ).one()
    out.breached = {"id": late_id, "case_no": late["case_no"], "status": due[0], "resolve_due_at": due[1],
                    "breached_at": due[2], "flagged": flagged}  # fmt: skip

    # 3. An inquiry of a customer who told the desk to stop contacting them, closed four days ago.
    await conn.execute(
        sa.text(
            "insert into consent (customer_id, purpose, status, source, recorded_at)"
            " values (:c, :p, 'withdrawn', 'staff', :t)"
        ),
        {"c": third["id"], "p": config.care.consent.service_opt_out, "t": now - timedelta(days=6)},
    )
    asked_at = now - timedelta(days=4, hours=6)
    inquiry = await open_case(
        conn, config,
        CaseOpening(customer_id=third["id"], type="inquiry", subject="会员积分怎么用", source="app"),
        actor=DESK[0], now=asked_at,
    )  # fmt: skip
    await transition_case(conn, config, int(inquiry["id"]),
                          Step(to="answered", summary="points pay for up to half an order"),
                          actor=DESK[0], role=DESK[1], now=asked_at + timedelta(hours=1))  # fmt: skip
    await transition_case(conn, config, int(inquiry["id"]), Step(to="closed"), actor=DESK[0], role=DESK[1],
                          now=asked_at + timedelta(hours=2))  # fmt: skip
    out.inquiry = {"id": int(inquiry["id"]), "case_no": inquiry["case_no"], "customer_id": third["id"]}

    # 4. The daily care run: what it wrote, and what waits in the outbox (by state and reason).
    out.care = await run_triggers(conn, config, now)
    states = await conn.execute(
        sa.text(
            "select state, suppressed_reason, count(*) from care_action group by 1, 2 order by 3 desc, 1, 2"
        )
    )
    pending = 0
    suppressed: dict[str, int] = {}
    for state, reason, n in states.all():
        if state == "pending":
            pending += n
        elif state == "suppressed":
            suppressed[str(reason)] = n
    out.outbox = {"pending": pending, "suppressed": suppressed}

    # 5. Surveys with expected and perceived scores, then feedback from three channels.
    out.surveys.append(
        await submit_survey(
            conn,
            config,
            survey_code="case-csat",
            customer_id=first["id"],
            case_id=case_id,
            answers={"overall": 4, "expected": 8, "perceived": 9},
            actor=f"member:{first['id']}",
            now=now,
            comment="处理很快，很满意，感谢",
            channel_code=None,
        )  # fmt: skip
    )
    if first["order_id"] is not None:
        out.surveys.append(
            await submit_survey(
                conn,
                config,
                survey_code="order-nps",
                customer_id=first["id"],
                order_id=first["order_id"],
                answers={"recommend": 9, "expected": 9, "perceived": 6},
                actor=f"member:{first['id']}",
                now=now,
            )  # fmt: skip
        )
    sums = (
        await conn.execute(
            sa.text(
                "select sum(perceived_score), sum(expected_score), count(*) from survey_response"
                " where customer_id = :c and expected_score is not null and perceived_score is not null"
            ),
            {"c": first["id"]},
        )
    ).one()
    out.satisfaction = {"customer_id": first["id"], "perceived": int(sums[0]), "expected": int(sums[1]),
                        "responses": int(sums[2]), "index": int(sums[0]) / int(sums[1])}  # fmt: skip
    for slot, body in FEEDBACK:
        item = await record_feedback(conn, config, body=body, source="wechat" if slot == 1 else "review",
                                     customer_id=people[slot]["id"], actor=DESK[0], now=now)  # fmt: skip
        out.feedback.append(item)
    medium = next(f for f in out.feedback if f["priority"] == "medium")
    await classify_feedback(conn, config, int(medium["id"]), actor=DESK[0], now=now, status="acknowledged",
                            owner="demo-desk")  # fmt: skip
    return out
