"""Schema A/B for landing: the same Tmall batches landed into two databases, one at each revision.

    python bench/landing_ab.py --a 0005 --b heads [--orders 200000] [--people 20000] [--repeat 2]

Prints one JSON document: PostgreSQL CPU per order landed in each database, and b/a.

Why: this box's speed drifts by a third between identical runs, so two bench runs minutes apart cannot tell
a 5% change in PostgreSQL's cost from the drift. Here one process pulls the orders once, then lands each
batch into both databases back to back (which goes first alternates), through the product's own `Lander`
with its default writers, so both sides see the same rows in the same phase of the box. Only the backends
serving each database are counted (as in `bench/sync_ingest.py`). Run it with `--a X --b X` first: the
spread of that A/A run is the noise floor (3% when this was written).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.ab import feed_arguments, print_report  # noqa: E402
from bench.sync_ingest import (  # noqa: E402
    postgres_cpu_seconds,
    running_simulator,
    server_url,
    simulator_settings,
)


async def compare(base: str, revisions: dict[str, str], days: int, batch_size: int) -> dict[str, Any]:
    from sqlalchemy.engine import make_url
    from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

    from infra.migrate import upgrade
    from sync.canonical import Batch
    from sync.connectors.registry import make_connector
    from sync.landing import Lander
    from sync.runner import run_stream
    from tests.conftest import create_database, drop_database

    settings = simulator_settings(base, days, batch_size=batch_size)
    databases: dict[str, tuple[str, AsyncEngine]] = {}
    try:
        for side, revision in revisions.items():
            url = await create_database(server_url(), "c360_ab")
            databases[side] = (url, create_async_engine(url, pool_size=settings.writers + 1))
            await asyncio.to_thread(upgrade, url, revision)
            catalog = make_connector("catalog", settings)
            await run_stream(databases[side][1], catalog, "products")
            await catalog.aclose()

        # Pulled once, grouped as `run_stream` groups them, held in memory for both sides.
        connector = make_connector("tmall", settings)
        batches, pending = [], Batch()
        async for batch in connector.pull("trades", None, None):
            pending.extend(batch)
            if pending.size() >= batch_size:
                batches.append(pending)
                pending = Batch()
        batches.append(pending)
        await connector.aclose()

        cpu = dict.fromkeys(revisions, 0.0)
        names = {side: make_url(url).database or "" for side, (url, _) in databases.items()}
        async with (
            Lander.open(databases["a"][1], settings.writers) as lander_a,
            Lander.open(databases["b"][1], settings.writers) as lander_b,
        ):
            landers = {"a": lander_a, "b": lander_b}
            for i, batch in enumerate(batches):
                for side in ("a", "b") if i % 2 == 0 else ("b", "a"):
                    prepared = landers[side].prepare(batch)
                    before = postgres_cpu_seconds(names[side])
                    await landers[side].write(prepared)
                    cpu[side] += postgres_cpu_seconds(names[side]) - before
        orders = sum(len(b.orders) for b in batches)
        return {
            "orders": orders,
            "postgres_cpu_us_per_order": {side: round(cpu[side] / orders * 1e6, 1) for side in revisions},
            "b_over_a": round(cpu["b"] / cpu["a"], 3),
        }
    finally:
        for url, engine in databases.values():
            await engine.dispose()
            await drop_database(url)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--a", required=True, help="alembic revision of database a (e.g. 0005)")
    parser.add_argument("--b", required=True, help="alembic revision of database b (e.g. heads)")
    feed_arguments(parser)
    parser.add_argument(
        "--repeat", type=int, default=1, help="independent comparisons, each with fresh databases"
    )
    args = parser.parse_args()
    with running_simulator(args.orders, args.people, args.days) as (_, base):
        runs = [
            asyncio.run(compare(base, {"a": args.a, "b": args.b}, args.days, args.batch_size))
            for _ in range(args.repeat)
        ]
    print_report("landing_ab", args, runs)


if __name__ == "__main__":
    main()
