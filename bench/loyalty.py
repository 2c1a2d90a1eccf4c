"""Loyalty benchmark, printing JSON.

(a) The daily run (earn, refunds, pending release, debts, expiry, tier review, campaigns, birthday coupons)
    over --customers customers with --orders orders and about two ledger entries per order, all generated
    in SQL: wall time, this process's peak RSS and the PostgreSQL backend's CPU. The first run also creates
    every membership and referral code and launches the demo campaign; the second is a steady-state day.
(b) `redeemPoints` over HTTP (`c360 serve` in its own process) from --clients concurrent clients, each
    call on a random customer: requests per second and latency percentiles.

The database is DATABASE_URL / C360_DATABASE_URL (a scratch database is created and dropped) or the
embedded server. Usage: python -m bench.loyalty [--customers 100000 --orders 1000000 --requests 4000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine

from bench.scratch import generate, scratch_database, start_api
from bench.sync_ingest import PeakRss, postgres_cpu_seconds, process_cpu_seconds

GENERATE = (
    "insert into channel (code, family, name, trust_rank) values ('tmall', 'marketplace', 'Tmall', 50),"
    " ('app', 'own', 'App', 10), ('pos', 'pos', 'POS', 30) on conflict do nothing",
    "insert into golden_customer (status, name, birth_date)"
    " select 'active', 'c' || g, date '1970-01-01' + ((g * 37) % 16000)::int from generate_series(1, cast(:customers as bigint)) g",
    # Orders over the last 400 days; 2% refunded in full, 2% not yet seen by the engine (no lot).
    """insert into orders (channel_code, external_id, customer_id, status, total_fen, paid_fen, currency, placed_at,
                           paid_at)
       select (array['tmall', 'app', 'pos'])[1 + g % 3], 'b' || g, 1 + (g * 7919) % :customers,
              case when g % 50 = 7 then 'refunded' else 'completed' end, amt, amt, 'CNY', ts, ts
       from (select g, 5000 + (g * 104729) % 200000 as amt,
                    now() - make_interval(secs => ((g * 6007) % (400 * 86400))::double precision) as ts
             from generate_series(1, cast(:orders as bigint)) g) x""",
    """insert into points_lot (customer_id, points_earned, points_remaining, earned_at, expires_at, order_id,
                               basis_fen, available_at, released_at, rule_version)
       select customer_id, p, case when released then p - p / 3 else p end, paid_at, paid_at + interval '395 days',
              id, paid_fen, paid_at + interval '7 days', case when released then paid_at + interval '7 days' end,
              'bench'
       from (select o.*, paid_fen / 100 as p, paid_at + interval '7 days' <= now() as released
             from orders o where id % 50 <> 1) x""",
    """insert into points_ledger_entry (customer_id, kind, points, idempotency_key, order_id, lot_id, reason, actor,
                                        rule_version)
       select customer_id, 'earn', points_earned, 'earn#lot' || id, order_id, id, 'bench', 'rule', 'bench'
       from points_lot where released_at is not null""",
    """insert into points_ledger_entry (customer_id, kind, points, idempotency_key, lot_id, reason, actor,
                                        rule_version)
       select customer_id, 'redeem', -(points_earned / 3), 'redeem#lot' || id, id, 'bench', 'customer', 'bench'
       from points_lot where released_at is not null and points_earned / 3 > 0""",
    "analyze",
)


async def prepare(url: str, customers: int, orders: int) -> dict[str, Any]:
    seconds = await generate(url, GENERATE, {"customers": customers, "orders": orders})
    engine = create_async_engine(url)
    async with engine.connect() as conn:
        entries = (await conn.execute(sa.text("select count(*) from points_ledger_entry"))).scalar_one()
    await engine.dispose()
    return {
        "customers": customers,
        "orders": orders,
        "ledger_entries": int(entries),
        "generate_seconds": seconds,
    }


async def daily(url: str, database: str, now: datetime) -> dict[str, Any]:
    from crm.loyalty.flows import daily_run
    from infra.db import dispose_engine

    cpu = postgres_cpu_seconds(database)
    with PeakRss() as rss:
        started = time.perf_counter()
        counts = await daily_run(now)
        seconds = time.perf_counter() - started
    # Measured before the pool closes: the run's backend exits with its connection.
    backend_cpu = postgres_cpu_seconds(database) - cpu
    await dispose_engine()
    return {
        **counts,
        "step_seconds": counts.pop("seconds"),
        "seconds": round(seconds, 2),
        "peak_rss_mib": rss.mib,
        "postgres_cpu_seconds": round(backend_cpu, 2),
    }


async def check_books(url: str) -> bool:
    engine = create_async_engine(url)
    async with engine.connect() as conn:
        bad = (
            await conn.execute(
                sa.text(
                    "select count(*) from points_balance b where balance <> coalesce((select sum(points)"
                    " from points_ledger_entry e where e.customer_id = b.customer_id), 0)"
                )
            )
        ).scalar_one()
    await engine.dispose()
    return int(bad) == 0


async def redeem_over_http(
    url: str, database: str, requests: int, clients: int, customers: int
) -> dict[str, Any]:
    import httpx

    from api.auth import issue_token
    from infra.settings import Settings

    server, port = start_api(url)  # started once, before the measured part
    token = issue_token(Settings(env="development"), "bench-till", "service")
    base = f"http://127.0.0.1:{port}/graphql"
    query = (
        "mutation ($c: ID!, $k: String!) { redeemPoints(input: {customerId: $c, points: 1, idempotencyKey: $k})"
        " { balance userErrors { code } } }"
    )
    try:
        async with httpx.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=30) as client:
            for _ in range(300):
                try:
                    if (
                        await client.post(base, json={"query": "{ health { database } }"})
                    ).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                await asyncio.sleep(0.1)
            from schema.relay import to_global_id

            latencies: list[float] = []
            errors = 0
            refusals: dict[str, int] = {}
            rng = random.Random(7)

            async def worker(n: int, todo: list[str], prefix: str) -> None:
                nonlocal errors
                for i in range(n, requests, clients):
                    t = time.perf_counter()
                    reply = await client.post(
                        base, json={"query": query, "variables": {"c": todo[i], "k": f"{prefix}{i}"}}
                    )
                    latencies.append(time.perf_counter() - t)
                    body = reply.json()
                    if reply.status_code != 200 or body.get("errors"):
                        errors += 1
                    elif refused := body["data"]["redeemPoints"]["userErrors"]:
                        # A customer with no points left is refused: the right answer, counted apart.
                        refusals[refused[0]["code"]] = refusals.get(refused[0]["code"], 0) + 1

            def targets() -> list[str]:
                return [to_global_id("Customer", rng.randint(1, customers)) for _ in range(requests)]

            # A warm-up round (connections, caches), then the measured one.
            await asyncio.gather(*(worker(n, targets(), "warm") for n in range(clients)))
            latencies.clear()
            errors = 0
            refusals.clear()
            measured = targets()
            # Where the CPU goes: the API process, PostgreSQL's backends and this client all share the
            # machine's cores, so the throughput is bounded by their sum.
            cpu_before = (
                process_cpu_seconds(server.pid),
                postgres_cpu_seconds(database),
                time.process_time(),
            )
            started = time.perf_counter()
            await asyncio.gather(*(worker(n, measured, "run") for n in range(clients)))
            seconds = time.perf_counter() - started
            cpu_after = (process_cpu_seconds(server.pid), postgres_cpu_seconds(database), time.process_time())
    finally:
        server.terminate()
        server.wait(timeout=30)
    latencies.sort()

    def pct(p: float) -> float:
        return round(latencies[min(len(latencies) - 1, int(p * len(latencies)))] * 1000, 1)

    return {
        "requests": requests,
        "clients": clients,
        "requests_per_second": round(requests / seconds, 1),
        "p50_ms": pct(0.50),
        "p99_ms": pct(0.99),
        "errors": errors,
        "refusals": refusals,
        "cpu_ms_per_request": {
            side: round((after - before) / requests * 1000, 2)
            for side, before, after in zip(("api", "postgres", "client"), cpu_before, cpu_after, strict=True)
        },
        "cpus": os.cpu_count(),
        "open_loyalty_published_soft_limit_rps": 1200,
    }


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument("--orders", type=int, default=1_000_000)
    parser.add_argument("--requests", type=int, default=4000)
    parser.add_argument("--clients", type=int, default=16)
    args = parser.parse_args()

    async with scratch_database("c360_bench_loyalty") as (url, database):
        data = await prepare(url, args.customers, args.orders)
        now = datetime.now(UTC)
        first = await daily(url, database, now)
        second = await daily(url, database, now + timedelta(days=1))
        books = await check_books(url)
        http = await redeem_over_http(url, database, args.requests, args.clients, args.customers)
    print(json.dumps({
        "benchmark": "loyalty", "machine": {"cpus": os.cpu_count()}, "data": data,
        "daily_run": {"first": first, "next_day": second, "target_seconds": 30, "books_balance": books},
        "redeem_points_http": http,
    }, indent=2, default=str))  # fmt: skip


if __name__ == "__main__":
    asyncio.run(main())
