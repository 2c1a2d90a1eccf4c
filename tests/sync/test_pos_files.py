"""POS exports in the drop folder (CSV and JSON Lines) land like the HTTP feed: same transactions, same
rows, no duplicates; landed files move to done/; a broken line is quarantined, not dropped."""

from __future__ import annotations

from decimal import Decimal

import httpx
import sqlalchemy as sa

from sync.simulator import write_pos_export
from tests.sync.conftest import SMALL, count, list_files, run, snapshot, truncate_landed


async def test_drop_folder_exports_land_like_the_http_feed(sim, settings_for, clean_db):
    settings = settings_for(sim)
    await run(clean_db, settings, "pos", streams=("transactions",))
    http_only = await snapshot(clean_db)
    await truncate_landed(clean_db)

    drop = settings.pos_drop_dir
    csv_file = write_pos_export(drop, SMALL, fmt="csv", start_index=0, count=120)
    jsonl_file = write_pos_export(drop, SMALL, fmt="jsonl", start_index=120, count=80)
    with jsonl_file.open("a", encoding="utf-8") as handle:
        handle.write('{"transaction_id": "S101-01-999999", "store_id": \n')  # a register died mid-write

    result = await run(clean_db, settings, "pos", streams=("files",))
    assert result["files"]["orders"] == 200
    assert await count(clean_db, "select count(*) from order_line") > 200
    assert list_files(drop) == []
    assert sorted(p.name for p in list_files(drop / "done")) == sorted([csv_file.name, jsonl_file.name])
    held = await count(
        clean_db,
        "select count(*) from quarantine where channel_code = 'pos' and reason like '%not valid JSON%'",
    )
    assert held == 1

    # The HTTP feed carries the same transactions: landing it too adds the rest, duplicates nothing,
    # and ends with exactly the rows of an HTTP-only run.
    await run(clean_db, settings, "pos", streams=("transactions",))
    both = await snapshot(clean_db)
    assert {k: v for k, v in both.items() if k != "quarantine"} == {
        k: v for k, v in http_only.items() if k != "quarantine"
    }


async def test_store_sales_keep_their_cashier_and_tenders(sim, settings_for, clean_db):
    settings = settings_for(sim)
    await run(clean_db, settings, "pos", streams=("transactions",))
    async with httpx.AsyncClient(base_url=sim, timeout=30) as client:
        response = await client.get(
            "/pos/v1/transactions",
            params={"since": "2000-01-01T00:00:00+08:00", "limit": 50},
            headers={"Authorization": f"Bearer {settings.channel('pos').token}"},
        )
        response.raise_for_status()
    served = {
        t["transaction_id"]: t
        for t in response.json()["data"]
        if t.get("tenders") and t.get("cashier_id") is not None
    }
    assert served, "the simulator's first page should have tendered sales"
    async with clean_db.connect() as conn:
        landed = {
            r.external_id: r
            for r in (
                await conn.execute(
                    sa.text(
                        "select external_id, cashier_code, tenders from orders where channel_code = 'pos' "
                        "and external_id = any(:ids)"
                    ),
                    {"ids": list(served)},
                )
            ).all()
        }
    assert landed.keys() == served.keys()
    for tid, t in served.items():
        assert landed[tid].cashier_code == str(t["cashier_id"])
        assert landed[tid].tenders == [
            {"type": x["type"], "amount_fen": round(Decimal(str(x["amount"])) * 100)} for x in t["tenders"]
        ]
    # Marketplace orders have no till: nothing is made up for them.
    assert (
        await count(
            clean_db, "select count(*) from orders where channel_code <> 'pos' and tenders is not null"
        )
        == 0
    )
