"""The case state machines: every allowed transition of every configured flow moves the case and records
an event with its actor; every other target is refused naming the allowed ones; the complaint goes through
its eight steps with the compensation and points landing in the loyalty ledger once."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from crm.service.cases import ServiceRefusal, Step, assign_case, transition_case
from crm.service.config import ServiceConfigError, load_config
from infra.settings import PROJECT_ROOT
from tests.crm.loyalty_support import add_customer, one
from tests.crm.service_support import new_case, path_to, role_for, rules, step_for, walk

NOW = datetime(2026, 12, 1, 2, 0, tzinfo=UTC)  # a Tuesday, 10:00 in Shanghai
CONFIG = rules()


@pytest.mark.parametrize("type_code", sorted(CONFIG.types))
async def test_every_allowed_and_every_illegal_transition(conn: AsyncConnection, type_code: str) -> None:
    ctype = CONFIG.types[type_code]
    customer = await add_customer(conn, name="李娜", phone="+8613800000001")
    statuses = ctype.statuses()
    checked_allowed = checked_illegal = 0
    for status in statuses:
        allowed = {t.to: t for t in ctype.allowed_from(status)}
        for target in statuses:
            case_id = await new_case(conn, CONFIG, customer, type_code, NOW)
            await walk(conn, CONFIG, case_id, path_to(ctype, status), NOW)
            assert await one(conn, "select status from service_case where id = :i", i=case_id) == status
            t = allowed.get(target)
            if t is not None:
                events = await one(conn, "select count(*) from case_event where case_id = :i", i=case_id)
                result = await transition_case(
                    conn, CONFIG, case_id, step_for(t), actor="staff_admin:alice", role=role_for(t), now=NOW,
                    key=f"check-{case_id}",
                )  # fmt: skip
                assert result["status"] == target
                assert await one(conn, "select status from service_case where id = :i", i=case_id) == target
                last = (
                    await conn.execute(
                        sa.text(
                            "select kind, action, actor, from_status, to_status from case_event"
                            " where case_id = :i order by id desc limit 1"
                        ),
                        {"i": case_id},
                    )
                ).one()
                assert tuple(last) == ("transition", t.name, "staff_admin:alice", status, target)
                assert (
                    await one(conn, "select count(*) from case_event where case_id = :i", i=case_id)
                    == events + 1
                )
                checked_allowed += 1
            else:
                with pytest.raises(ServiceRefusal) as refused:
                    async with conn.begin_nested():
                        await transition_case(
                            conn, CONFIG, case_id, Step(to=target, reason="x", summary="x", explanation="x"),
                            actor="staff_admin:alice", role="staff_admin", now=NOW,
                        )  # fmt: skip
                assert refused.value.code == "ILLEGAL_TRANSITION"
                for name in allowed:
                    assert name in refused.value.message
                assert await one(conn, "select status from service_case where id = :i", i=case_id) == status
                checked_illegal += 1
    assert checked_allowed == len(ctype.transitions)
    assert checked_allowed + checked_illegal == len(statuses) ** 2


async def test_a_complaint_goes_through_the_eight_steps_and_is_compensated_once(
    conn: AsyncConnection,
) -> None:
    customer = await add_customer(conn, name="王芳", phone="+8613800000002")
    case_id = await new_case(conn, CONFIG, customer, "complaint", NOW, request="replace the duvet cover")
    ctype = CONFIG.types["complaint"]
    steps = path_to(ctype, "closed")
    assert [t.to for t in steps] == ["closed"]  # the shortest way: judged invalid
    eight = [t for t in ctype.transitions if not (t.invalid or t.reopen or t.name == "sent back")]
    assert [t.to for t in eight] == [
        "validated",
        "assigned",
        "analysed",
        "proposed",
        "approved",
        "executed",
        "closed",
    ]
    for n, t in enumerate(eight):
        result = await transition_case(
            conn, CONFIG, case_id, step_for(t), actor=f"{role_for(t)}:s{n}", role=role_for(t),
            now=NOW + timedelta(hours=n), key=f"k{n}",
        )  # fmt: skip
        if t.execute:
            assert result["granted"]["points"] == 300 and result["granted"]["compensation_fen"] == 5000
            # The same call again (a retry with its key) returns the first result and grants nothing more.
            again = await transition_case(
                conn, CONFIG, case_id, step_for(t), actor=f"{role_for(t)}:s{n}", role=role_for(t),
                now=NOW + timedelta(hours=n), key=f"k{n}",
            )  # fmt: skip
            assert again["replayed"] is True
            # A different key cannot execute twice: the case has moved on.
            with pytest.raises(ServiceRefusal) as twice:
                async with conn.begin_nested():
                    await transition_case(
                        conn, CONFIG, case_id, step_for(t), actor="staff:other", role="staff",
                        now=NOW + timedelta(hours=n), key="another",
                    )  # fmt: skip
            assert twice.value.code == "ILLEGAL_TRANSITION" and "closed" in twice.value.message
    events = (
        await conn.execute(
            sa.text("select kind, to_status, actor from case_event where case_id = :i order by id"),
            {"i": case_id},
        )
    ).all()
    assert [e[1] for e in events] == ["recorded", "validated", "assigned", "analysed", "proposed", "approved",
                                      "executed", "closed"]  # fmt: skip
    assert all(e[2] for e in events)
    assert (
        await one(
            conn,
            "select count(*) from points_ledger_entry where customer_id = :c and points = 300",
            c=customer,
        )
        == 1
    )
    assert await one(conn, "select balance from points_balance where customer_id = :c", c=customer) == 300
    assert (
        await one(conn, "select count(*) from coupon where customer_id = :c and value_fen = 5000", c=customer)
        == 1
    )
    row = (
        await conn.execute(
            sa.text(
                "select outcome, closed_at, approved_by, points_granted, compensation_fen, department, cause,"
                " first_response_at from service_case where id = :i"
            ),
            {"i": case_id},
        )
    ).one()
    assert row[0] == "resolved" and row[1] == NOW + timedelta(hours=6)
    assert row[2] == "staff_admin:s4" and (row[3], row[4]) == (300, 5000)
    assert (row[5], row[6]) == ("quality", "a batch of duvet covers faded in the first wash")
    assert row[7] == NOW
    # The customer was told, through the outbox, with a request for feedback.
    assert (
        await one(
            conn,
            "select payload->>'feedback_requested' from care_action where customer_id = :c and kind = 'case_update'",
            c=customer,
        )
        == "true"
    )


async def test_steps_refuse_what_they_need(conn: AsyncConnection) -> None:
    customer = await add_customer(conn, name="赵强")
    case_id = await new_case(conn, CONFIG, customer, "complaint", NOW)
    ctype = CONFIG.types["complaint"]
    invalid = next(t for t in ctype.transitions if t.invalid)
    with pytest.raises(ServiceRefusal) as missing:
        await transition_case(
            conn, CONFIG, case_id, Step(to="closed"), actor="staff:a", role="staff", now=NOW
        )
    assert missing.value.code == "REQUIRED" and missing.value.field == "explanation"
    await walk(conn, CONFIG, case_id, path_to(ctype, "proposed"), NOW)
    approve = next(t for t in ctype.transitions if t.to == "approved")
    with pytest.raises(ServiceRefusal) as staff:
        async with conn.begin_nested():
            await transition_case(
                conn, CONFIG, case_id, step_for(approve), actor="staff:a", role="staff", now=NOW
            )
    assert staff.value.code == "NEEDS_STAFF_ADMIN"
    with pytest.raises(ServiceRefusal) as unknown:
        async with conn.begin_nested():
            await assign_case(
                conn, CONFIG, case_id, assignee=None, department="marketing", actor="staff:a", now=NOW
            )
    assert unknown.value.code == "UNKNOWN_DEPARTMENT" and "quality" in unknown.value.message
    done = await assign_case(
        conn, CONFIG, case_id, assignee="staff:bob", department=None, actor="staff:a", now=NOW
    )
    assert done["status"] == "proposed"
    assert await one(conn, "select assignee from service_case where id = :i", i=case_id) == "staff:bob"
    assert invalid.requires == ["explanation"]


def test_a_bad_rules_file_names_the_key(tmp_path: Path) -> None:
    with pytest.raises(ServiceConfigError, match="do not exist"):
        load_config(tmp_path / "missing.toml")
    good = (PROJECT_ROOT / "config" / "service.toml").read_text(encoding="utf-8")
    bad = tmp_path / "bad.toml"
    bad.write_text(
        good.replace('requires = ["cause", "responsible_party"]', 'requires = ["cause", "mood"]'), "utf-8"
    )
    with pytest.raises(ServiceConfigError, match=r"types\.complaint\.transitions\[3\]\.requires\[1\]"):
        load_config(bad)
    unreachable = tmp_path / "unreachable.toml"
    unreachable.write_text(
        good.replace('{ from = "recorded", to = "validated", name = "validity judged: valid" },', ""), "utf-8"
    )
    with pytest.raises(ServiceConfigError, match=r"types\.complaint.*cannot be reached"):
        load_config(unreachable)
    sla = tmp_path / "sla.toml"
    sla.write_text(good.replace('type = "repair"', 'type = "repairs"', 1), "utf-8")
    with pytest.raises(ServiceConfigError, match=r"sla\.rules: type 'repairs'"):
        load_config(sla)
