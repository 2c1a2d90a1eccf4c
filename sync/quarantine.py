"""Quarantine: list rows that failed validation, and replay them after a fix or a mapping change.

Replay runs the same validation and normalization as a live pull (the connector's `normalizers`), lands
what now passes, marks those rows resolved, and refreshes the reason of the rows that still fail.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from sync.canonical import Batch, QuarantinedRow
from sync.config import SyncSettings
from sync.connectors.registry import make_connector
from sync.landing import Lander, LandingStats, payload_hash

LIST_SQL = (
    "select id, channel_code, entity, external_id, reason, seen_count, first_seen_at, last_seen_at, "
    "replayed_at, resolved_at, raw, retry from quarantine where {condition} "
    "order by last_seen_at desc, id desc limit :limit"
)
REPLAY_SQL = (
    "select id, channel_code, entity, raw, payload_hash from quarantine where {condition} "
    "and not (errors @> cast(:note as jsonb)) and not (errors @> cast(:conflict as jsonb)) "
    "and id > :last order by id limit :chunk"
)
# Not replayed: orders noted because their buyer had not landed (they landed; `heal` attaches them), and
# conflicts (two versions for a person to choose between, not a payload to re-validate).
NOTE_FILTER = '[{"type": "missing_member"}]'
CONFLICT_FILTER = '[{"type": "conflict"}]'


@dataclass(frozen=True)
class QuarantineEntry:
    id: int
    channel: str
    entity: str
    external_id: str | None
    reason: str
    seen_count: int
    first_seen_at: datetime
    last_seen_at: datetime
    replayed_at: datetime | None
    resolved_at: datetime | None
    raw: dict[str, Any]
    # `revalidate` or `refetch` (from the channel: `c360 sync replay`).
    retry: str = "revalidate"


@dataclass
class ReplayReport:
    attempted: int = 0
    resolved: int = 0
    still_failing: int = 0
    landed: LandingStats = field(default_factory=LandingStats)
    by_channel: dict[str, dict[str, int]] = field(default_factory=dict)


async def list_quarantine(
    engine: AsyncEngine,
    *,
    channel: str | None = None,
    entity: str | None = None,
    include_resolved: bool = False,
    limit: int = 100,
) -> list[QuarantineEntry]:
    """Quarantined rows, newest first; open ones only unless `include_resolved`."""
    where = ["true"]
    params: dict[str, Any] = {"limit": limit}
    if channel:
        where.append("channel_code = :channel")
        params["channel"] = channel
    if entity:
        where.append("entity = :entity")
        params["entity"] = entity
    if not include_resolved:
        where.append("resolved_at is null")
    # Only fixed fragments are joined into the SQL; every value is a bound parameter.
    condition = " and ".join(where)
    query = sa.text(LIST_SQL.format(condition=condition))
    async with engine.connect() as conn:
        rows = (await conn.execute(query, params)).all()
    return [
        QuarantineEntry(
            r.id,
            r.channel_code,
            r.entity,
            r.external_id,
            r.reason,
            r.seen_count,
            r.first_seen_at,
            r.last_seen_at,
            r.replayed_at,
            r.resolved_at,
            r.raw if isinstance(r.raw, dict) else orjson.loads(r.raw),
            r.retry,
        )  # fmt: skip
        for r in rows
    ]


async def count_open(engine: AsyncEngine) -> dict[str, int]:
    async with engine.connect() as conn:
        rows = (
            await conn.execute(
                sa.text("select channel_code, count(*) from quarantine where resolved_at is null group by 1")
            )
        ).all()
    return {r[0]: int(r[1]) for r in rows}


async def replay_quarantine(
    engine: AsyncEngine,
    settings: SyncSettings,
    *,
    channel: str | None = None,
    ids: list[int] | None = None,
    chunk: int = 1000,
) -> ReplayReport:
    """Re-validate open quarantined rows and land those that now pass; returns what happened."""
    report = ReplayReport()
    where = ["resolved_at is null"]
    params: dict[str, Any] = {}
    if channel:
        where.append("channel_code = :channel")
        params["channel"] = channel
    if ids:
        where.append("id = any(:ids)")
        params["ids"] = ids
    condition = " and ".join(where)
    last_id = 0
    connectors: dict[str, Any] = {}
    try:
        async with Lander.open(engine) as lander:
            while True:
                async with engine.connect() as conn:
                    rows = (
                        await conn.execute(
                            sa.text(REPLAY_SQL.format(condition=condition)),
                            {
                                **params,
                                "last": last_id,
                                "chunk": chunk,
                                "note": NOTE_FILTER,
                                "conflict": CONFLICT_FILTER,
                            },
                        )
                    ).all()
                if not rows:
                    break
                last_id = rows[-1].id
                groups: dict[tuple[str, str], list[Any]] = defaultdict(list)
                for r in rows:
                    groups[(r.channel_code, r.entity)].append(r)
                for (code, entity), group in groups.items():
                    if code not in connectors:
                        connectors[code] = make_connector(code, settings)
                    normalize = connectors[code].normalizers().get(entity)
                    if normalize is None:
                        continue
                    raws = [r.raw if isinstance(r.raw, dict) else orjson.loads(r.raw) for r in group]
                    batch: Batch = normalize(raws)
                    failing = batch.quarantined
                    batch.quarantined = []
                    stats = await lander.land(batch)
                    report.landed.merge(stats)
                    # By the payload as it is now (an operator may have corrected it in place), not the stored hash.
                    by_hash = {payload_hash(q.raw): q for q in failing}
                    current = [payload_hash(raw) for raw in raws]
                    resolved = [
                        r.id for r, h in zip(group, current, strict=True)
                        if h not in by_hash and h not in stats.quarantined_hashes
                    ]  # fmt: skip
                    still = [(r.id, by_hash[h]) for r, h in zip(group, current, strict=True) if h in by_hash]
                    # Valid now but held again by landing (a refund whose order is still missing): landing
                    # kept the entry open with its reason; it was still tried, and says so.
                    again = [
                        r.id for r, h in zip(group, current, strict=True)
                        if h not in by_hash and h in stats.quarantined_hashes
                    ]  # fmt: skip
                    await _mark(engine, resolved, still, again)
                    report.attempted += len(group)
                    report.resolved += len(resolved)
                    report.still_failing += len(group) - len(resolved)
                    per = report.by_channel.setdefault(code, {"attempted": 0, "resolved": 0})
                    per["attempted"] += len(group)
                    per["resolved"] += len(resolved)
    finally:
        for c in connectors.values():
            await c.aclose()
    return report


async def _mark(
    engine: AsyncEngine, resolved: list[int], failing: list[tuple[int, QuarantinedRow]], again: list[int]
) -> None:
    async with engine.begin() as conn:
        if again:
            await conn.execute(
                sa.text("update quarantine set replayed_at = now() where id = any(:ids)"), {"ids": again}
            )
        if resolved:
            await conn.execute(
                sa.text(
                    "update quarantine set resolved_at = now(), replayed_at = now() where id = any(:ids)"
                ),
                {"ids": resolved},
            )
        for entry_id, q in failing:
            # A new reason joins the history; the old ones stay (what it was held for, and when).
            await conn.execute(
                sa.text(
                    "update quarantine set replayed_at = now(), reason = cast(:reason as text), "
                    "errors = cast(:errors as jsonb), "
                    "history = case when reason is distinct from cast(:reason as text) then history || "
                    "jsonb_build_array(jsonb_build_object('at', now(), 'reason', cast(:reason as text))) "
                    "else history end "
                    "where id = :id"
                ),
                {
                    "reason": q.reason,
                    "errors": orjson.dumps(q.errors).decode(),
                    "id": entry_id,
                },  # fmt: skip
            )


# Refunds held because their order had not landed, whose order has landed since (the parent's key is in the
# entry's errors; older entries name it only in the raw refund's `tid`).
DUE_REFUNDS_SQL = """
select q.id from quarantine q
join orders o on o.channel_code = q.channel_code
 and o.external_id = coalesce(q.errors -> 0 ->> 'parent', q.raw ->> 'tid')
where q.resolved_at is null and q.errors @> '[{"type": "missing_order"}]'
  and (cast(:channel as text) is null or q.channel_code = :channel)
"""

# Orders that landed before their buyer, whose buyer has landed since: attached in one statement, and their
# entries resolved with a line in the history.
ATTACH_ORDERS_SQL = """
with due as (
    select q.id, q.channel_code, q.external_id, si.id as identity_id, si.customer_id
    from quarantine q
    join source_identity si on si.channel_code = q.channel_code and si.external_id = q.raw ->> 'member'
    where q.resolved_at is null and q.errors @> '[{"type": "missing_member"}]'
      and (cast(:channel as text) is null or q.channel_code = :channel)
), attached as (
    update orders o set source_identity_id = d.identity_id, customer_id = coalesce(d.customer_id, o.customer_id),
        updated_at = now()
    from due d
    where o.channel_code = d.channel_code and o.external_id = d.external_id and o.source_identity_id is null
    returning o.id
), resolved as (
    update quarantine q set resolved_at = now(), replayed_at = now(),
        history = q.history || jsonb_build_array(jsonb_build_object('at', now(), 'reason', 'attached to its buyer'))
    from due d where q.id = d.id
    returning q.id
)
select (select count(*) from attached) as orders, (select count(*) from resolved) as entries,
       array(select distinct identity_id from due) as identity_ids
"""


@dataclass
class HealReport:
    """What a heal step did: dependents replayed now that their parent landed, orders attached to their buyer."""

    refunds_replayed: int = 0
    refunds_resolved: int = 0
    orders_attached: int = 0
    identity_ids: set[int] = field(default_factory=set)
    landed: LandingStats = field(default_factory=LandingStats)

    def summary(self) -> dict[str, int]:
        return {"refunds_resolved": self.refunds_resolved, "orders_attached": self.orders_attached}


async def heal(engine: AsyncEngine, settings: SyncSettings, channel: str | None = None) -> HealReport:
    """Dependents attach once their parent lands: refunds held for their order are replayed when it has landed,
    orders that landed before their buyer get the buyer. Run by every sync run after its streams, and after a
    replay; a no-op when nothing waits."""
    report = HealReport()
    async with engine.connect() as conn:
        due = (await conn.execute(sa.text(DUE_REFUNDS_SQL), {"channel": channel})).scalars().all()
    if due:
        replayed = await replay_quarantine(engine, settings, ids=list(due))
        report.refunds_replayed, report.refunds_resolved = replayed.attempted, replayed.resolved
        report.landed.merge(replayed.landed)
    async with engine.begin() as conn:
        row = (await conn.execute(sa.text(ATTACH_ORDERS_SQL), {"channel": channel})).one()
    report.orders_attached = int(row.orders)
    # The buyers' orders now read them: linking copies the customer onto the orders once they have one.
    report.identity_ids = set(row.identity_ids) | report.landed.identity_ids
    return report


REFETCH_SQL = """
select id, channel_code, external_id, entity, refetch from quarantine
where resolved_at is null and retry = 'refetch' and refetch is not null
  and (cast(:channel as text) is null or channel_code = :channel)
  and (cast(:ids as bigint[]) is null or id = any(:ids))
"""

# After a window was read again: an entry is resolved when its payload was not seen again in the re-read
# (last_seen_at before it started) and, where it has an external id, that record has landed.
RESOLVE_REFETCHED_SQL = """
update quarantine q set resolved_at = now(), replayed_at = now(),
    history = q.history || jsonb_build_array(jsonb_build_object('at', now(), 'reason', 're-fetched from the channel'))
where q.id = any(:ids) and q.last_seen_at < :started
  and (q.external_id is null
       or (q.entity = 'order' and exists (select 1 from orders o where o.channel_code = q.channel_code
                                          and o.external_id = q.external_id))
       or (q.entity = 'refund' and exists (select 1 from refund r where r.channel_code = q.channel_code
                                           and r.external_id = q.external_id))
       or (q.entity = 'customer' and exists (select 1 from source_identity si where si.channel_code = q.channel_code
                                             and si.external_id = q.external_id)))
returning q.id
"""


@dataclass
class RefetchReport:
    attempted: int = 0
    resolved: int = 0
    streams: list[str] = field(default_factory=list)
    landed: LandingStats = field(default_factory=LandingStats)


async def refetch_quarantine(
    engine: AsyncEngine, settings: SyncSettings, *, channel: str | None = None, ids: list[int] | None = None
) -> RefetchReport:
    """Read again, from the channel, the rows it sent malformed: each stream once, from the earliest window
    start its open entries recorded (landing is idempotent, so what was read before lands as unchanged). The
    watermark ends where a normal run would leave it."""
    from sync.runner import run_stream

    report = RefetchReport()
    async with engine.connect() as conn:
        rows = (await conn.execute(sa.text(REFETCH_SQL), {"channel": channel, "ids": ids})).all()
    if not rows:
        return report
    report.attempted = len(rows)
    # Per stream, the earliest start its entries recorded; None (read from the start) comes before any time.
    windows: dict[tuple[str, str], datetime | None] = {}
    for r in rows:
        where = r.refetch if isinstance(r.refetch, dict) else orjson.loads(r.refetch)
        since = None if where.get("since") is None else datetime.fromisoformat(where["since"])
        key = (r.channel_code, where["stream"])
        if key not in windows:
            windows[key] = since
        elif windows[key] is not None:
            windows[key] = None if since is None else min(since, windows[key])  # type: ignore[type-var]
    started = await _db_now(engine)
    for (code, stream), since in sorted(windows.items()):
        connector = make_connector(code, settings)
        try:
            stats = await run_stream(engine, connector, stream, since=since, from_start=since is None)
            report.landed.merge(stats)
        finally:
            await connector.aclose()
        report.streams.append(f"{code}.{stream}")
    async with engine.begin() as conn:
        resolved = (
            (
                await conn.execute(
                    sa.text(RESOLVE_REFETCHED_SQL), {"ids": [r.id for r in rows], "started": started}
                )
            )
            .scalars()
            .all()
        )
    report.resolved = len(resolved)
    return report


async def _db_now(engine: AsyncEngine) -> datetime:
    async with engine.connect() as conn:
        now: datetime = (await conn.execute(sa.text("select now()"))).scalar_one()
    return now
