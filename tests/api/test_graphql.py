"""The customer-360 GraphQL API through a real GraphQL client on loopback: authentication, roles, masking
and its audit, the profile with lineage, orders with lines and refunds, interactions, identifiers, Relay
paging, limits, and a constant number of SQL statements per query."""

from __future__ import annotations

import base64
import time

import httpx
import pytest
import sqlalchemy as sa
from gql import gql
from gql.transport.exceptions import TransportQueryError
from sqlalchemy.ext.asyncio import AsyncEngine

from api.auth import issue_token
from schema.relay import to_global_id
from tests.api.graphql_support import api_server
from tests.api.seed import seed
from tests.conftest import fetch_rows

PROFILE = """
query ($id: ID!) {
  customer(id: $id) {
    id customerId status
    name { value masked source { channel externalId updatedAt rule } }
    phone { value masked source { channel externalId rule } }
    email { value masked } birthday { value masked } city { value masked } address { value masked }
    orderCount totalSpent { fen yuan currency } firstOrderAt lastOrderAt
    identities { channel externalId phone phoneMasked linkRule }
    consents { purpose status recordedAt }
    mergeHistory { kind actor reason evidence absorbedCustomerIds }
    orders(first: 10) { totalCount edges { cursor node { externalId channel status total { fen yuan }
      placedAt lines { lineNo sku quantity amount { yuan } product { sku title category } }
      refunds { externalId lineNo amount { fen } status } } } pageInfo { hasNextPage endCursor } }
    interactions(first: 10) { totalCount edges { node { channel type occurredAt } } }
  }
}
"""


def gid(pk: int) -> str:
    return to_global_id("Customer", pk)


async def test_staff_sees_the_profile_masked_with_lineage(
    committed_db: AsyncEngine, database_url: str
) -> None:
    s = await seed(committed_db)
    with api_server(database_url) as api:
        data = (await api.query(PROFILE, id=gid(s.zhang)))["customer"]
    assert data["customerId"] == s.zhang and data["status"] == "active"
    assert data["name"] == {"value": "张*", "masked": True, "source": {"channel": "app", "externalId": "M0001",
                            "updatedAt": "2026-10-02T10:00:00+00:00", "rule": "trusted_channel"}}  # fmt: skip
    assert data["phone"]["value"] == "138****5678" and data["phone"]["masked"] is True
    assert data["phone"]["source"] == {
        "channel": "tmall",
        "externalId": "buyer-zw",
        "rule": "most_recent_verified",
    }
    assert data["email"]["value"] == "z***@163.com" and data["birthday"]["value"] == "1988-**-**"
    assert data["address"]["value"] == "***" and data["city"] == {"value": "杭州市", "masked": False}
    # Cancelled orders are not spent: 123.00 + 456.00.
    assert data["orderCount"] == 2 and data["totalSpent"] == {
        "fen": 57900,
        "yuan": "579.00",
        "currency": "CNY",
    }
    assert (
        data["firstOrderAt"] == "2026-10-01T10:00:00+00:00"
        and data["lastOrderAt"] == "2026-10-03T10:00:00+00:00"
    )
    assert {i["channel"] for i in data["identities"]} == {"tmall", "app"}
    assert all(i["phone"] == "138****5678" for i in data["identities"])
    assert data["consents"] == [
        {"purpose": "marketing_sms", "status": "withdrawn", "recordedAt": "2026-10-06T10:00:00+00:00"}
    ]
    assert data["mergeHistory"] == [{"kind": "merge", "actor": "staff:alice", "reason": "same phone",
                                     "evidence": {"rule": "phone"}, "absorbedCustomerIds": [gid(s.absorbed)]}]  # fmt: skip
    orders = data["orders"]
    assert orders["totalCount"] == 3 and orders["pageInfo"]["hasNextPage"] is False
    assert [e["node"]["externalId"] for e in orders["edges"]] == ["T2", "A1", "T1"]  # newest first
    t1 = orders["edges"][2]["node"]
    assert t1["total"] == {"fen": 12300, "yuan": "123.00"}
    assert t1["lines"] == [{"lineNo": 1, "sku": "SKU-1", "quantity": 1, "amount": {"yuan": "123.00"},
                            "product": {"sku": "SKU-1", "title": "Linen duvet", "category": "bedding"}}]  # fmt: skip
    assert t1["refunds"] == [{"externalId": "R1", "lineNo": 1, "amount": {"fen": 2300}, "status": "success"}]
    assert data["interactions"]["totalCount"] == 3
    assert [e["node"]["type"] for e in data["interactions"]["edges"]] == ["page_view", "message", "follow"]
    # Masked reads are not audited.
    assert await fetch_rows(committed_db, "select count(*) from audit_log") == [(0,)]


async def test_pii_read_scope_unmasks_and_is_audited(committed_db: AsyncEngine, database_url: str) -> None:
    s = await seed(committed_db)
    with api_server(database_url) as api:
        data = (await api.query(PROFILE, subject="alice", scopes=["pii:read"], id=gid(s.zhang)))["customer"]
    assert data["name"]["value"] == "张伟" and data["name"]["masked"] is False
    assert data["phone"]["value"] == "+8613812345678" and data["email"]["value"] == "zhangwei@163.com"
    assert data["address"]["value"] == "文三路 90 号"
    audit = await fetch_rows(
        committed_db, "select actor, actor_role, action, subject_id, detail from audit_log"
    )
    assert len(audit) == 1
    actor, role, action, subject, detail = audit[0]
    assert (actor, role, action, subject) == ("alice", "staff", "pii.read", str(s.zhang))
    assert {"name", "phone", "email", "address", "birthday"} <= set(detail["fields"])


async def test_a_member_sees_only_themselves_unmasked(committed_db: AsyncEngine, database_url: str) -> None:
    s = await seed(committed_db)
    with api_server(database_url) as api:
        me = await api.query(
            "{ me { customerId phone { value masked } orders { totalCount } } }",
            role="member",
            subject=str(s.zhang),
        )
        other = await api.query(PROFILE, role="member", subject=str(s.zhang), id=gid(s.li))
        by_phone = await api.query('{ customerByIdentifier(kind: PHONE, value: "13900001111") { customerId } }',
                                   role="member", subject=str(s.zhang))  # fmt: skip
        with pytest.raises(TransportQueryError) as staff_me:
            await api.query("{ me { customerId } }")
    assert me["me"] == {
        "customerId": s.zhang,
        "phone": {"value": "+8613812345678", "masked": False},
        "orders": {"totalCount": 3},
    }
    assert other["customer"] is None and by_phone["customerByIdentifier"] is None
    assert staff_me.value.errors and staff_me.value.errors[0]["extensions"]["code"] == "FORBIDDEN"
    # A member reading their own data is not an unmasked read by staff: nothing to audit.
    assert await fetch_rows(committed_db, "select count(*) from audit_log") == [(0,)]


async def test_requests_without_a_valid_token_are_401(database_url: str) -> None:
    with api_server(database_url) as api:
        expired = issue_token(api.settings, "alice", "staff", now=time.time() - 7200, ttl_seconds=60)
        other_audience = api.settings.model_copy(update={"jwt_audience": "someone-else"})
        wrong_aud = issue_token(other_audience, "alice", "staff")
        forged = issue_token(api.settings.model_copy(update={"jwt_secret": "x" * 40}), "alice", "staff_admin")
        replies = {}
        async with httpx.AsyncClient(base_url=api.base) as client:
            for name, header in {"missing": None, "basic": "Basic YWxpY2U6eA==", "expired": f"Bearer {expired}",
                                 "audience": f"Bearer {wrong_aud}", "forged": f"Bearer {forged}"}.items():  # fmt: skip
                headers = {"Authorization": header} if header else {}
                replies[name] = await client.post(
                    "/graphql", json={"query": "{ health { database } }"}, headers=headers
                )
        async with api.client(token=expired) as session:
            # gql reads the 401's GraphQL-shaped body: the client sees the reason, not just a status.
            with pytest.raises(TransportQueryError) as caught:
                await session.execute(gql("{ health { database } }"))
    assert all(r.status_code == 401 for r in replies.values())
    assert all(r.headers["www-authenticate"].startswith("Bearer") for r in replies.values())
    messages = {k: r.json()["errors"][0]["message"] for k, r in replies.items()}
    assert "missing bearer token" in messages["missing"] and "Bearer <token>" in messages["basic"]
    assert "expired" in messages["expired"] and "audience" in messages["audience"]
    assert "invalid bearer token" in messages["forged"]
    assert caught.value.errors and caught.value.errors[0]["extensions"]["code"] == "UNAUTHENTICATED"


async def test_identifiers_in_the_forms_people_type(committed_db: AsyncEngine, database_url: str) -> None:
    s = await seed(committed_db)
    lookups = {
        ("PHONE", "+86 138-1234-5678"): s.zhang,
        ("PHONE", "138 1234 5678"): s.zhang,
        ("EMAIL", "ZhangWei@163.COM"): s.zhang,
        ("WECHAT_UNIONID", "union-zw"): s.zhang,
        ("MEMBER_NO", "m-0001"): s.zhang,
        ("EXTERNAL_ID", "pos:card-ln"): s.li,
        ("PHONE", "13700000000"): None,
    }
    with api_server(database_url) as api:
        found = {}
        for (kind, value), _ in lookups.items():
            reply = await api.query(
                f'{{ customerByIdentifier(kind: {kind}, value: "{value}") {{ customerId }} }}'
            )
            node = reply["customerByIdentifier"]
            found[(kind, value)] = node and node["customerId"]
        # A merged id answers with its survivor; node(id:) resolves a global id.
        merged = await api.query(
            "query ($id: ID!) { customer(id: $id) { customerId } node(id: $id) { id } }", id=gid(s.absorbed)
        )
        with pytest.raises(TransportQueryError) as bad:
            await api.query('{ customerByIdentifier(kind: PHONE, value: "abc-not-a-phone") { customerId } }')
    assert found == lookups
    assert merged["customer"] == {"customerId": s.zhang} and merged["node"] == {"id": gid(s.zhang)}
    assert bad.value.errors and bad.value.errors[0]["extensions"]["code"] == "BAD_USER_INPUT"


async def test_orders_page_by_keyset_cursor_with_filters(
    committed_db: AsyncEngine, database_url: str
) -> None:
    s = await seed(committed_db, extra_orders=5)
    page_query = """query ($id: ID!, $after: String, $filter: OrderFilter) { customer(id: $id) {
        orders(first: 3, after: $after, filter: $filter) { totalCount
          edges { cursor node { externalId } } pageInfo { hasNextPage hasPreviousPage startCursor endCursor } } } }"""
    seen: list[str] = []
    with api_server(database_url) as api:
        after = None
        while True:
            orders = (await api.query(page_query, id=gid(s.zhang), after=after))["customer"]["orders"]
            assert orders["totalCount"] == 8
            seen += [e["node"]["externalId"] for e in orders["edges"]]
            assert orders["pageInfo"]["hasPreviousPage"] is (after is not None)
            if not orders["pageInfo"]["hasNextPage"]:
                break
            after = orders["pageInfo"]["endCursor"]
        tmall = (await api.query(page_query, id=gid(s.zhang), filter={"channel": "tmall"}))["customer"][
            "orders"
        ]
        window = (await api.query(page_query, id=gid(s.zhang),
                                  filter={"placedAfter": "2026-10-01T00:00:00+00:00", "placedBefore": "2026-10-03T12:00:00+00:00"}))  # fmt: skip
        with pytest.raises(TransportQueryError) as too_many:
            await api.query(
                "query ($id: ID!) { customer(id: $id) { orders(first: 500) { totalCount } } }",
                id=gid(s.zhang),
            )
        with pytest.raises(TransportQueryError) as bad_cursor:
            await api.query(page_query, id=gid(s.zhang), after=base64.urlsafe_b64encode(b'["x"]').decode())
    assert seen == ["T2", "A1", "T1", "X0", "X1", "X2", "X3", "X4"]  # newest first, each once
    assert [e["node"]["externalId"] for e in tmall["edges"]] == ["T2", "T1"] and tmall["totalCount"] == 2
    assert [e["node"]["externalId"] for e in window["customer"]["orders"]["edges"]] == ["A1", "T1"]
    assert too_many.value.errors and "first must be between 0 and 100" in too_many.value.errors[0]["message"]
    assert bad_cursor.value.errors and bad_cursor.value.errors[0]["extensions"]["code"] == "BAD_USER_INPUT"


async def test_statements_per_query_do_not_grow_with_the_data(
    committed_db: AsyncEngine, database_url: str
) -> None:
    """The whole profile (identities, consents, merges, orders with lines and refunds, interactions,
    summaries, lineage) in a constant number of statements, whether a customer has 3 orders or 30."""
    s = await seed(committed_db, extra_orders=27)
    async with committed_db.begin() as conn:  # li, with 1 order, gets lineage too: same shape, less data
        await conn.execute(sa.text("update golden_customer g set lineage = jsonb_build_object('name', "
                                   "jsonb_build_object('source_identity_id', si.id, 'channel', 'pos', 'rule', 'only')) "
                                   "from source_identity si where si.customer_id = g.id and g.id = :li"), {"li": s.li})  # fmt: skip
    counts: dict[str, list[int]] = {}
    audited: dict[str, int] = {}
    for mode in ("on", "off"):  # the compiled read path, and the executor with its DataLoaders
        with api_server(database_url, api_compiled=mode) as api:
            await api.query("{ health { database } }")  # the engine's first-connect queries
            for customer in (s.li, s.zhang):
                api.statements.reset()
                await api.query(PROFILE, id=gid(customer))
                counts.setdefault(mode, []).append(api.statements.count)
            assert api.reads.compiled == (2 if mode == "on" else 0)
            api.statements.reset()
            await api.query(PROFILE, scopes=["pii:read"], id=gid(s.zhang))
            audited[mode] = api.statements.count
    # Compiled: one statement. Executor: customer, identity (lineage), order summary, identities,
    # consents, merges, orders page, lines, refunds, interactions page.
    assert counts == {"on": [1, 1], "off": [10, 10]}, counts
    # An unmasked read is audited by the executor on either setting: its statements plus the audit insert.
    assert audited == {"on": 11, "off": 11}


async def test_depth_and_size_limits(database_url: str) -> None:
    deep = '{ customer(id: "x") { orders { edges { node { lines { product { sku } } } } } } }'
    with api_server(database_url, api_max_depth=4) as api:
        with pytest.raises(TransportQueryError) as too_deep:
            await api.query(deep)
    with api_server(database_url, api_max_tokens=100) as api:
        with pytest.raises(TransportQueryError) as too_big:
            await api.query("{ " + " ".join(f"a{i}: health {{ database }}" for i in range(25)) + " }")
    assert too_deep.value.errors and "exceeds maximum operation depth" in too_deep.value.errors[0]["message"]
    assert too_big.value.errors and "token" in too_big.value.errors[0]["message"].lower()


def test_production_refuses_the_development_secret(database_url: str) -> None:
    from api.app import create_app
    from infra.settings import Settings

    with pytest.raises(ValueError, match="C360_JWT_SECRET"):
        create_app(Settings(database_url=database_url, env="production"))
    with pytest.raises(ValueError, match="C360_ERASURE_KEY"):
        create_app(Settings(database_url=database_url, env="production", jwt_secret="s" * 40))
    create_app(
        Settings(database_url=database_url, env="production", jwt_secret="s" * 40, erasure_key="k" * 40)
    )


async def test_a_caller_over_its_rate_gets_429_and_others_do_not(database_url: str) -> None:
    with api_server(database_url, api_rate_per_minute=5) as api:
        async with httpx.AsyncClient(base_url=api.base) as client:

            async def ask(subject: str) -> httpx.Response:
                headers = {"Authorization": f"Bearer {api.token('service', subject)}"}
                return await client.post(
                    "/graphql", json={"query": "{ health { database } }"}, headers=headers
                )

            busy = [await ask("runaway-job") for _ in range(7)]
            other = await ask("polite-job")
    assert [r.status_code for r in busy] == [200] * 5 + [429] * 2
    assert int(busy[-1].headers["retry-after"]) >= 1
    assert busy[-1].json()["errors"][0]["extensions"]["code"] == "RATE_LIMITED"
    assert other.status_code == 200
