"""Channel simulator order feeds over real HTTP: prints JSON.

Starts the simulator under uvicorn in a subprocess (its own core), pulls each order feed the way the
connectors do (TOP and JOS: one-day modified windows, newest window first, the window's pages from the
last back, page_size 100; own app and POS: cursor pages of `--limit`), with `--concurrency` requests
in flight, and reports per feed: rows, wall seconds, rows/s, and the simulator's own CPU seconds
(rows per simulator CPU second is the ceiling it puts on an ingest pipeline).

    python bench/simulator_feed.py --orders 200000
    python bench/simulator_feed.py --orders 1000000 --max-rows 300000 --feeds tmall_increment app
    python bench/simulator_feed.py --orders 100000 --feeds tmall_increment jd --passes 2
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path and not os.environ.get("PYTHONPATH"):
    sys.path.insert(0, str(ROOT))

FEEDS = ("tmall_increment", "tmall_sold", "jd", "app", "pos")
TOP_TIMESTAMP = "2026-11-20 10:00:00"
JD_STATES = "WAIT_SELLER_STOCK_OUT,WAIT_GOODS_RECEIVE_CONFIRM,FINISHED_L,TRADE_CANCELED,LOCKED"
# What the Tmall connector asks for (sync/connectors/taobao.py TRADE_FIELDS).
TRADE_FIELDS = (
    "tid,status,buyer_open_uid,buyer_nick,receiver_name,receiver_mobile,receiver_state,receiver_city,"
    "receiver_district,receiver_address,receiver_zip,oaid,payment,post_fee,total_fee,discount_fee,created,"
    "modified,pay_time,end_time,orders"
)


def serve(args: argparse.Namespace) -> None:
    """The subprocess side: one simulator with `orders` rows in every order channel."""
    from sync.simulator import SimulatorConfig, create_simulator_app

    config = SimulatorConfig(
        seed=args.seed,
        people=args.people,
        orders=args.orders,
        order_shares={"tmall": 1.0, "jd": 1.0, "app": 1.0, "pos": 1.0},
    )
    try:
        from sync.simulator.__main__ import serve as serve_simulator
    except ImportError:  # a simulator from before `serve` existed (--simulator-root)
        import uvicorn

        uvicorn.run(create_simulator_app(config), host="127.0.0.1", port=args.port, log_level="warning")
        return
    serve_simulator(config, port=args.port, log_level="warning")


# The server subprocess runs this file's `serve` with the simulator package of --simulator-root first on
# the path (this file is loaded by path so the served `sync` package is the other tree's).
_SERVE = (
    "import runpy, sys; sys.argv[0] = 'simulator_feed'; "
    f"runpy.run_path({str(Path(__file__).resolve())!r}, run_name='__main__')"
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Puller:
    """Pulls one feed with a bounded number of requests in flight, like the connectors."""

    def __init__(self, base: str, concurrency: int, max_rows: int) -> None:
        import httpx

        self.http = httpx.AsyncClient(
            base_url=base,
            timeout=120,
            limits=httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency),
        )
        self.concurrency = concurrency
        self.max_rows = max_rows
        self.rows = 0
        self.requests = 0

    async def close(self) -> None:
        await self.http.aclose()

    async def top(self, params: dict[str, Any]) -> dict[str, Any]:
        from sync.simulator import SimulatorConfig, top_sign

        config = SimulatorConfig()
        form = {
            "method": "taobao.trades.sold.increment.get",
            "app_key": config.taobao_app_key,
            "session": config.taobao_session,
            "timestamp": TOP_TIMESTAMP,
            "format": "json",
            "v": "2.0",
            "sign_method": "md5",
            **{k: str(v) for k, v in params.items()},
        }
        form["sign"] = top_sign(form, config.taobao_app_secret, "md5")
        response = await self.http.post("/taobao/router/rest", data=form)
        response.raise_for_status()
        self.requests += 1
        return dict(orjson.loads(response.content))

    async def jd(self, business: dict[str, Any]) -> dict[str, Any]:
        from sync.simulator import SimulatorConfig, jos_sign

        config = SimulatorConfig()
        form = {
            "method": "jingdong.pop.order.search",
            "app_key": config.jd_app_key,
            "access_token": config.jd_access_token,
            "timestamp": TOP_TIMESTAMP,
            "v": "2.0",
            "360buy_param_json": json.dumps(business, ensure_ascii=False),
        }
        form["sign"] = jos_sign(form, config.jd_app_secret)
        response = await self.http.post("/jd/routerjson", data=form)
        response.raise_for_status()
        self.requests += 1
        return dict(orjson.loads(response.content))

    async def run_pages(self, thunks: list[Callable[[], Awaitable[int]]]) -> None:
        """Run page fetches with `concurrency` in flight until the row budget is spent."""
        pending = iter(thunks)

        async def worker() -> None:
            for thunk in pending:
                if self.rows >= self.max_rows:
                    return
                got = await thunk()  # not `+= await`: that reads self.rows before the await
                self.rows += got

        await asyncio.gather(*(worker() for _ in range(self.concurrency)))

    async def marketplace(self, feed: str, now: datetime, start: datetime) -> None:
        """Day windows from the clock back to the start of the history, each window's pages last first."""
        end = now
        while end > start and self.rows < self.max_rows:
            lo = end - timedelta(days=1)
            total = await self.window_total(feed, lo, end)
            pages = -(-total // 100)
            await self.run_pages([self.window_page(feed, lo, end, no) for no in range(pages, 0, -1)])
            end = lo - timedelta(seconds=1)

    async def window_total(self, feed: str, lo: datetime, hi: datetime) -> int:
        if feed == "jd":
            body = await self.jd(_jd_business(lo, hi, 1, 1))
            return int(body["jingdong_pop_order_search_responce"]["searchorderinfo_result"]["orderTotal"])
        body = await self.top(_top_window(feed, lo, hi, 1, 1))
        return int(next(iter(body.values()))["total_results"])

    def window_page(self, feed: str, lo: datetime, hi: datetime, no: int) -> Callable[[], Awaitable[int]]:
        async def fetch() -> int:
            if feed == "jd":
                body = await self.jd(_jd_business(lo, hi, no, 100))
                return len(
                    body["jingdong_pop_order_search_responce"]["searchorderinfo_result"]["orderInfoList"]
                )
            body = await self.top(_top_window(feed, lo, hi, no, 100))
            return len(next(iter(body.values()))["trades"]["trade"])

        return fetch

    async def cursor_feed(self, path: str, token: str, limit: int) -> None:
        """Cursor pages from the beginning (a cursor feed cannot be fetched in parallel)."""
        cursor: str | None = None
        headers = {"Authorization": f"Bearer {token}"}
        while self.rows < self.max_rows:
            params: dict[str, Any] = {"limit": limit}
            if cursor:
                params["cursor"] = cursor
            response = await self.http.get(path, params=params, headers=headers)
            response.raise_for_status()
            self.requests += 1
            body = orjson.loads(response.content)
            self.rows += len(body["data"])
            cursor = body["next_cursor"]
            if cursor is None:
                break


def _top_window(feed: str, lo: datetime, hi: datetime, no: int, size: int) -> dict[str, Any]:
    fmt = "%Y-%m-%d %H:%M:%S"
    if feed == "tmall_sold":
        return {
            "method": "taobao.trades.sold.get",
            "start_created": f"{lo:{fmt}}",
            "end_created": f"{hi:{fmt}}",
            "page_no": no,
            "page_size": size,
        }
    return {
        "start_modified": f"{lo:{fmt}}",
        "end_modified": f"{hi:{fmt}}",
        "page_no": no,
        "page_size": size,
        "fields": TRADE_FIELDS,
    }


def _jd_business(lo: datetime, hi: datetime, page: int, size: int) -> dict[str, Any]:
    fmt = "%Y-%m-%d %H:%M:%S"
    return {
        "start_date": f"{lo:{fmt}}",
        "end_date": f"{hi:{fmt}}",
        "order_state": JD_STATES,
        "dateType": "0",
        "sortType": "1",
        "page": str(page),
        "page_size": str(size),
    }


async def pull_feed(base: str, feed: str, args: argparse.Namespace) -> dict[str, int]:
    from sync.simulator import SimulatorConfig

    config = SimulatorConfig()
    puller = Puller(base, args.concurrency, args.max_rows)
    try:
        if feed in ("tmall_increment", "tmall_sold", "jd"):
            await puller.marketplace(feed, config.now, config.start)
        elif feed == "app":
            await puller.cursor_feed("/app/api/v1/orders", config.app_api_token, args.limit)
        else:
            await puller.cursor_feed("/pos/v1/transactions", config.pos_api_token, args.limit)
    finally:
        await puller.close()
    return {"rows": puller.rows, "requests": puller.requests}


def cpu_seconds(pid: int) -> float:
    import psutil

    times = psutil.Process(pid).cpu_times()
    return float(times.user + times.system)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--orders", type=int, default=200_000, help="orders in every order channel")
    parser.add_argument("--people", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--feeds", nargs="+", choices=FEEDS, default=list(FEEDS))
    parser.add_argument("--max-rows", type=int, default=100_000, help="stop a feed after this many rows")
    parser.add_argument("--limit", type=int, default=500, help="page size of the app and POS cursor feeds")
    parser.add_argument("--concurrency", type=int, default=4, help="requests in flight (marketplaces)")
    parser.add_argument(
        "--passes",
        type=int,
        default=1,
        help="pull each feed this many times; later passes are reported under `again` (they re-read "
        "the same pages: the render cache's effect, as in bench/sync_ingest's end-to-end pass)",
    )
    parser.add_argument(
        "--simulator-root",
        default=str(ROOT),
        help="tree whose sync/simulator is served (e.g. an export of an older commit, for before/after)",
    )
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args)
        return

    import httpx

    port = free_port()
    command = [sys.executable, "-c", _SERVE, "--serve", "--port", str(port)]
    command += ["--orders", str(args.orders), "--people", str(args.people), "--seed", str(args.seed)]
    env = {**os.environ, "PYTHONPATH": args.simulator_root}
    started = time.perf_counter()
    server = subprocess.Popen(command, env=env, cwd=args.simulator_root)
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 300
        while True:
            try:
                httpx.get(base + "/", timeout=2)
                break
            except httpx.TransportError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("simulator did not start") from None
                time.sleep(0.1)
        startup = time.perf_counter() - started
        results: dict[str, Any] = {}
        for feed in args.feeds:
            passes = []
            for _ in range(max(1, args.passes)):
                cpu0, t0 = cpu_seconds(server.pid), time.perf_counter()
                counts = asyncio.run(pull_feed(base, feed, args))
                wall, cpu = time.perf_counter() - t0, cpu_seconds(server.pid) - cpu0
                passes.append(
                    {
                        **counts,
                        "seconds": round(wall, 2),
                        "rows_per_s": round(counts["rows"] / wall),
                        "simulator_cpu_s": round(cpu, 2),
                        "rows_per_simulator_cpu_s": round(counts["rows"] / cpu) if cpu > 0 else None,
                        "simulator_cpu_us_per_row": round(cpu / counts["rows"] * 1e6, 1)
                        if counts["rows"]
                        else None,
                    }
                )
            results[feed] = {**passes[0], **({"again": passes[1:]} if len(passes) > 1 else {})}
    finally:
        server.terminate()
        server.wait(timeout=30)
    report = {
        "benchmark": "simulator_feed",
        "orders_per_channel": args.orders,
        "people": args.people,
        "page_size": {"tmall": 100, "jd": 100, "app": args.limit, "pos": args.limit},
        "concurrency": args.concurrency,
        "startup_s": round(startup, 2),
        "feeds": results,
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
