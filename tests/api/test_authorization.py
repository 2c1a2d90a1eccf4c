"""The authorization matrix over real HTTP: every query and mutation, called by every role, on the
member's own customer and on another one, each cell asserted against the roles table of docs/api.md
(written out here, not read from the product).

Cells: Y the call is authorized (it answers, or refuses for a business reason), F it is refused with
FORBIDDEN, N it answers null or "not found" (a member asking for someone else's data is told nothing,
not "forbidden").
Columns: staff, staff_admin, service, a member on their own customer, a member on another customer."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from gql.transport.exceptions import TransportQueryError
from sqlalchemy.ext.asyncio import AsyncEngine

from schema.relay import to_global_id
from tests.api.graphql_support import Api, api_server
from tests.api.seed import seed
from tests.conftest import fetch_rows

COLUMNS = ("staff", "staff_admin", "service", "own", "other")
UE = "userErrors { code }"


@dataclass(frozen=True)
class Op:
    name: str
    document: str
    expected: str  # one cell per COLUMNS entry
    variables: dict[str, Any] | None = None


def ops(ids: dict[str, Any]) -> list[Op]:
    c = ids["case"]
    rng = {"range": {"from": "2026-01-01T00:00:00+08:00", "to": "2027-01-01T00:00:00+08:00"}}
    return [
        # Reads of one customer: everyone but a member on someone else (who gets null).
        Op("health", "{ health { database } }", "YYYYY"),
        Op("node", "query ($a: ID!) { node(id: $a) { id } }", "YYYYN"),
        Op("customer", "query ($a: ID!) { customer(id: $a) { customerId } }", "YYYYN"),
        Op(
            "customer.orders",
            "query ($a: ID!) { customer(id: $a) { orders(first: 5) { totalCount } } }",
            "YYYYN",
        ),
        Op(
            "customer.interactions",
            "query ($a: ID!) { customer(id: $a) { interactions(first: 5) { totalCount } } }",
            "YYYYN",
        ),
        Op("customer.points", "query ($a: ID!) { customer(id: $a) { points { balance } } }", "YYYYN"),
        Op(
            "customer.serviceCases",
            "query ($a: ID!) { customer(id: $a) { serviceCases(first: 5) { totalCount } } }",
            "YYYYN",
        ),
        Op("customer.metrics", "query ($a: ID!) { customer(id: $a) { metrics { orderCount } } }", "YYYYN"),
        # The labels staff put on a customer are not the member's to read.
        Op("customer.rfm", "query ($a: ID!) { customer(id: $a) { rfm { cell } } }", "YYYFN"),
        Op("customer.tags", "query ($a: ID!) { customer(id: $a) { tags { name } } }", "YYYFN"),
        Op("customer.segments", "query ($a: ID!) { customer(id: $a) { segments { code } } }", "YYYFN"),
        Op("customer.lifecycle", "query ($a: ID!) { customer(id: $a) { lifecycle { stage } } }", "YYYFN"),
        Op(
            "customerByIdentifier",
            '{ customerByIdentifier(kind: PHONE, value: "138 1234 5678") { customerId } }',
            "YYYYN",
        ),
        Op("case", "query ($c: ID!) { case(id: $c) { caseNo } }", "YYYYN", {"c": c}),
        Op("surveyDefinitions", "{ surveyDefinitions { code } }", "YYYYY"),
        # A member's own profile: for member tokens only.
        Op("me", "{ me { customerId } }", "FFFYY"),
        # The base as a whole: staff and service.
        Op("customers", "{ customers(first: 5) { totalCount } }", "YYYFF"),
        Op("customerChanges", "{ customerChanges(first: 5) { edges { cursor } } }", "YYYFF"),
        Op("segments", "{ segments(first: 5) { totalCount } }", "YYYFF"),
        Op("segment", "query ($s: ID!) { segment(id: $s) { code } }", "YYYFF", {"s": ids["segment"]}),
        Op("analyticsOverview", "{ analyticsOverview { customers } }", "YYYFF"),
        # Consoles and service desks: staff only.
        Op("reviewQueue", "{ reviewQueue(first: 5) { totalCount } }", "YYFFF"),
        Op("campaigns", "{ campaigns(first: 5) { totalCount } }", "YYFFF"),
        # No such campaign: staff are told null, the others are refused before the lookup.
        Op(
            "campaignReport",
            "query ($k: ID!) { campaignReport(id: $k) { campaign { code } } }",
            "NNFFF",
            {"k": to_global_id("Campaign", 10**9)},
        ),
        Op("referralReport", "{ referralReport { group } }", "YYFFF"),
        Op("caseQueue", "{ caseQueue(first: 5) { totalCount } }", "YYFFF"),
        Op(
            "serviceStats",
            "query ($range: DateRangeInput!) { serviceStats(range: $range) { group } }",
            "YYFFF",
            rng,
        ),
        Op(
            "satisfactionStats",
            "query ($range: DateRangeInput!) { satisfactionStats(range: $range) { group } }",
            "YYFFF",
            rng,
        ),
        Op("careOutbox", "{ careOutbox(first: 5) { totalCount } }", "YYFFF"),
        # What a member may do for themselves (and staff or a service on a customer's behalf).
        Op(
            "redeemPoints",
            'mutation ($a: ID) { redeemPoints(input: {customerId: $a, points: 10, idempotencyKey: "k"}) { UE } }',
            "YYYYF",
        ),
        Op(
            "redeemCoupon",
            "mutation ($code: String!) { redeemCoupon(input: {code: $code}) { UE } }",
            "YYYYN",
            {"code": ids["coupon"]},
        ),
        Op(
            "registerReferral",
            'mutation ($a: ID) { registerReferral(input: {customerId: $a, code: "LI0001"}) { UE } }',
            "YYYYF",
        ),
        Op(
            "openCase",
            'mutation ($a: ID) { openCase(input: {customerId: $a, type: "inquiry", subject: "s"}) { UE } }',
            "YYYYF",
        ),
        Op(
            "submitSurvey",
            'mutation ($a: ID) { submitSurvey(input: {survey: "case-csat", customerId: $a,'
            ' answers: [{question: "overall", score: 5}]}) { UE } }',
            "YYYYF",
        ),
        Op(
            "recordFeedback",
            'mutation ($a: ID) { recordFeedback(input: {customerId: $a, body: "很好", source: "app"}) { UE } }',
            "YYYYF",
        ),
        # Writes for channels without a connector: staff and services (downstream jobs), never members.
        Op(
            "recordInteraction",
            'mutation ($a: ID) { recordInteraction(input: {customerId: $a, channel: "app", externalId: "ri-1",'
            ' type: "call", occurredAt: "2026-11-01T10:00:00+08:00"}) { UE } }',
            "YYYFF",
        ),
        Op(
            "recordInteractions",
            'mutation ($a: ID) { recordInteractions(input: {items: [{customerId: $a, channel: "app",'
            ' externalId: "ri-2", type: "call", occurredAt: "2026-11-01T10:00:00+08:00"}]}) { UE } }',
            "YYYFF",
        ),
        Op(
            "updateConsent",
            'mutation ($a: ID) { updateConsent(input: {customerId: $a, purpose: "marketing_sms",'
            ' status: "granted", source: "app"}) { UE } }',
            "YYYYF",
        ),
        # Staff work.
        Op(
            "earnPoints",
            'mutation ($a: ID!) { earnPoints(input: {customerId: $a, points: 10, reason: "r",'
            ' idempotencyKey: "e"}) { UE } }',
            "YYFFF",
        ),
        Op(
            "grantCoupon",
            'mutation ($a: ID!) { grantCoupon(input: {customerId: $a, kind: "amount", valueFen: 500,'
            ' reason: "r", idempotencyKey: "g"}) { UE } }',
            "YYFFF",
        ),
        Op(
            "transitionCase",
            'mutation ($c: ID!) { transitionCase(input: {caseId: $c, to: "nowhere"}) { UE } }',
            "YYFFF",
            {"c": c},
        ),
        Op(
            "assignCase",
            'mutation ($c: ID!) { assignCase(input: {caseId: $c, assignee: "alice"}) { UE } }',
            "YYFFF",
            {"c": c},
        ),
        Op(
            "classifyFeedback",
            'mutation ($f: ID!) { classifyFeedback(input: {id: $f, priority: "high"}) { UE } }',
            "YYFFF",
            {"f": ids["feedback"]},
        ),
        Op(
            "tagCustomer",
            'mutation ($a: ID!) { tagCustomer(input: {customerId: $a, tag: "VIP"}) { UE } }',
            "YYFFF",
        ),
        Op(
            "untagCustomer",
            'mutation ($a: ID!) { untagCustomer(input: {customerId: $a, tag: "VIP"}) { UE } }',
            "YYFFF",
        ),
        Op(
            "confirmHousehold",
            "mutation ($h: ID!) { confirmHousehold(input: {householdId: $h}) { UE } }",
            "YYFFF",
            {"h": ids["household"]},
        ),
        Op(
            "splitHousehold",
            "mutation ($h: ID!) { splitHousehold(input: {householdId: $h}) { UE } }",
            "YYFFF",
            {"h": ids["household"]},
        ),
        # The delivery worker's protocol: the service role only.
        Op("claimCareActions", "mutation { claimCareActions(input: {limit: 1}) { UE } }", "FFYFF"),
        Op(
            "ackCareAction",
            "mutation ($x: ID!) { ackCareAction(input: {id: $x, delivered: true}) { UE } }",
            "FFYFF",
            {"x": ids["care_action"]},
        ),
        # staff_admin only: money-like adjustments, tiers, segments, merges, erasure, review decisions.
        Op(
            "adjustPoints",
            'mutation ($a: ID!) { adjustPoints(input: {customerId: $a, points: 5, reason: "r",'
            ' idempotencyKey: "adj"}) { UE } }',
            "FYFFF",
        ),
        Op(
            "overrideTier",
            'mutation ($a: ID!) { overrideTier(input: {customerId: $a, tier: "gold", reason: "r"}) { UE } }',
            "FYFFF",
        ),
        Op(
            "defineSegment",
            'mutation { defineSegment(input: {code: "m-test", name: "m", rule: {lifecycle: ["new"]}}) { UE } }',
            "FYFFF",
        ),
        Op(
            "updateCustomerProfile",
            'mutation ($a: ID!) { updateCustomerProfile(input: {customerId: $a, city: "宁波", reason: "r"}) { UE } }',
            "FYFFF",
        ),
        Op(
            "decideReview",
            "mutation ($r: ID!) { decideReview(input: {reviewId: $r, accept: false}) { UE } }",
            "FYFFF",
            {"r": ids["review"]},
        ),
        Op(
            "unmerge",
            'mutation ($m: ID!) { unmerge(input: {mergeEventId: $m, reason: "r", idempotencyKey: "u"}) { UE } }',
            "FYFFF",
            {"m": ids["merge_event"]},
        ),
        Op(
            "mergeCustomers.dryRun",
            'mutation ($x: [ID!]!) { mergeCustomers(input: {customerIds: $x, reason: "r",'
            ' idempotencyKey: "d", dryRun: true}) { UE } }',
            "FYFFF",
            {"x": ids["to_merge"]},
        ),
        Op(
            "mergeCustomers",
            'mutation ($x: [ID!]!) { mergeCustomers(input: {customerIds: $x, reason: "r",'
            ' idempotencyKey: "m"}) { UE } }',
            "FYFFF",
            {"x": ids["to_merge"]},
        ),
        Op(
            "eraseCustomer",
            'mutation ($e: ID!) { eraseCustomer(input: {customerId: $e, reason: "r", idempotencyKey: "x"}) { UE } }',
            "FYFFF",
            {"e": ids["to_erase"]},
        ),
    ]


async def cell(api: Api, column: str, ids: dict[str, Any], op: Op) -> str:
    if column in ("own", "other"):
        role, subject = "member", str(ids["pk_a"] if column == "own" else ids["pk_b"])
    else:
        role, subject = column, f"{column}-1"
    variables = {"a": ids["a"], **(op.variables or {})}
    used = {k: v for k, v in variables.items() if f"${k}" in op.document}
    try:
        data = await api.query(op.document.replace("UE", UE), role=role, subject=subject, **used)  # type: ignore[arg-type]
    except TransportQueryError as exc:
        codes = {(e.get("extensions") or {}).get("code") for e in exc.errors or []}
        if "FORBIDDEN" in codes:
            return "F"
        # Authorized, then refused on the input (an id that names nothing): the lookup ran.
        return (
            "Y"
            if codes <= {"NOT_FOUND", "BAD_USER_INPUT"}
            else f"error {sorted(map(str, codes))}: {exc.errors}"
        )
    top = next(iter(data.values()))
    if top is None:
        return "N"
    codes = {u["code"] for u in (top.get("userErrors") or [])} if isinstance(top, dict) else set()
    if "FORBIDDEN" in codes:
        return "F"
    # Someone else's coupon is "no such coupon": its existence is not confirmed to a stranger.
    return "N" if "NOT_FOUND" in codes else "Y"


def top_level_fields() -> set[str]:
    from schema import schema

    query, mutation = schema._schema.query_type, schema._schema.mutation_type
    assert query is not None and mutation is not None
    return {*query.fields, *mutation.fields}


async def extra_customer(engine: AsyncEngine, name: str) -> int:
    async with engine.begin() as conn:
        found = await conn.execute(
            sa.text("insert into golden_customer (status, name) values ('active', :n) returning id"),
            {"n": name},
        )
        return int(found.scalar_one())


async def test_every_role_on_every_operation(committed_db: AsyncEngine, database_url: str) -> None:
    s = await seed(committed_db)
    c1, c2, c3 = [await extra_customer(committed_db, n) for n in ("甲", "乙", "丙")]
    [(merge_event,)] = await fetch_rows(committed_db, "select min(id) from merge_event")
    async with committed_db.begin() as conn:
        await conn.execute(
            sa.text("insert into referral_code (customer_id, code) values (:b, 'LI0001')"), {"b": s.li}
        )
        care_action = (
            await conn.execute(
                sa.text(
                    "insert into care_action (customer_id, kind, period, channel, purpose, state)"
                    " values (:a, 'birthday', '2026', 'sms', 'marketing', 'pending') returning id"
                ),
                {"a": s.zhang},
            )
        ).scalar_one()
    a = to_global_id("Customer", s.zhang)
    with api_server(database_url) as api:
        # What the matrix needs to exist, made the way staff make it.
        opened = await api.query(
            'mutation ($a: ID) { openCase(input: {customerId: $a, type: "complaint", subject: "s"}) {'
            " case { id } } }",
            a=a,
        )
        coupon = await api.query(
            'mutation ($a: ID!) { grantCoupon(input: {customerId: $a, kind: "amount", valueFen: 500,'
            ' reason: "r", idempotencyKey: "setup"}) { coupon { code } userErrors { message } } }',
            a=a,
        )
        feedback = await api.query(
            'mutation ($a: ID) { recordFeedback(input: {customerId: $a, body: "质量不错", source: "app"}) {'
            " feedback { id } } }",
            a=a,
        )
        segment = await api.query(
            'mutation { defineSegment(input: {code: "setup", name: "s", rule: {lifecycle: ["new"]}}) {'
            " segment { id } } }",
            role="staff_admin",
        )
        ids = {
            "a": a,
            "pk_a": s.zhang,
            "pk_b": s.li,
            "case": opened["openCase"]["case"]["id"],
            "coupon": coupon["grantCoupon"]["coupon"]["code"],
            "feedback": feedback["recordFeedback"]["feedback"]["id"],
            "segment": segment["defineSegment"]["segment"]["id"],
            # No such rows: the refusal must come before the lookup.
            "household": to_global_id("Household", 10**9),
            "care_action": to_global_id("CareAction", care_action),
            "review": to_global_id("ReviewPair", 10**9),
            "merge_event": to_global_id("MergeEvent", merge_event),
            "to_merge": [to_global_id("Customer", c1), to_global_id("Customer", c2)],
            "to_erase": to_global_id("Customer", c3),
        }
        table = ops(ids)
        # Every top-level query and mutation of the schema is in the table.
        assert {op.name for op in table if "." not in op.name} >= top_level_fields()
        got: dict[str, str] = {}
        for op in table:
            # The refused go first, so an authorized mutation cannot change what the others see.
            order = sorted(range(len(COLUMNS)), key=lambda i: op.expected[i] == "Y")
            cells = [""] * len(COLUMNS)
            for i in order:
                cells[i] = await cell(api, COLUMNS[i], ids, op)
            got[op.name] = "".join(c if len(c) == 1 else "?" for c in cells)
            assert all(len(c) == 1 for c in cells), (op.name, cells)
    assert got == {op.name: op.expected for op in table}
    # Only staff_admin merged and erased: the refused calls, made first, changed nothing.
    rows = await fetch_rows(
        committed_db, "select status from golden_customer where id in (:x, :y, :z)", x=c1, y=c2, z=c3
    )
    assert sorted(r[0] for r in rows) == ["active", "erased", "merged"]
