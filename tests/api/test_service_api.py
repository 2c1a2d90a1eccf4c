"""Service and care through the API over real HTTP: a complaint through its eight steps with userErrors
for illegal steps, the queue by SLA time left in a constant number of statements, member self-service."""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa
from gql.transport.exceptions import TransportQueryError
from sqlalchemy.ext.asyncio import AsyncEngine

from schema.relay import to_global_id
from tests.api.graphql_support import api_server
from tests.conftest import fetch_rows

CASE_FIELDS = """id caseNo type status priority breached slaDueAt slaSecondsLeft outcome department cause
  responsibleParty approvedBy pointsGranted compensationGranted { yuan } resolution { kind points compensation { fen } }
  allowedTransitions { to name requires role }
  events { kind action actor fromStatus toStatus }"""
OPEN = (
    """mutation ($c: ID, $type: String!, $priority: String! = "normal", $source: String! = "service_desk") {
  openCase(input: {customerId: $c, type: $type, subject: "被套洗后褪色", request: "换一套", priority: $priority,
                   source: $source}) {
    case { FIELDS } replayed userErrors { field message code } } }"""
).replace("FIELDS", CASE_FIELDS)
STEP = (
    """mutation ($input: TransitionCaseInput!) { transitionCase(input: $input) {
    case { FIELDS } replayed userErrors { field message code } } }"""
).replace("FIELDS", CASE_FIELDS)


async def add_customer(engine: AsyncEngine, name: str = "王芳") -> int:
    async with engine.begin() as conn:
        return int(
            (
                await conn.execute(
                    sa.text("insert into golden_customer (status, name, phone) values ('active', :n, '+8613900000000')"
                            " returning id"),
                    {"n": name},
                )
            ).scalar_one()
        )  # fmt: skip


async def step(api: Any, role: str, **input: Any) -> dict[str, Any]:
    reply: dict[str, Any] = (await api.query(STEP, role=role, subject=f"{role}-1", input=input))[
        "transitionCase"
    ]
    return reply


async def test_a_complaint_through_the_eight_steps(committed_db: AsyncEngine, database_url: str) -> None:
    cid = await add_customer(committed_db)
    gid = to_global_id("Customer", cid)
    with api_server(database_url) as api:
        opened = (await api.query(OPEN, c=gid, type="complaint"))["openCase"]
        assert opened["userErrors"] == []
        case = opened["case"]
        assert case["status"] == "recorded" and case["caseNo"].startswith("CS")
        assert {t["to"] for t in case["allowedTransitions"]} == {"validated", "closed"}
        case_id = case["id"]
        # An illegal step: a userError naming where the case can go.
        wrong = await step(api, "staff", caseId=case_id, to="approved")
        assert wrong["case"] is None and wrong["userErrors"][0]["code"] == "ILLEGAL_TRANSITION"
        assert (
            "validated" in wrong["userErrors"][0]["message"] and "closed" in wrong["userErrors"][0]["message"]
        )
        assert wrong["userErrors"][0]["field"] == ["to"]
        await step(api, "staff", caseId=case_id, to="validated")
        missing = await step(api, "staff", caseId=case_id, to="assigned")
        assert missing["userErrors"][0] == {"field": ["department"], "message": missing["userErrors"][0]["message"],
                                            "code": "REQUIRED"}  # fmt: skip
        await step(api, "staff", caseId=case_id, to="assigned", department="quality")
        await step(api, "staff", caseId=case_id, to="analysed", cause="染色工艺", responsibleParty="供应商")
        proposed = await step(api, "staff", caseId=case_id, to="proposed",
                              resolution={"kind": "compensation", "compensationFen": 3000, "points": 200})  # fmt: skip
        assert proposed["case"]["resolution"] == {
            "kind": "compensation",
            "points": 200,
            "compensation": {"fen": 3000},
        }
        staff_approval = await step(api, "staff", caseId=case_id, to="approved")
        assert staff_approval["userErrors"][0]["code"] == "NEEDS_STAFF_ADMIN"
        sent_back = await step(
            api, "staff_admin", caseId=case_id, to="analysed", reason="compensation too high"
        )
        assert sent_back["case"]["status"] == "analysed"
        await step(api, "staff", caseId=case_id, to="proposed",
                   resolution={"kind": "compensation", "compensationFen": 2000, "points": 200})  # fmt: skip
        approved = await step(api, "staff_admin", caseId=case_id, to="approved")
        assert approved["case"]["approvedBy"] == "staff_admin:staff_admin-1"
        no_key = await step(api, "staff", caseId=case_id, to="executed")
        assert no_key["userErrors"][0]["code"] == "IDEMPOTENCY_KEY_REQUIRED"
        executed = await step(api, "staff", caseId=case_id, to="executed", idempotencyKey="exec-1")
        retried = await step(api, "staff", caseId=case_id, to="executed", idempotencyKey="exec-1")
        assert (
            executed["case"]["pointsGranted"] == 200
            and executed["case"]["compensationGranted"]["yuan"] == "20.00"
        )
        assert retried["replayed"] is True and retried["case"]["pointsGranted"] == 200
        closed = await step(
            api, "staff", caseId=case_id, to="closed", summary="赔付并换货", customerFeedback="满意"
        )
        case = closed["case"]
        assert case["status"] == "closed" and case["outcome"] == "resolved" and case["slaDueAt"] is None
        assert [e["toStatus"] for e in case["events"]] == [
            "recorded", "validated", "assigned", "analysed", "proposed", "analysed", "proposed", "approved",
            "executed", "closed",
        ]  # fmt: skip
        assert all(e["actor"] for e in case["events"])
        # The member sees their own case and its events; another member sees nothing.
        mine = await api.query(
            "{ me { serviceCases(first: 5) { totalCount edges { node { caseNo status events { toStatus } } } } } }",
            role="member", subject=str(cid),
        )  # fmt: skip
        assert mine["me"]["serviceCases"]["totalCount"] == 1
        other = await api.query("query ($id: ID!) { case(id: $id) { caseNo } }", role="member",
                                subject=str(cid + 1000), id=case_id)  # fmt: skip
        assert other["case"] is None
        with pytest.raises(TransportQueryError):
            await api.query(
                STEP, role="member", subject=str(cid), input={"caseId": case_id, "to": "assigned"}
            )
    ledger = await fetch_rows(
        committed_db, "select points from points_ledger_entry where customer_id = :c", c=cid
    )
    assert ledger == [(200,)]
    coupons = await fetch_rows(committed_db, "select value_fen from coupon where customer_id = :c", c=cid)
    assert coupons == [(2000,)]


async def test_the_queue_orders_by_sla_time_left_in_constant_statements(
    committed_db: AsyncEngine, database_url: str
) -> None:
    cid = await add_customer(committed_db)
    gid = to_global_id("Customer", cid)
    query = """query ($first: Int, $after: String, $filter: CaseQueueFilter) {
      caseQueue(first: $first, after: $after, filter: $filter) { totalCount pageInfo { hasNextPage endCursor }
        edges { node { caseNo type priority slaDueAt events { kind actor } allowedTransitions { to } } } } }"""
    with api_server(database_url) as api:
        kinds = [
            ("inquiry", "normal"),
            ("complaint", "urgent"),
            ("complaint", "normal"),
            ("repair", "low"),
        ] * 3
        for type_, priority in kinds:
            reply = (await api.query(OPEN, c=gid, type=type_, priority=priority))["openCase"]
            assert reply["userErrors"] == []
        counts = []
        for first in (2, 12):
            api.statements.reset()
            queue = (await api.query(query, first=first))["caseQueue"]
            counts.append(api.statements.count)
            assert len(queue["edges"]) == first and queue["totalCount"] == 12
        dues = [e["node"]["slaDueAt"] for e in queue["edges"]]
        assert dues == sorted(dues)
        assert queue["edges"][0]["node"]["priority"] == "urgent"  # 2 hours to first response
        page1 = (await api.query(query, first=5))["caseQueue"]
        page2 = (await api.query(query, first=5, after=page1["pageInfo"]["endCursor"]))["caseQueue"]
        both = [e["node"]["caseNo"] for e in page1["edges"] + page2["edges"]]
        assert both == [e["node"]["caseNo"] for e in queue["edges"][:10]]
        urgent = (await api.query(query, first=20, filter={"type": "complaint", "priority": "urgent"}))[
            "caseQueue"
        ]
        assert urgent["totalCount"] == 3
        fresh = (await api.query(query, first=20, filter={"breached": True}))["caseQueue"]
        assert fresh["totalCount"] == 0
        with pytest.raises(TransportQueryError):
            await api.query(query, role="member", subject=str(cid), first=2)
    assert counts[0] == counts[1], counts


CLAIM = """mutation ($limit: Int!) { claimCareActions(input: {limit: $limit}) {
  leaseSeconds actions { id kind channel state phone payload attempts } userErrors { code } } }"""
ACK = """mutation ($id: ID!, $ok: Boolean!) { ackCareAction(input: {id: $id, delivered: $ok}) {
  action { state deliveredAt } userErrors { code message } } }"""


async def test_delivery_workers_claim_and_acknowledge_over_http(
    committed_db: AsyncEngine, database_url: str
) -> None:
    import asyncio

    cid = await add_customer(committed_db)
    async with committed_db.begin() as conn:
        await conn.execute(
            sa.text(
                "insert into care_action (customer_id, kind, period, channel, purpose, state, payload, due_at)"
                " select :c, 'regular_visit', 'visit:' || n, 'call_list', 'service', 'pending', '{}', now() - interval '1 minute'"
                " from generate_series(1, 30) n"
            ),
            {"c": cid},
        )
        await conn.execute(
            sa.text(
                "insert into care_action (customer_id, kind, period, channel, purpose, state, suppressed_reason, due_at)"
                " values (:c, 'birthday', '2026', 'wechat_template', 'marketing', 'suppressed',"
                " 'no_marketing_consent:marketing_wechat', now())"
            ),
            {"c": cid},
        )
    with api_server(database_url) as api:

        async def worker(name: str) -> list[dict[str, Any]]:
            got: list[dict[str, Any]] = []
            async with api.client("service", name, scopes=["pii:read"]) as session:
                from gql import gql

                while True:
                    request = gql(CLAIM)
                    request.variable_values = {"limit": 4}
                    reply = (await session.execute(request))["claimCareActions"]
                    if not reply["actions"]:
                        return got
                    got += reply["actions"]

        a, b = await asyncio.gather(worker("sender-a"), worker("sender-b"))
        assert len(a) + len(b) == 30 and not {x["id"] for x in a} & {x["id"] for x in b}
        assert a[0]["phone"] == "+8613900000000" and a[0]["state"] == "claimed"
        mine = (await api.query(ACK, role="service", subject="sender-a", id=a[0]["id"], ok=True))[
            "ackCareAction"
        ]
        assert mine["action"]["state"] == "delivered"
        theirs = (await api.query(ACK, role="service", subject="sender-a", id=b[0]["id"], ok=True))[
            "ackCareAction"
        ]
        assert theirs["action"] is None and theirs["userErrors"][0]["code"] == "NOT_CLAIMED"
        with pytest.raises(TransportQueryError):
            await api.query(CLAIM, role="staff", limit=1)
        outbox = await api.query(
            '{ careOutbox(state: "suppressed") { totalCount edges { node { kind suppressedReason phone } } } }'
        )
        node = outbox["careOutbox"]["edges"][0]["node"]
        assert outbox["careOutbox"]["totalCount"] == 1
        assert (
            node["suppressedReason"] == "no_marketing_consent:marketing_wechat"
            and node["phone"] == "139****0000"
        )
        seen = await api.query(
            '{ me { careActions(state: "delivered") { totalCount edges { node { kind state } } } } }',
            role="member", subject=str(cid),
        )  # fmt: skip
        assert seen["me"]["careActions"]["totalCount"] == 1


SUBMIT = """mutation ($input: SubmitSurveyInput!) { submitSurvey(input: $input) {
  response { survey kind score expectedScore perceivedScore satisfactionIndex }
  feedback { need priority sentiment } userErrors { field code message } } }"""


async def test_members_answer_surveys_and_satisfaction_is_perceived_over_expected(
    committed_db: AsyncEngine, database_url: str
) -> None:
    cid = await add_customer(committed_db)
    other = await add_customer(committed_db, name="赵强")
    with api_server(database_url) as api:
        case_id = (await api.query(OPEN, c=to_global_id("Customer", cid), type="inquiry"))["openCase"][
            "case"
        ]["id"]
        theirs = (await api.query(OPEN, c=to_global_id("Customer", other), type="inquiry"))["openCase"][
            "case"
        ]["id"]
        answers = [{"question": "overall", "score": 4}, {"question": "expected", "score": 8},
                   {"question": "perceived", "score": 6}]  # fmt: skip
        me: dict[str, Any] = {"role": "member", "subject": str(cid)}
        done = (await api.query(SUBMIT, **me, input={"survey": "case-csat", "caseId": case_id, "answers": answers,
                                                      "comment": "客服态度差，让我很失望"}))["submitSurvey"]  # fmt: skip
        assert done["userErrors"] == [] and done["response"]["satisfactionIndex"] == 0.75
        assert done["feedback"] == {"need": "emotional", "priority": "medium", "sentiment": "negative"}
        again = await api.query(
            SUBMIT, **me, input={"survey": "case-csat", "caseId": case_id, "answers": answers}
        )
        assert again["submitSurvey"]["userErrors"][0]["code"] == "ALREADY_ANSWERED"
        foreign = await api.query(
            SUBMIT, **me, input={"survey": "case-csat", "caseId": theirs, "answers": answers}
        )
        assert foreign["submitSurvey"]["userErrors"][0]["code"] == "NOT_FOUND"
        scale = [{"question": "recommend", "score": 11}, {"question": "expected", "score": 5},
                 {"question": "perceived", "score": 5}]  # fmt: skip
        out = await api.query(SUBMIT, **me, input={"survey": "order-nps", "answers": scale})
        assert out["submitSurvey"]["userErrors"][0]["code"] == "OUT_OF_SCALE"
        scale[0]["score"] = 10
        assert (await api.query(SUBMIT, **me, input={"survey": "order-nps", "answers": scale}))[
            "submitSurvey"
        ]["response"]["kind"] == "nps"
        seen = await api.query(
            "{ me { satisfaction { responses csat nps index } surveys(first: 5) { totalCount }"
            " feedback(first: 5) { edges { node { need status } } } } }",
            **me,
        )
        # CSAT 4 of 5 is satisfied; NPS 10 is a promoter; index (6 + 5) / (8 + 5).
        assert seen["me"]["satisfaction"] == {"responses": 2, "csat": 1.0, "nps": 100.0, "index": 11 / 13}
        assert seen["me"]["surveys"]["totalCount"] == 2
        stats = await api.query(
            """{ satisfactionStats(range: {from: "2020-01-01T00:00:00+00:00", to: "2100-01-01T00:00:00+00:00"},
                 groupBy: SURVEY) { group satisfaction { responses index } } }"""
        )
        assert {r["group"]: r["satisfaction"]["responses"] for r in stats["satisfactionStats"]} == {
            "case-csat": 1, "order-nps": 1,
        }  # fmt: skip


async def test_feedback_over_the_api_opens_a_case_and_staff_reclassify(
    committed_db: AsyncEngine, database_url: str
) -> None:
    cid = await add_customer(committed_db)
    record = """mutation ($c: ID!, $body: String!) { recordFeedback(input: {customerId: $c, body: $body, source: "review"}) {
        feedback { id need priority sentiment keywords status } case { type priority source status } userErrors { code } } }"""
    with api_server(database_url) as api:
        got = (await api.query(record, role="service", subject="tmall-sync", c=to_global_id("Customer", cid),
                               body="被套洗了一次就褪色起球，质量太差了，我要投诉退款"))["recordFeedback"]  # fmt: skip
        assert got["feedback"]["priority"] == "high" and "投诉" in got["feedback"]["keywords"]
        assert got["case"] == {
            "type": "complaint",
            "priority": "high",
            "source": "feedback",
            "status": "recorded",
        }
        classify = """mutation ($id: ID!) { classifyFeedback(input: {id: $id, need: "emotional", status: "acknowledged",
            owner: "staff:lin"}) { feedback { need status owner classifiedBy } userErrors { code } } }"""
        with pytest.raises(TransportQueryError):
            await api.query(classify, role="member", subject=str(cid), id=got["feedback"]["id"])
        fixed = (await api.query(classify, subject="lin", id=got["feedback"]["id"]))["classifyFeedback"][
            "feedback"
        ]
        assert fixed == {
            "need": "emotional",
            "status": "acknowledged",
            "owner": "staff:lin",
            "classifiedBy": "staff:lin",
        }
        stats = await api.query(
            """{ serviceStats(range: {from: "2020-01-01T00:00:00+00:00", to: "2100-01-01T00:00:00+00:00"},
                 groupBy: SOURCE) { group volume breachRate outcomes { outcome count } } }"""
        )
        assert stats["serviceStats"] == [
            {
                "group": "feedback",
                "volume": 1,
                "breachRate": 0.0,
                "outcomes": [{"outcome": "open", "count": 1}],
            }
        ]


async def test_what_the_demo_leaves_shows_in_graphiql(committed_db: AsyncEngine, database_url: str) -> None:
    """After `c360 demo`'s service step: the breached complaint heads caseQueue, the closed one has its eight
    steps, suppressed care actions say why, and the customer's satisfaction is perceived over expected."""
    from datetime import UTC, datetime

    from crm.loyalty.service import in_transaction
    from crm.service.config import get_config
    from crm.service.demo import run_demo

    first = await add_customer(committed_db, "甲")
    async with committed_db.begin() as conn:
        await conn.execute(sa.text("insert into channel (code, family, name, trust_rank) values ('tmall', 'marketplace', 'Tmall', 50) on conflict do nothing"))  # fmt: skip
        await conn.execute(
            sa.text(
                "insert into orders (channel_code, external_id, customer_id, status, total_fen, paid_fen, currency,"
                " placed_at) values ('tmall', 'demo-1', :c, 'completed', 39900, 39900, 'CNY', now() - interval '12 days')"
            ),
            {"c": first},
        )
    for name in ("乙", "丙"):
        await add_customer(committed_db, name)
    result = await in_transaction(committed_db, lambda conn: run_demo(conn, get_config(), datetime.now(UTC)))
    with api_server(database_url) as api:
        queue = (
            await api.query(
                "{ caseQueue(first: 5, filter: {breached: true}) { totalCount edges { node { id status breached"
                " slaSecondsLeft resolveBreachedAt } } } }"
            )
        )["caseQueue"]
        head = queue["edges"][0]["node"]
        assert head["id"] == to_global_id("ServiceCase", result.breached["id"])
        assert head["status"] == "assigned" and head["breached"] is True and head["slaSecondsLeft"] < 0
        closed = (
            await api.query(
                "query ($i: ID!) { case(id: $i) { status outcome pointsGranted compensationGranted { yuan }"
                " events { kind toStatus } } }",
                i=to_global_id("ServiceCase", result.complaint["id"]),
            )
        )["case"]
        steps = [e["toStatus"] for e in closed["events"] if e["kind"] in ("opened", "transition")]
        assert steps == ["recorded", "validated", "assigned", "analysed", "proposed", "approved", "executed",
                         "closed"]  # fmt: skip
        assert (closed["pointsGranted"], closed["compensationGranted"]["yuan"]) == (300, "50.00")
        suppressed = (
            await api.query(
                '{ careOutbox(state: "suppressed") { edges { node { kind suppressedReason } } } }'
            )
        )["careOutbox"]["edges"]
        assert {"kind": "case_followup", "suppressedReason": "service_contact_withdrawn:service_contact"} in [
            e["node"] for e in suppressed
        ]
        me = (
            await api.query(
                "query ($c: ID!) { customer(id: $c) { satisfaction { index } surveys { edges { node"
                " { satisfactionIndex } } } } }",
                c=to_global_id("Customer", first),
            )
        )["customer"]
        assert me["satisfaction"]["index"] == pytest.approx(15 / 17)  # (9 + 6) / (8 + 9)
        assert sorted(e["node"]["satisfactionIndex"] for e in me["surveys"]["edges"]) == [
            pytest.approx(6 / 9),
            pytest.approx(9 / 8),
        ]
