"""Sync ingest benchmark: Tmall trades pulled from the simulator over HTTP, validated and landed.

    python bench/sync_ingest.py [--sizes 200000 1000000] [--people 20000] [--concurrency 4]

Prints one JSON document. Per size, in a fresh child process (so peak RSS is that size's own):
- `end_to_end`: records/s landed (signed TOP calls, backwards paging, pydantic validation, COPY into
  staging + INSERT ... ON CONFLICT, watermark), and the peak RSS of the sync process;
- `pull_only`: the same HTTP pull and validation with nothing landed, from the simulator's warm render cache
  as end to end has it: the most end to end could reach were landing free;
- `records_per_sync_cpu_s`: orders landed per CPU second of the sync process alone (simulator and
  PostgreSQL excluded): the pipeline's own cost;
- `status_updates`: a quarter of the orders moved one step on in the simulator (paid -> shipped -> finished
  -> refunded), then landed by an incremental run: records/s and CPU per order when most rows update orders
  already landed, as a marketplace feed does once its history is in;
- `cpu_bound`: how busy the box's CPUs were during end to end, and the rate (and share of the ceiling) that
  the same CPU per order would give with every CPU busy all the time: the most any overlap could reach;
- `copy_ceiling`: the same orders and lines loaded by raw asyncpg COPY (records/s), the ceiling;
- `share_of_ceiling`: end_to_end / copy_ceiling (and pull_only's, the most landing could leave for it).
The simulator runs in its own process on loopback. The database is DATABASE_URL / C360_DATABASE_URL
(a scratch database is created and dropped) or the embedded server.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sync.config import SyncSettings  # noqa: E402 - after the path set-up

SIMULATOR_CODE = """
import sys, uvicorn
from datetime import datetime
from sync.simulator import CST, SimulatorConfig, create_simulator_app
orders, people, days, port = (int(a) for a in sys.argv[1:5])
config = SimulatorConfig(orders=orders, people=people, days=days, order_shares={"tmall": 1.0},
                         start=datetime(2026, 9, 1, tzinfo=CST), render_cache_bytes=max(256, orders // 600) << 20)
uvicorn.run(create_simulator_app(config), host="127.0.0.1", port=port, log_level="warning", access_log=False)
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def server_url() -> str:
    from infra.settings import to_async_url

    url = os.environ.get("DATABASE_URL") or os.environ.get("C360_DATABASE_URL")
    if url:
        return to_async_url(url)
    from infra.embedded import embedded_url
    from infra.settings import get_settings

    return embedded_url(get_settings().pgdata)


class PeakRss:
    """Samples this process's RSS every 50 ms; `peak` in MiB."""

    def __init__(self) -> None:
        import psutil

        self.process = psutil.Process()
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.process.memory_info().rss)
            time.sleep(0.05)

    def __enter__(self) -> PeakRss:
        self.peak = self.process.memory_info().rss
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def mib(self) -> float:
        return round(self.peak / 2**20, 1)


def postgres_cpu_seconds(database: str) -> float:
    """CPU seconds used so far by the PostgreSQL backends serving `database` (found by their process title,
    `postgres: user database host(port) ...`): other work on the machine is not counted, and neither are
    the server's shared helpers (WAL writer, checkpointer), which run for everyone."""
    import psutil

    total = 0.0
    for proc in psutil.process_iter(["name", "cmdline", "cpu_times"]):
        cmdline = proc.info["cmdline"] or []
        if (
            proc.info["name"] in ("postgres", "postmaster")
            and cmdline
            and f" {database} " in f" {cmdline[0]} "
        ):
            times = proc.info["cpu_times"]
            total += times.user + times.system
    return total


def process_cpu_seconds(pid: int) -> float:
    import psutil

    times = psutil.Process(pid).cpu_times()
    return float(times.user + times.system)


@dataclass
class Meter:
    """Wall seconds of a block, and the CPU seconds spent in it by this process (sync), the bench database's
    PostgreSQL processes and the simulator."""

    seconds: float = 0.0
    sync: float = 0.0
    postgres: float = 0.0
    simulator: float = 0.0

    def us_per_record(self, records: int) -> dict[str, float]:
        return {k: round(getattr(self, k) / records * 1e6, 1) for k in ("sync", "postgres", "simulator")}


@contextmanager
def metered(database: str, simulator_pid: int) -> Iterator[Meter]:
    meter = Meter()
    pg, sim = postgres_cpu_seconds(database), process_cpu_seconds(simulator_pid)
    wall, cpu = time.perf_counter(), time.process_time()
    yield meter
    meter.seconds, meter.sync = time.perf_counter() - wall, time.process_time() - cpu
    meter.postgres = postgres_cpu_seconds(database) - pg
    meter.simulator = process_cpu_seconds(simulator_pid) - sim


@contextmanager
def running_simulator(size: int, people: int, days: int) -> Iterator[tuple[int, str]]:
    """The simulator in its own process (its own core), answering on a free loopback port: its pid and base
    URL, for as long as the block runs."""
    import httpx

    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-c", SIMULATOR_CODE, str(size), str(people), str(days), str(port)]
    )
    try:
        base = f"http://127.0.0.1:{port}"
        for _ in range(600):
            try:
                httpx.get(base + "/_sim/clock", timeout=1)
                break
            except httpx.TransportError:
                time.sleep(0.1)
        else:
            raise RuntimeError("the simulator did not start")
        yield process.pid, base
    finally:
        process.terminate()
        process.wait(timeout=30)


def simulator_settings(base: str, days: int, **overrides: Any) -> SyncSettings:
    """The product's sync settings pointed at the simulator, reaching back over all `days` of its feed."""
    data = SyncSettings().pointed_at_simulator(base).model_dump()
    data.update(initial_lookback_days=days + 20, **overrides)
    return SyncSettings.model_validate(data)


ORDER_COLUMNS = (
    "id", "channel_code", "external_id", "source_identity_id", "customer_id", "store_id", "status", "source_status",
    "total_fen", "paid_fen", "discount_fen", "shipping_fen", "currency", "placed_at", "paid_at",
    "source_updated_at", "landed_at", "updated_at",
)  # fmt: skip
LINE_COLUMNS = ("order_id", "line_no", "sku", "product_id", "title", "quantity", "unit_price_fen",
                "discount_fen", "amount_fen", "external_id")  # fmt: skip


async def copy_ceiling(con: Any, like: str) -> float:
    """Orders per second for loading the landed orders and their lines by raw COPY into fresh tables made
    `like` the real ones (`including defaults`: bare heaps; `including all`: with their indexes and checks).
    Only the COPY calls are timed; the rows are read back from the landed tables first."""
    suffix = "bare" if like == "including defaults" else "indexed"
    copy_seconds = 0.0
    copied = 0
    async with con.transaction():
        for table, cols in (("orders", ORDER_COLUMNS), ("order_line", LINE_COLUMNS)):
            target = f"{table}_copy_{suffix}"
            await con.execute(f"create table {target} (like {table} {like})")
            cursor = con.cursor(f"select {', '.join(cols)} from {table}")  # noqa: S608 - constants
            chunk: list[Any] = []
            async for record in cursor:
                chunk.append(tuple(record))
                if len(chunk) == 20_000:
                    t = time.perf_counter()
                    await con.copy_records_to_table(target, records=chunk, columns=cols)
                    copy_seconds += time.perf_counter() - t
                    copied += len(chunk) if table == "orders" else 0
                    chunk = []
            if chunk:
                t = time.perf_counter()
                await con.copy_records_to_table(target, records=chunk, columns=cols)
                copy_seconds += time.perf_counter() - t
                copied += len(chunk) if table == "orders" else 0
    return copied / copy_seconds


async def child(
    simulator_pid: int, base: str, size: int, days: int, concurrency: int, batch_size: int
) -> dict[str, Any]:
    import asyncpg
    import httpx
    from sqlalchemy.engine import make_url
    from sqlalchemy.ext.asyncio import create_async_engine

    from infra.migrate import upgrade
    from sync.connectors.registry import make_connector
    from sync.runner import run_stream
    from tests.conftest import create_database, drop_database

    db_url = await create_database(server_url(), "c360_bench")
    database = make_url(db_url).database or ""
    engine = create_async_engine(db_url, pool_size=4)
    try:
        await asyncio.to_thread(upgrade, db_url, "heads")
        settings = simulator_settings(base, days, concurrency=concurrency, batch_size=batch_size)

        catalog = make_connector("catalog", settings)
        await run_stream(engine, catalog, "products")
        await catalog.aclose()

        # Pull only: HTTP + validation + normalization, nothing landed. Twice: the first pull has the simulator
        # render every page (its render cache then serves them, as it does for the end-to-end run below), the
        # second is timed, so that it bounds what end to end can reach.
        for _ in range(2):
            connector = make_connector("tmall", settings)
            started = time.perf_counter()
            pulled = 0
            async for batch in connector.pull("trades", None, None):
                pulled += len(batch.orders)
            pull_seconds = time.perf_counter() - started
            await connector.aclose()

        # End to end.
        connector = make_connector("tmall", settings)
        with PeakRss() as rss:
            with metered(database, simulator_pid) as e2e:
                stats = await run_stream(engine, connector, "trades")
        requests = connector.client.stats.requests
        await connector.aclose()

        # The ceiling: the same orders and lines, loaded by raw COPY (only the COPY calls are timed).
        dsn = make_url(db_url).set(drivername="postgresql").render_as_string(hide_password=False)
        con = await asyncpg.connect(dsn)
        try:
            bare_rate = await copy_ceiling(con, "including defaults")
            indexed_rate = await copy_ceiling(con, "including all")
        finally:
            await con.close()
        # Status updates: a quarter of the orders move one step on (paid -> shipped -> finished -> refunded) and
        # an incremental run lands them. The steady state of a marketplace feed, where most rows landed update
        # orders already there (their lines compared, kept unless they changed).
        async with httpx.AsyncClient(base_url=base, timeout=300) as client:
            reply = await client.post("/_sim/update_orders", json={"count": size // 4, "channels": ["tmall"]})
            reply.raise_for_status()
            moved = len(reply.json()["updated"])
        connector = make_connector("tmall", settings)
        with metered(database, simulator_pid) as updating:
            updates = await run_stream(engine, connector, "trades")
        await connector.aclose()

        e2e_rate = stats.orders / e2e.seconds
        # What the run's CPU per order leaves room for: the box's CPUs busy all the time with the same work
        # (sync, PostgreSQL's backends and the simulator) would land cpus / (their CPU per order) orders a second.
        # No overlap of the three, however good, gets past this; only doing less per order does.
        cpus = os.cpu_count() or 1
        cpu_per_order = (e2e.sync + e2e.postgres + e2e.simulator) / stats.orders
        full_box_rate = cpus / cpu_per_order
        return {
            "orders": size,
            "landed_orders": stats.orders,
            "landed_order_lines": stats.order_lines,
            "identities": stats.identities,
            "http_requests": requests,
            "end_to_end": {
                "seconds": round(e2e.seconds, 1),
                "records_per_s": round(e2e_rate),
                "peak_rss_mib": rss.mib,
                "sync_process_cpu_s": round(e2e.sync, 1),
                "records_per_sync_cpu_s": round(stats.orders / e2e.sync),
                # Where the machine's CPU went, per order landed: the whole box has 2 CPUs, so 20k/s
                # leaves 100 µs for the three together.
                "cpu_us_per_record": e2e.us_per_record(stats.orders),
            },  # fmt: skip
            "cpu_bound": {
                "box_busy_share": round(cpu_per_order * stats.orders / (e2e.seconds * cpus), 3),
                "records_per_s_with_box_fully_busy": round(full_box_rate),
                "share_of_ceiling_with_box_fully_busy": round(full_box_rate / bare_rate, 3),
            },
            "status_updates": {
                "orders_moved": moved,
                "landed_orders": updates.orders,
                "seconds": round(updating.seconds, 1),
                "records_per_s": round(updates.orders / updating.seconds),
                "cpu_us_per_record": updating.us_per_record(updates.orders),
            },
            "pull_only": {
                "seconds": round(pull_seconds, 1),
                "records_per_s": round(pulled / pull_seconds),
                "share_of_ceiling": round(pulled / pull_seconds / bare_rate, 3),
            },
            "copy_ceiling": {
                "records_per_s": round(bare_rate),
                "note": "the landed orders + their lines by asyncpg COPY into bare heaps (no index, no "
                "constraint); records counted as orders",
            },  # fmt: skip
            "share_of_ceiling": round(e2e_rate / bare_rate, 3),
            "copy_ceiling_indexed": {
                "records_per_s": round(indexed_rate),
                "note": "the same COPY into tables with the real ones' indexes and checks (foreign keys and "
                "reference-check triggers left out)",
            },  # fmt: skip
            "share_of_indexed_ceiling": round(e2e_rate / indexed_rate, 3),
        }
    finally:
        await engine.dispose()
        await drop_database(db_url)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[200_000, 1_000_000])
    parser.add_argument("--people", type=int, default=20_000)
    parser.add_argument("--days", type=int, default=80)
    parser.add_argument("--concurrency", type=int, default=4)
    # The product's own defaults unless told otherwise (C360_SYNC_BATCH_SIZE, C360_SYNC_WRITERS).
    parser.add_argument("--batch-size", type=int, default=SyncSettings.model_fields["batch_size"].default)
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        from sync.runner import tune_gc_for_sync

        tune_gc_for_sync()  # as the `c360 sync` commands and the flows do
        with running_simulator(args.child, args.people, args.days) as (simulator_pid, base):
            result = asyncio.run(
                child(simulator_pid, base, args.child, args.days, args.concurrency, args.batch_size)
            )
        print(json.dumps(result))
        return
    runs = []
    for size in args.sizes:
        out = subprocess.run(
            [sys.executable, __file__, "--child", str(size), "--people", str(args.people), "--days", str(args.days),
             "--concurrency", str(args.concurrency), "--batch-size", str(args.batch_size)],
            capture_output=True, text=True,
        )  # fmt: skip
        if out.returncode != 0:
            sys.stderr.write(out.stderr)
            raise SystemExit(f"the {size}-order run failed (exit {out.returncode}); its stderr is above")
        runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
    print(json.dumps({
        "benchmark": "sync_ingest",
        "channel": "tmall (taobao.trades.sold.increment.get, page_size 100)",
        "machine": {"cpus": os.cpu_count()},
        "people": args.people, "days": args.days, "concurrency": args.concurrency, "batch_size": args.batch_size,
        "writers": SyncSettings().writers,
        "at": (datetime.now().astimezone() - timedelta(0)).isoformat(timespec="seconds"),
        "runs": runs,
        "run_id": uuid.uuid4().hex[:8],
    }, indent=2))  # fmt: skip


if __name__ == "__main__":
    main()
