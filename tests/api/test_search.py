"""customers(filter:) with and/or/not over attributes and order figures, paged by id, and a list of
customers with their orders in a constant number of statements."""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa
from gql.transport.exceptions import TransportQueryError
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.api.graphql_support import api_server
from tests.api.seed import seed

SEARCH = """query ($filter: CustomerFilter, $first: Int, $after: String) {
  customers(filter: $filter, first: $first, after: $after) {
    totalCount edges { node { customerId } } pageInfo { hasNextPage endCursor } } }"""


async def test_search_with_and_or_not(committed_db: AsyncEngine, database_url: str) -> None:
    s = await seed(committed_db)
    async with committed_db.begin() as conn:
        for i in range(5):
            await conn.execute(
                sa.text("insert into golden_customer (status, name, city) values ('active', :n, '杭州市')"),
                {"n": f"王{i}"},
            )
    with api_server(database_url) as api:

        async def ids(filter: dict[str, Any] | None, **kw: Any) -> list[int]:
            reply = (await api.query(SEARCH, filter=filter, **kw))["customers"]
            return [e["node"]["customerId"] for e in reply["edges"]]

        hangzhou = await ids({"city": {"eq": "杭州市"}})
        not_zhang = await ids({"and": [{"city": {"eq": "杭州市"}}, {"not": {"name": {"startsWith": "张"}}}]})
        either = await ids({"or": [{"phone": "+86 139-0000-1111"}, {"email": "ZHANGWEI@163.com"}]})
        buyers = await ids({"orderCount": {"gte": 2}})
        spent = await ids({"totalSpentFen": {"gte": 1000, "lte": 6000}})
        merged = await ids({"status": "merged"})
        # Paging by id: three pages of two over the six people in Hangzhou, each once.
        pages, after = [], None
        while True:
            reply = (await api.query(SEARCH, filter={"city": {"eq": "杭州市"}}, first=2, after=after))[
                "customers"
            ]
            pages.append([e["node"]["customerId"] for e in reply["edges"]])
            assert reply["totalCount"] == 6
            if not reply["pageInfo"]["hasNextPage"]:
                break
            after = reply["pageInfo"]["endCursor"]
        with pytest.raises(TransportQueryError) as bad_phone:
            await ids({"phone": "12345"})
        with pytest.raises(TransportQueryError) as member:
            await api.query(SEARCH, role="member", subject=str(s.zhang))
    assert len(hangzhou) == 6 and hangzhou[0] == s.zhang and hangzhou == sorted(hangzhou)
    assert s.zhang not in not_zhang and len(not_zhang) == 5
    assert sorted(either) == sorted([s.zhang, s.li])
    assert buyers == [s.zhang]  # two orders not cancelled
    assert spent == [s.li]  # 50.00 yuan
    assert merged == [s.absorbed]  # only when asked for: searches see active customers by default
    assert [c for p in pages for c in p] == hangzhou and [len(p) for p in pages] == [2, 2, 2]
    assert bad_phone.value.errors and bad_phone.value.errors[0]["extensions"]["code"] == "BAD_USER_INPUT"
    assert member.value.errors and member.value.errors[0]["extensions"]["code"] == "FORBIDDEN"


async def test_a_list_of_customers_with_orders_costs_the_same_for_2_or_20(
    committed_db: AsyncEngine, database_url: str
) -> None:
    await seed(committed_db, extra_orders=3)
    query = """query ($first: Int) { customers(first: $first) { totalCount edges { node {
        customerId name { value source { channel } } orderCount identities { channel }
        orders(first: 2) { totalCount edges { node { externalId lines { sku } refunds { amount { fen } } } } } } } } }"""
    async with committed_db.begin() as conn:
        for i in range(18):
            cid = (
                await conn.execute(
                    sa.text("insert into golden_customer (status, name) values ('active', :n) returning id"),
                    {"n": f"客{i}"},
                )
            ).scalar_one()
            await conn.execute(sa.text("insert into orders (channel_code, external_id, customer_id, status, total_fen, paid_fen, currency, placed_at) "
                                       "values ('app', :e, :c, 'paid', 100, 100, 'CNY', now())"), {"e": f"L{i}", "c": cid})  # fmt: skip
    counts: dict[str, list[int]] = {}
    for mode in ("on", "off"):  # the compiled read path, and the executor with its DataLoaders
        with api_server(database_url, api_compiled=mode) as api:
            await api.query("{ health { database } }")
            for first in (2, 20):
                api.statements.reset()
                reply = (await api.query(query, first=first))["customers"]
                assert len(reply["edges"]) == first
                counts.setdefault(mode, []).append(api.statements.count)
            assert api.reads.compiled == (2 if mode == "on" else 0)
    # Compiled: one statement. Executor: customers page, identity (lineage), order summaries, identities,
    # orders pages, lines, refunds.
    assert counts == {"on": [1, 1], "off": [7, 7]}, counts
