"""Run one stream of one connector: pull batches, group them to `batch_size`, land each in a transaction.

Pulling and landing overlap: the connector fetches the next pages, and the next batch is prepared
(standardized, staging rows built), while PostgreSQL writes the previous batch. A bounded queue between
them keeps memory flat.
"""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import orjson
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from sync.canonical import Batch, QuarantinedRow
from sync.connectors.base import Connector
from sync.landing import (
    MISSING_ORDER,
    REJECTED_FILE,
    ROW_ERRORS,
    Lander,
    LandingStats,
    is_note,
    read_watermark,
)

log = logging.getLogger(__name__)

Progress = Callable[[str, LandingStats], None]

# CPython's default thresholds (700, 10, 10) start a collection every 700 net container allocations. A sync
# run allocates dozens per order and keeps them until their batch lands, so with the defaults the collector
# re-scans the same young, surviving objects over and over: about a third of the sync process's CPU in
# `bench/sync_ingest.py`. Larger generations keep cyclic garbage collected, just less often.
SYNC_GC_THRESHOLDS = (20_000, 20, 20)


def tune_gc_for_sync() -> None:
    """Collector thresholds for a process that runs sync (the `c360` sync commands and the benchmark)."""
    gc.set_threshold(*SYNC_GC_THRESHOLDS)


# Streams read by source time, where a window read again returns what it returned (cursor feeds, files and
# pushes do not): their malformed rows are re-fetched by re-reading from where the run that held them started.
REFETCH_STREAMS = frozenset(
    {"tmall.trades", "tmall.refunds", "jd.orders", "app.members", "app.orders", "pos.transactions"}
)


def payload_fault(q: QuarantinedRow) -> bool:
    """Held because the channel sent the row malformed (not a mapping that does not know a value yet, not a
    note about a row that landed, not a dependent waiting for its parent)."""
    if not q.errors or is_note(q) or q.entity == REJECTED_FILE:
        return False
    return not any(e.get("type") == MISSING_ORDER or "unknown " in str(e.get("msg", "")) for e in q.errors)


async def run_stream(
    engine: AsyncEngine,
    connector: Connector,
    stream: str,
    *,
    since: datetime | None = None,
    progress: Progress | None = None,
    queue_depth: int = 2,
    run_id: UUID | None = None,
    from_start: bool = False,
) -> LandingStats:
    """Pull `stream` from its watermark (or `since`) to now and land it; return the totals, also stored in
    `sync_stream_run` under `run_id` (the sync run it belongs to). `from_start`: read as a first pull does,
    the stored watermark ignored (it ends where a normal run leaves it; a crash midway only re-reads more)."""
    key = connector.watermark_key(stream)
    started = datetime.now(UTC)
    watermark = None if from_start else await read_watermark(engine, key)
    total = LandingStats()
    queue: asyncio.Queue[Batch | BaseException | None] = asyncio.Queue(maxsize=queue_depth)
    batch_size = connector.settings.batch_size

    refetch_since: str | None = None
    refetch_known = False

    async def tag_refetch(batch: Batch) -> None:
        # Rows the channel sent malformed cannot heal from their own payload: they keep where to be read again
        # (since None: from the start, as a first pull that reads everything did).
        nonlocal refetch_since, refetch_known
        faulty = [q for q in batch.quarantined if payload_fault(q)]
        if not faulty or key not in REFETCH_STREAMS:
            return
        if not refetch_known:
            first = watermark is None and since is None
            if not (first and connector.full_first_pull(stream)):
                refetch_since = (await connector.start_time(watermark, since)).isoformat()
            refetch_known = True
        for q in faulty:
            q.refetch = {"stream": stream, "since": refetch_since, "external_id": q.external_id}

    async def produce() -> None:
        try:
            pending = Batch()
            async for batch in connector.pull(stream, watermark, since):
                if batch.quarantined:
                    await tag_refetch(batch)
                pending.extend(batch)
                if pending.size() >= batch_size:
                    await queue.put(pending)
                    pending = Batch()
            # The last batch may hold only a watermark advance (an empty window): it lands all the same.
            await queue.put(pending)
            await queue.put(None)
        except Exception as exc:  # noqa: BLE001 - handed to the consumer, which raises it
            # Everything pulled before the failure has landed or is queued ahead of it: no loss.
            await queue.put(exc)

    async def consume(lander: Lander) -> None:
        # One write in flight at a time, in order, on the lander's connection; the next batch is prepared (CPU)
        # while PostgreSQL works on the previous one. A failed write stops everything after it.
        writing: asyncio.Task[LandingStats] | None = None
        written: Batch | None = None

        async def finish() -> None:
            assert writing is not None and written is not None
            try:
                stats = await writing
            except ROW_ERRORS as exc:
                # A row the checks let through broke the batch: land it piece by piece around that row.
                log.warning(
                    "%s: a batch failed on a row (%s, %s); isolating it",
                    key, getattr(exc, "sqlstate", "?"), getattr(exc, "constraint_name", None) or "-",
                )  # fmt: skip
                stats = await lander.land_isolating(written)
            stats.expected = written.expected
            total.merge(stats)
            if written.files_done:
                connector.files_landed(written.files_done)
            if progress is not None:
                progress(key, total)

        try:
            while True:
                batch = await queue.get()
                if batch is None or isinstance(batch, BaseException):
                    break
                prepared = await lander.prepare_async(batch)
                if writing is not None:
                    await finish()
                writing, written = asyncio.create_task(lander.write(prepared)), batch
            # What was pulled before a failure lands before the failure is raised.
            if writing is not None:
                await finish()
                writing = None
            if isinstance(batch, BaseException):
                raise batch
        finally:
            if writing is not None and not writing.done():
                writing.cancel()
                await asyncio.gather(writing, return_exceptions=True)

    async with Lander.open(engine, connector.settings.writers) as lander:
        lander.bounds = connector.settings.time_bounds()
        producer = asyncio.create_task(produce(), name=f"pull {key}")
        try:
            await consume(lander)
            await producer
        finally:
            if not producer.done():
                producer.cancel()
                await asyncio.gather(producer, return_exceptions=True)
    await record_accounting(engine, key, started, total, run_id)
    log.info("%s landed %s", key, total.summary())
    return total


async def record_accounting(
    engine: AsyncEngine, stream: str, started: datetime, stats: LandingStats, run_id: UUID | None = None
) -> None:
    """One row per stream run: rows read = landed + quarantined + rejected + unchanged, with the counts."""
    async with engine.begin() as conn:
        await conn.execute(
            sa.text(
                "insert into sync_stream_run (run_id, stream, started_at, rows_read, landed, quarantined, "
                "rejected, unchanged, counts) values (:run_id, :stream, :started, :read, :landed, :quarantined, "
                ":rejected, :unchanged, cast(:counts as jsonb))"
            ),
            {
                "run_id": run_id,
                "stream": stream,
                "started": started,
                "read": stats.read,
                "landed": stats.landed,
                "quarantined": stats.quarantined,
                "rejected": stats.rejected,
                "unchanged": stats.unchanged,
                "counts": orjson.dumps(stats.summary()).decode(),
            },  # fmt: skip
        )


async def run_connector(
    engine: AsyncEngine,
    connector: Connector,
    *,
    since: datetime | None = None,
    streams: tuple[str, ...] | None = None,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """All streams of a connector, one after the other (refunds need their trades landed first)."""
    results: dict[str, Any] = {}
    total = LandingStats()
    from sync.quarantine import heal

    for stream in streams or connector.streams:
        stats = await run_stream(engine, connector, stream, since=since, progress=progress)
        total.merge(stats)
        results[stream] = stats.summary()
    healed = await heal(engine, connector.settings, connector.channel)
    total.identity_ids |= healed.identity_ids
    results["_heal"] = healed
    results["_total"] = total
    return results
