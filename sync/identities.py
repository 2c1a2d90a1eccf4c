"""The one place sync calls the identity package: standardizing attributes of source identities before
they land, and linking the identities a run touched to golden customers afterwards."""

from __future__ import annotations

import math
from datetime import date, datetime
from typing import Any

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from sync.canonical import PersonIdentity

STANDARDIZER_INPUT = (
    "name", "phone", "email", "birth_date", "gender", "id_number", "member_no", "wechat_unionid",
    "wechat_openid", "nickname", "phone_verified", "address", "district", "city", "province", "postcode",
)  # fmt: skip

# The landed columns of source_identity, with the widths the table allows.
IDENTITY_COLUMNS: dict[str, int | None] = {
    "name": 100,
    "name_pinyin": 200,
    "nickname": 100,
    "phone": 20,
    "phone_masked": 20,
    "phone_verified": None,
    "email": 254,
    "birth_date": None,
    "gender": 1,
    "id_number": 18,
    "member_no": 64,
    "wechat_unionid": 64,
    "wechat_openid": 64,
    "province": 32,
    "city": 32,
    "district": 32,
    "address_detail": 300,
    "postcode": 10,
}


def _clean(value: Any) -> Any:
    """pandas' missing markers (NaN, NaT, pd.NA) become None."""
    if value is None or value is pd.NaT or value is pd.NA:
        return None
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def _as_date(value: Any) -> date | None:
    value = _clean(value)
    if value is None:
        return None
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    text = str(value).strip()
    for fmt in ("%Y-%m-%d", "%Y%m%d"):
        try:
            return datetime.strptime(text, fmt).date()
        except ValueError:
            continue
    return None


def standardize_identities(identities: list[PersonIdentity]) -> list[dict[str, Any]]:
    """Standardized attributes per identity (same order), in source_identity's column names and widths.

    Uses `identity.standardize.standardize_frame`, the same standardizer identity resolution compares
    with, so a phone or name lands in the form the linker expects.
    """
    if not identities:
        return []
    from identity.standardize import standardize_frame

    # Built and read column by column: row dicts (from_records, to_dict("records")) cost more than the
    # standardizer itself.
    frame = pd.DataFrame(
        {
            "record_id": [str(i) for i in range(len(identities))],
            "source": [p.channel for p in identities],
            **{k: [p.attributes.get(k) for p in identities] for k in STANDARDIZER_INPUT},
        }
    )
    out = standardize_frame(frame)
    position = {str(r): j for j, r in enumerate(out["record_id"].tolist())}
    picks = [position.get(str(i)) for i in range(len(identities))]
    columns: dict[str, list[Any]] = {}
    for col, width in IDENTITY_COLUMNS.items():
        source = out[col].tolist() if col in out.columns else []
        values: list[Any] = []
        for j in picks:
            value = _clean(source[j]) if j is not None and source else None
            if col == "birth_date":
                value = _as_date(value)
            elif col == "phone_verified":
                value = bool(value) if value is not None else False
            elif value is not None:
                value = str(value)
                # A value wider than the column is not a valid attribute of that kind; keep it in raw only.
                if width is not None and len(value) > width:
                    value = None
            values.append(value)
        columns[col] = values
    names = list(IDENTITY_COLUMNS)
    return [dict(zip(names, row, strict=True)) for row in zip(*(columns[c] for c in names), strict=True)]


PENDING_SQL = "select id from source_identity where customer_id is null order by id"


async def pending_links(engine: AsyncEngine) -> int:
    """Landed identities with no golden customer yet: the next link step takes them, whoever landed them."""
    async with engine.connect() as conn:
        return int(
            (
                await conn.execute(sa.text("select count(*) from source_identity where customer_id is null"))
            ).scalar_one()
        )


async def link_identities(engine: AsyncEngine, identity_ids: set[int], *, pending: bool = True) -> set[int]:
    """Link the touched identities, and with `pending` every landed identity still without a customer (a
    run killed between landing and linking leaves them so; the database, not the run's memory, says which),
    to golden customers, and copy the customer id onto their orders, interactions and consents in the same
    transaction (so a crash leaves both undone, and the next run does both). Returns the golden customers
    touched."""
    from identity.linking import link_in_transaction

    async with engine.begin() as conn:
        ids = set(identity_ids)
        if pending:
            ids.update((await conn.execute(sa.text(PENDING_SQL))).scalars().all())
        if not ids:
            return set()
        report = await link_in_transaction(conn, sorted(ids), actor="sync")
        await _propagate(conn, ids)
    return set(report.customers_touched)


async def propagate_customer_ids(engine: AsyncEngine, identity_ids: set[int]) -> None:
    """Orders, interactions and consents take customer_id from their source identity.

    Landing already copies it when the identity was linked before; this catches rows whose identity was
    linked (or re-linked by a merge) after they landed.
    """
    async with engine.begin() as conn:
        await _propagate(conn, identity_ids)


async def _propagate(conn: AsyncConnection, identity_ids: set[int]) -> None:
    ids = sorted(identity_ids)
    for table in ("orders", "interaction", "consent"):
        await conn.execute(
            sa.text(
                f"update {table} t set customer_id = si.customer_id "  # noqa: S608 - fixed table names
                "from source_identity si where t.source_identity_id = si.id "
                "and si.id = any(:ids) and t.customer_id is distinct from si.customer_id"
            ),
            {"ids": ids},
        )
