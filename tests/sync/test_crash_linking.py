"""Linking survives a crash: the sync process is killed (SIGKILL) at points chosen by what it has landed,
mid-landing and mid-linking, over several runs; the next run lands and links everything, so the landed rows
and the links equal those of one clean run. The pending links are the database's, not a run's memory."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import sys

from sqlalchemy.engine import make_url

from sync.identities import pending_links
from tests.conftest import ROOT, fetch_rows
from tests.sync.conftest import count, simulator, snapshot, truncate_landed

CHANNELS = ("tmall", "app", "pos")


def _small(settings):
    return settings.model_copy(
        update={c: getattr(settings, c).model_copy(update={"page_size": 25}) for c in ("app", "pos")}
    )


async def _sync(url: str, settings, kill_when=None) -> bool:
    """Run the driver process; with `kill_when(line)`, SIGKILL it at the first output line that says so.
    True when the process finished on its own."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.sync.crash_driver", url, settings.model_dump_json(), *CHANNELS,
        cwd=ROOT, stdout=asyncio.subprocess.PIPE, env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    assert process.stdout is not None
    killed = False
    async for raw in process.stdout:
        if kill_when is not None and not killed and await kill_when(raw.decode().strip()):
            process.send_signal(signal.SIGKILL)
            killed = True
    code = await process.wait()
    assert killed or code == 0, f"the sync process failed on its own (exit {code})"
    return not killed


async def _links(engine) -> set[frozenset[str]]:
    """Who is linked with whom: the identities of each golden customer, whatever its id."""
    rows = await fetch_rows(
        engine, "select customer_id, channel_code || ':' || external_id from source_identity order by 1, 2"
    )
    groups: dict[object, set[str]] = {}
    for customer, key in rows:
        groups.setdefault(customer, set()).add(key)
    return {frozenset(g) for g in groups.values()}


async def test_killed_runs_leave_nothing_unlinked_after_the_next_run(settings_for, clean_db, database_url):
    url = make_url(database_url).set(drivername="postgresql+asyncpg").render_as_string(hide_password=False)
    with simulator() as base:
        settings = _small(settings_for(base, batch_size=50))
        assert await _sync(url, settings)
    reference = await snapshot(clean_db)
    reference_links = await _links(clean_db)
    assert await pending_links(clean_db) == 0
    total_orders = len(reference["orders"])

    await truncate_landed(clean_db)
    rng = random.Random(15)
    with simulator() as base:
        settings = _small(settings_for(base, batch_size=50))
        # Killed mid-landing twice (after a random share of the orders has landed), then as linking starts.
        for share in (rng.uniform(0.1, 0.4), rng.uniform(0.5, 0.9)):
            target = int(total_orders * share)

            async def landed_enough(line: str, target: int = target) -> bool:
                # What has committed, not what the process says: the kill falls after a known amount landed.
                return (
                    line.startswith("landed ")
                    and await count(clean_db, "select count(*) from orders") >= target
                )

            orders_before = await count(clean_db, "select count(*) from orders")
            assert not await _sync(url, settings, kill_when=landed_enough)
            assert await count(clean_db, "select count(*) from orders") > orders_before

        async def linking(line: str) -> bool:
            return line == "linking"

        assert not await _sync(url, settings, kill_when=linking)
        waiting = await pending_links(clean_db)
        assert waiting > 0, "the kill before linking should leave identities waiting"
        # The last run lands nothing new for most identities, and still links every one that waited.
        assert await _sync(url, settings)
    assert await pending_links(clean_db) == 0
    assert await snapshot(clean_db) == reference
    assert await _links(clean_db) == reference_links
    mismatched = await count(
        clean_db,
        "select count(*) from orders o join source_identity si on si.id = o.source_identity_id "
        "where o.customer_id is distinct from si.customer_id",
    )
    assert mismatched == 0
