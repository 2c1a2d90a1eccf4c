"""How streams behave across runs: watermarks that advance per batch (POS HTTP too), accounting of every row
read, reruns that rewrite nothing."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from sync.connectors.base import SyncError
from sync.landing import read_watermark
from tests.conftest import fetch_rows
from tests.sync.conftest import SINCE, count, run, sim_post
from tests.sync.test_row_isolation import sale, write_csv


async def test_the_pos_http_watermark_advances_with_every_batch(sim, settings_for, clean_db):
    base = settings_for(sim, batch_size=50)
    settings = base.model_copy(
        update={"pos": base.pos.model_copy(update={"page_size": 25}), "max_retries": 1}
    )
    landed = asyncio.Event()

    async def arm() -> None:
        await landed.wait()
        await sim_post(sim, "/_sim/faults", {"path_prefix": "/pos", "kind": "500", "count": 100_000})

    armer = asyncio.ensure_future(arm())
    with pytest.raises(SyncError):
        await run(
            clean_db, settings, "pos", streams=("transactions",), progress=lambda key, stats: landed.set()
        )
    await armer
    # The run died mid-feed: what landed moved the watermark, so a restart re-reads only the lateness window.
    partial = await read_watermark(clean_db, "pos.transactions")
    assert partial is not None and partial["watermark_at"] is not None
    async with httpx.AsyncClient() as client:
        await client.delete(sim + "/_sim/faults")
    await run(clean_db, settings, "pos", streams=("transactions",))
    final = await read_watermark(clean_db, "pos.transactions")
    assert final is not None and final["watermark_at"] > partial["watermark_at"]


async def _versions(engine) -> dict[str, dict[object, object]]:
    """Every row's write stamp: updated_at where the table has one, xmin (the writing transaction) else."""
    queries = {
        "orders": "select id, updated_at from orders",
        "source_identity": "select id, updated_at from source_identity",
        "golden_customer": "select id, updated_at from golden_customer",
        "product": "select id, xmin::text from product",
        "refund": "select id, xmin::text from refund",
        "order_line": "select (order_id, line_no)::text, xmin::text from order_line",
    }
    return {name: dict(await fetch_rows(engine, sql)) for name, sql in queries.items()}


async def test_an_identical_rerun_rewrites_nothing(sim, settings_for, clean_db):
    from sync.identities import link_identities

    settings = settings_for(sim)
    first: dict[str, Any] = {}
    for channel in ("tmall", "app", "pos"):
        first[channel] = await run(clean_db, settings, channel, since=SINCE)
    await run(clean_db, settings, "catalog")
    await link_identities(clean_db, set())
    before = await _versions(clean_db)
    assert all(before[t] for t in ("orders", "source_identity", "golden_customer", "order_line", "refund"))

    await run(clean_db, settings, "catalog")
    for channel in ("tmall", "app", "pos"):
        again = await run(clean_db, settings, channel, since=SINCE)
        for stream, counts in again.items():
            if stream.startswith("_"):
                continue
            # Everything read again was landed before: unchanged, or held as before (a cursor feed, like the
            # app's events, reads nothing again).
            if stream not in ("events", "files"):
                assert counts["read"] == first[channel][stream]["read"] > 0, (channel, stream)
            assert counts["unchanged"] == counts["read"] - counts["quarantined"], (channel, stream, counts)
    await link_identities(clean_db, set())
    after = await _versions(clean_db)
    for table, stamps in before.items():
        changed = [k for k, v in stamps.items() if after[table].get(k) != v]
        assert changed == [], f"{table}: {len(changed)} rows rewritten by an identical rerun"


async def test_every_row_read_is_accounted_for_and_stored(sim, settings_for, clean_db):
    settings = settings_for(sim, pos_file_stable_seconds=0)
    drop = settings.pos_drop_dir
    good = [sale(f"T-OK-{n}") for n in range(5)] + [sale("T-NOTE", member_phone="12345")]
    bad = [sale("T-NEG", total="-1.00"), sale("T-SKU", sku="S" * 65), sale("T-NOLINE", line_no="")]
    write_csv(drop / "a.csv", good + bad)
    (drop / "b.csv").write_bytes(b"\xff\xfe\xfd broken")
    result = await run(clean_db, settings, "pos", streams=("files",))
    counts = result["files"]
    assert (counts["read"], counts["orders"], counts["quarantined"], counts["rejected"], counts["unchanged"]) == (
        10, 6, 3, 1, 0
    )  # fmt: skip
    assert (
        counts["read"] == counts["orders"] + counts["quarantined"] + counts["rejected"] + counts["unchanged"]
    )
    assert await count(clean_db, "select count(*) from orders") == 6
    held = await count(
        clean_db,
        "select count(*) from quarantine where external_id like 'T-%' and reason not like '%member_phone%'",
    )
    assert held == 3
    stored = await fetch_rows(
        clean_db,
        "select rows_read, landed, quarantined, rejected, unchanged from sync_stream_run where stream = 'pos.files'",
    )
    assert stored == [(10, 6, 3, 1, 0)]

    # The same rows again, in a file of another name: read again, nothing landed, the bad ones held again.
    write_csv(drop / "c.csv", good + bad)
    again = (await run(clean_db, settings, "pos", streams=("files",)))["files"]
    assert (again["read"], again["orders"], again["quarantined"], again["rejected"], again["unchanged"]) == (
        9, 0, 3, 0, 6
    )  # fmt: skip
