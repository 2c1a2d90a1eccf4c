"""Erased people stay erased: before a batch lands, identities that carry an identifier on the erasure
suppression list (identity.erasure) are dropped, and what refers to them loses the reference: an order
lands without its buyer (its totals are the retailer's books), an interaction or consent of theirs is not
landed at all (its content is the person's).

The list is read once per run; while it is empty (the common case) a batch costs nothing more."""

from __future__ import annotations

import dataclasses

import asyncpg

from identity.erasure import identifier_keys, suppression_hash
from infra.settings import get_settings
from sync.canonical import Batch, ConsentRecord, InteractionRecord, OrderRecord, PersonIdentity


def _keys_of(p: PersonIdentity) -> list[tuple[str, str]]:
    a = p.attributes
    return identifier_keys(
        channel=p.channel,
        external_id=p.external_id,
        phone=a.get("phone"),
        email=a.get("email"),
        unionid=a.get("wechat_unionid"),
    )


async def load_erased(con: asyncpg.Connection) -> frozenset[str]:
    """The suppression list's hashes, read once per sync run (erasures are rare: thousands, not millions;
    a person erased while a run is in flight is kept out from the next run on)."""
    return frozenset(r[0] for r in await con.fetch("select value_hash from erasure_suppression"))


def drop_erased(batch: Batch, erased: frozenset[str]) -> tuple[Batch, int]:
    """The batch without erased people, and how many identities were dropped."""
    if not erased:
        return batch, 0
    key = get_settings().erasure_key
    wanted: dict[tuple[str, str], list[str]] = {}
    for p in batch.identities:
        wanted[(p.channel, p.external_id)] = [suppression_hash(k, v, key) for k, v in _keys_of(p)]
    # References to identities the batch does not carry (a known buyer's next order).
    refs: list[OrderRecord | InteractionRecord | ConsentRecord] = [
        *batch.orders,
        *batch.interactions,
        *batch.consents,
    ]
    for r in refs:
        if r.identity_external_id and (r.channel, r.identity_external_id) not in wanted:
            wanted[(r.channel, r.identity_external_id)] = [
                suppression_hash(f"external:{r.channel}", r.identity_external_id, key)
            ]
    gone = {ref for ref, hashes in wanted.items() if not erased.isdisjoint(hashes)}
    if not gone:
        return batch, 0

    def theirs(r: OrderRecord | InteractionRecord | ConsentRecord) -> bool:
        return (r.channel, r.identity_external_id) in gone

    identities = [p for p in batch.identities if (p.channel, p.external_id) not in gone]
    return (
        dataclasses.replace(
            batch,
            identities=identities,
            orders=[
                dataclasses.replace(o, identity_external_id=None) if theirs(o) else o for o in batch.orders
            ],
            interactions=[i for i in batch.interactions if not theirs(i)],
            consents=[c for c in batch.consents if not theirs(c)],
        ),
        len(batch.identities) - len(identities),
    )
