"""Queries of the identity domain: load source identities as a standardized frame, write golden
records. Parameterized SQL on an AsyncConnection; many rows per statement, never one ORM object each."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from datetime import date, datetime
from typing import Any

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from identity.standardize import STANDARD_COLUMNS, STANDARDIZED_ATTRIBUTES
from identity.survivorship import GOLDEN_ATTRIBUTES, keep_manual, survive

IDENTITY_SELECT = """
select si.id, si.channel_code, si.customer_id, si.name, si.name_pinyin, si.nickname, si.phone,
       si.phone_masked, si.phone_verified, si.email, si.birth_date, si.gender, si.id_number,
       si.member_no, si.wechat_unionid, si.wechat_openid, si.province, si.city, si.district,
       si.address_detail, si.postcode, si.created_at,
       coalesce(si.source_updated_at, si.updated_at) as observed_at,
       coalesce(ch.trust_rank, 100) as trust_rank
  from source_identity si
  left join channel ch on ch.code = si.channel_code
"""
IDENTITY_COLUMNS = (
    "id",
    "channel_code",
    "customer_id",
    *STANDARDIZED_ATTRIBUTES,
    "created_at",
    "observed_at",
    "trust_rank",
)


async def load_identities(conn: AsyncConnection, where: str, params: dict[str, Any]) -> pd.DataFrame:
    """Source identities matching `where` (a fixed SQL fragment with bind parameters) as a frame."""
    rows = (
        await conn.execute(sa.text(IDENTITY_SELECT + " where " + where + " order by si.id"), params)
    ).all()
    return pd.DataFrame([tuple(r) for r in rows], columns=list(IDENTITY_COLUMNS)).astype(
        {"id": "int64"} if rows else {}
    )


def identities_to_standard(identities: pd.DataFrame) -> pd.DataFrame:
    """The engine's standardized frame from loaded identities (record_id = source identity id)."""
    std = identities.rename(columns={"id": "record_id", "channel_code": "source"})[list(STANDARD_COLUMNS)]
    # Only the engine's columns: turning the loaded timestamps into objects too costs seconds.
    std = std.astype(object).where(std.notna(), None)
    std["phone_verified"] = identities["phone_verified"].fillna(False).astype(bool).to_numpy()
    return std.reset_index(drop=True)


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    return value


CURRENT_GOLDEN = (
    f"select id, lineage, {', '.join(GOLDEN_ATTRIBUTES)} from golden_customer where id = any(:ids)"  # noqa: S608 - fixed column names
)


async def refresh_golden_records(
    conn: AsyncConnection, customer_ids: Iterable[int]
) -> dict[int, dict[str, Any]]:
    """Recompute survivorship for these customers from their identities and write it back.

    Returns customer id -> the new attributes. Customers without identities keep their record.
    """
    ids = sorted(set(customer_ids))
    if not ids:
        return {}
    identities = await load_identities(conn, "si.customer_id = any(:ids)", {"ids": ids})
    # Staff corrections (lineage rule manual) win over the identities: read them to keep them.
    current = {
        int(r["id"]): dict(r)
        for r in (
            await conn.execute(
                sa.text(CURRENT_GOLDEN),
                {"ids": ids},
            )
        ).mappings()
    }
    params = []
    result: dict[int, dict[str, Any]] = {}
    # One conversion to plain records, then Python grouping: pandas per-group overhead would cost
    # milliseconds per customer.
    by_customer: dict[int, list[dict[str, Any]]] = {}
    for record in identities.astype(object).where(identities.notna(), None).to_dict("records"):
        by_customer.setdefault(int(record["customer_id"]), []).append(record)
    for customer_id, records in by_customer.items():
        golden = survive(records)
        now = current.get(int(customer_id))
        if now is not None:
            golden = keep_manual(golden, now, now["lineage"])
        result[int(customer_id)] = golden.attributes
        params.append(
            {
                "id": int(customer_id),
                **{k: golden.attributes.get(k) for k in GOLDEN_ATTRIBUTES},
                "lineage": json.dumps(golden.lineage),
            }
        )
    if params:
        sets = ", ".join(f"{k} = :{k}" for k in GOLDEN_ATTRIBUTES)
        await conn.execute(
            sa.text(
                f"update golden_customer set {sets}, lineage = cast(:lineage as jsonb), updated_at = now() where id = :id"  # noqa: S608 - identifiers are fixed names, values are bound
            ),
            params,
        )
    return result


async def create_golden_customers(conn: AsyncConnection, count: int) -> list[int]:
    """Insert `count` empty active golden customers; ids in ascending order."""
    if count <= 0:
        return []
    rows = await conn.execute(
        sa.text(
            "insert into golden_customer (status) select 'active' from generate_series(1, :n) returning id"
        ),
        {"n": count},
    )
    return sorted(int(r[0]) for r in rows)


async def write_link_audit(conn: AsyncConnection, rows: Sequence[dict[str, Any]]) -> None:
    """Multi-row insert into identity_link_audit: source_identity_id, from/to customer, event, evidence."""
    if not rows:
        return
    await conn.execute(
        sa.text(
            "insert into identity_link_audit (source_identity_id, from_customer_id, to_customer_id,"
            " merge_event_id, score, rule, features)"
            " select * from unnest(cast(:sid as bigint[]), cast(:frm as bigint[]), cast(:to as bigint[]),"
            " cast(:ev as bigint[]), cast(:score as float8[]), cast(:rule as text[]), cast(:features as jsonb[]))"
        ),
        {
            "sid": [r["source_identity_id"] for r in rows],
            "frm": [r.get("from_customer_id") for r in rows],
            "to": [r.get("to_customer_id") for r in rows],
            "ev": [r.get("merge_event_id") for r in rows],
            "score": [r.get("score") for r in rows],
            "rule": [r.get("rule") for r in rows],
            "features": [json.dumps(r.get("features") or {}, default=_jsonable) for r in rows],
        },
    )


async def write_audit_log(
    conn: AsyncConnection, actor: str, action: str, subject_id: int, detail: dict[str, Any]
) -> None:
    await conn.execute(
        sa.text(
            "insert into audit_log (actor, action, subject_type, subject_id, detail)"
            " values (:actor, :action, 'golden_customer', :sid, cast(:detail as jsonb))"
        ),
        {
            "actor": actor,
            "action": action,
            "sid": str(subject_id),
            "detail": json.dumps(detail, default=_jsonable),
        },
    )
