"""Analytics through the API over real HTTP: the customer's measures, RFM, tier, lifecycle, CLV, portrait,
tags and segments in a constant number of statements; filters on `customers`; the overview; segments
defined by staff_admin; manual tags; who may see what."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from gql.transport.exceptions import TransportQueryError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from crm.analytics.config import get_config
from crm.analytics.service import recompute_in
from crm.loyalty.service import in_transaction
from schema.relay import to_global_id
from tests.api.graphql_support import api_server
from tests.crm.loyalty_support import add_customer, add_identity, add_order

NOW = datetime.now(UTC)


async def seed(engine: AsyncEngine, plans: list[dict[str, Any]]) -> list[int]:
    """Customers with orders `days_ago` (100 yuan each unless `fen`), then a full analytics run."""

    async def work(conn: AsyncConnection) -> list[int]:
        ids = []
        for plan in plans:
            c = await add_customer(conn, city=plan.get("city"), gender=plan.get("gender"))
            for channel in plan.get("channels", ()):
                await add_identity(conn, c, channel)
            for days in plan.get("orders", ()):
                await add_order(conn, c, plan.get("fen", 10_000), NOW - timedelta(days=days))
            ids.append(c)
        await recompute_in(conn, get_config(), None, NOW)
        return ids

    return await in_transaction(engine, work)


CUSTOMER_ANALYTICS = """query ($first: Int) { customers(first: $first) { edges { node { customerId
    metrics { orderCount totalSpent { yuan } netSpent { yuan } averageOrderValue { yuan } purchaseFrequency
              daysSinceLastOrder preferredChannel preferredCategory lastOrderAt }
    rfm { recency frequency monetary cell cellName recencyDays }
    valueTier abcClass
    lifecycle { stage since history { stage fromStage startedAt endedAt } }
    clv { historical { yuan } predicted12m { yuan } modelFittedAt }
    portrait { ageBand gender city cityTier channels categories priceSensitivity }
    tags { name source addedBy }
    segments { code name enteredAt } } } } }"""


async def test_customer_analytics_in_constant_statements(
    committed_db: AsyncEngine, database_url: str
) -> None:
    plans = [
        {"orders": [5 * i + 1, 5 * i + 40], "fen": 100_000 * (i + 1), "channels": ["tmall"]}
        for i in range(12)
    ]
    await seed(committed_db, plans)
    counts = []
    with api_server(database_url) as api:
        await api.query("{ health { database } }")
        for first in (2, 12):
            api.statements.reset()
            edges = (await api.query(CUSTOMER_ANALYTICS, first=first))["customers"]["edges"]
            assert len(edges) == first
            counts.append(api.statements.count)
    assert counts[0] == counts[1], counts
    top = edges[-1]["node"]  # the biggest spender: 12000 yuan each order, 2 orders
    assert top["metrics"]["orderCount"] == 2
    assert top["metrics"]["netSpent"]["yuan"] == "24000.00"
    assert top["metrics"]["averageOrderValue"]["yuan"] == "12000.00"
    assert top["valueTier"] == "high"
    assert top["clv"]["historical"]["yuan"] == "24000.00"
    assert top["lifecycle"]["stage"] == "active"  # first order 95 days ago, last 56
    assert top["lifecycle"]["history"][0]["fromStage"] is None
    assert top["rfm"]["monetary"] == 5 and top["rfm"]["recency"] == 1
    assert top["portrait"]["channels"] == ["tmall"]
    assert {"name": "高价值", "source": "system", "addedBy": None} in top["tags"]


async def test_members_see_their_measures_but_not_the_labels(
    committed_db: AsyncEngine, database_url: str
) -> None:
    me, other = await seed(committed_db, [{"orders": [3]}, {"orders": [4]}])
    with api_server(database_url) as api:
        mine = await api.query("{ me { metrics { orderCount } } }", role="member", subject=str(me))
        assert mine["me"]["metrics"]["orderCount"] == 1
        with pytest.raises(TransportQueryError, match="staff or service only"):
            await api.query("{ me { rfm { cell } } }", role="member", subject=str(me))
        theirs = await api.query(
            "query ($id: ID!) { customer(id: $id) { metrics { orderCount } } }",
            role="member",
            subject=str(me),
            id=to_global_id("Customer", other),
        )
        assert theirs["customer"] is None
        with pytest.raises(TransportQueryError, match="staff or service only"):
            await api.query("{ analyticsOverview { customers } }", role="member", subject=str(me))


async def test_filters_and_overview(committed_db: AsyncEngine, database_url: str) -> None:
    churned, active, big, potential = await seed(
        committed_db,
        [
            {"orders": [400], "city": "上海市"},
            {"orders": [10, 20], "city": "上海市"},
            {"orders": [100], "fen": 700_000, "channels": ["wechat", "tmall"]},
            {"channels": ["wechat"]},
        ],
    )
    q = "query ($f: CustomerFilter) { customers(filter: $f) { totalCount edges { node { customerId } } } }"

    async def ids(api: Any, f: dict[str, Any]) -> list[int]:
        found = (await api.query(q, f=f))["customers"]
        return sorted(e["node"]["customerId"] for e in found["edges"])

    with api_server(database_url) as api:
        assert await ids(api, {"lifecycle": ["churned"]}) == [churned]
        assert await ids(api, {"lifecycle": ["potential"]}) == [potential]
        assert await ids(api, {"valueTier": ["high"]}) == [big]
        assert await ids(api, {"tag": "多渠道"}) == [big]
        assert await ids(api, {"segment": "shanghai-repeat"}) == [active]
        assert await ids(api, {"segment": "never-bought-followers"}) == [potential]
        assert await ids(api, {"netSpentFen": {"gte": 20_000}}) == [active, big]
        assert await ids(api, {"city": {"eq": "上海市"}, "daysSinceLastOrder": {"lte": 30}}) == [active]
        assert await ids(api, {"rule": {"not": {"lifecycle": ["churned", "potential"]}}}) == [active, big]
        assert await ids(api, {"or": [{"lifecycle": ["churned"]}, {"tag": "高价值"}]}) == [churned, big]
        with pytest.raises(TransportQueryError, match="filter.rule"):
            await ids(api, {"rule": {"lifecycle": ["asleep"]}})
        o = (
            await api.query(
                "{ analyticsOverview { customers byLifecycle { key count } byValueTier { key count }"
                " byRfmCell { key count } byChannel { key count } rfmGrid { recency frequency cell count }"
                " rfmCutPoints { recencyDays frequency monetaryYuan customers } } }"
            )
        )["analyticsOverview"]
    assert o["customers"] == 4
    assert {c["key"]: c["count"] for c in o["byLifecycle"]} == {
        "churned": 1,
        "active": 1,
        "new": 1,
        "potential": 1,
    }
    assert {c["key"]: c["count"] for c in o["byValueTier"]} == {"low": 2, "high": 1}
    assert sum(c["count"] for c in o["rfmGrid"]) == 3
    assert o["rfmCutPoints"]["customers"] == 3
    assert o["byChannel"] == [{"key": "tmall", "count": 3}]


DEFINE = """mutation ($code: String!, $rule: JSON!) { defineSegment(input: {code: $code, name: "test", rule: $rule}) {
    segment { id code source rule size members(first: 10) { totalCount edges { node { customerId } } }
              history { day size } }
    userErrors { field message code } } }"""


async def test_staff_admin_defines_segments(committed_db: AsyncEngine, database_url: str) -> None:
    one, two = await seed(committed_db, [{"orders": [3]}, {"orders": [3, 9, 20]}])
    rule = {"and": [{"measure": "order_count", "gte": 2}, {"lifecycle": ["new", "active"]}]}
    with api_server(database_url) as api:
        with pytest.raises(TransportQueryError, match="staff_admin only"):
            await api.query(DEFINE, role="staff", code="repeat", rule=rule)
        done = (await api.query(DEFINE, role="staff_admin", subject="boss", code="repeat", rule=rule))[
            "defineSegment"
        ]
        assert done["userErrors"] == []
        seg = done["segment"]
        assert (seg["code"], seg["source"], seg["size"]) == ("repeat", "api", 1)
        assert [e["node"]["customerId"] for e in seg["members"]["edges"]] == [two]
        assert len(seg["history"]) == 1 and seg["history"][0]["size"] == 1
        bad = (await api.query(DEFINE, role="staff_admin", code="bad", rule={"measure": "order_count"}))[
            "defineSegment"
        ]
        assert bad["segment"] is None and bad["userErrors"][0]["code"] == "BAD_RULE"
        assert "needs at least one of eq" in bad["userErrors"][0]["message"]
        taken = (await api.query(DEFINE, role="staff_admin", code="vip-at-risk", rule=rule))["defineSegment"]
        assert taken["userErrors"][0]["code"] == "CONFIG_SEGMENT"
        # Redefining replaces the rule; the members follow at once.
        again = await api.query(
            DEFINE, role="staff_admin", code="repeat", rule={"measure": "order_count", "gte": 1}
        )
        assert again["defineSegment"]["segment"]["size"] == 2
        listed = (await api.query("{ segments(first: 100) { totalCount edges { node { code size } } } }"))[
            "segments"
        ]
        codes = {e["node"]["code"]: e["node"]["size"] for e in listed["edges"]}
        assert codes["repeat"] == 2 and "vip-at-risk" in codes
        fetched = await api.query(
            "query ($id: ID!) { segment(id: $id) { code size } }", id=again["defineSegment"]["segment"]["id"]
        )
        assert fetched["segment"] == {"code": "repeat", "size": 2}
    assert one


TAG = """mutation ($c: ID!, $t: String!) { tagCustomer(input: {customerId: $c, tag: $t}) {
    tags { name source addedBy } userErrors { code } } }"""
UNTAG = """mutation ($c: ID!, $t: String!) { untagCustomer(input: {customerId: $c, tag: $t}) {
    tags { name source } userErrors { code } } }"""


async def test_manual_tags_by_staff(committed_db: AsyncEngine, database_url: str) -> None:
    [c] = await seed(committed_db, [{"orders": [3], "fen": 900_000}])
    gid = to_global_id("Customer", c)
    with api_server(database_url) as api:
        done = (await api.query(TAG, subject="desk-7", c=gid, t="送货上门"))["tagCustomer"]
        assert {"name": "送货上门", "source": "manual", "addedBy": "staff:desk-7"} in done["tags"]
        again = (await api.query(TAG, subject="desk-8", c=gid, t="送货上门"))["tagCustomer"]
        assert again["tags"] == done["tags"]  # tagging twice changes nothing
        refused = (await api.query(TAG, c=gid, t="高价值"))["tagCustomer"]
        assert refused["userErrors"] == [{"code": "SYSTEM_TAG"}]
        kept = (await api.query(UNTAG, c=gid, t="高价值"))["untagCustomer"]
        assert kept["userErrors"] == [{"code": "SYSTEM_TAG"}]
        gone = (await api.query(UNTAG, c=gid, t="送货上门"))["untagCustomer"]
        assert sorted(t["name"] for t in gone["tags"]) == sorted(["高价值", "新客"])
        assert {t["source"] for t in gone["tags"]} == {"system"}
        with pytest.raises(TransportQueryError, match="staff only"):
            await api.query(TAG, role="service", c=gid, t="x")
    # A full run keeps manual tags it has no rule for.
    await in_transaction(
        committed_db,
        lambda conn: conn.execute(
            sa.text(
                "insert into customer_tag (customer_id, tag_id, source) select :c, id, 'manual' from tag"
                " where name = '送货上门'"
            ),
            {"c": c},
        ),
    )

    async def rerun(conn: AsyncConnection) -> None:
        await recompute_in(conn, get_config(), None, NOW)

    await in_transaction(committed_db, rerun)
    with api_server(database_url) as api:
        node = await api.query("query ($id: ID!) { customer(id: $id) { tags { name source } } }", id=gid)
    got = {t["name"]: t["source"] for t in node["customer"]["tags"]}
    assert got == {"送货上门": "manual", "高价值": "system", "新客": "system"}


HOUSEHOLD = """query ($id: ID!) { customer(id: $id) { household { id kind status role totalSpent { yuan }
    members { customerId role netSpent { yuan } } } } }"""
SPLIT = """mutation ($h: ID!, $c: [ID!]) { splitHousehold(input: {householdId: $h, customerIds: $c}) {
    household { status members { customerId } } userErrors { code } } }"""


async def test_households_through_the_api(committed_db: AsyncEngine, database_url: str) -> None:
    async def work(conn: AsyncConnection) -> list[int]:
        ids = [await add_customer(conn) for _ in range(3)]
        for c in ids:
            await conn.execute(
                sa.text(
                    "insert into source_identity (channel_code, external_id, customer_id, phone_verified, province,"
                    " city, address_detail) values ('tmall', 'h-' || gen_random_uuid(), :c, false, '浙江省', '杭州市',"
                    " '文三路90号5幢')"
                ),
                {"c": c},
            )
        await add_order(conn, ids[0], 30_000, NOW - timedelta(days=2))
        await add_order(conn, ids[1], 12_000, NOW - timedelta(days=2))
        await recompute_in(conn, get_config(), None, NOW)
        return ids

    await in_transaction(
        committed_db,
        lambda conn: conn.execute(
            sa.text(
                "insert into channel (code, family, name, trust_rank) values ('tmall', 'marketplace', 'tmall', 50)"
            )
        ),
    )
    a, b, c = await in_transaction(committed_db, work)
    with api_server(database_url) as api:
        h = (await api.query(HOUSEHOLD, id=to_global_id("Customer", b)))["customer"]["household"]
        assert (h["kind"], h["status"], h["role"], h["totalSpent"]["yuan"]) == (
            "address",
            "auto",
            "member",
            "420.00",
        )
        roles = {m["customerId"]: m["role"] for m in h["members"]}
        assert roles == {to_global_id("Customer", a): "orderer", to_global_id("Customer", b): "member",
                         to_global_id("Customer", c): "recipient"}  # fmt: skip
        with pytest.raises(TransportQueryError, match="staff only"):
            await api.query(SPLIT, role="service", h=h["id"], c=[to_global_id("Customer", c)])
        split = (await api.query(SPLIT, h=h["id"], c=[to_global_id("Customer", c)]))["splitHousehold"]
        assert split["userErrors"] == [] and len(split["household"]["members"]) == 2
        again = (await api.query(SPLIT, h=h["id"], c=[to_global_id("Customer", c)]))["splitHousehold"]
        assert again["userErrors"] == [{"code": "NOT_A_MEMBER"}]
        confirmed = await api.query(
            "mutation ($h: ID!) { confirmHousehold(input: {householdId: $h}) { household { status } } }",
            h=h["id"],
        )
        assert confirmed["confirmHousehold"]["household"]["status"] == "confirmed"
        gone = (await api.query(HOUSEHOLD, id=to_global_id("Customer", c)))["customer"]["household"]
        assert gone is None
        dissolved = (await api.query(SPLIT, h=h["id"], c=None))["splitHousehold"]
        assert dissolved["household"]["status"] == "split"
        assert (await api.query(HOUSEHOLD, id=to_global_id("Customer", a)))["customer"]["household"] is None
