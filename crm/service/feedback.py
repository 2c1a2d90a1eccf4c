"""Feedback: free-form text from any channel, classified by the need behind it (functional, emotional,
social; a dealer configures product, service, emotional) and by priority with keyword rules over text
segmented by jieba, overridable by staff, kept with its status and owner. High-priority negative feedback
opens a complaint case."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import jieba
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from crm.service.cases import CaseOpening, ServiceRefusal, open_case
from crm.service.config import Feedback, ServiceConfig

STATUSES = ("new", "acknowledged", "acted_on", "closed")
NEGATIONS = ("不", "没", "没有", "不太", "不是", "别")
jieba.setLogLevel(logging.WARNING)


@dataclass(frozen=True)
class Classification:
    need: str
    priority: str
    sentiment: str
    keywords: list[str]


class Classifier:
    """Keyword rules over jieba tokens; every configured keyword is added to the tokenizer's dictionary so
    it comes out as one token ("态度差" is not split into "态度" and "差")."""

    def __init__(self, rules: Feedback) -> None:
        self.rules = rules
        self.tokenizer = jieba.Tokenizer()
        words = {w for r in rules.needs for w in r.keywords} | {
            w for r in rules.priorities for w in r.keywords
        }
        words |= set(rules.negative_words) | set(rules.positive_words)
        for word in sorted(words):
            self.tokenizer.add_word(word, freq=100_000)

    def tokens(self, text: str) -> list[str]:
        return [t for t in self.tokenizer.lcut(text) if t.strip()]

    def classify(self, text: str) -> Classification:
        tokens = self.tokens(text)
        r = self.rules
        hits: list[str] = []
        best, best_hits = r.default_need, 0
        for rule in r.needs:
            found = [t for t in tokens if t in rule.keywords]
            hits += found
            if len(found) > best_hits:
                best, best_hits = rule.need, len(found)
        order = {"high": 0, "medium": 1, "low": 2}
        priority = r.default_priority
        for prule in sorted(r.priorities, key=lambda p: order[p.priority]):
            found = [t for t in tokens if t in prule.keywords]
            if found:
                hits += found
                if order[prule.priority] < order[priority]:
                    priority = prule.priority
        negative = positive = 0
        for i, t in enumerate(tokens):
            negated = i > 0 and tokens[i - 1] in NEGATIONS
            if t in r.negative_words:
                negative += 1
            elif t in r.positive_words:
                # "不满意", "没有推荐" turn a positive word negative.
                if negated:
                    negative += 1
                else:
                    positive += 1
        sentiment = "negative" if negative > positive else "positive" if positive > negative else "neutral"
        return Classification(need=best, priority=priority, sentiment=sentiment, keywords=sorted(set(hits)))


_CLASSIFIERS: dict[int, tuple[Feedback, Classifier]] = {}


def classifier_for(rules: Feedback) -> Classifier:
    """One classifier per rules object (building one loads jieba's dictionary, about a second)."""
    found = _CLASSIFIERS.get(id(rules))
    if found is None or found[0] is not rules:
        found = _CLASSIFIERS[id(rules)] = (rules, Classifier(rules))
    return found[1]


async def record_feedback(
    conn: AsyncConnection,
    config: ServiceConfig,
    *,
    body: str,
    source: str,
    customer_id: int | None,
    actor: str,
    now: datetime,
    channel_code: str | None = None,
    order_id: int | None = None,
    survey_response_id: int | None = None,
) -> dict[str, Any]:
    """Store and classify one piece of feedback; high-priority negative feedback of a known customer opens a
    complaint case linked to it. Returns {id, need, priority, sentiment, keywords, case_id}."""
    text = body.strip()
    if not text or len(text) > 5000:
        raise ServiceRefusal("BAD_BODY", "feedback is 1 to 5000 characters", "body")
    if len(source) > 16 or not source:
        raise ServiceRefusal("BAD_SOURCE", "source is a short code such as review, wechat, survey", "source")
    c = classifier_for(config.feedback).classify(text)
    row = (
        await conn.execute(
            sa.text(
                "insert into feedback (customer_id, channel_code, source, body, need_type, priority, sentiment,"
                " keywords, classified_by, status, order_id, survey_response_id, rule_version, created_at, updated_at)"
                " values (:c, :ch, :src, :body, :need, :prio, :sent, cast(:kw as jsonb), 'rules', 'new', :o, :sr, :v,"
                " :now, :now) returning id"
            ),
            {"c": customer_id, "ch": channel_code, "src": source, "body": text, "need": c.need, "prio": c.priority,
             "sent": c.sentiment, "kw": json.dumps(c.keywords, ensure_ascii=False), "o": order_id,
             "sr": survey_response_id, "v": config.version, "now": now},
        )
    ).scalar_one()  # fmt: skip
    case_id = None
    wanted = config.feedback.open_case_priority
    if customer_id is not None and wanted is not None and c.priority == wanted and c.sentiment == "negative":
        subject = text if len(text) <= 60 else text[:59] + "…"
        opened = await open_case(
            conn,
            config,
            CaseOpening(customer_id=customer_id, type="complaint", subject=subject, priority="high",
                        source="feedback", description=text, channel_code=channel_code, order_id=order_id),
            actor=actor,
            now=now,
        )  # fmt: skip
        case_id = opened["id"]
        await conn.execute(
            sa.text("update feedback set case_id = :k where id = :i"), {"k": case_id, "i": row}
        )
    return {"id": int(row), "need": c.need, "priority": c.priority, "sentiment": c.sentiment,
            "keywords": c.keywords, "case_id": case_id}  # fmt: skip


async def classify_feedback(
    conn: AsyncConnection,
    config: ServiceConfig,
    feedback_id: int,
    *,
    actor: str,
    now: datetime,
    need: str | None = None,
    priority: str | None = None,
    status: str | None = None,
    owner: str | None = None,
) -> dict[str, Any]:
    """Staff override of the classification, and the status and owner as the feedback is worked on."""
    if need is not None and need not in config.feedback.need_types:
        raise ServiceRefusal(
            "UNKNOWN_NEED", f"need is one of {', '.join(config.feedback.need_types)}", "need"
        )
    if priority is not None and priority not in ("high", "medium", "low"):
        raise ServiceRefusal("BAD_PRIORITY", "priority is high, medium or low", "priority")
    if status is not None and status not in STATUSES:
        raise ServiceRefusal("BAD_STATUS", f"status is one of {', '.join(STATUSES)}", "status")
    reclassified = need is not None or priority is not None
    row = (
        await conn.execute(
            sa.text(
                "update feedback set need_type = coalesce(:need, need_type), priority = coalesce(:prio, priority),"
                " status = coalesce(:status, status), owner = coalesce(:owner, owner),"
                " classified_by = case when :re then :actor else classified_by end, updated_at = :now"
                " where id = :i returning id"
            ),
            {"need": need, "prio": priority, "status": status, "owner": owner, "re": reclassified, "actor": actor,
             "now": now, "i": feedback_id},
        )
    ).scalar()  # fmt: skip
    if row is None:
        raise ServiceRefusal("NOT_FOUND", "no such feedback", "id")
    return {"id": int(row)}
