"""Analytics benchmark, printing JSON.

(a) The full run (measures, RFM cut points and scores, value tiers and ABC, lifecycle, CLV fit and
    predictions, households, system tags, rule segments) over --customers customers with --orders orders
    (one line each, 2% refunded, 1% cancelled), one identity per customer with a delivery address (one in
    ten pairs share a flat, twenty share a parcel locker, a few walk-ins carry a store's address), all
    generated in SQL: wall time per step, this process's peak RSS, the PostgreSQL backends' CPU.
(b) An incremental run for --touched customers who each just placed an order, against that base.

Targets on this machine: full <= 60 s, incremental <= 2 s. The database is DATABASE_URL /
C360_DATABASE_URL (a scratch database is created and dropped) or the embedded server.
Usage: python -m bench.analytics [--customers 100000 --orders 1000000 --touched 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import time
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine

from bench.scratch import generate, scratch_database
from bench.sync_ingest import PeakRss, postgres_cpu_seconds

CITIES = [
    "上海市",
    "北京市",
    "杭州市",
    "成都市",
    "深圳市",
    "武汉市",
    "南京市",
    "苏州市",
    "西安市",
    "佛山市",
    "洛阳市",
]
CATEGORIES = ["bedding", "kitchen", "storage", "decor", "bath", "lighting", "textiles", "tableware"]
GENERATE = (
    "insert into channel (code, family, name, trust_rank) values ('tmall', 'marketplace', 'Tmall', 50),"
    " ('jd', 'marketplace', 'JD', 50), ('app', 'own', 'App', 10), ('pos', 'pos', 'POS', 30),"
    " ('wechat', 'social', 'WeChat', 40) on conflict do nothing",
    "insert into product (sku, title, category) select 'SKU' || g, 'product ' || g,"
    " (cast(:categories as text[]))[1 + g % 8] from generate_series(1, 400) g",
    "insert into store (code, name, province, city, district, address) select 'S' || g, 'store ' || g,"
    " '上海市', '上海市', '徐汇区', '肇嘉浜路' || g || '号' from generate_series(1, 20) g",
    """insert into golden_customer (status, name, gender, birth_date, city, phone, created_at)
       select 'active', 'c' || g, case when g % 2 = 0 then 'f' else 'm' end,
              date '1960-01-01' + ((g * 37) % 16000)::int, (cast(:cities as text[]))[1 + g % 11],
              '+86138' || lpad(g::text, 8, '0'), now() - make_interval(days => (900 + g % 100)::int)
       from generate_series(1, cast(:customers as bigint)) g""",
    # One identity each; one pair in ten shares a flat, twenty customers ship to one locker, and the walk-ins
    # of every 500th customer carry a store's address.
    """insert into source_identity (channel_code, external_id, customer_id, phone_verified, province, city,
                                    district, address_detail)
       select (array['tmall', 'jd', 'app', 'pos', 'wechat'])[1 + g % 5], 'i' || g, g, false, '上海市', '上海市',
              '徐汇区',
              case when g <= 20 then '虹桥路1号丰巢柜'
                   when g % 500 = 0 then '肇嘉浜路' || (1 + g % 20) || '号'
                   when g % 20 < 2 then '漕溪北路' || (g / 2) || '号'
                   else '天钥桥路' || g || '号' end
       from generate_series(1, cast(:customers as bigint)) g""",
    # Orders by nine customers in ten (the tenth are followers who never bought).
    """insert into orders (channel_code, external_id, customer_id, store_id, status, total_fen, paid_fen,
                           discount_fen, currency, placed_at, paid_at)
       select ch, 'b' || g, c, case when ch = 'pos' then 1 + g % 20 end,
              case when g % 50 = 7 then 'refunded' when g % 100 = 3 then 'cancelled' else 'completed' end,
              amt, amt, case when g % 4 = 0 then 1000 else 0 end, 'CNY', ts, ts
       from (select g, ch, c, amt,
                    -- Each customer buys within their own span ending their own number of days ago, so
                    -- the base has new, active, at-risk and churned customers.
                    now() - make_interval(secs => (((c * 37) % 700) * 86400
                                                   + (g * 6007) % (1 + ((c * 11) % 400) * 86400))::double precision) as ts
             from (select g, (array['tmall', 'jd', 'app', 'pos'])[1 + g % 4] as ch,
                          1 + ((g * 7919) % (cast(:customers as bigint) * 9 / 10)) as c,
                          5000 + (g * 104729) % 200000 as amt
                   from generate_series(1, cast(:orders as bigint)) g) y) x""",
    """insert into order_line (order_id, line_no, sku, product_id, quantity, unit_price_fen, amount_fen)
       select id, 1, 'SKU' || (1 + id % 400), 1 + id % 400, 1, paid_fen, paid_fen from orders""",
    """insert into refund (channel_code, external_id, order_id, amount_fen, status)
       select channel_code, 'r' || id, id, paid_fen, 'SUCCESS' from orders where status = 'refunded'""",
    "analyze",
)


async def prepare(url: str, customers: int, orders: int) -> dict[str, Any]:
    params = {"customers": customers, "orders": orders, "cities": CITIES, "categories": CATEGORIES}
    return {
        "customers": customers,
        "orders": orders,
        "generate_seconds": await generate(url, GENERATE, params),
    }


async def run(url: str, database: str, ids: set[int] | None, now: datetime) -> dict[str, Any]:
    from crm.analytics.config import get_config
    from crm.analytics.service import recompute_in
    from crm.loyalty.service import in_transaction

    engine = create_async_engine(url)
    config = get_config()
    cpu = postgres_cpu_seconds(database)
    with PeakRss() as rss:
        started = time.perf_counter()

        async def work(conn: Any) -> dict[str, Any]:
            return asdict(await recompute_in(conn, config, ids, now))

        counts = await in_transaction(engine, work)
        seconds = time.perf_counter() - started
    backend_cpu = postgres_cpu_seconds(database) - cpu
    await engine.dispose()
    return {
        **counts,
        "step_seconds": counts.pop("seconds"),
        "seconds": round(seconds, 2),
        "peak_rss_mib": rss.mib,
        "postgres_cpu_seconds": round(backend_cpu, 2),
    }


async def touch(url: str, customers: int, n: int) -> set[int]:
    """`n` customers who each just placed an order (what a sync run hands the recompute hook)."""
    ids = set(random.Random(13).sample(range(1, customers + 1), n))
    engine = create_async_engine(url)
    async with engine.begin() as conn:
        await conn.execute(
            sa.text(
                "insert into orders (channel_code, external_id, customer_id, status, total_fen, paid_fen, currency,"
                " placed_at, paid_at) select 'app', 'new' || c, c, 'paid', 30000, 30000, 'CNY', now(), now()"
                " from unnest(cast(:ids as bigint[])) c"
            ),
            {"ids": sorted(ids)},
        )
    await engine.dispose()
    return ids


async def summary(url: str) -> dict[str, Any]:
    engine = create_async_engine(url)
    async with engine.connect() as conn:
        found = (
            await conn.execute(
                sa.text(
                    "select (select count(*) from customer_metrics),"
                    " (select count(*) from customer_metrics where rfm_cell is not null),"
                    " (select count(*) from customer_metrics where clv_predicted_fen is not null),"
                    " (select count(*) from household where status <> 'split'),"
                    " (select count(*) from customer_tag), (select count(*) from segment_membership),"
                    " (select jsonb_object_agg(lifecycle_stage, n) from (select lifecycle_stage, count(*) n"
                    "  from customer_metrics group by 1) x)"
                )
            )
        ).one()
    await engine.dispose()
    keys = ("measured", "with_rfm_cell", "with_clv", "households", "tags", "segment_members", "lifecycle")
    return dict(zip(keys, found, strict=True))


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument("--orders", type=int, default=1_000_000)
    parser.add_argument("--touched", type=int, default=1000)
    args = parser.parse_args()

    async with scratch_database("c360_bench_analytics") as (url, database):
        data = await prepare(url, args.customers, args.orders)
        full = await run(url, database, None, datetime.now(UTC))
        state = await summary(url)
        ids = await touch(url, args.customers, args.touched)
        incremental = await run(url, database, ids, datetime.now(UTC))
        again = await run(url, database, None, datetime.now(UTC))
    print(json.dumps({
        "benchmark": "analytics", "machine": {"cpus": os.cpu_count()}, "data": data,
        "full_run": {**full, "target_seconds": 60}, "after_full_run": state,
        "incremental_run": {**incremental, "customers": args.touched, "target_seconds": 2},
        "full_run_next_day": again,
    }, indent=2, default=str))  # fmt: skip


if __name__ == "__main__":
    asyncio.run(main())
