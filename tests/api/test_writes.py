"""The write mutations of #17 over HTTP: recording interactions of channels without a connector, consents,
staff corrections of a profile (which win survivorship), and the dry run of a merge."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from gql.transport.exceptions import TransportQueryError
from sqlalchemy.ext.asyncio import AsyncEngine

from schema.relay import to_global_id
from tests.api.graphql_support import api_server
from tests.api.seed import seed
from tests.conftest import fetch_rows

RECORD = """mutation ($x: RecordInteractionInput!) { recordInteraction(input: $x) {
  interaction { id channel externalId type direction occurredAt summary } replayed
  userErrors { field message code } } }"""
RECORD_MANY = """mutation ($items: [RecordInteractionInput!]!) { recordInteractions(input: {items: $items}) {
  interactions { channel externalId type summary } recorded replayed userErrors { field message code } } }"""
TIMELINE = """query ($id: ID!) { customer(id: $id) { interactions(first: 50, filter: {channel: "callcenter"}) {
  totalCount edges { node { externalId type summary } } } } }"""


def gid(pk: int) -> str:
    return to_global_id("Customer", pk)


async def add_callcenter(engine: AsyncEngine) -> None:
    """A channel without a connector, registered as an operator would."""
    async with engine.begin() as conn:
        await conn.execute(
            sa.text(
                "insert into channel (code, family, name, trust_rank) values ('callcenter', 'own', 'Call centre', 40)"
            )
        )


async def test_record_interaction_is_idempotent_on_the_channels_id(
    committed_db: AsyncEngine, database_url: str
) -> None:
    s = await seed(committed_db)
    await add_callcenter(committed_db)
    at = "2026-11-02T09:30:00+08:00"
    call = {"channel": "callcenter", "externalId": "call-1", "type": "call", "occurredAt": at,
            "customerId": gid(s.zhang), "summary": "asked about delivery", "payload": {"agent": "a7"}}  # fmt: skip
    with api_server(database_url) as api:
        first = (await api.query(RECORD, role="service", subject="cc-export", x=call))["recordInteraction"]
        # The same call sent again, with other content: the stored row answers, nothing changes.
        again = (await api.query(RECORD, role="staff", x={**call, "summary": "changed", "type": "visit"}))[
            "recordInteraction"
        ]
        # By an identifier, the way customerByIdentifier takes one (a phone as a person types it).
        by_phone = (
            await api.query(
                RECORD,
                x={
                    **call,
                    "externalId": "call-2",
                    "customerId": None,
                    "identifier": {"kind": "PHONE", "value": "+86 139-0000-1111"},
                },
            )
        )["recordInteraction"]
        # A merged customer's id records on the survivor.
        merged = (await api.query(RECORD, x={**call, "externalId": "call-3", "customerId": gid(s.absorbed)}))[
            "recordInteraction"
        ]
        timeline = (await api.query(TIMELINE, id=gid(s.zhang)))["customer"]["interactions"]
        with pytest.raises(TransportQueryError) as member:
            await api.query(RECORD, role="member", subject=str(s.zhang), x={**call, "externalId": "m"})
    assert first["userErrors"] == [] and first["replayed"] is False
    assert first["interaction"]["externalId"] == "call-1" and first["interaction"]["type"] == "call"
    assert datetime.fromisoformat(first["interaction"]["occurredAt"]) == datetime.fromisoformat(at)
    assert again == {**first, "replayed": True}
    assert by_phone["userErrors"] == [] and by_phone["replayed"] is False
    assert merged["userErrors"] == []
    assert timeline["totalCount"] == 2
    assert {e["node"]["externalId"] for e in timeline["edges"]} == {"call-1", "call-3"}
    assert member.value.errors and member.value.errors[0]["extensions"]["code"] == "FORBIDDEN"
    rows = await fetch_rows(
        committed_db,
        "select external_id, customer_id, type, summary, payload->>'agent' from interaction"
        " where channel_code = 'callcenter' order by external_id",
    )
    assert rows == [
        ("call-1", s.zhang, "call", "asked about delivery", "a7"),
        ("call-2", s.li, "call", "asked about delivery", "a7"),
        ("call-3", s.zhang, "call", "asked about delivery", "a7"),
    ]


async def test_a_batch_lands_its_good_items_and_names_the_bad_ones_by_index(
    committed_db: AsyncEngine, database_url: str
) -> None:
    s = await seed(committed_db)
    await add_callcenter(committed_db)
    ok = {"channel": "callcenter", "type": "call", "occurredAt": "2026-11-02T09:30:00+08:00",
          "customerId": gid(s.zhang)}  # fmt: skip
    future = (datetime.now(UTC) + timedelta(days=30)).isoformat()
    items = [
        {**ok, "externalId": "b-0"},
        {**ok, "externalId": "b-1", "occurredAt": future},
        {**ok, "externalId": "b-2", "channel": "fax"},
        {**ok, "externalId": "b-3", "direction": "sideways"},
        {**ok, "externalId": "b-4", "customerId": None, "identifier": {"kind": "EMAIL", "value": "nobody@x.cn"}},
        {**ok, "externalId": "b-5", "customerId": None},
        {**ok, "externalId": "b-6", "customerId": None, "identifier": {"kind": "EXTERNAL_ID", "value": "tmall:buyer-zw"}},
        {**ok, "externalId": "b-0", "summary": "the same key twice in one call"},
        {**ok, "externalId": "x" * 129},
    ]  # fmt: skip
    with api_server(database_url) as api:
        batch = (await api.query(RECORD_MANY, role="service", subject="cc", items=items))[
            "recordInteractions"
        ]
        replay = (await api.query(RECORD_MANY, role="service", subject="cc", items=items))[
            "recordInteractions"
        ]
        too_many = (await api.query(RECORD_MANY, items=[{**ok, "externalId": f"n{i}"} for i in range(501)]))[
            "recordInteractions"
        ]
    errors = {tuple(e["field"]): e["code"] for e in batch["userErrors"]}
    assert errors == {
        ("items", "1", "occurredAt"): "INVALID",
        ("items", "2", "channel"): "UNKNOWN_CHANNEL",
        ("items", "3", "direction"): "INVALID",
        ("items", "4", "identifier"): "NOT_FOUND",
        ("items", "5", "customerId"): "CUSTOMER_REQUIRED",
        ("items", "8", "externalId"): "INVALID",
    }
    assert [i and i["externalId"] for i in batch["interactions"]] == [
        "b-0", None, None, None, None, None, "b-6", "b-0", None,
    ]  # fmt: skip
    assert batch["interactions"][7]["summary"] is None  # the first of the key was stored
    assert (batch["recorded"], batch["replayed"]) == (2, 1)
    assert replay["interactions"] == batch["interactions"] and (replay["recorded"], replay["replayed"]) == (
        0,
        3,
    )
    assert too_many["userErrors"][0]["code"] == "TOO_MANY" and too_many["recorded"] == 0
    rows = await fetch_rows(
        committed_db,
        "select external_id, customer_id from interaction where channel_code = 'callcenter' order by 1",
    )
    assert rows == [("b-0", s.zhang), ("b-6", s.zhang)]
