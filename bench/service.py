"""Service and care benchmark, printing JSON.

(a) The daily care-trigger run (birthday greetings with their coupons, points-expiry reminders, case and
    purchase follow-ups, regular visits, tier notices, win-backs, survey invitations; each with its consent
    check) over --customers customers with --orders orders and their points lots, closed cases, tier
    changes, lifecycle entries and consents, all generated in SQL: wall time per trigger, this process's
    peak RSS, the PostgreSQL backends' CPU; then the same run five minutes later (it writes only what became
    due in those minutes: every action is once per customer, kind and period).
(b) `caseQueue` plus `transitionCase` over HTTP (`c360 serve` in its own process) from --clients
    concurrent clients: each round asks for the queue's 20 most urgent open complaints, then moves one
    complaint of its own one step (recorded -> validated). Rounds per second and latency percentiles of
    each call.

Target on this machine: the care run <= 30 s at 100k customers. The database is DATABASE_URL /
C360_DATABASE_URL (a scratch database is created and dropped) or the embedded server.
Usage: python -m bench.service [--customers 100000 --orders 500000 --rounds 4000 --clients 16]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine

from bench.scratch import generate, scratch_database, start_api
from bench.sync_ingest import PeakRss, postgres_cpu_seconds, process_cpu_seconds

GENERATE = (
    "insert into channel (code, family, name, trust_rank) values ('tmall', 'marketplace', 'Tmall', 50),"
    " ('app', 'own', 'App', 10), ('wechat', 'social', 'WeChat', 40) on conflict do nothing",
    # One in ten has no phone; 3% gold, 1% platinum (the regular visits); birthdays spread over the year.
    """insert into golden_customer (status, name, phone, birth_date, tier_code)
       select 'active', 'c' || g, case when g % 10 <> 3 then '+86138' || lpad(g::text, 8, '0') end,
              date '1970-01-01' + ((g * 37) % 16000)::int,
              case when g % 100 < 3 then 'gold' when g % 100 = 3 then 'platinum' else 'ordinary' end
       from generate_series(1, cast(:customers as bigint)) g""",
    # Half follow the brand on WeChat (an openid: template messages can reach them).
    """insert into source_identity (channel_code, external_id, customer_id, phone_verified, wechat_openid)
       select case when g % 2 = 0 then 'wechat' else 'tmall' end, 'i' || g, g, false,
              case when g % 2 = 0 then 'o' || g end
       from generate_series(1, cast(:customers as bigint)) g""",
    # Consent: 30% granted WeChat marketing, 30% SMS marketing (10% later withdrew it), 2% stopped service
    # contact.
    """insert into consent (customer_id, purpose, status, source, recorded_at)
       select g, 'marketing_wechat', 'granted', 'wechat', now() - interval '200 days'
       from generate_series(1, cast(:customers as bigint)) g where g % 10 < 3
       union all
       select g, 'marketing_sms', 'granted', 'app', now() - interval '200 days'
       from generate_series(1, cast(:customers as bigint)) g where g % 10 between 2 and 4
       union all
       select g, 'marketing_sms', 'withdrawn', 'app', now() - interval '20 days'
       from generate_series(1, cast(:customers as bigint)) g where g % 10 = 4
       union all
       select g, 'service_contact', 'withdrawn', 'staff', now() - interval '10 days'
       from generate_series(1, cast(:customers as bigint)) g where g % 50 = 7""",
    # Orders over the last 400 days, 50 to 2050 yuan with one in twenty above 3000 (the follow-up calls).
    """insert into orders (channel_code, external_id, customer_id, status, total_fen, paid_fen, currency, placed_at,
                           paid_at)
       select (array['tmall', 'app'])[1 + g % 2], 'b' || g, 1 + (g * 7919) % :customers, 'completed', amt, amt,
              'CNY', ts, ts
       from (select g, case when g % 20 = 0 then 300000 + g % 500000 else 5000 + (g * 104729) % 200000 end as amt,
                    now() - make_interval(secs => ((g * 6007) % (400 * 86400))::double precision) as ts
             from generate_series(1, cast(:orders as bigint)) g) x""",
    # A released points lot per order, expiring 395 days after it was earned (some within the next 30 days).
    """insert into points_lot (customer_id, points_earned, points_remaining, earned_at, expires_at, order_id,
                               basis_fen, available_at, released_at, rule_version)
       select customer_id, paid_fen / 100, paid_fen / 200, paid_at, paid_at + interval '395 days', id, paid_fen,
              paid_at + interval '7 days', paid_at + interval '7 days', 'bench'
       from orders where paid_at + interval '7 days' <= now()""",
    # One customer in twenty had a case closed in the last 60 days (follow-up calls, survey invitations).
    """insert into service_case (case_no, customer_id, type, status, priority, subject, opened_at,
                                 first_response_at, resolved_at, closed_at, outcome, first_response_due_at,
                                 resolve_due_at)
       select 'BC' || g, g, 'complaint', 'closed', 'normal', 'bench', t - interval '1 day', t - interval '20 hours',
              t, t, 'resolved', t, t + interval '2 days'
       from (select g, now() - make_interval(secs => ((g * 104729) % (60 * 86400))::double precision) as t
             from generate_series(1, cast(:customers as bigint)) g where g % 20 = 0) x""",
    # Tier changes over the last 30 days (1%) and customers turning at-risk over the last 60 days (5%).
    """insert into tier_history (customer_id, from_tier, to_tier, reason, changed_at)
       select g, 'silver', 'gold', 'bench', now() - make_interval(secs => ((g * 104729) % (30 * 86400))::double precision)
       from generate_series(1, cast(:customers as bigint)) g where g % 100 = 1""",
    """insert into lifecycle_history (customer_id, stage, from_stage, started_at)
       select g, 'at_risk', 'active', now() - make_interval(secs => ((g * 7919 * 13) % (60 * 86400))::double precision)
       from generate_series(1, cast(:customers as bigint)) g where g % 20 = 2""",
    # The open complaints the HTTP part works on: recorded, their deadlines spread over the coming days.
    """insert into service_case (case_no, customer_id, type, status, priority, subject, opened_at, sla_clock,
                                 first_response_due_at, resolve_due_at, sla_due_at, opened_by, rule_version)
       select 'BO' || g, 1 + (g * 31) % :customers, 'complaint', 'recorded', 'normal', 'bench', t, 'calendar',
              t + interval '24 hours', t + interval '72 hours', t + interval '24 hours', 'staff:bench', 'bench'
       from (select g, now() - make_interval(secs => ((g * 11) % 86400)::double precision) as t
             from generate_series(1, cast(:open_cases as bigint)) g) x""",
    "analyze",
)


async def prepare(url: str, customers: int, orders: int, open_cases: int) -> dict[str, Any]:
    from crm.loyalty import config as loyalty_config
    from crm.loyalty.engine import sync_tiers

    engine = create_async_engine(url)
    async with engine.begin() as conn:
        await sync_tiers(conn, loyalty_config.get_config())  # the tiers customers are in
    seconds = await generate(
        url, GENERATE, {"customers": customers, "orders": orders, "open_cases": open_cases}
    )
    async with engine.connect() as conn:
        counts = (
            await conn.execute(
                sa.text(
                    "select (select count(*) from points_lot), (select count(*) from service_case),"
                    " (select count(*) from consent)"
                )
            )
        ).one()
    await engine.dispose()
    return {
        "customers": customers,
        "orders": orders,
        "points_lots": int(counts[0]),
        "cases": int(counts[1]),
        "open_cases": open_cases,
        "consents": int(counts[2]),
        "generate_seconds": seconds,
    }


async def care_run(database: str, now: datetime) -> dict[str, Any]:
    from crm.care.flows import daily_run
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
        "written": counts["written"],
        "step_seconds": counts["seconds"],
        "seconds": round(seconds, 2),
        "peak_rss_mib": rss.mib,
        "postgres_cpu_seconds": round(backend_cpu, 2),
    }


async def outbox_states(url: str) -> dict[str, int]:
    engine = create_async_engine(url)
    async with engine.connect() as conn:
        found = (await conn.execute(sa.text("select state, count(*) from care_action group by 1"))).all()
    await engine.dispose()
    return {str(state): int(n) for state, n in found}


async def queue_over_http(url: str, database: str, rounds: int, clients: int) -> dict[str, Any]:
    import httpx

    from api.auth import issue_token
    from infra.settings import Settings
    from schema.relay import to_global_id

    engine = create_async_engine(url)
    async with engine.connect() as conn:
        ids = list(
            (
                await conn.execute(
                    sa.text("select id from service_case where status = 'recorded' order by id limit :n"),
                    {"n": 2 * rounds},
                )
            ).scalars()
        )
    await engine.dispose()
    if len(ids) < 2 * rounds:
        raise SystemExit(f"--open-cases must be at least twice --rounds ({2 * rounds}): found {len(ids)}")
    server, port = start_api(url)  # started once, before the measured part
    token = issue_token(Settings(env="development"), "bench-desk", "staff")
    base = f"http://127.0.0.1:{port}/graphql"
    queue = (
        '{ caseQueue(first: 20, filter: {type: "complaint"}) { totalCount'
        " edges { node { id caseNo status slaSecondsLeft breached } } } }"
    )
    move = (
        'mutation ($c: ID!) { transitionCase(input: {caseId: $c, to: "validated", note: "bench"})'
        " { case { status } userErrors { code } } }"
    )
    latencies: dict[str, list[float]] = {"caseQueue": [], "transitionCase": []}
    errors = 0
    try:
        async with httpx.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=60) as client:
            for _ in range(300):
                try:
                    if (
                        await client.post(base, json={"query": "{ health { database } }"})
                    ).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                await asyncio.sleep(0.1)

            async def call(name: str, body: dict[str, Any]) -> None:
                nonlocal errors
                t = time.perf_counter()
                reply = await client.post(base, json=body)
                latencies[name].append(time.perf_counter() - t)
                data = reply.json()
                if reply.status_code != 200 or data.get("errors"):
                    errors += 1
                elif name == "transitionCase" and data["data"]["transitionCase"]["userErrors"]:
                    errors += 1

            async def worker(n: int, todo: list[int]) -> None:
                # Each client moves cases of its own: the measure is the API, not two clients racing.
                for i in range(n, len(todo), clients):
                    await call("caseQueue", {"query": queue})
                    await call("transitionCase", {"query": move,
                                                  "variables": {"c": to_global_id("ServiceCase", todo[i])}})  # fmt: skip

            # A warm-up round (connections, caches) on the first half of the cases, the measured one after.
            warm = ids[: max(clients * 4, rounds // 10)]
            await asyncio.gather(*(worker(n, warm) for n in range(clients)))
            for values in latencies.values():
                values.clear()
            errors = 0
            measured = ids[rounds : 2 * rounds]
            # Where the CPU goes: the API process, PostgreSQL's backends and this client share the cores.
            cpu_before = (
                process_cpu_seconds(server.pid),
                postgres_cpu_seconds(database),
                time.process_time(),
            )
            started = time.perf_counter()
            await asyncio.gather(*(worker(n, measured) for n in range(clients)))
            seconds = time.perf_counter() - started
            cpu_after = (process_cpu_seconds(server.pid), postgres_cpu_seconds(database), time.process_time())
    finally:
        server.terminate()
        server.wait(timeout=30)

    def pct(values: list[float], p: float) -> float:
        ordered = sorted(values)
        return round(ordered[min(len(ordered) - 1, int(p * len(ordered)))] * 1000, 1)

    both = latencies["caseQueue"] + latencies["transitionCase"]
    return {
        "rounds": rounds,
        "clients": clients,
        "rounds_per_second": round(rounds / seconds, 1),
        "requests_per_second": round(2 * rounds / seconds, 1),
        "p50_ms": pct(both, 0.50),
        "p99_ms": pct(both, 0.99),
        **{f"{name}_p50_ms": pct(v, 0.50) for name, v in latencies.items()},
        **{f"{name}_p99_ms": pct(v, 0.99) for name, v in latencies.items()},
        "errors": errors,
        "cpu_ms_per_request": {
            side: round((after - before) / (2 * rounds) * 1000, 2)
            for side, before, after in zip(("api", "postgres", "client"), cpu_before, cpu_after, strict=True)
        },
        "cpus": os.cpu_count(),
    }


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument("--orders", type=int, default=500_000)
    parser.add_argument("--rounds", type=int, default=4000)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--open-cases", type=int, default=20_000)
    args = parser.parse_args()

    async with scratch_database("c360_bench_service") as (url, database):
        data = await prepare(url, args.customers, args.orders, args.open_cases)
        now = datetime.now(UTC)
        first = await care_run(database, now)
        again = await care_run(database, now + timedelta(minutes=5))
        states = await outbox_states(url)
        http = await queue_over_http(url, database, args.rounds, args.clients)
    print(json.dumps({
        "benchmark": "service", "machine": {"cpus": os.cpu_count()}, "data": data,
        "care_daily": {"first": first, "rerun": again, "outbox": states, "target_seconds": 30},
        "case_queue_and_transition_http": http,
    }, indent=2, default=str))  # fmt: skip


if __name__ == "__main__":
    asyncio.run(main())
