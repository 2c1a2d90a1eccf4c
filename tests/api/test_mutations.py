"""Merge, unmerge and review decisions through the API: staff_admin only, idempotent by key, audited, and
the customer's orders follow the merge and come back with the unmerge."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
import sqlalchemy as sa
from gql.transport.exceptions import TransportQueryError
from sqlalchemy.ext.asyncio import AsyncEngine

from schema.relay import to_global_id
from tests.api.graphql_support import api_server
from tests.api.seed import seed
from tests.conftest import fetch_rows

MERGE = """mutation ($ids: [ID!]!, $key: String!) {
  mergeCustomers(input: {customerIds: $ids, reason: "same person", idempotencyKey: $key}) {
    customer { customerId orderCount } mergeEventId replayed userErrors { field message code } } }"""
UNMERGE = """mutation ($event: ID!, $key: String!) {
  unmerge(input: {mergeEventId: $event, reason: "two people", idempotencyKey: $key}) {
    customers { customerId orderCount } replayed userErrors { code message } } }"""


def gid(pk: int) -> str:
    return to_global_id("Customer", pk)


async def test_merge_and_unmerge_are_idempotent_and_audited(
    committed_db: AsyncEngine, database_url: str
) -> None:
    s = await seed(committed_db)
    with api_server(database_url) as api:
        with pytest.raises(TransportQueryError) as staff:
            await api.query(MERGE, ids=[gid(s.zhang), gid(s.li)], key="k1")
        first = (
            await api.query(
                MERGE, role="staff_admin", subject="alice", ids=[gid(s.zhang), gid(s.li)], key="k1"
            )
        )["mergeCustomers"]
        again = (
            await api.query(
                MERGE, role="staff_admin", subject="alice", ids=[gid(s.zhang), gid(s.li)], key="k1"
            )
        )["mergeCustomers"]
        li_now = await api.query("query ($id: ID!) { customer(id: $id) { customerId } }", id=gid(s.li))
        undo = (
            await api.query(
                UNMERGE, role="staff_admin", subject="alice", event=first["mergeEventId"], key="u1"
            )
        )["unmerge"]
        undo_again = (
            await api.query(
                UNMERGE, role="staff_admin", subject="alice", event=first["mergeEventId"], key="u1"
            )
        )["unmerge"]
        # A new key for the same event is a second unmerge: refused, as data.
        refused = (
            await api.query(
                UNMERGE, role="staff_admin", subject="alice", event=first["mergeEventId"], key="u2"
            )
        )["unmerge"]
        single = (await api.query(MERGE, role="staff_admin", subject="alice", ids=[gid(s.li)], key="k2"))[
            "mergeCustomers"
        ]
    assert staff.value.errors and staff.value.errors[0]["extensions"]["code"] == "FORBIDDEN"
    assert first["userErrors"] == [] and first["replayed"] is False
    # zhang (older id) survives with li's order too.
    assert first["customer"] == {"customerId": s.zhang, "orderCount": 3}
    assert again == {**first, "replayed": True}
    assert li_now["customer"] == {"customerId": s.zhang}
    assert undo["userErrors"] == [] and undo["replayed"] is False
    assert sorted((c["customerId"], c["orderCount"]) for c in undo["customers"]) == [(s.zhang, 2), (s.li, 1)]
    assert undo_again["replayed"] is True and undo_again["customers"] == undo["customers"]
    assert refused["userErrors"] and refused["userErrors"][0]["code"] == "CANNOT_UNMERGE"
    assert single["userErrors"] == [
        {"field": ["customerIds"], "message": "give at least two customers", "code": "TOO_FEW"}
    ]
    events = await fetch_rows(
        committed_db, "select kind from merge_event where actor = 'staff_admin:alice' order by id"
    )
    assert events == [("merge",), ("unmerge",)]  # retries did nothing twice
    audited = await fetch_rows(
        committed_db,
        "select action from audit_log where actor = 'staff_admin:alice' and action like 'api.%' order by id",
    )
    assert audited == [("api.merge",), ("api.unmerge",)]


async def test_review_queue_and_decisions(committed_db: AsyncEngine, database_url: str) -> None:
    s = await seed(committed_db)
    async with committed_db.begin() as conn:
        li_identity = (
            await conn.execute(sa.text("select id from source_identity where customer_id = :c"), {"c": s.li})
        ).scalar_one()
        left, right = sorted([s.zhang_tmall_identity, li_identity])
        await conn.execute(sa.text("insert into identity_review (left_identity_id, right_identity_id, score, features, status) "
                                   "values (:l, :r, 0.7, '{\"name\": 0.4}', 'pending')"), {"l": left, "r": right})  # fmt: skip
    queue_query = "{ reviewQueue(first: 5) { totalCount edges { node { id score features status left { channel phone } right { channel } } } } }"
    decide = """mutation ($id: ID!) { decideReview(input: {reviewId: $id, accept: false}) {
        review { status decidedBy } userErrors { code } } }"""
    with api_server(database_url) as api:
        queue = (await api.query(queue_query))["reviewQueue"]
        with pytest.raises(TransportQueryError):
            await api.query(queue_query, role="member", subject=str(s.zhang))
        review_id = queue["edges"][0]["node"]["id"]
        rejected = (await api.query(decide, role="staff_admin", subject="bob", id=review_id))["decideReview"]
        twice = (await api.query(decide, role="staff_admin", subject="bob", id=review_id))["decideReview"]
        after = (await api.query(queue_query))["reviewQueue"]
    assert queue["totalCount"] == 1 and queue["edges"][0]["node"]["score"] == 0.7
    assert queue["edges"][0]["node"]["features"] == {"name": 0.4}
    assert queue["edges"][0]["node"]["left"] == {
        "channel": "tmall",
        "phone": "138****5678",
    }  # masked for staff
    assert rejected == {"review": {"status": "rejected", "decidedBy": "staff_admin:bob"}, "userErrors": []}
    assert twice["userErrors"] == [{"code": "NOT_PENDING"}]
    assert after["totalCount"] == 0


ERASE = """mutation ($id: ID!, $key: String!, $reason: String!) {
  eraseCustomer(input: {customerId: $id, reason: $reason, idempotencyKey: $key}) {
    erasedCustomerIds identities suppressed replayed userErrors { field code message } } }"""


async def test_erasure_through_the_api(committed_db: AsyncEngine, database_url: str) -> None:
    """staff_admin only; a retry replays; the customer reads back as an erased shell with no attributes;
    the change feed says erased; a second erasure is refused as data."""
    s = await seed(committed_db)
    profile = "query ($id: ID!) { customer(id: $id) { status name { value } phone { value } orderCount } }"
    feed = "{ customerChanges(first: 100) { edges { node { kind customerId } } } }"
    with api_server(database_url) as api:
        with pytest.raises(TransportQueryError) as staff:
            await api.query(ERASE, id=gid(s.zhang), key="e1", reason="PIPL #7")
        args: dict[str, Any] = {"id": gid(s.zhang), "reason": "PIPL #7"}
        before = (await api.query(profile, role="staff_admin", subject="dpo", id=gid(s.zhang)))["customer"]
        first = (await api.query(ERASE, role="staff_admin", subject="dpo", key="e1", **args))["eraseCustomer"]
        again = (await api.query(ERASE, role="staff_admin", subject="dpo", key="e1", **args))["eraseCustomer"]
        second = (await api.query(ERASE, role="staff_admin", subject="dpo", key="e2", **args))[
            "eraseCustomer"
        ]
        blank = (
            await api.query(ERASE, role="staff_admin", subject="dpo", key="e3", id=gid(s.li), reason="")
        )["eraseCustomer"]
        after = (await api.query(profile, role="staff_admin", subject="dpo", id=gid(s.zhang)))["customer"]
        # The feed serves a change once every transaction that began before it ended (other work on a
        # shared server delays it): read until the erasure shows, or a minute has passed.
        deadline = time.monotonic() + 60
        while True:
            changes = (await api.query(feed, role="service", subject="sync"))["customerChanges"]["edges"]
            if any(e["node"]["kind"] == "erased" for e in changes) or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.2)
    assert staff.value.errors and staff.value.errors[0]["extensions"]["code"] == "FORBIDDEN"
    assert first["userErrors"] == [] and first["replayed"] is False
    assert (
        gid(s.zhang) in first["erasedCustomerIds"] and first["identities"] >= 2 and first["suppressed"] >= 4
    )
    assert again == {**first, "replayed": True}
    assert (
        second["userErrors"][0]["code"] == "CANNOT_ERASE"
        and "already erased" in second["userErrors"][0]["message"]
    )
    assert blank["userErrors"][0]["field"] == ["reason"]
    assert after["status"] == "erased" and after["name"]["value"] is None and after["phone"]["value"] is None
    assert before["name"]["value"] is not None  # (masked for staff without pii:read)
    assert after["orderCount"] == before["orderCount"] > 0  # orders stay, for accounting
    assert {"kind": "erased", "customerId": s.zhang} in [e["node"] for e in changes]
