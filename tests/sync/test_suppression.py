"""An erased person stays erased: a sync that reads them again from the channel (a full re-pull) lands
neither their identity nor anything that names them, while their orders land without a buyer and every
other customer lands as before."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from identity.erasure import erase_customer
from sync.identities import link_identities
from tests.conftest import fetch_rows
from tests.sync.conftest import count, run


async def test_a_full_re_pull_does_not_bring_an_erased_person_back(
    sim, settings_for, clean_db: AsyncEngine
) -> None:
    settings = settings_for(sim)
    await run(clean_db, settings, "tmall")
    await link_identities(
        clean_db, {i for (i,) in await fetch_rows(clean_db, "select id from source_identity")}
    )
    # A buyer with orders.
    [(identity, external_id, customer, orders)] = await fetch_rows(
        clean_db,
        "select si.id, si.external_id, si.customer_id, count(o.id) from source_identity si"
        " join orders o on o.source_identity_id = si.id"
        " group by si.id order by count(o.id) desc, si.id limit 1",
    )
    identities_before = await count(clean_db, "select count(*) from source_identity")
    orders_before = await count(clean_db, "select count(*) from orders")
    async with clean_db.begin() as conn:
        result = await erase_customer(conn, customer, actor="staff:dpo", reason="PIPL request")

    # The channel still has them: pull everything again from the start.
    async with clean_db.begin() as conn:
        await conn.execute(sa.text("delete from sync_watermark"))
    await run(clean_db, settings, "tmall")

    assert (
        await count(clean_db, "select count(*) from source_identity where external_id = :e", e=external_id)
        == 0
    )
    # Their orders are the retailer's books: landed again, updated, with no buyer.
    assert await count(clean_db, "select count(*) from orders") == orders_before
    assert (
        orders > 0
        and await count(
            clean_db,
            "select count(*) from orders o left join source_identity si on si.id = o.source_identity_id"
            " where si.external_id = :e",
            e=external_id,
        )
        == 0
    )
    # Everybody else is as before (the erased identities stay as anonymized rows, none added).
    assert await count(clean_db, "select count(*) from source_identity") == identities_before
    assert (
        await count(
            clean_db,
            "select count(*) from source_identity where external_id like 'erased-%'",
        )
        == result.identities
    )
