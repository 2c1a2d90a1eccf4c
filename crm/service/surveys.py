"""Surveys: definitions (questions and scales) in configuration; a response links to a customer and
optionally to an order or a case, once per survey and subject. A survey that asks for expected and
perceived scores gives the satisfaction index perceived / expected, per response and aggregated (the ratio
of the sums: a response expecting a lot weighs more than one expecting little). A comment is feedback too.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from crm.service.cases import ServiceRefusal
from crm.service.config import ServiceConfig
from crm.service.feedback import record_feedback


async def submit_survey(
    conn: AsyncConnection,
    config: ServiceConfig,
    *,
    survey_code: str,
    customer_id: int,
    answers: dict[str, int],
    actor: str,
    now: datetime,
    case_id: int | None = None,
    order_id: int | None = None,
    comment: str | None = None,
    channel_code: str | None = None,
) -> dict[str, Any]:
    """Record one response; refused when the survey, a question or a score is unknown or out of its scale,
    when the order or case is not the customer's, or when this subject was answered before."""
    survey = config.survey(survey_code)
    if survey is None:
        known = ", ".join(s.code for s in config.surveys)
        raise ServiceRefusal("UNKNOWN_SURVEY", f"no survey {survey_code!r} (known: {known})", "survey")
    questions = {q.code: q for q in survey.questions}
    if unknown := sorted(set(answers) - set(questions)):
        raise ServiceRefusal("UNKNOWN_QUESTION", f"no questions {unknown} in {survey.code}", "answers")
    if missing := sorted(set(questions) - set(answers)):
        raise ServiceRefusal("MISSING_ANSWER", f"answer every question: {missing} missing", "answers")
    for code, value in answers.items():
        q = questions[code]
        if not q.min <= value <= q.max:
            raise ServiceRefusal("OUT_OF_SCALE", f"{code} is scored {q.min} to {q.max}", "answers")
    score = answers[survey.questions[0].code]  # the first question is the CSAT or NPS score
    store_id = None
    if case_id is not None:
        case = (
            await conn.execute(
                sa.text("select customer_id, store_id from service_case where id = :i"), {"i": case_id}
            )
        ).first()
        if case is None or case[0] != customer_id:
            raise ServiceRefusal("NOT_FOUND", "no such case of this customer", "caseId")
        store_id = case[1]
    if order_id is not None:
        order = (
            await conn.execute(
                sa.text("select customer_id, store_id from orders where id = :o"), {"o": order_id}
            )
        ).first()
        if order is None or order[0] != customer_id:
            raise ServiceRefusal("NOT_FOUND", "no such order of this customer", "orderId")
        store_id = store_id or order[1]
    subject = (
        f"case:{case_id}" if case_id else f"order:{order_id}" if order_id else f"on:{now.date().isoformat()}"
    )
    expected = answers.get("expected") if survey.expected_perceived else None
    perceived = answers.get("perceived") if survey.expected_perceived else None
    row = (
        await conn.execute(
            sa.text(
                "insert into survey_response (customer_id, case_id, order_id, store_id, survey_code, subject_key, kind,"
                " score, expected_score, perceived_score, answers, comment, channel_code, submitted_by, responded_at)"
                " values (:c, :case, :o, :store, :s, :subject, :kind, :score, :exp, :per, cast(:answers as jsonb),"
                " :comment, :ch, :actor, :now)"
                " on conflict (survey_code, customer_id, subject_key) do nothing returning id"
            ),
            {"c": customer_id, "case": case_id, "o": order_id, "store": store_id, "s": survey.code, "subject": subject,
             "kind": survey.kind, "score": score, "exp": expected, "per": perceived, "answers": json.dumps(answers),
             "comment": comment, "ch": channel_code, "actor": actor, "now": now},
        )
    ).scalar()  # fmt: skip
    if row is None:
        raise ServiceRefusal(
            "ALREADY_ANSWERED", f"{survey.code} was already answered for this {subject}", "survey"
        )
    feedback = None
    if comment and comment.strip():
        feedback = await record_feedback(
            conn, config, body=comment, source="survey", customer_id=customer_id, actor=actor, now=now,
            channel_code=channel_code, order_id=order_id, survey_response_id=int(row),
        )  # fmt: skip
    index = perceived / expected if expected and perceived is not None else None
    return {"id": int(row), "index": index, "feedback": feedback}
