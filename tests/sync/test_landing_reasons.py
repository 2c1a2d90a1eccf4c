"""The quarantine entries landing writes, as `c360 sync quarantine` lists them: for a row the database refused,
the column or constraint and the database's own message (never the value); for a conflicting version and for
an order whose buyer has not landed, a reason that says what happened and what will happen next."""

from __future__ import annotations

import asyncpg
import pytest
from sqlalchemy.engine import make_url

from sync.canonical import Batch, PersonIdentity, ProductRecord
from sync.landing import _held, conflict_entry, detached_notes


async def _refusal(database_url: str, sql: str) -> asyncpg.PostgresError:
    """The error PostgreSQL raises for `sql`, as landing receives it."""
    dsn = make_url(database_url).set(drivername="postgresql").render_as_string(hide_password=False)
    conn = await asyncpg.connect(dsn)
    try:
        with pytest.raises(asyncpg.PostgresError) as caught:
            await conn.execute(sql)
    finally:
        await conn.close()
    return caught.value


async def test_a_refused_product_is_held_under_the_column_with_the_databases_message(database_url):
    exc = await _refusal(
        database_url,
        "create temp table t (sku text not null); insert into t values (null)",
    )
    product = ProductRecord(sku="SKU-1", title="保温杯", category=None, list_price_fen=5900)
    [held] = _held(Batch(products=[product]), exc)
    assert (held.channel, held.entity, held.external_id) == ("catalog", "record:product", "SKU-1")
    assert held.reason == (
        'field `sku`: the database refused it (23502: null value in column "sku" of relation "t" '
        "violates not-null constraint)"
    )
    assert held.errors == [
        {
            "loc": ["sku"],
            "msg": 'null value in column "sku" of relation "t" violates not-null constraint',
            "type": "sqlstate_23502",
        }
    ]
    assert held.raw == {"sku": "SKU-1", "title": "保温杯", "category": None, "list_price_fen": 5900}


async def test_a_refused_person_is_held_under_their_channel_id(database_url):
    exc = await _refusal(database_url, "select 1 / 0")
    person = PersonIdentity(
        channel="wechat", external_id="o-42", source_updated_at=None, attributes={}, raw={}
    )
    [held] = _held(Batch(identities=[person]), exc)
    assert (held.channel, held.entity, held.external_id) == ("wechat", "record:identity", "o-42")
    assert held.reason == "field `identity`: the database refused it (22012: division by zero)"


def test_a_conflicting_version_says_the_first_stays_and_keeps_both() -> None:
    entry = conflict_entry("tmall", "7001", {"total_fen": 100}, {"total_fen": 90})
    assert (entry.channel, entry.entity, entry.external_id) == ("tmall", "order", "7001")
    assert entry.raw == {"kept": {"total_fen": 100}, "refused": {"total_fen": 90}}
    assert entry.reason == (
        "field `source_updated_at`: seen again with other content and no newer source time; "
        "the first version stays, both are kept here"
    )
    assert entry.errors == [{"loc": ["source_updated_at"], "msg": "conflicting version", "type": "conflict"}]


def test_an_order_before_its_buyer_is_noted_without_the_buyers_key_in_the_reason() -> None:
    [note] = detached_notes([("pos", "T-1", "13800138000")])
    assert (note.channel, note.entity, note.external_id) == ("pos", "order", "T-1")
    assert note.reason == (
        "field `member`: the buyer has not landed yet; the order landed without them and attaches when they land"
    )
    assert "13800138000" not in note.reason
    assert note.errors == [{"loc": ["member"], "msg": "buyer not landed", "type": "missing_member"}]
