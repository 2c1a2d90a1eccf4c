"""Service cases: opened against a customer (and optionally an order, order line, store or product) from any
source, moved through their type's configured state machine with an actor and a case event on every step,
their SLA deadlines kept and breaches flagged.

An expected refusal (an illegal transition, a missing field, a step that needs staff_admin) is a
`ServiceRefusal` with a stable code; the caller rolls its transaction back and shows it as a userError.
Executing a resolution grants its compensation (an amount coupon) and points through the loyalty engine,
under keys derived from the case, so they land in the ledger once however often the call is retried.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from crm.loyalty import config as loyalty_config
from crm.loyalty import service as loyalty
from crm.loyalty.config import CouponSpec
from crm.loyalty.service import LoyaltyRefusal
from crm.service.clock import deadline
from crm.service.config import PRIORITIES, RESOLUTION_KINDS, ServiceConfig, Transition

CAMEL = {"responsible_party": "responsibleParty"}


class ServiceRefusal(Exception):
    def __init__(self, code: str, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.field = field


@dataclass(frozen=True)
class Resolution:
    kind: str
    compensation_fen: int = 0
    points: int = 0
    note: str | None = None


@dataclass(frozen=True)
class CaseOpening:
    customer_id: int
    type: str
    subject: str
    priority: str = "normal"
    source: str = "service_desk"
    description: str | None = None
    request: str | None = None
    channel_code: str | None = None
    order_id: int | None = None
    order_line_no: int | None = None
    store_id: int | None = None
    product_id: int | None = None


@dataclass(frozen=True)
class Step:
    """What one transition records; which fields it needs is the transition's `requires`."""

    to: str
    note: str | None = None
    explanation: str | None = None
    department: str | None = None
    cause: str | None = None
    responsible_party: str | None = None
    resolution: Resolution | None = None
    reason: str | None = None
    summary: str | None = None
    customer_feedback: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


async def _event(
    conn: AsyncConnection,
    config: ServiceConfig,
    case_id: int,
    kind: str,
    *,
    actor: str,
    now: datetime,
    action: str | None = None,
    from_status: str | None = None,
    to_status: str | None = None,
    note: str | None = None,
    detail: dict[str, Any] | None = None,
) -> None:
    await conn.execute(
        sa.text(
            "insert into case_event (case_id, kind, action, actor, from_status, to_status, note, detail,"
            " rule_version, created_at) values (:c, :k, :a, :actor, :f, :t, :n, cast(:d as jsonb), :v, :now)"
        ),
        {"c": case_id, "k": kind, "a": action, "actor": actor, "f": from_status, "t": to_status, "n": note,
         "d": json.dumps(detail or {}, default=str), "v": config.version, "now": now},
    )  # fmt: skip


async def open_case(
    conn: AsyncConnection, config: ServiceConfig, opening: CaseOpening, *, actor: str, now: datetime
) -> dict[str, Any]:
    """A new case in its type's initial status, with both SLA deadlines; returns {id, case_no, status}."""
    o = opening
    ctype = config.case_type(o.type)
    if ctype is None:
        raise ServiceRefusal(
            "UNKNOWN_TYPE", f"no case type {o.type!r} (known: {', '.join(config.types)})", "type"
        )
    if o.priority not in PRIORITIES:
        raise ServiceRefusal("BAD_PRIORITY", f"priority is one of {', '.join(PRIORITIES)}", "priority")
    if o.source not in config.sources:
        raise ServiceRefusal("UNKNOWN_SOURCE", f"source is one of {', '.join(config.sources)}", "source")
    if not o.subject.strip() or len(o.subject) > 300:
        raise ServiceRefusal("BAD_SUBJECT", "subject must be 1 to 300 characters", "subject")
    status = (
        await conn.execute(sa.text("select status from golden_customer where id = :c"), {"c": o.customer_id})
    ).scalar()
    if status is None:
        raise ServiceRefusal("NOT_FOUND", f"customer {o.customer_id} does not exist", "customerId")
    if status != "active":
        raise ServiceRefusal("CUSTOMER_NOT_ACTIVE", f"customer {o.customer_id} is {status}", "customerId")
    store_id = o.store_id
    if o.order_id is not None:
        order = (
            await conn.execute(
                sa.text("select customer_id, store_id, channel_code from orders where id = :o"),
                {"o": o.order_id},
            )
        ).first()
        if order is None or order[0] != o.customer_id:
            raise ServiceRefusal("NOT_FOUND", "no such order of this customer", "orderId")
        store_id = store_id or order[1]
        if o.order_line_no is not None:
            line = (
                await conn.execute(
                    sa.text("select 1 from order_line where order_id = :o and line_no = :n"),
                    {"o": o.order_id, "n": o.order_line_no},
                )
            ).scalar()
            if line is None:
                raise ServiceRefusal("NOT_FOUND", "the order has no such line", "orderLineNo")
    elif o.order_line_no is not None:
        raise ServiceRefusal("ORDER_REQUIRED", "an order line needs its orderId", "orderId")
    sla = config.sla_for(o.type, o.priority)
    tz, bh = config.timezone, config.business_hours
    first_due = deadline(now, sla.first_response_hours, sla.clock, bh, tz)
    resolve_due = deadline(now, sla.resolve_hours, sla.clock, bh, tz)
    row = (
        await conn.execute(
            sa.text(
                """
with n as (select nextval(pg_get_serial_sequence('service_case', 'id')) as id)
insert into service_case (id, case_no, customer_id, order_id, order_line_no, store_id, product_id, channel_code,
                          source, type, status, priority, subject, description, request, sla_clock,
                          first_response_due_at, resolve_due_at, sla_due_at, opened_by, rule_version, opened_at,
                          updated_at)
select n.id, 'CS' || to_char(cast(:now as timestamptz) at time zone :tz, 'YYYYMMDD') || lpad(n.id::text, 6, '0'),
       :c, :o, :line, :store, :product, :channel, :source, :type, :status, :priority, :subject, :description,
       :request, :clock, :first_due, :resolve_due, :first_due, :actor, :v, :now, :now
from n returning id, case_no
"""
            ),
            {"now": now, "tz": config.timezone, "c": o.customer_id, "o": o.order_id, "line": o.order_line_no,
             "store": store_id, "product": o.product_id, "channel": o.channel_code, "source": o.source,
             "type": o.type, "status": ctype.initial, "priority": o.priority, "subject": o.subject.strip(),
             "description": o.description, "request": o.request, "clock": sla.clock, "first_due": first_due,
             "resolve_due": resolve_due, "actor": actor, "v": config.version},
        )
    ).one()  # fmt: skip
    await _event(conn, config, row[0], "opened", actor=actor, now=now, to_status=ctype.initial,
                 detail={"source": o.source, "request": o.request, "order_id": o.order_id,
                         "store_id": store_id, "product_id": o.product_id})  # fmt: skip
    return {"id": int(row[0]), "case_no": str(row[1]), "status": ctype.initial}


def _illegal(type_code: str, status: str, allowed: list[Transition]) -> ServiceRefusal:
    if not allowed:
        return ServiceRefusal(
            "ILLEGAL_TRANSITION", f"a {type_code} in status {status!r} cannot move: it has no next step", "to"
        )
    names = ", ".join(f"{t.to} ({t.name})" for t in allowed)
    return ServiceRefusal(
        "ILLEGAL_TRANSITION", f"a {type_code} in status {status!r} can go to: {names}", "to"
    )


def _check_step(config: ServiceConfig, t: Transition, step: Step, role: str) -> None:
    if t.role == "staff_admin" and role != "staff_admin":
        raise ServiceRefusal("NEEDS_STAFF_ADMIN", f"'{t.name}' is a staff_admin step", "to")
    for name in t.requires:
        value = getattr(step, name)
        if value is None or (isinstance(value, str) and not value.strip()):
            raise ServiceRefusal(
                "REQUIRED", f"{CAMEL.get(name, name)} is required for '{t.name}'", CAMEL.get(name, name)
            )
    if step.department is not None and step.department not in config.departments:
        raise ServiceRefusal(
            "UNKNOWN_DEPARTMENT", f"department is one of {', '.join(config.departments)}", "department"
        )
    r = step.resolution
    if r is not None:
        c = config.compensation
        if r.kind not in RESOLUTION_KINDS:
            raise ServiceRefusal(
                "BAD_RESOLUTION", f"resolution.kind is one of {', '.join(RESOLUTION_KINDS)}", "resolution"
            )
        if r.compensation_fen < 0 or r.compensation_fen > c.max_fen or r.compensation_fen % 100:
            raise ServiceRefusal(
                "BAD_COMPENSATION",
                f"compensationFen is whole yuan (a multiple of 100) up to {c.max_fen}: it is granted as a coupon",
                "resolution",
            )
        if r.points < 0 or r.points > c.max_points:
            raise ServiceRefusal("BAD_POINTS", f"points are 0 to {c.max_points}", "resolution")


async def _execute(
    conn: AsyncConnection, config: ServiceConfig, case: dict[str, Any], resolution: dict[str, Any] | None,
    *, actor: str, now: datetime,
) -> dict[str, Any]:  # fmt: skip
    """Grant the resolution's compensation and points through the loyalty engine, under keys of the case and
    its round (reopen count): a retry finds them granted and grants nothing more."""
    granted: dict[str, Any] = {"points": 0, "compensation_fen": 0, "coupon_code": None, "coupon_id": None}
    if not resolution:
        return granted
    cid, round_ = int(case["customer_id"]), int(case["reopen_count"])
    why = f"service case {case['case_no']}"
    try:
        points = int(resolution.get("points") or 0)
        if points:
            await loyalty.adjust(conn, loyalty_config.get_config(), cid, points, kind="adjust", reason=why,
                                 key=f"case:{case['id']}:{round_}:points", actor=actor, now=now)  # fmt: skip
            granted["points"] = points
        fen = int(resolution.get("compensation_fen") or 0)
        if fen:
            spec = CouponSpec(
                kind="amount", value_yuan=fen // 100, valid_days=config.compensation.coupon_valid_days
            )
            coupon = await loyalty.grant_coupon(conn, cid, spec, reason=f"compensation for {why}",
                                                key=f"case:{case['id']}:{round_}:coupon", actor=actor, now=now)  # fmt: skip
            granted.update(compensation_fen=fen, coupon_code=coupon["code"], coupon_id=coupon["coupon_id"])
    except LoyaltyRefusal as exc:
        raise ServiceRefusal(exc.code, f"the loyalty engine refused the grant: {exc.message}", "to") from exc
    return granted


async def transition_case(
    conn: AsyncConnection,
    config: ServiceConfig,
    case_id: int,
    step: Step,
    *,
    actor: str,
    role: str,
    now: datetime,
    key: str | None = None,
) -> dict[str, Any]:
    """Move the case to `step.to` when its flow allows it from the current status, recording the step.
    With `key`, a retry returns the first call's result (required for steps that execute a resolution)."""
    request = asdict(step)
    if key is not None:
        done = await loyalty.replay(conn, key, "transition_case", None, {"case": case_id, **request}, actor)
        if done is not None:
            return {**done, "replayed": True}
    row = (
        (await conn.execute(sa.text("select * from service_case where id = :i for update"), {"i": case_id}))
        .mappings()
        .first()
    )
    if row is None:
        raise ServiceRefusal("NOT_FOUND", "no such case", "caseId")
    case = dict(row)
    ctype = config.case_type(case["type"])
    if ctype is None:
        raise ServiceRefusal("UNKNOWN_TYPE", f"case type {case['type']!r} is no longer configured", "caseId")
    allowed = ctype.allowed_from(case["status"])
    t = next((x for x in allowed if x.to == step.to), None)
    if t is None:
        raise _illegal(case["type"], case["status"], allowed)
    _check_step(config, t, step, role)
    if t.execute and key is None:
        raise ServiceRefusal(
            "IDEMPOTENCY_KEY_REQUIRED",
            f"'{t.name}' grants the resolution: give an idempotencyKey",
            "idempotencyKey",
        )
    # A response that comes late is a breach of the first-response SLA, flagged before the response lands.
    from crm.service.sla import flag_breaches

    await flag_breaches(conn, now, case_ids=[case_id], actor=actor)
    resolution = case["resolution"]
    if step.resolution is not None:
        resolution = {k: v for k, v in asdict(step.resolution).items() if v is not None}
    granted = await _execute(conn, config, case, resolution, actor=actor, now=now) if t.execute else None
    final = step.to in ctype.final
    sets = {
        "status": step.to,
        "explanation": step.explanation,
        "department": step.department,
        "cause": step.cause,
        "responsible_party": step.responsible_party,
        "summary": step.summary,
        "customer_feedback": step.customer_feedback,
    }
    params: dict[str, Any] = {"i": case_id, "now": now, **sets}
    assign = ", ".join(f"{k} = coalesce(:{k}, {k})" for k in sets if k != "status")
    extra = ""
    if step.resolution is not None:
        extra += ", resolution = cast(:resolution as jsonb), resolution_type = :rtype"
        params.update(resolution=json.dumps(resolution), rtype=step.resolution.kind)
    if t.role == "staff_admin" and not t.requires:
        extra += ", approved_by = :actor, approved_at = :now"
    if granted is not None:
        extra += (", executed_at = :now, points_granted = points_granted + :gp,"
                  " compensation_fen = compensation_fen + :gf, coupon_id = coalesce(:coupon, coupon_id)")  # fmt: skip
        params.update(gp=granted["points"], gf=granted["compensation_fen"], coupon=granted["coupon_id"])
    if final:
        extra += ", resolved_at = :now, closed_at = :now, outcome = :outcome"
        params["outcome"] = "invalid" if t.invalid else "resolved"
    if t.reopen:
        extra += ", reopen_count = reopen_count + 1, resolved_at = null, closed_at = null, outcome = null"
    params["actor"] = actor
    after = (
        (
            await conn.execute(
                sa.text(
                    f"""
update service_case set status = :status, {assign}{extra},
       first_response_at = coalesce(first_response_at, :now), updated_at = :now,
       sla_due_at = case when :final then null else resolve_due_at end
where id = :i returning id, case_no, status, customer_id
"""
                ),
                {**params, "final": final},
            )
        )
        .mappings()
        .one()
    )
    detail: dict[str, Any] = {k: v for k, v in sets.items() if v is not None and k != "status"}
    if step.reason:
        detail["reason"] = step.reason
    if step.resolution is not None:
        detail["resolution"] = resolution
    if granted is not None:
        detail["granted"] = granted
    await _event(conn, config, case_id, "transition", actor=actor, now=now, action=t.name,
                 from_status=case["status"], to_status=step.to, note=step.note or step.reason, detail=detail)  # fmt: skip
    if granted is not None:
        await notify_customer(conn, config, case, step.to, granted, now=now)
    result = {"case_id": int(after["id"]), "case_no": after["case_no"], "status": after["status"],
              "granted": granted, "replayed": False}  # fmt: skip
    if key is not None:
        await loyalty.remember(conn, key, actor, result)
    return result


async def notify_customer(
    conn: AsyncConnection, config: ServiceConfig, case: dict[str, Any], status: str, granted: dict[str, Any],
    *, now: datetime,
) -> None:  # fmt: skip
    """The executed resolution goes to the customer through the care outbox (a service message, asking for
    their feedback), under the customer's service-contact consent like every other care action."""
    from crm.care.outbox import write_actions

    kind = config.care.case_update
    if not kind.enabled:
        return
    payload = {"case_no": case["case_no"], "status": status, "points": granted["points"],
               "compensation_fen": granted["compensation_fen"], "coupon_code": granted["coupon_code"],
               "feedback_requested": True}  # fmt: skip
    await write_actions(
        conn,
        config,
        "case_update",
        "select cast(:cid as bigint) as customer_id, :period as period, cast(:payload as jsonb) as payload,"
        " cast(:now as timestamptz) as due_at",
        {"cid": case["customer_id"], "period": f"case:{case['id']}:{case['reopen_count']}",
         "payload": json.dumps(payload), "now": now},
        now=now,
    )  # fmt: skip


async def assign_case(
    conn: AsyncConnection,
    config: ServiceConfig,
    case_id: int,
    *,
    assignee: str | None,
    department: str | None,
    actor: str,
    now: datetime,
) -> dict[str, Any]:
    """Give the case an owner and/or a department without changing its status (an `assigned` event)."""
    if assignee is None and department is None:
        raise ServiceRefusal("NOTHING_TO_ASSIGN", "give an assignee, a department or both", "assignee")
    if department is not None and department not in config.departments:
        raise ServiceRefusal(
            "UNKNOWN_DEPARTMENT", f"department is one of {', '.join(config.departments)}", "department"
        )
    row = (
        await conn.execute(
            sa.text(
                "update service_case set assignee = coalesce(:a, assignee), department = coalesce(:d, department),"
                " updated_at = :now where id = :i returning id, case_no, status"
            ),
            {"a": assignee, "d": department, "now": now, "i": case_id},
        )
    ).first()
    if row is None:
        raise ServiceRefusal("NOT_FOUND", "no such case", "caseId")
    await _event(conn, config, case_id, "assigned", actor=actor, now=now,
                 detail={"assignee": assignee, "department": department})  # fmt: skip
    return {"case_id": int(row[0]), "case_no": row[1], "status": row[2]}
