"""Merge and unmerge of golden customers, with evidence, an exact undo, and the audit trail.

Orders, points ledger entries, points lots, interactions, service cases and consents follow their
source identity both ways; rows without an identity follow the customer on merge and are listed in
the merge event's snapshot, so the unmerge sends exactly those back. Points balances are recomputed
from the ledger (the ledger trigger moves balances row by row, and a row-by-row move can cross zero
on either side, which the non-negative CHECK refuses: balances are padded during the move, then set
to the ledger's sums). Every operation writes a merge_event, identity_link_audit rows and audit_log.

Functions take an AsyncConnection inside the caller's transaction; `service.py`-style wrappers that
open their own transaction take the engine.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

import numpy as np
import pandas as pd
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from identity.compare import PreparedRecords, compare_pairs, describe_levels
from identity.model import FellegiSunterModel, reference_model
from identity.repository import (
    CURRENT_GOLDEN,
    create_golden_customers,
    identities_to_standard,
    load_identities,
    refresh_golden_records,
    write_audit_log,
    write_link_audit,
)
from identity.survivorship import GOLDEN_ATTRIBUTES, keep_manual, survive

# Tables whose rows belong to a customer through a source identity.
FOLLOWING_TABLES: tuple[str, ...] = (
    "orders",
    "points_ledger_entry",
    "points_lot",
    "interaction",
    "service_case",
    "consent",
)
GOLDEN_SNAPSHOT_COLUMNS = ("status", "merged_into", *GOLDEN_ATTRIBUTES, "tier_code", "lineage", "erased_at")


class MergeError(ValueError):
    """A merge or unmerge that cannot be done; the message says which customer/event and why."""


@dataclass
class MergePreview:
    """What a merge would produce: the survivor, the absorbed ids and the resulting golden record."""

    surviving_customer_id: int
    absorbed_customer_ids: list[int]
    golden: dict[str, Any]
    lineage: dict[str, Any]
    evidence: dict[str, Any]
    merge_event_id: int | None = None
    # The survivor's golden record now, and the rows that would move to it (identities, orders, ...).
    current: dict[str, Any] = field(default_factory=dict)
    moves: dict[str, int] = field(default_factory=dict)


@dataclass
class UnmergeResult:
    merge_event_id: int
    customer_ids: list[int] = field(default_factory=list)  # every customer whose identities changed


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    return value


async def _golden_rows(conn: AsyncConnection, ids: Sequence[int]) -> dict[int, dict[str, Any]]:
    cols = ", ".join(GOLDEN_SNAPSHOT_COLUMNS)
    rows = (
        await conn.execute(
            sa.text(f"select id, {cols} from golden_customer where id = any(:ids) for update"),  # noqa: S608 - identifiers are fixed names, values are bound
            {"ids": list(ids)},
        )
    ).mappings()
    return {int(r["id"]): {k: _jsonable(r[k]) for k in GOLDEN_SNAPSHOT_COLUMNS} for r in rows}


async def _restore_golden(conn: AsyncConnection, customer_id: int, snapshot: dict[str, Any]) -> None:
    sets = ", ".join(
        f"{k} = cast(:{k} as jsonb)" if k == "lineage" else f"{k} = :{k}" for k in GOLDEN_SNAPSHOT_COLUMNS
    )
    params: dict[str, Any] = {
        **snapshot,
        "id": customer_id,
        "lineage": json.dumps(snapshot.get("lineage") or {}),
    }
    params["birth_date"] = date.fromisoformat(params["birth_date"]) if params.get("birth_date") else None
    params["erased_at"] = datetime.fromisoformat(params["erased_at"]) if params.get("erased_at") else None
    await conn.execute(
        sa.text(f"update golden_customer set {sets}, updated_at = now() where id = :id"),  # noqa: S608 - fixed column names
        params,
    )


async def _move_rows(
    conn: AsyncConnection,
    to_customer: int,
    affected: Sequence[int],
    conditions: dict[str, tuple[str, dict[str, Any]]],
) -> None:
    """Move rows of each table matching its condition to `to_customer`; recompute points balances."""
    ledger = conditions.get("points_ledger_entry")
    if ledger is not None:
        where, params = ledger
        moved = (
            f"select coalesce(sum(abs(points) + abs(owed_points)), 0) from points_ledger_entry where {where}"  # noqa: S608 - identifiers are fixed names, values are bound
        )
        pad = (await conn.execute(sa.text(moved), params)).scalar_one()
        if pad:
            await conn.execute(
                sa.text(
                    "insert into points_balance (customer_id, balance, lifetime_earned)"
                    " select unnest(cast(:ids as bigint[])), 0, 0 on conflict (customer_id) do nothing"
                ),
                {"ids": [*affected, to_customer]},
            )
            await conn.execute(
                # Debt too: rows move one by one, and a payoff may arrive before the debt it pays.
                sa.text(
                    "update points_balance set balance = balance + :pad, debt = debt + :pad"
                    " where customer_id = any(:ids)"
                ),
                {"pad": int(pad), "ids": [*affected, to_customer]},
            )
    for table in FOLLOWING_TABLES:
        if table not in conditions:
            continue
        where, params = conditions[table]
        await conn.execute(
            sa.text(f"update {table} set customer_id = :to_customer where {where}"),  # noqa: S608 - identifiers are fixed names, values are bound
            {**params, "to_customer": to_customer},
        )
    await recompute_points_balances(conn, [*affected, to_customer])


def _following_conditions(
    customer: int, identity_ids: Sequence[int], listed: dict[str, list[int]]
) -> dict[str, tuple[str, dict[str, Any]]]:
    """Rows that go back with `identity_ids`: theirs, the identity-less rows listed in the merge snapshot,
    and ledger entries written later against a lot that goes back (an expiry of a manual credit): left
    behind, they would leave one side owing what the other holds."""
    base = "customer_id = :c and (source_identity_id = any(:ids) or (source_identity_id is null and id = any(:rids)))"
    conditions = {
        t: (base, {"c": customer, "ids": list(identity_ids), "rids": listed.get(t, [])})
        for t in FOLLOWING_TABLES
    }
    conditions["points_ledger_entry"] = (
        base[:-1] + " or (source_identity_id is null and lot_id = any(:lots)))",
        {**conditions["points_ledger_entry"][1], "lots": listed.get("points_lot", [])},
    )
    return conditions


async def recompute_points_balances(conn: AsyncConnection, customer_ids: Sequence[int]) -> None:
    """Set each customer's balance and lifetime points to the sums of its ledger."""
    await conn.execute(
        sa.text(
            "update points_balance pb set"
            " balance = coalesce((select sum(points) from points_ledger_entry l where l.customer_id = pb.customer_id), 0),"
            " lifetime_earned = coalesce((select sum(points) from points_ledger_entry l"
            "   where l.customer_id = pb.customer_id and l.kind = 'earn'), 0),"
            " debt = coalesce((select sum(owed_points) from points_ledger_entry l where l.customer_id = pb.customer_id), 0),"
            " updated_at = now()"
            " where pb.customer_id = any(:ids)"
        ),
        {"ids": list(set(customer_ids))},
    )


async def _tier_for(conn: AsyncConnection, customer_id: int) -> str | None:
    """The highest tier the customer qualifies for by lifetime points and paid spend."""
    row = (
        await conn.execute(
            sa.text(
                "select t.code from membership_tier t"
                " where t.min_points <= coalesce((select lifetime_earned from points_balance where customer_id = :c), 0)"
                "   and t.min_spend_fen <= coalesce((select sum(paid_fen) from orders where customer_id = :c"
                "        and status not in ('cancelled', 'refunded')), 0)"
                " order by t.rank desc limit 1"
            ),
            {"c": customer_id},
        )
    ).first()
    return None if row is None else str(row[0])


async def _set_tier(conn: AsyncConnection, customer_id: int, tier: str | None, reason: str) -> None:
    current = (
        await conn.execute(sa.text("select tier_code from golden_customer where id = :c"), {"c": customer_id})
    ).scalar_one()
    if current == tier:
        return
    await conn.execute(
        sa.text("update golden_customer set tier_code = :t where id = :c"), {"t": tier, "c": customer_id}
    )
    await conn.execute(
        sa.text("insert into tier_history (customer_id, from_tier, to_tier, reason) values (:c, :f, :t, :r)"),
        {"c": customer_id, "f": current, "t": tier, "r": reason},
    )


async def _best_tier(conn: AsyncConnection, tiers: Sequence[str | None], customer_id: int) -> str | None:
    """The higher of the merged customers' tiers and what the merged totals qualify for: a merge never demotes."""
    candidates = [t for t in [*tiers, await _tier_for(conn, customer_id)] if t]
    if not candidates:
        return None
    rows = (
        await conn.execute(
            sa.text("select code, rank from membership_tier where code = any(:c)"), {"c": candidates}
        )
    ).all()
    return max(rows, key=lambda r: r[1])[0] if rows else None


def pair_evidence(
    identities: pd.DataFrame,
    left_ids: Sequence[int],
    right_ids: Sequence[int],
    model: FellegiSunterModel | None = None,
) -> dict[str, Any]:
    """The best-scoring identity pair across two groups: score and the features that matched."""
    if not len(left_ids) or not len(right_ids):
        return {}
    std = identities_to_standard(identities)
    rec = PreparedRecords.from_frame(std)
    pos = {int(r): i for i, r in enumerate(std["record_id"])}
    pairs = np.array([(pos[a], pos[b]) for a in left_ids for b in right_ids if a in pos and b in pos])
    if not len(pairs):
        return {}
    levels = compare_pairs(rec, pairs[:, 0], pairs[:, 1])
    probability = (model or reference_model()).probability(levels)
    best = int(np.argmax(probability))
    return {
        "score": round(float(probability[best]), 6),
        "left_identity_id": int(std["record_id"].iat[pairs[best, 0]]),
        "right_identity_id": int(std["record_id"].iat[pairs[best, 1]]),
        "features": describe_levels(levels[best]),
    }


async def absorb_customers(
    conn: AsyncConnection,
    survivor: int,
    absorbed: Sequence[int],
    *,
    actor: str,
    reason: str | None,
    evidence: dict[str, Any],
    refresh: bool = True,
) -> int:
    """Merge `absorbed` customers into `survivor` inside the caller's transaction; returns the event id.

    Identities and every following row move to the survivor; the absorbed customers become
    status 'merged' with merged_into = survivor. The snapshot holds what the unmerge restores.
    """
    absorbed = sorted(set(absorbed) - {survivor})
    if not absorbed:
        raise MergeError("nothing to merge: give at least two different customer ids")
    golden = await _golden_rows(conn, [survivor, *absorbed])
    missing = {survivor, *absorbed} - set(golden)
    if missing:
        raise MergeError(f"customer ids {sorted(missing)} do not exist")
    inactive = [c for c, g in golden.items() if g["status"] != "active"]
    if inactive:
        raise MergeError(
            f"customers {sorted(inactive)} are not active (merged or erased); merge their survivor instead"
        )
    identity_rows = (
        await conn.execute(
            sa.text("select customer_id, id from source_identity where customer_id = any(:ids)"),
            {"ids": [survivor, *absorbed]},
        )
    ).all()
    identities: dict[str, list[int]] = {}
    for cid, iid in identity_rows:
        identities.setdefault(str(cid), []).append(int(iid))
    rows: dict[str, dict[str, list[int]]] = {}
    for table in FOLLOWING_TABLES:
        found = (
            await conn.execute(
                sa.text(f"select customer_id, id from {table} where customer_id = any(:ids)"),  # noqa: S608 - identifiers are fixed names, values are bound
                {"ids": absorbed},
            )
        ).all()
        rows[table] = {}
        for cid, rid in found:
            rows[table].setdefault(str(cid), []).append(int(rid))
    balances = (
        await conn.execute(
            sa.text(
                "select customer_id, balance, lifetime_earned from points_balance where customer_id = any(:ids)"
            ),
            {"ids": [survivor, *absorbed]},
        )
    ).all()
    snapshot = {
        "customers": {str(c): g for c, g in golden.items()},
        "identities": identities,
        "rows": rows,
        "balances": {str(c): {"balance": int(b), "lifetime_earned": int(le)} for c, b, le in balances},
    }
    event_id = int(
        (
            await conn.execute(
                sa.text(
                    "insert into merge_event (kind, actor, reason, surviving_customer_id, absorbed_customer_ids, evidence, snapshot)"
                    " values ('merge', :actor, :reason, :survivor, :absorbed, cast(:evidence as jsonb), cast(:snapshot as jsonb)) returning id"
                ),
                {
                    "actor": actor,
                    "reason": reason,
                    "survivor": survivor,
                    "absorbed": absorbed,
                    "evidence": json.dumps(evidence, default=_jsonable),
                    "snapshot": json.dumps(snapshot, default=_jsonable),
                },
            )
        ).scalar_one()
    )
    await conn.execute(
        sa.text(
            "update source_identity set customer_id = :s, updated_at = now() where customer_id = any(:ids)"
        ),
        {"s": survivor, "ids": absorbed},
    )
    await _move_rows(
        conn,
        survivor,
        absorbed,
        {t: ("customer_id = any(:ids)", {"ids": absorbed}) for t in FOLLOWING_TABLES},
    )
    await conn.execute(
        sa.text("update survey_response set customer_id = :s where customer_id = any(:ids)"),
        {"s": survivor, "ids": absorbed},
    )
    await conn.execute(
        sa.text(
            "update golden_customer set status = 'merged', merged_into = :s, updated_at = now() where id = any(:ids)"
        ),
        {"s": survivor, "ids": absorbed},
    )
    await write_link_audit(
        conn,
        [
            {
                "source_identity_id": iid,
                "from_customer_id": int(cid),
                "to_customer_id": survivor,
                "merge_event_id": event_id,
                "score": evidence.get("score"),
                "rule": str(evidence.get("rule", "merge"))[:64],
                "features": evidence.get("features") or {},
            }
            for cid, iids in identities.items()
            if int(cid) != survivor
            for iid in iids
        ],
    )
    if refresh:
        await refresh_golden_records(conn, [survivor])
    await _set_tier(
        conn,
        survivor,
        await _best_tier(conn, [g["tier_code"] for g in golden.values()], survivor),
        f"merge event {event_id}",
    )
    await write_audit_log(
        conn,
        actor,
        "identity.merge",
        survivor,
        {"merge_event_id": event_id, "absorbed": absorbed, "evidence": evidence},
    )
    return event_id


CURRENT_GOLDEN_WITH_STATUS = CURRENT_GOLDEN.replace("select id,", "select id, status,", 1)
# Rows of the absorbed customers that a merge moves to the survivor.
MOVES_SQL = "select " + ", ".join(  # noqa: S608 - fixed table names
    f"(select count(*) from {table} where customer_id = any(:ids)) as {table}"  # noqa: S608 - fixed table names
    for table in ("source_identity", *FOLLOWING_TABLES, "survey_response")
)


async def preview_merge(conn: AsyncConnection, customer_ids: Sequence[int]) -> MergePreview:
    """The dry run: survivor (the oldest id), absorbed ids, resulting golden record and evidence."""
    ids = sorted(set(customer_ids))
    if len(ids) < 2:
        raise MergeError("a merge needs at least two different customer ids")
    # What absorb_customers refuses, the dry run refuses too.
    rows = {
        int(r["id"]): dict(r)
        for r in (await conn.execute(sa.text(CURRENT_GOLDEN_WITH_STATUS), {"ids": ids})).mappings()
    }
    missing = set(ids) - set(rows)
    if missing:
        raise MergeError(f"customer ids {sorted(missing)} do not exist")
    inactive = [c for c, g in rows.items() if g["status"] != "active"]
    if inactive:
        raise MergeError(
            f"customers {sorted(inactive)} are not active (merged or erased); merge their survivor instead"
        )
    identities = await load_identities(conn, "si.customer_id = any(:ids)", {"ids": ids})
    survivor, absorbed = ids[0], ids[1:]
    # The refresh after the merge keeps the survivor's staff corrections: so does the preview.
    golden = keep_manual(
        survive(identities.astype(object).where(identities.notna(), None).to_dict("records")),
        rows[survivor],
        rows[survivor]["lineage"],
    )
    counted = (await conn.execute(sa.text(MOVES_SQL), {"ids": absorbed})).mappings().one()
    evidence = {"rule": "manual"}
    if len(identities):
        left = identities.loc[identities["customer_id"] == survivor, "id"].tolist()
        right = identities.loc[identities["customer_id"] != survivor, "id"].tolist()
        evidence.update(pair_evidence(identities, left, right))
    return MergePreview(
        survivor,
        absorbed,
        {k: _jsonable(v) for k, v in golden.attributes.items()},
        golden.lineage,
        evidence,
        current={k: _jsonable(rows[survivor].get(k)) for k in GOLDEN_ATTRIBUTES},
        moves={k: int(v) for k, v in counted.items()},
    )


async def merge_customers(
    conn: AsyncConnection,
    customer_ids: Sequence[int],
    *,
    actor: str,
    reason: str | None = None,
    dry_run: bool = False,
) -> MergePreview:
    """Manual merge: the oldest (smallest) id survives. With `dry_run` nothing is written."""
    preview = await preview_merge(conn, customer_ids)
    if dry_run:
        return preview
    preview.merge_event_id = await absorb_customers(
        conn,
        preview.surviving_customer_id,
        preview.absorbed_customer_ids,
        actor=actor,
        reason=reason,
        evidence=preview.evidence,
    )
    return preview


async def _new_event(
    conn: AsyncConnection,
    kind: str,
    actor: str,
    reason: str | None,
    survivor: int,
    absorbed: Sequence[int],
    evidence: dict[str, Any],
    undoes: int | None = None,
) -> int:
    return int(
        (
            await conn.execute(
                sa.text(
                    "insert into merge_event (kind, actor, reason, surviving_customer_id, absorbed_customer_ids, evidence, undoes_event_id)"
                    " values (:kind, :actor, :reason, :s, :a, cast(:e as jsonb), :u) returning id"
                ),
                {
                    "kind": kind,
                    "actor": actor,
                    "reason": reason,
                    "s": survivor,
                    "a": list(absorbed),
                    "e": json.dumps(evidence, default=_jsonable),
                    "u": undoes,
                },
            )
        ).scalar_one()
    )


async def unmerge_event(
    conn: AsyncConnection, merge_event_id: int, *, actor: str, reason: str | None = None
) -> UnmergeResult:
    """Undo a merge event: absorbed customers come back with their identities, rows, balances and tiers.

    Identities linked to the survivor after the merge stay with it. Fails with MergeError when the
    event is not an active merge, or when an absorbed customer was merged again since.
    """
    event = (
        (
            await conn.execute(
                sa.text(
                    "select kind, surviving_customer_id, absorbed_customer_ids, snapshot, undone_by_event_id from merge_event where id = :id for update"
                ),
                {"id": merge_event_id},
            )
        )
        .mappings()
        .first()
    )
    if event is None:
        raise MergeError(f"merge event {merge_event_id} does not exist")
    if event["kind"] != "merge":
        raise MergeError(
            f"event {merge_event_id} is a {event['kind']} event, not a merge; only merges can be undone"
        )
    if event["undone_by_event_id"] is not None:
        raise MergeError(
            f"merge event {merge_event_id} was already undone by event {event['undone_by_event_id']}"
        )

    survivor = int(event["surviving_customer_id"])
    absorbed = [int(a) for a in event["absorbed_customer_ids"]]
    snapshot = event["snapshot"]
    if snapshot.get("erased"):
        raise MergeError(
            f"the customers of merge event {merge_event_id} were erased: there is nothing to give back"
        )
    if "identities" not in snapshot or "customers" not in snapshot:
        # An event written by hand or imported from elsewhere: without the state before the merge there
        # is nothing to restore, and guessing would move the wrong identities.
        raise MergeError(
            f"merge event {merge_event_id} has no snapshot of the customers before it: it cannot be undone"
        )
    golden = await _golden_rows(conn, [survivor, *absorbed])
    moved_on = [a for a in absorbed if golden[a]["merged_into"] != survivor]
    if moved_on or golden[survivor]["status"] != "active":
        raise MergeError(
            f"merge event {merge_event_id} cannot be undone: customers changed since (survivor {survivor}); unmerge later events first"
        )
    undo_id = await _new_event(
        conn,
        "unmerge",
        actor,
        reason,
        survivor,
        absorbed,
        {"rule": "unmerge_event", "undoes": merge_event_id},
        undoes=merge_event_id,
    )
    audit: list[dict[str, Any]] = []
    for customer in absorbed:
        identity_ids = [int(i) for i in snapshot["identities"].get(str(customer), [])]
        await _restore_golden(conn, customer, snapshot["customers"][str(customer)])
        await conn.execute(
            sa.text(
                "update source_identity set customer_id = :c, updated_at = now() where id = any(:ids) and customer_id = :s"
            ),
            {"c": customer, "ids": identity_ids, "s": survivor},
        )
        listed = {
            t: [int(i) for i in snapshot["rows"].get(t, {}).get(str(customer), [])] for t in FOLLOWING_TABLES
        }
        await _move_rows(conn, customer, [survivor], _following_conditions(survivor, identity_ids, listed))
        await conn.execute(
            sa.text(
                "update survey_response set customer_id = :c where customer_id = :s and case_id in (select id from service_case where customer_id = :c)"
            ),
            {"c": customer, "s": survivor},
        )
        audit += [
            {
                "source_identity_id": i,
                "from_customer_id": survivor,
                "to_customer_id": customer,
                "merge_event_id": undo_id,
                "rule": "unmerge_event",
                "features": {"undoes": merge_event_id},
            }
            for i in identity_ids
        ]
    survivor_snapshot = snapshot["customers"][str(survivor)]
    survivor_identities = sorted(int(i) for i in snapshot["identities"].get(str(survivor), []))
    now_identities = sorted(
        int(r[0])
        for r in (
            await conn.execute(
                sa.text("select id from source_identity where customer_id = :s"), {"s": survivor}
            )
        ).all()
    )
    if now_identities == survivor_identities:
        await _restore_golden(conn, survivor, survivor_snapshot)  # exact prior state
    else:
        await refresh_golden_records(conn, [survivor])
        await _set_tier(conn, survivor, survivor_snapshot.get("tier_code"), f"unmerge event {undo_id}")
    await write_link_audit(conn, audit)
    await conn.execute(
        sa.text("update merge_event set undone_by_event_id = :u where id = :id"),
        {"u": undo_id, "id": merge_event_id},
    )
    await write_audit_log(
        conn,
        actor,
        "identity.unmerge",
        survivor,
        {"merge_event_id": undo_id, "undoes": merge_event_id, "restored": absorbed},
    )
    return UnmergeResult(undo_id, [survivor, *absorbed])


async def unmerge_identity(
    conn: AsyncConnection, identity_id: int, *, actor: str, reason: str | None = None
) -> UnmergeResult:
    """Split one source identity off its customer; its rows follow it, and it will not re-link
    automatically (its pairs with the remaining identities are recorded as rejected reviews).

    Stable ids: the side holding the customer's oldest identity keeps the customer id.
    """
    row = (
        await conn.execute(
            sa.text("select customer_id from source_identity where id = :i for update"), {"i": identity_id}
        )
    ).first()
    if row is None or row[0] is None:
        raise MergeError(f"source identity {identity_id} does not exist or is not linked to a customer")
    customer = int(row[0])
    members = [
        int(r[0])
        for r in (
            await conn.execute(
                sa.text("select id from source_identity where customer_id = :c order by created_at, id"),
                {"c": customer},
            )
        ).all()
    ]
    if len(members) < 2:
        raise MergeError(
            f"source identity {identity_id} is the only identity of customer {customer}; nothing to split"
        )
    rest = [m for m in members if m != identity_id]
    moving = rest if members[0] == identity_id else [identity_id]
    (new_customer,) = await create_golden_customers(conn, 1)
    identities = await load_identities(conn, "si.customer_id = :c", {"c": customer})
    evidence = {
        "rule": "manual_unmerge",
        "identity_id": identity_id,
        **pair_evidence(identities, [identity_id], rest),
    }
    event_id = await _new_event(conn, "split", actor, reason, customer, [new_customer], evidence)
    await conn.execute(
        sa.text("update source_identity set customer_id = :n, updated_at = now() where id = any(:ids)"),
        {"n": new_customer, "ids": moving},
    )
    # Rows without an identity (a redemption, a staff case) that a merge brought along with the moving
    # identities go back with them too, or the remaining customer could be left owing their points.
    listed: dict[str, list[int]] = {t: [] for t in FOLLOWING_TABLES}
    events = await conn.execute(
        sa.text(
            "select snapshot from merge_event where kind = 'merge' and undone_by_event_id is null and surviving_customer_id = :c"
        ),
        {"c": customer},
    )
    for (snapshot,) in events:
        for absorbed_id, identity_list in snapshot.get("identities", {}).items():
            if int(absorbed_id) != customer and set(map(int, identity_list)) & set(moving):
                for table in FOLLOWING_TABLES:
                    listed[table] += [int(i) for i in snapshot["rows"].get(table, {}).get(absorbed_id, [])]
    try:
        await _move_rows(
            conn,
            new_customer,
            [customer],
            _following_conditions(customer, moving, listed),
        )
    except sa.exc.IntegrityError as exc:
        raise MergeError(
            f"cannot split identity {identity_id} off customer {customer}: a points balance would go negative"
            " (points earned by this identity were redeemed by the customer); adjust points first"
        ) from exc
    pairs = sorted({(min(identity_id, r), max(identity_id, r)) for r in rest})
    await conn.execute(
        sa.text(
            "insert into identity_review (left_identity_id, right_identity_id, score, status, decided_by, decided_at)"
            " select l, r, 0, 'rejected', :actor, now() from unnest(cast(:l as bigint[]), cast(:r as bigint[])) as t(l, r)"
            " on conflict (left_identity_id, right_identity_id) do update set status = 'rejected', decided_by = :actor, decided_at = now()"
        ),
        {"l": [p[0] for p in pairs], "r": [p[1] for p in pairs], "actor": actor},
    )
    await write_link_audit(
        conn,
        [
            {
                "source_identity_id": i,
                "from_customer_id": customer,
                "to_customer_id": new_customer,
                "merge_event_id": event_id,
                "score": evidence.get("score"),
                "rule": "manual_unmerge",
                "features": evidence.get("features") or {},
            }
            for i in moving
        ],
    )
    await refresh_golden_records(conn, [customer, new_customer])
    await _set_tier(conn, new_customer, await _tier_for(conn, new_customer), f"split event {event_id}")
    await write_audit_log(
        conn,
        actor,
        "identity.unmerge_identity",
        customer,
        {"merge_event_id": event_id, "identity_id": identity_id, "new_customer_id": new_customer},
    )
    return UnmergeResult(event_id, [customer, new_customer])


async def merge_with_engine(
    engine: AsyncEngine,
    customer_ids: Sequence[int],
    *,
    actor: str,
    reason: str | None = None,
    dry_run: bool = False,
) -> MergePreview:
    """`merge_customers` in its own transaction (dry runs are rolled back)."""
    async with engine.connect() as conn:
        async with conn.begin() as tx:
            preview = await merge_customers(conn, customer_ids, actor=actor, reason=reason, dry_run=dry_run)
            if dry_run:
                await tx.rollback()
        return preview
