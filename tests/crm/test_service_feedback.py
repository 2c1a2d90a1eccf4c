"""Feedback classification on a small labelled set (need, priority, sentiment over jieba tokens), staff
overrides, and high-priority negative feedback opening a complaint case."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy.ext.asyncio import AsyncConnection

from crm.service.cases import ServiceRefusal
from crm.service.feedback import classifier_for, classify_feedback, record_feedback
from tests.crm.loyalty_support import add_customer, one
from tests.crm.service_support import rules

NOW = datetime(2026, 12, 10, 2, 0, tzinfo=UTC)
CONFIG = rules()

# (text, need, priority, sentiment): labelled by hand the way the service desk sorts them.
LABELLED = [
    ("被套洗了一次就褪色起球，质量太差了，我要投诉退款", "functional", "high", "negative"),
    ("客服态度差，让我很失望", "emotional", "medium", "negative"),
    ("送给朋友的礼物，朋友很喜欢，推荐", "social", "low", "positive"),
    ("物流太慢了，等了一个星期", "functional", "medium", "negative"),
    ("床单很舒服，满意", "functional", "low", "positive"),
    ("不满意，没有想象中好", "functional", "low", "negative"),
    ("收到的锅破损了", "functional", "medium", "negative"),
    ("店员很贴心，感谢", "emotional", "low", "positive"),
    ("再这样我就去12315曝光你们", "functional", "high", "neutral"),
    ("家人都说这个收纳盒好用", "social", "low", "positive"),
    ("尺寸和描述不符", "functional", "low", "neutral"),
    ("骗人的促销，垃圾", "functional", "high", "negative"),
]


def test_the_labelled_set_is_classified_as_labelled() -> None:
    classifier = classifier_for(CONFIG.feedback)
    got = [(t, *(lambda c: (c.need, c.priority, c.sentiment))(classifier.classify(t))) for t, *_ in LABELLED]
    assert got == LABELLED


def test_a_dealer_configures_its_own_needs() -> None:
    dealer = rules(feedback={"need_types": ["product", "service", "emotional"], "default_need": "product",
                             "needs": [{"need": "product", "keywords": ["发动机", "异响"]},
                                       {"need": "service", "keywords": ["保养", "等待"]},
                                       {"need": "emotional", "keywords": ["失望"]}]})  # fmt: skip
    c = classifier_for(dealer.feedback)
    assert c.classify("保养等待了三个小时").need == "service"
    assert c.classify("发动机有异响").need == "product"


async def test_high_priority_negative_feedback_opens_a_case(conn: AsyncConnection) -> None:
    customer = await add_customer(conn, name="周敏")
    angry = await record_feedback(conn, CONFIG, body=LABELLED[0][0], source="review", customer_id=customer,
                                  actor="service:tmall-sync", now=NOW, channel_code=None)  # fmt: skip
    assert angry["priority"] == "high" and angry["case_id"] is not None
    case = await one(conn, "select type || '/' || priority || '/' || source || '/' || status from service_case"
                     " where id = :i", i=angry["case_id"])  # fmt: skip
    assert case == "complaint/high/feedback/recorded"
    mild = await record_feedback(conn, CONFIG, body=LABELLED[1][0], source="wechat", customer_id=customer,
                                 actor="service:wechat", now=NOW)  # fmt: skip
    threat = await record_feedback(conn, CONFIG, body=LABELLED[8][0], source="wechat", customer_id=customer,
                                   actor="service:wechat", now=NOW)  # fmt: skip
    assert mild["case_id"] is None and threat["case_id"] is None  # medium, and high but not negative
    await classify_feedback(conn, CONFIG, mild["id"], actor="staff:lin", now=NOW, need="functional",
                            priority="high", status="acknowledged", owner="staff:lin")  # fmt: skip
    row = await one(conn, "select need_type || '/' || priority || '/' || status || '/' || owner || '/' || classified_by"
                    " from feedback where id = :i", i=mild["id"])  # fmt: skip
    assert row == "functional/high/acknowledged/staff:lin/staff:lin"
    with pytest.raises(ServiceRefusal) as bad:
        await classify_feedback(conn, CONFIG, mild["id"], actor="staff:lin", now=NOW, need="financial")
    assert bad.value.code == "UNKNOWN_NEED" and "social" in bad.value.message
