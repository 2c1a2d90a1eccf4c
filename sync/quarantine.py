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
    "replayed_at, resolved_at, raw from quarantine where {condition} "
    "order by last_seen_at desc, id desc limit :limit"
)
REPLAY_SQL = (
    "select id, channel_code, entity, raw, payload_hash from quarantine where {condition} "
    "and id > :last order by id limit :chunk"
)


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
                            {**params, "last": last_id, "chunk": chunk},
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
                    failing_hashes = {payload_hash(q.raw) for q in failing} | stats.quarantined_hashes
                    resolved = [r.id for r in group if r.payload_hash not in failing_hashes]
                    await _mark(engine, resolved, failing)
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


async def _mark(engine: AsyncEngine, resolved: list[int], failing: list[QuarantinedRow]) -> None:
    async with engine.begin() as conn:
        if resolved:
            await conn.execute(
                sa.text(
                    "update quarantine set resolved_at = now(), replayed_at = now() where id = any(:ids)"
                ),
                {"ids": resolved},
            )
        for q in failing:
            await conn.execute(
                sa.text(
                    "update quarantine set replayed_at = now(), reason = :reason, errors = cast(:errors as jsonb) "
                    "where channel_code = :channel and payload_hash = :hash"
                ),
                {
                    "reason": q.reason,
                    "errors": orjson.dumps(q.errors).decode(),
                    "channel": q.channel,
                    "hash": payload_hash(q.raw),
                },  # fmt: skip
            )
