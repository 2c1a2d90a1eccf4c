"""The compiled read path (schema.compiled): which requests it answers, that its answers are the executor's
(every API test runs in verify mode, where a difference is an error), its masking in SQL value by value,
and what it leaves to the executor."""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa
from gql.transport.exceptions import TransportQueryError
from sqlalchemy.ext.asyncio import AsyncEngine

from schema.compiled import mask_sql
from schema.masking import mask
from schema.relay import to_global_id
from tests.api.graphql_support import Api, api_server
from tests.api.seed import seed
from tests.conftest import fetch_rows

WHOLE = """
fragment Money on Money { fen yuan currency __typename }
fragment Attr on Attribute { value masked source { channel externalId updatedAt rule actor __typename } }
query Whole($id: ID!, $skipOrders: Boolean = false, $channel: String, $after: String) {
  __typename
  customer(id: $id) {
    __typename id customerId status
    name { ...Attr } gender { ...Attr } birthday { ...Attr } phone { ...Attr } email { ...Attr }
    province { value } city { ...Attr } district { value } address { ...Attr } memberNo { value masked }
    orderCount totalSpent { ...Money } firstOrderAt lastOrderAt
    identities { __typename id channel externalId name nickname phone phoneMasked phoneVerified email memberNo
      wechatUnionid province city district linkRule linkScore linkedAt sourceUpdatedAt }
    consents { __typename purpose status source recordedAt }
    mergeHistory { __typename id kind actor reason survivingCustomerId absorbedCustomerIds evidence undone createdAt }
    recent: orders(first: 2, after: $after, filter: { channel: $channel }) @skip(if: $skipOrders) {
      __typename totalCount
      pageInfo { __typename hasNextPage hasPreviousPage startCursor endCursor }
      edges { __typename cursor node { __typename id channel externalId status sourceStatus
        total { ...Money } paid { ...Money } discount { fen } shipping { yuan } placedAt paidAt
        lines { __typename lineNo sku title quantity unitPrice { fen } discount { fen } amount { ...Money }
          product { __typename id sku title category } }
        refunds { __typename id channel externalId lineNo amount { ...Money } reason status requestedAt } } }
    }
    all: orders(first: 0) { totalCount pageInfo { hasNextPage startCursor endCursor } edges { cursor } }
    interactions(first: 2, filter: { type: "message" }) { totalCount edges { cursor node { __typename id channel
      externalId type direction occurredAt summary } } pageInfo { hasNextPage endCursor } }
    ... on Node { id }
    ... @include(if: true) { again: customerId }
  }
}
"""

SEARCH = """query ($after: String, $filter: CustomerFilter) {
  customers(first: 2, after: $after, filter: $filter) { totalCount pageInfo { hasNextPage hasPreviousPage
    startCursor endCursor } edges { cursor node { customerId name { value masked } orderCount
      orders(first: 1) { totalCount edges { node { externalId } } } } } } }"""


def gid(pk: int) -> str:
    return to_global_id("Customer", pk)


async def compiled(api: Api, document: str, **kw: Any) -> dict[str, Any]:
    """The answer, asserting the compiled path gave it (and, in verify mode, that the executor agreed)."""
    before = api.reads.compiled
    data = await api.query(document, **kw)
    assert api.reads.compiled == before + 1, "the executor answered, not the compiled path"
    return data


async def test_the_whole_profile_compiled_as_the_executor_answers_it(
    committed_db: AsyncEngine, database_url: str
) -> None:
    s = await seed(committed_db)
    async with committed_db.begin() as conn:  # times with microseconds, and with a zero fraction, for li
        await conn.execute(sa.text("insert into orders (channel_code, external_id, customer_id, status, total_fen, paid_fen, currency, placed_at, paid_at) "
                                   "values ('pos', 'P2', :c, 'paid', 1, 1, 'CNY', '2026-10-04 10:00:00.1234+00', '2026-10-04 10:00:00.000001+00')"), {"c": s.li})  # fmt: skip
    with api_server(database_url) as api:  # verify mode: each compiled answer is compared with the executor's
        li = (await compiled(api, WHOLE, id=gid(s.li)))["customer"]
        staff = (await compiled(api, WHOLE, id=gid(s.zhang)))["customer"]
        member = (await compiled(api, WHOLE, role="member", subject=str(s.zhang), id=gid(s.zhang)))[
            "customer"
        ]
        other = await compiled(api, WHOLE, role="member", subject=str(s.zhang), id=gid(s.li))
        survivor = (await compiled(api, WHOLE, id=gid(s.absorbed), skipOrders=True))["customer"]
        second = await compiled(api, WHOLE, id=gid(s.zhang), after=staff["recent"]["pageInfo"]["endCursor"])
        tmall = (await compiled(api, WHOLE, id=gid(s.zhang), channel="tmall"))["customer"]
        missing = await compiled(api, WHOLE, id=gid(10**12))
    assert staff["name"]["value"] == "张*" and staff["phone"]["value"] == "138****5678"
    assert member["name"]["value"] == "张伟" and member["phone"]["masked"] is False
    assert other["customer"] is None and missing["customer"] is None
    assert survivor["customerId"] == s.zhang and "recent" not in survivor
    assert [e["node"]["externalId"] for e in staff["recent"]["edges"]] == ["T2", "A1"]
    assert staff["recent"]["pageInfo"]["hasNextPage"] is True and staff["recent"]["totalCount"] == 3
    assert [e["node"]["externalId"] for e in second["customer"]["recent"]["edges"]] == ["T1"]
    assert second["customer"]["recent"]["pageInfo"] == {
        "__typename": "PageInfo", "hasNextPage": False, "hasPreviousPage": True,
        "startCursor": second["customer"]["recent"]["edges"][0]["cursor"],
        "endCursor": second["customer"]["recent"]["edges"][0]["cursor"],
    }  # fmt: skip
    assert tmall["recent"]["totalCount"] == 2
    assert staff["all"] == {"totalCount": 3, "pageInfo": {"hasNextPage": True, "startCursor": None,
                            "endCursor": None}, "edges": []}  # fmt: skip
    assert [e["node"]["type"] for e in staff["interactions"]["edges"]] == ["message"]
    assert staff["again"] == s.zhang
    assert [(e["node"]["placedAt"], e["node"]["paidAt"]) for e in li["recent"]["edges"]] == [
        ("2026-10-04T10:00:00.123400+00:00", "2026-10-04T10:00:00.000001+00:00"),
        ("2026-10-01T10:00:00+00:00", None),
    ]


async def test_search_pages_compiled(committed_db: AsyncEngine, database_url: str) -> None:
    await seed(committed_db)
    async with committed_db.begin() as conn:
        for i in range(3):
            await conn.execute(
                sa.text("insert into golden_customer (status, name, city) values ('active', :n, '杭州市')"),
                {"n": f"Zhang Wei{i}"},
            )
    hangzhou = {"city": {"eq": "杭州市"}}
    seen: list[int] = []
    with api_server(database_url) as api:
        after = None
        while True:
            page = (await compiled(api, SEARCH, after=after, filter=hangzhou))["customers"]
            seen += [e["node"]["customerId"] for e in page["edges"]]
            if not page["pageInfo"]["hasNextPage"]:
                break
            after = page["pageInfo"]["endCursor"]
        either = {
            "or": [{"name": {"startsWith": "李"}}, {"orderCount": {"gte": 2}}],
            "not": {"city": {"eq": "x"}},
        }
        mixed = (await compiled(api, SEARCH, filter=either))["customers"]
        service = (await compiled(api, SEARCH, role="service", filter=hangzhou))["customers"]
    assert len(seen) == 4 and seen == sorted(seen) and page["totalCount"] == 4
    assert mixed["totalCount"] == 2
    assert service["edges"][0]["node"]["name"]["masked"] is True


async def test_what_the_executor_still_answers(committed_db: AsyncEngine, database_url: str) -> None:
    """Errors, unmasked (audited) reads, fields the compiler does not know and mutations go to the executor,
    which answers them as before."""
    s = await seed(committed_db)
    with api_server(database_url) as api:
        await api.query("{ health { database } }")
        pii = await api.query(WHOLE, scopes=["pii:read"], id=gid(s.zhang))
        crm = await api.query(
            "query ($id: ID!) { customer(id: $id) { customerId tags { name } } }", id=gid(s.zhang)
        )
        with pytest.raises(TransportQueryError) as bad_id:
            await api.query(WHOLE, id="not-an-id")
        with pytest.raises(TransportQueryError) as too_many:
            await api.query(
                "query ($id: ID!) { customer(id: $id) { orders(first: 500) { totalCount } } }",
                id=gid(s.zhang),
            )
        with pytest.raises(TransportQueryError) as members_only:
            await api.query("{ me { customerId } }")
        with pytest.raises(TransportQueryError) as staff_only:
            await api.query(SEARCH, role="member", subject=str(s.zhang))
        assert api.reads.compiled == 0
    assert pii["customer"]["name"]["value"] == "张伟"
    [(audits,)] = await fetch_rows(committed_db, "select count(*) from audit_log where action = 'pii.read'")
    assert audits == 1
    assert crm["customer"]["customerId"] == s.zhang
    assert bad_id.value.errors and bad_id.value.errors[0]["extensions"]["code"] == "BAD_USER_INPUT"
    assert too_many.value.errors and "first must be between 0 and 100" in too_many.value.errors[0]["message"]
    assert members_only.value.errors and members_only.value.errors[0]["extensions"]["code"] == "FORBIDDEN"
    assert staff_only.value.errors and staff_only.value.errors[0]["extensions"]["code"] == "FORBIDDEN"


async def test_me_is_compiled_for_a_member(committed_db: AsyncEngine, database_url: str) -> None:
    s = await seed(committed_db)
    with api_server(database_url) as api:
        me = (await compiled(api, "{ me { customerId phone { value masked } orderCount } }", role="member",
                             subject=str(s.zhang)))["me"]  # fmt: skip
    assert me == {
        "customerId": s.zhang,
        "phone": {"value": "+8613812345678", "masked": False},
        "orderCount": 2,
    }


MASKED = {
    "phone": ["+8613812345678", "+85291234567", "12345", "1234", "", "+861381234567"],
    "email": ["zhangwei@163.com", "Z@x.cn", "@x.cn", "no-at", "a@", "a@b@c"],
    "name": ["张伟", "欧阳娜娜", "张", "Zhang Wei", "  zhang   wei  ", "x", "", "   ", "王 Li", "Ab\tCd"],
    "nickname": ["小王", "wang"],
    "birthday": ["1988-03-05"],
    "address": ["文三路 90 号"],
}


@pytest.mark.parametrize("kind", sorted(MASKED))
async def test_masking_in_sql_is_schema_masking(kind: str, committed_db: AsyncEngine) -> None:
    values = MASKED[kind]
    sql = (
        f"select {mask_sql(kind, 'v')} from unnest(cast(:vs as text[])) with ordinality as u(v, n) order by n"  # noqa: S608 - fixed fragments
    )
    async with committed_db.connect() as conn:
        found = [r[0] for r in await conn.execute(sa.text(sql), {"vs": values})]
    assert found == [mask(kind, v) for v in values]


def test_filters_reach_the_search_compiler_as_the_executor_passes_them() -> None:
    """The compiled path builds CustomerFilter itself (Strawberry's converter costs more than the query):
    the same object as Strawberry's, nested and/or/not, lists, times and JSON rules included."""
    from graphql import parse
    from graphql.execution.values import get_argument_values, get_variable_values
    from strawberry.types.arguments import convert_arguments

    from schema import schema
    from schema.compiled import to_input
    from schema.search import CustomerFilter

    gs = schema._schema
    op: Any = parse("query Q($f: CustomerFilter) { customers(filter: $f) { totalCount } }").definitions[0]
    given = {
        "and": [{"name": {"startsWith": "张", "in": ["a"]}}],
        "or": [{"orderCount": {"gte": 2}}, {"lastOrderAfter": "2026-01-01T00:00:00+08:00"}],
        "not": {"city": {"eq": "x"}},
        "rule": {"all": [{"tag": "x"}]},
        "lifecycle": ["active"],
        "totalSpentFen": {"lte": 5},
    }
    values = get_variable_values(gs, op.variable_definitions, {"f": given})
    assert gs.query_type is not None and not isinstance(values, list)
    raw = get_argument_values(gs.query_type.fields["customers"], op.selection_set.selections[0], values)
    field = schema.get_field_for_type("customers", "Query")
    assert field is not None
    theirs = convert_arguments(
        dict(raw), field.arguments, schema.schema_converter.scalar_registry, schema.config
    )
    mine = to_input(CustomerFilter, raw["filter"])
    assert mine == theirs["filter"] and mine.not_ is not None and mine.not_.city is not None


async def test_lookups_by_identifier_compiled(committed_db: AsyncEngine, database_url: str) -> None:
    s = await seed(committed_db)
    lookup = "query ($k: IdentifierKind!, $v: String!) { customerByIdentifier(kind: $k, value: $v) { customerId } }"
    with api_server(database_url) as api:
        found = [
            (await compiled(api, lookup, k=kind, v=value))["customerByIdentifier"]
            for kind, value in (("PHONE", "+86 138-1234-5678"), ("EXTERNAL_ID", "tmall:buyer-zw"),
                                ("EMAIL", "ZhangWei@163.com"), ("PHONE", "13700000000"))
        ]  # fmt: skip
        with pytest.raises(TransportQueryError) as bad:
            await api.query(lookup, k="PHONE", v="not a phone")
    assert found == [{"customerId": s.zhang}] * 3 + [None]
    assert bad.value.errors and bad.value.errors[0]["extensions"]["code"] == "BAD_USER_INPUT"


async def test_a_compiled_read_that_fails_is_answered_by_the_executor(
    committed_db: AsyncEngine,
    database_url: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    from schema.compiled import Build

    def broken(self: Build) -> tuple[str, dict[str, Any]]:
        raise RuntimeError("a bug in the compiler")

    s = await seed(committed_db)
    monkeypatch.setattr(Build, "statement", broken)
    with api_server(database_url) as api:
        data = await api.query("query ($id: ID!) { customer(id: $id) { customerId } }", id=gid(s.zhang))
        assert api.reads.compiled == 0
    assert data == {"customer": {"customerId": s.zhang}}
    assert "compiled read failed" in caplog.text
