"""Manual merge (with dry run) and unmerge: rows follow identities, balances recompute, exact undo."""

from __future__ import annotations

import pandas as pd
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from identity.linking import link_in_transaction
from identity.merge import MergeError, merge_customers, unmerge_event, unmerge_identity
from identity.repository import create_golden_customers, refresh_golden_records
from tests.identity.factories import add_activity, create_channels, customer_of, land_identities, state_of


async def two_customers(conn: AsyncConnection) -> tuple[list[int], list[int]]:
    await create_channels(conn)
    await conn.execute(
        sa.text(
            "insert into membership_tier (code, name, rank, min_points, earn_multiplier_pct) values ('silver', 'Silver', 1, 0, 100), ('gold', 'Gold', 2, 1000, 150)"
        )
    )
    ids = await land_identities(
        conn,
        pd.DataFrame(
            [
                {
                    "record_id": "m1",
                    "source": "app",
                    "name": "单田芳",
                    "phone": "13900001111",
                    "phone_verified": "1",
                    "birth_date": "1980-02-03",
                },
                {
                    "record_id": "m2",
                    "source": "tmall",
                    "name": "單田芳",
                    "phone": "139****1111",
                    "address": "北京市朝阳区建国路88号",
                },
            ]
        ),
    )
    customers = await create_golden_customers(conn, 2)
    for identity_id, customer_id in zip(ids, customers, strict=True):
        await conn.execute(
            sa.text("update source_identity set customer_id = :c where id = :i"),
            {"c": customer_id, "i": identity_id},
        )
    await refresh_golden_records(conn, customers)
    await conn.execute(
        sa.text("update golden_customer set tier_code = 'silver' where id = any(:c)"), {"c": customers}
    )
    # The second customer spent all its points: a naive row-by-row move would cross zero.
    await add_activity(conn, customers[0], ids[0], "a", earn=300)
    await add_activity(conn, customers[1], ids[1], "b", earn=800, redeem=800)
    return customers, ids


async def test_dry_run_shows_the_golden_record_and_writes_nothing(conn: AsyncConnection) -> None:
    customers, ids = await two_customers(conn)
    before = await state_of(conn)
    preview = await merge_customers(conn, customers, actor="staff:ann", dry_run=True)
    assert await state_of(conn) == before
    assert preview.surviving_customer_id == customers[0] and preview.absorbed_customer_ids == [customers[1]]
    assert preview.golden["name"] == "单田芳" and preview.golden["city"] == "北京市"
    assert preview.lineage["city"]["source_identity_id"] == ids[1]
    assert preview.evidence["features"]["phone"] == "mask_compatible"


async def test_merge_then_unmerge_restores_the_exact_prior_state(conn: AsyncConnection) -> None:
    customers, ids = await two_customers(conn)
    before = await state_of(conn)
    merged = await merge_customers(conn, customers, actor="staff:ann", reason="same person")
    after = await state_of(conn)
    survivor = customers[0]
    for table in ("orders", "interactions", "cases", "consents", "lots"):
        assert {row[1] for row in after[table]} == {survivor}, table
    balances = {row[0]: row[1:] for row in after["balances"]}
    assert balances[survivor] == (300, 1100) and balances[customers[1]] == (0, 0)
    golden = {row[0]: row for row in after["golden"]}
    assert golden[customers[1]][1:3] == ("merged", survivor)
    assert golden[survivor][7] == "gold"  # 1,100 lifetime points qualify the merged customer for gold
    event = (
        await conn.execute(
            sa.text("select evidence from merge_event where id = :i"), {"i": merged.merge_event_id}
        )
    ).scalar_one()
    assert event["rule"] == "manual" and "features" in event and event["score"] is not None
    audit = (
        await conn.execute(sa.text("select count(*) from audit_log where action = 'identity.merge'"))
    ).scalar_one()
    assert audit == 1

    assert merged.merge_event_id is not None
    await unmerge_event(conn, merged.merge_event_id, actor="staff:ann", reason="different people after all")
    assert await state_of(conn) == before
    with pytest.raises(MergeError, match="already undone"):
        await unmerge_event(conn, merged.merge_event_id, actor="staff:ann")


async def balances_of(conn: AsyncConnection) -> dict[int, tuple[int, int]]:
    """(balance, lifetime earned) per customer, as the trigger keeps them."""
    rows = await conn.execute(sa.text("select customer_id, balance, lifetime_earned from points_balance"))
    return {int(c): (int(b), int(e)) for c, b, e in rows.all()}


async def ledger_sums(conn: AsyncConnection) -> dict[int, tuple[int, int]]:
    """(sum of points, sum of earned points) per customer straight from the ledger, not the trigger."""
    rows = await conn.execute(
        sa.text(
            "select customer_id, sum(points), sum(points) filter (where points > 0)"
            " from points_ledger_entry group by customer_id"
        )
    )
    return {int(c): (int(b), int(e or 0)) for c, b, e in rows.all()}


async def test_unmerge_one_identity_takes_its_rows_and_is_not_relinked(conn: AsyncConnection) -> None:
    customers, ids = await two_customers(conn)
    await merge_customers(conn, customers, actor="staff:ann")
    result = await unmerge_identity(conn, ids[1], actor="staff:ann", reason="wrong merge")
    new_customer = result.customer_ids[1]
    assert result.customer_ids[0] == customers[0] and new_customer not in customers
    moved = (
        await conn.execute(
            sa.text("select customer_id from orders where source_identity_id = :i"), {"i": ids[1]}
        )
    ).scalar_one()
    stays = (
        await conn.execute(
            sa.text("select customer_id from orders where source_identity_id = :i"), {"i": ids[0]}
        )
    ).scalar_one()
    assert moved == new_customer and stays == customers[0]
    review = (await conn.execute(sa.text("select status from identity_review"))).scalar_one()
    assert review == "rejected"
    # Per customer, from what each identity did in the setup: m1 earned 300; m2 earned 800 and its
    # customer redeemed all 800 (a redemption without an identity, which must go back with m2).
    expected = {customers[0]: (300, 300), new_customer: (0, 800)}
    balances = await balances_of(conn)
    assert {c: balances[c] for c in expected} == expected
    assert {c: v for c, v in (await ledger_sums(conn)).items() if c in expected} == expected

    # Linking the two identities again (as the next sync of either would) keeps them apart.
    await link_in_transaction(conn, ids, actor="sync")
    assert await customer_of(conn, ids) == {ids[0]: customers[0], ids[1]: new_customer}


async def test_splitting_off_the_oldest_identity_keeps_the_customer_id_with_it(
    conn: AsyncConnection,
) -> None:
    # Stable ids: whichever identity is split off, the side holding the oldest identity (m1, landed
    # first) keeps the customer id; the other side gets a new customer.
    customers, ids = await two_customers(conn)
    await merge_customers(conn, customers, actor="staff:ann")
    result = await unmerge_identity(conn, ids[0], actor="staff:ann", reason="wrong merge")
    new_customer = result.customer_ids[1]
    assert new_customer not in customers
    assert await customer_of(conn, ids) == {ids[0]: customers[0], ids[1]: new_customer}
    rows = await conn.execute(
        sa.text("select source_identity_id, customer_id from orders where source_identity_id = any(:i)"),
        {"i": ids},
    )
    owners = {int(i): int(c) for i, c in rows.all()}
    assert owners == {ids[0]: customers[0], ids[1]: new_customer}
    rows = await conn.execute(
        sa.text("select id, status from golden_customer where id = any(:c)"),
        {"c": [customers[0], new_customer]},
    )
    status = {int(i): str(s) for i, s in rows.all()}
    assert status == {customers[0]: "active", new_customer: "active"}
    expected = {customers[0]: (300, 300), new_customer: (0, 800)}
    balances = await balances_of(conn)
    assert {c: balances[c] for c in expected} == expected
