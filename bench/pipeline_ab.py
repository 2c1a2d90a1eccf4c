"""Code A/B for the sync process's CPU: normalizing and preparing the same Tmall pages with two checkouts.

    python bench/pipeline_ab.py --a /path/to/checkout-a --b /path/to/checkout-b [--orders 200000] [--runs 3]

Prints one JSON document: per run, µs per order of each side for `normalize` (`fast_trades_to_batch`) and
`prepare` (`Lander.prepare`, with and without identity standardization), and b/a.

Why: this box's speed drifts by a third or more between runs, so two runs of `bench/sync_ingest.py`
cannot resolve a 10% change in one stage of the sync thread. Here the pages are pulled from the simulator
once (its raw bytes, validated once), and both checkouts' `sync` packages are loaded side by side in this
one process; they take turns page by page (normalize) and batch by batch (prepare), alternating which goes
first, so both see the same phase of the box. `prepare_median_batch_b_over_a` is the median of the per-batch
ratios of prepare without standardization, the steadiest figure. Run it with the same checkout on both
sides first: its spread is the noise floor (when this was written: normalize within 2%, the median batch
within 4%, prepare's totals within 9%). The cyclic garbage collector is left out of the figures.
Nothing is landed: the landers write to no database.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import importlib
import os
import sys
import time
from pathlib import Path
from typing import Any, cast

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.ab import feed_arguments, print_report  # noqa: E402
from bench.sync_ingest import running_simulator, simulator_settings  # noqa: E402


async def pull_pages(base: str, days: int) -> list[bytes]:
    """The raw bytes of every trades page the simulator serves (the connector's own signed, paged pull)."""
    import sync.connectors.taobao as taobao
    from sync.connectors.registry import make_connector

    pages: list[bytes] = []
    parse = taobao.parse_trades_page

    def keep(content: bytes) -> Any:
        pages.append(content)
        return parse(content)

    taobao.parse_trades_page = keep  # the page fetcher looks it up at call time
    try:
        connector = make_connector("tmall", simulator_settings(base, days))
        async for _ in connector.pull("trades", None, None):
            pass
        await connector.aclose()
    finally:
        taobao.parse_trades_page = parse
    return pages


class Side:
    """One checkout's `sync` package, imported under its own module objects, with standardization timed."""

    def __init__(self, checkout: str) -> None:
        for name in [m for m in sys.modules if m == "sync" or m.startswith("sync.")]:
            del sys.modules[name]
        sys.path.insert(0, checkout)
        try:
            self.taobao = cast(Any, importlib.import_module("sync.connectors.taobao"))
            self.landing = cast(Any, importlib.import_module("sync.landing"))
            self.canonical = cast(Any, importlib.import_module("sync.canonical"))
        finally:
            sys.path.remove(checkout)
        self.standardize_seconds = 0.0
        standardize = self.landing.standardize_identities

        def timed(identities: list[Any]) -> Any:
            started = time.process_time()
            try:
                return standardize(identities)
            finally:
                self.standardize_seconds += time.process_time() - started

        self.landing.standardize_identities = timed

    def fresh(self) -> None:
        self.standardize_seconds = self.normalize_seconds = self.prepare_seconds = 0.0
        self.lander = self.landing.Lander(object(), object())  # two writers' shares, no connections used
        self.pending = self.canonical.Batch()

    def prepare(self) -> float:
        """Prepare the pending batch; return its CPU seconds without standardization."""
        std = self.standardize_seconds
        started = time.process_time()
        self.lander.prepare(self.pending)
        spent = time.process_time() - started
        self.prepare_seconds += spent
        self.pending = self.canonical.Batch()
        return spent - (self.standardize_seconds - std)


def run(sides: dict[str, Side], pages: list[list[Any]], batch_size: int) -> dict[str, Any]:
    for side in sides.values():
        side.fresh()
    gc.collect()
    orders = 0
    ratios: list[float] = []
    for i, trades in enumerate(pages):
        for name in ("a", "b") if i % 2 == 0 else ("b", "a"):
            side = sides[name]
            started = time.process_time()
            batch = side.taobao.fast_trades_to_batch(trades)
            side.normalize_seconds += time.process_time() - started
            side.pending.extend(batch)
        orders += len(batch.orders)
        if sides["a"].pending.size() >= batch_size or i == len(pages) - 1:
            spent = {
                name: sides[name].prepare() for name in (("a", "b") if len(ratios) % 2 == 0 else ("b", "a"))
            }
            if spent["a"] > 0:  # an empty last batch has nothing to compare
                ratios.append(spent["b"] / spent["a"])
    ratios.sort()

    def per_order(seconds: float) -> float:
        return round(seconds / orders * 1e6, 2)

    figures = {
        name: {
            "normalize": per_order(s.normalize_seconds),
            "prepare": per_order(s.prepare_seconds),
            "prepare_without_standardize": per_order(s.prepare_seconds - s.standardize_seconds),
        }
        for name, s in sides.items()
    }
    a, b = figures["a"], figures["b"]
    return {
        "orders": orders,
        "us_per_order": figures,
        "b_over_a": {key: round(b[key] / a[key], 3) for key in a},
        "prepare_median_batch_b_over_a": round(ratios[len(ratios) // 2], 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--a", required=True, help="checkout a (a directory holding a `sync` package)")
    parser.add_argument("--b", required=True, help="checkout b")
    feed_arguments(parser)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    with running_simulator(args.orders, args.people, args.days) as (_, base):
        raw = asyncio.run(pull_pages(base, args.days))
        sides = {"a": Side(os.path.abspath(args.a)), "b": Side(os.path.abspath(args.b))}
    # Validated once (validation is not what is compared): each side normalizes the same trades.
    validate = sides["a"].taobao._fast_adapter.validate_json
    pages = [
        validate(content)["trades_sold_increment_get_response"].get("trades", {}).get("trade", [])
        for content in raw
    ]
    del raw
    # The cyclic collector is off while timing: a collection lands on whichever side happened to trigger it
    # (one side's normalize read 10-30% lower in A/A runs with it on). Reference counting still frees the
    # batches; what little is cyclic is collected between runs. So the figures leave the collector out.
    gc.collect()
    gc.disable()
    # One run unreported: what the two sides share (the identity standardizer's caches, the allocator's
    # arenas) is warmed by whichever goes first, which biased an A/A comparison's first run by 10-20%.
    run(sides, pages, args.batch_size)
    runs = [run(sides, pages, args.batch_size) for _ in range(args.runs)]
    print_report("pipeline_ab", args, runs)


if __name__ == "__main__":
    main()
