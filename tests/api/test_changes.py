"""customerChanges: what changed since a cursor, oldest first, never skipping a change that committed late."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.api.graphql_support import Api, api_server
from tests.api.seed import seed

FEED = """query ($after: String) { customerChanges(first: 50, after: $after) {
  totalCount edges { node { customerId kind customer { customerId } } } pageInfo { endCursor } } }"""


async def read(api: Api, after: str | None) -> tuple[list[tuple[int, str]], str | None, dict[str, Any]]:
    feed = (await api.query(FEED, role="service", subject="warehouse", after=after))["customerChanges"]
    changes = [(e["node"]["customerId"], e["node"]["kind"]) for e in feed["edges"]]
    return changes, feed["pageInfo"]["endCursor"] or after, feed


async def read_at_least(
    api: Api, after: str | None, n: int
) -> tuple[list[tuple[int, str]], str | None, dict[str, Any]]:
    """read, again until n changes show: the feed serves a change once every transaction that began before
    it committed has ended, in any database of the server (other work on a shared server delays it)."""
    deadline = time.monotonic() + 60
    while True:
        changes, cursor, feed = await read(api, after)
        if len(changes) >= n or time.monotonic() > deadline:
            return changes, cursor, feed
        await asyncio.sleep(0.2)


async def test_the_feed_follows_changes_and_waits_for_late_commits(
    committed_db: AsyncEngine, database_url: str
) -> None:
    s = await seed(committed_db)
    with api_server(database_url) as api:
        first, cursor, feed = await read_at_least(api, None, 3)
        assert sorted(first) == sorted([(s.zhang, "created"), (s.li, "created"), (s.absorbed, "created")])
        assert feed["edges"][0]["node"]["customer"] is not None

        async with committed_db.begin() as conn:
            await conn.execute(
                sa.text("update golden_customer set city = '宁波市' where id = :z"), {"z": s.zhang}
            )
            # A refresh that writes the same values is not a change.
            await conn.execute(
                sa.text("update golden_customer set city = city, updated_at = now() where id = :l"),
                {"l": s.li},
            )
        changes, cursor, _ = await read_at_least(api, cursor, 1)
        assert changes == [(s.zhang, "updated")]

        # A transaction that wrote first but commits last: while it is open the feed shows neither it nor
        # what committed after it began, so a reader's cursor can never pass it.
        late = await committed_db.connect()
        tx = await late.begin()
        await late.execute(sa.text("update golden_customer set name = '李娜娜' where id = :l"), {"l": s.li})
        async with committed_db.begin() as conn:
            await conn.execute(
                sa.text(
                    "update golden_customer set status = 'erased', erased_at = now(), name = null where id = :z"
                ),
                {"z": s.zhang},
            )
        held, held_cursor, _ = await read(api, cursor)
        await tx.commit()
        await late.close()
        released, cursor, _ = await read_at_least(api, held_cursor, 2)
        again, _, _ = await read(api, cursor)
    assert held == []
    assert released == [(s.li, "updated"), (s.zhang, "erased")]  # in commit-safe order, both, once
    assert again == []
