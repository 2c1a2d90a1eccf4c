"""Channel trust in survivorship, against the channel rows the product lands: which channel's name wins."""

from __future__ import annotations

import pandas as pd
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from identity.repository import create_golden_customers, refresh_golden_records
from sync.landing import ensure_channels
from tests.identity.factories import land_identities

# Written out, not read from the product: lower is more trusted.
TRUST = {"app": 10, "pos": 20, "wechat": 30, "tmall": 50, "jd": 50, "weibo": 60}


async def _product_channels(conn: AsyncConnection) -> None:
    raw = await conn.get_raw_connection()
    await ensure_channels(raw.driver_connection)


async def test_landing_creates_the_channels_with_their_trust_ranks(conn: AsyncConnection) -> None:
    await _product_channels(conn)
    rows = (await conn.execute(sa.text("select code, trust_rank from channel"))).all()
    assert {str(c): int(r) for c, r in rows} == TRUST


async def _golden_name(conn: AsyncConnection, channels: list[str]) -> tuple[str, str]:
    """One customer with one identity per channel, each with its own name, oldest first; the surviving
    name and the channel its lineage names."""
    names = ["王一", "王二", "王三"]
    ids = await land_identities(
        conn,
        pd.DataFrame(
            [{"record_id": f"{ch}-{i}", "source": ch, "name": names[i]} for i, ch in enumerate(channels)]
        ),
    )
    (customer,) = await create_golden_customers(conn, 1)
    await conn.execute(
        sa.text("update source_identity set customer_id = :c where id = any(:i)"), {"c": customer, "i": ids}
    )
    await refresh_golden_records(conn, [customer])
    name, lineage = (
        await conn.execute(
            sa.text("select name, lineage from golden_customer where id = :c"), {"c": customer}
        )
    ).one()
    return str(name), str(lineage["name"]["channel"])


# The more trusted channel comes first and is the older identity, so recency alone would pick the other.
@pytest.mark.parametrize(
    ("trusted", "other"),
    [
        ("app", "pos"),
        ("pos", "wechat"),
        ("wechat", "tmall"),
        ("wechat", "jd"),
        ("tmall", "weibo"),
        ("jd", "weibo"),
    ],
)
async def test_the_more_trusted_channel_names_the_customer(
    conn: AsyncConnection, trusted: str, other: str
) -> None:
    await _product_channels(conn)
    assert await _golden_name(conn, [trusted, other]) == ("王一", trusted)


async def test_tmall_and_jd_trust_alike_so_the_most_recent_wins(conn: AsyncConnection) -> None:
    await _product_channels(conn)
    assert await _golden_name(conn, ["tmall", "jd"]) == ("王二", "jd")
    assert await _golden_name(conn, ["jd", "tmall"]) == ("王二", "tmall")
