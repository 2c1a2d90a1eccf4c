"""The floor of bench/api.py: a hand-written asyncpg + Starlette endpoint answering the benchmark's two
queries with the JSON our API returns for them (same shape, masked the same way), built whole by PostgreSQL
in one statement and sent as its bytes. Nothing here is GraphQL: it is the cost of HTTP, one round trip and
PostgreSQL's own work, which no GraphQL server can go below.

Run (bench/api.py does): BENCH_FLOOR_DSN=postgresql://... python -m uvicorn bench.api_floor:app --port P
--workers 1 --loop uvloop --http httptools --no-access-log
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg
import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route


def _gid(type_name: str, column: str) -> str:
    """Our opaque global id (urlsafe base64 of `Type:pk`, unpadded), in SQL."""
    return (
        f"rtrim(translate(encode(convert_to('{type_name}:' || {column}, 'UTF8'), 'base64'), '+/', '-_'), '=')"
    )


def _money(column: str) -> str:
    return (
        f"json_build_object('fen', {column}, 'yuan', ({column} / 100)::text || '.' || "
        f"lpad((abs({column}) % 100)::text, 2, '0'), 'currency', 'CNY')"
    )


# Masked as schema/masking.py masks them for staff without pii:read.
MASKED_NAME = "left(g.name, 1) || repeat('*', greatest(length(g.name) - 1, 1))"
MASKED_PHONE = "substr(g.phone, 4, 3) || '****' || right(g.phone, 4)"
MASKED_EMAIL = "left(g.email, 1) || '***@' || split_part(g.email, '@', 2)"


def _source(attribute: str) -> str:
    """An attribute's lineage: its channel and rule from the customer's lineage, the external id of the
    identity it came from."""
    lineage = f"g.lineage -> '{attribute}'"
    return f"""case when {lineage} is null then null else json_build_object(
        'channel', {lineage} ->> 'channel',
        'externalId', (select si.external_id from source_identity si
                       where si.id = ({lineage} ->> 'source_identity_id')::bigint),
        'updatedAt', to_json(({lineage} ->> 'observed_at')::timestamptz),
        'rule', {lineage} ->> 'rule') end"""  # noqa: S608 - constant SQL fragments, no input


def _attribute(attribute: str, value: str, masked: bool, source: bool = False) -> str:
    parts = [f"'value', {value}"]
    if masked:
        parts.append(f"'masked', g.{attribute} is not null")
    if source:
        parts.append(f"'source', {_source(attribute)}")
    return f"json_build_object({', '.join(parts)})"


CUSTOMER_360 = f"""
select json_build_object('data', json_build_object('customer', json_build_object(
  'id', {_gid("Customer", "g.id")}, 'customerId', g.id, 'status', g.status,
  'name', {_attribute("name", MASKED_NAME, True, True)},
  'phone', {_attribute("phone", MASKED_PHONE, True, True)},
  'email', {_attribute("email", MASKED_EMAIL, True, True)},
  'birthday', {_attribute("birth_date", "to_char(g.birth_date, 'YYYY') || '-**-**'", True)},
  'gender', json_build_object('value', g.gender),
  'province', json_build_object('value', g.province),
  'city', {_attribute("city", "g.city", False, True)},
  'address', {_attribute("address", "case when g.address is not null then '***' end", True)},
  'memberNo', json_build_object('value', g.member_no),
  'identities', coalesce((select json_agg(json_build_object('channel', si.channel_code,
        'externalId', si.external_id, 'phoneMasked', si.phone_masked, 'linkRule', si.link_rule,
        'linkScore', si.link_score) order by si.channel_code, si.id)
      from source_identity si where si.customer_id = g.id), '[]'),
  'orders', json_build_object('edges', coalesce((select json_agg(json_build_object('node', json_build_object(
        'externalId', o.external_id, 'channel', o.channel_code, 'status', o.status, 'placedAt', to_json(o.placed_at),
        'total', {_money("o.total_fen")},
        'lines', coalesce((select json_agg(json_build_object('lineNo', l.line_no, 'sku', l.sku, 'title', l.title,
              'quantity', l.quantity, 'unitPrice', json_build_object('fen', l.unit_price_fen),
              'amount', json_build_object('fen', l.amount_fen, 'yuan', (l.amount_fen / 100)::text || '.'
                || lpad((l.amount_fen % 100)::text, 2, '0'))) order by l.line_no)
            from order_line l where l.order_id = o.id), '[]'))) order by o.placed_at desc, o.id desc)
      from (select * from orders where customer_id = g.id order by placed_at desc, id desc limit 10) o), '[]')),
  'interactions', json_build_object('edges', coalesce((select json_agg(json_build_object('node', json_build_object(
        'channel', i.channel_code, 'type', i.type, 'direction', i.direction, 'occurredAt', to_json(i.occurred_at),
        'summary', i.summary)) order by i.occurred_at desc, i.id desc)
      from (select * from interaction where customer_id = g.id order by occurred_at desc, id desc limit 20) i), '[]')),
  'consents', coalesce((select json_agg(json_build_object('purpose', c.purpose, 'status', c.status,
        'recordedAt', to_json(c.recorded_at)) order by c.purpose)
      from (select distinct on (purpose) * from consent where customer_id = g.id
            order by purpose, recorded_at desc, id desc) c), '[]')
)))::text
from golden_customer g where g.id = $1
"""  # noqa: S608 - built from constant fragments; the id is a parameter

SEARCH = f"""
select json_build_object('data', json_build_object('customers', json_build_object(
  'totalCount', (select count(*) from golden_customer where status = 'active' and city = $1 and district = $2),
  'edges', coalesce((select json_agg(json_build_object('node', json_build_object(
        'customerId', g.id, 'name', json_build_object('value', {MASKED_NAME}, 'masked', g.name is not null),
        'city', json_build_object('value', g.city),
        'orders', json_build_object('edges', coalesce((select json_agg(json_build_object('node', json_build_object(
              'externalId', o.external_id, 'status', o.status, 'placedAt', to_json(o.placed_at),
              'total', {_money("o.total_fen")})) order by o.placed_at desc, o.id desc)
            from (select * from orders where customer_id = g.id order by placed_at desc, id desc limit 3) o), '[]'))
      )) order by g.id)
    from (select * from golden_customer where status = 'active' and city = $1 and district = $2
          order by id limit 50) g), '[]'))))::text
"""  # noqa: S608 - built from constant fragments; city and district are parameters


@asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    # The same pool size as the API's default (C360_DB_POOL_SIZE) and PostGraphile's.
    app.state.pool = await asyncpg.create_pool(
        os.environ["BENCH_FLOOR_DSN"], min_size=10, max_size=10, server_settings={"timezone": "UTC"}
    )
    try:
        yield
    finally:
        await app.state.pool.close()


async def customer_360(request: Request) -> Response:
    body = orjson.loads(await request.body())
    async with request.app.state.pool.acquire() as conn:
        text = await conn.fetchval(CUSTOMER_360, int(body["id"]))
    return Response(text or '{"data":{"customer":null}}', media_type="application/json")


async def search(request: Request) -> Response:
    body = orjson.loads(await request.body())
    async with request.app.state.pool.acquire() as conn:
        text = await conn.fetchval(SEARCH, body["city"], body["district"])
    return Response(text, media_type="application/json")


app = Starlette(routes=[Route("/q1", customer_360, methods=["POST"]), Route("/q2", search, methods=["POST"])],
                lifespan=lifespan)  # fmt: skip
