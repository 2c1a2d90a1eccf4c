"""The outbox's delivery side: two workers claiming at once never get the same action, a lease that runs
out lets another worker claim it, and only the lease holder may acknowledge."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from crm.care.outbox import CareRefusal, acknowledge, claim
from tests.conftest import fetch_rows
from tests.crm.service_support import rules

NOW = datetime(2026, 12, 10, 2, 0, tzinfo=UTC)
CONFIG = rules()


async def seed(engine: AsyncEngine, n: int) -> None:
    async with engine.begin() as conn:
        await conn.execute(
            sa.text(
                "with c as (insert into golden_customer (status) select 'active' from generate_series(1, :n) returning id)"
                " insert into care_action (customer_id, kind, period, channel, purpose, state, due_at)"
                " select id, 'regular_visit', 'visit:1', 'call_list', 'service', 'pending', :due from c"
            ),
            {"n": n, "due": NOW - timedelta(hours=1)},
        )


async def test_two_workers_claiming_at_once_never_share_an_action(committed_db: AsyncEngine) -> None:
    await seed(committed_db, 60)
    # One worker holds its claim open while the other claims: the locked rows are skipped, not shared.
    async with committed_db.connect() as a, committed_db.connect() as b:
        ta, tb = await a.begin(), await b.begin()
        first = await claim(a, CONFIG, worker="w1", limit=25, now=NOW)
        second = await claim(b, CONFIG, worker="w2", limit=25, now=NOW)
        await ta.commit()
        await tb.commit()
    assert len(first) == len(second) == 25
    assert not {r["id"] for r in first} & {r["id"] for r in second}

    # Two workers draining the rest concurrently, a few at a time: every action once.
    async def drain(worker: str) -> list[int]:
        got: list[int] = []
        while True:
            async with committed_db.begin() as conn:
                batch = await claim(conn, CONFIG, worker=worker, limit=3, now=NOW)
            if not batch:
                return got
            got += [r["id"] for r in batch]
            await asyncio.sleep(0)

    x, y = await asyncio.gather(drain("w3"), drain("w4"))
    assert len(x) + len(y) == 10 and not set(x) & set(y)
    [(claimed, distinct_workers)] = await fetch_rows(
        committed_db, "select count(*), count(distinct claimed_by) from care_action where state = 'claimed'"
    )
    assert claimed == 60 and distinct_workers >= 3


async def test_an_unacknowledged_lease_runs_out_and_only_the_holder_acknowledges(
    committed_db: AsyncEngine,
) -> None:
    await seed(committed_db, 2)
    lease = timedelta(seconds=CONFIG.care.lease.seconds)
    async with committed_db.begin() as conn:
        [one_action, other] = await claim(conn, CONFIG, worker="slow", limit=5, now=NOW)
    async with committed_db.begin() as conn:
        assert await claim(conn, CONFIG, worker="fast", limit=5, now=NOW + lease - timedelta(seconds=1)) == []
    async with committed_db.begin() as conn:
        again = await claim(conn, CONFIG, worker="fast", limit=1, now=NOW + lease)
    assert [r["id"] for r in again] == [one_action["id"]] and again[0]["attempts"] == 2
    async with committed_db.begin() as conn:
        with pytest.raises(CareRefusal) as lost:
            await acknowledge(
                conn, CONFIG, one_action["id"], worker="slow", delivered=True, error=None, now=NOW + lease
            )
    assert lost.value.code == "NOT_CLAIMED"
    async with committed_db.begin() as conn:
        done = await acknowledge(conn, CONFIG, one_action["id"], worker="fast", delivered=True, error=None,
                                 now=NOW + lease)  # fmt: skip
        failed = await acknowledge(conn, CONFIG, other["id"], worker="slow", delivered=False, error="gateway 503",
                                   now=NOW + timedelta(seconds=10))  # fmt: skip
    assert done["state"] == "delivered" and done["delivered_at"] == NOW + lease
    assert failed["state"] == "pending" and failed["last_error"] == "gateway 503"  # tried again later
    async with committed_db.begin() as conn:
        assert [r["id"] for r in await claim(conn, CONFIG, worker="w", limit=5, now=NOW + lease)] == [
            other["id"]
        ]
