"""Conflicts are kept: a record seen again under the same id with other content is an update only when the
source calls it newer; otherwise the first version stays and the conflict is quarantined with both versions,
within one file, across files and across runs."""

from __future__ import annotations

from typing import Any

import orjson

from sync.connectors.taobao import normalize_trades
from sync.landing import Lander
from tests.conftest import fetch_rows
from tests.sync.conftest import run
from tests.sync.factories import pos_sale, top_trade
from tests.sync.test_row_isolation import sale, write_csv


def _json(value: Any) -> Any:
    return value if not isinstance(value, str) else orjson.loads(value)


async def conflicts(engine) -> list[tuple[str, dict[str, Any], str]]:
    rows = await fetch_rows(
        engine,
        'select external_id, raw, reason from quarantine where errors @> \'[{"type": "conflict"}]\' '
        "and resolved_at is null order by id",
    )
    return [(ext, _json(raw), reason) for ext, raw, reason in rows]


def priced(sale_: dict[str, Any], yuan: str) -> dict[str, Any]:
    """The same till transaction with another amount."""
    lines = [{**ln, "unit_price": yuan, "amount": yuan} for ln in sale_["lines"]]
    return {**sale_, "total": yuan, "lines": lines, "tenders": [{"type": "wechat_pay", "amount": yuan}]}


async def test_one_transaction_id_twice_in_a_file_keeps_the_first_and_both_versions(
    sim, settings_for, clean_db
):
    settings = settings_for(sim, pos_file_stable_seconds=0)
    first = pos_sale(7, card=None, phone=None)
    export = [first, priced(first, "69.00"), pos_sale(8, card=None, phone=None), first]
    path = settings.pos_drop_dir / "day.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(orjson.dumps(r).decode() for r in export) + "\n", encoding="utf-8")

    result = (await run(clean_db, settings, "pos", streams=("files",)))["files"]

    totals = dict(await fetch_rows(clean_db, "select external_id, total_fen from orders"))
    assert len(totals) == 2 and sorted(totals.values()) == [5900, 5900]
    held = await conflicts(clean_db)
    assert len(held) == 1
    ext, raw, reason = held[0]
    assert ext in totals and "source_updated_at" in reason
    assert raw["kept"]["total_fen"] == 5900 and raw["refused"]["total_fen"] == 6900
    # Four rows read: two landed, one conflict held, one exact repeat unchanged.
    assert (result["read"], result["landed"], result["quarantined"], result["unchanged"]) == (4, 2, 1, 1)


async def test_a_later_file_with_other_content_for_a_landed_sale_is_held_not_applied(
    sim, settings_for, clean_db
):
    settings = settings_for(sim, pos_file_stable_seconds=0)
    write_csv(settings.pos_drop_dir / "a.csv", [sale("T-X"), sale("T-Y")])
    await run(clean_db, settings, "pos", streams=("files",))
    # The same transactions again in another export: one unchanged, one with other amounts and the same time.
    changed = sale("T-X", total="79.00", unit_price="79.00", amount="79.00", tenders="wechat_pay:79.00")
    write_csv(settings.pos_drop_dir / "b.csv", [changed, sale("T-Y")])
    again = (await run(clean_db, settings, "pos", streams=("files",)))["files"]

    assert dict(await fetch_rows(clean_db, "select external_id, total_fen from orders")) == {
        "T-X": 5900,
        "T-Y": 5900,
    }
    ((ext, raw, _),) = await conflicts(clean_db)
    assert ext == "T-X" and raw["kept"]["total_fen"] == 5900 and raw["refused"]["total_fen"] == 7900
    assert (again["read"], again["landed"], again["quarantined"], again["unchanged"]) == (2, 0, 1, 1)

    # Reading the second export again holds the same conflict once more, not a second copy.
    write_csv(settings.pos_drop_dir / "c.csv", [changed])
    await run(clean_db, settings, "pos", streams=("files",))
    assert len(await conflicts(clean_db)) == 1
    assert await fetch_rows(clean_db, "select seen_count from quarantine where external_id = 'T-X'") == [(2,)]


async def test_a_marketplace_order_is_updated_only_by_a_newer_version(committed_db):
    async with Lander.open(committed_db) as lander:
        await lander.land(normalize_trades([top_trade(6101), top_trade(6102)]))
        # Same `modified`, other payment: a conflict. Newer `modified`, other status: an update.
        await lander.land(
            normalize_trades(
                [
                    top_trade(6101, price="299.00"),
                    top_trade(6102, status="WAIT_BUYER_CONFIRM_GOODS", modified="2026-10-02 10:00:00"),
                ]
            )
        )
        # An older version with other content is no update either.
        await lander.land(normalize_trades([top_trade(6102, modified="2026-09-30 10:00:00", price="1.00")]))
    orders = {r[0]: r[1:] for r in await fetch_rows(
        committed_db, "select external_id, total_fen, source_status from orders where external_id like '610%'"
    )}  # fmt: skip
    assert orders == {"6101": (39800, "WAIT_SELLER_SEND_GOODS"), "6102": (39800, "WAIT_BUYER_CONFIRM_GOODS")}
    held = {ext: raw for ext, raw, _ in await conflicts(committed_db) if ext.startswith("610")}
    assert set(held) == {"6101", "6102"}
    assert held["6101"]["refused"]["total_fen"] == 59800 and held["6101"]["kept"]["total_fen"] == 39800
    assert held["6102"]["refused"]["total_fen"] == 200 and held["6102"]["kept"]["source_status"] == (
        "WAIT_BUYER_CONFIRM_GOODS"
    )


def top_refund(
    refund_id: int, tid: int, *, fee: str = "199.00", modified: str = "2026-10-03 10:00:00"
) -> dict[str, Any]:
    return {"refund_id": refund_id, "tid": tid, "oid": tid * 10, "refund_fee": fee, "reason": "尺码不合适",
            "status": "WAIT_SELLER_AGREE", "created": "2026-10-03 09:00:00", "modified": modified}  # fmt: skip


async def test_a_refund_is_updated_only_by_a_newer_version(committed_db):
    from sync.connectors.taobao import normalize_refunds

    async with Lander.open(committed_db) as lander:
        await lander.land(normalize_trades([top_trade(6201)]))
        await lander.land(normalize_refunds([top_refund(62011, 6201)]))
        # In one page: the same refund twice with other amounts and one time; then again in a later run.
        await lander.land(normalize_refunds([top_refund(62011, 6201, fee="10.00"), top_refund(62011, 6201)]))
        await lander.land(normalize_refunds([top_refund(62011, 6201, fee="20.00")]))
        await lander.land(
            normalize_refunds([top_refund(62011, 6201, fee="30.00", modified="2026-10-04 10:00:00")])
        )
    assert await fetch_rows(committed_db, "select amount_fen from refund where external_id = '62011'") == [
        (3000,)
    ]
    held = sorted(
        raw["refused"]["amount_fen"] for ext, raw, _ in await conflicts(committed_db) if ext == "62011"
    )
    # In the page the first copy stays (19900 held), and against the landed version it is held in turn (1000).
    assert held == [1000, 2000, 19900]
    # Listed as refunds, as `c360 sync quarantine --entity refund` asks for them.
    assert await fetch_rows(committed_db, "select distinct entity from quarantine") == [("refund",)]


async def test_a_refund_before_its_order_is_held_saying_which_order_it_waits_for(committed_db):
    from sync.connectors.taobao import normalize_refunds

    async with Lander.open(committed_db) as lander:
        stats = await lander.land(normalize_refunds([top_refund(63011, 6301)]))
    assert stats.refunds == 0 and stats.quarantined == 1
    [(channel, entity, ext, reason, errors)] = await fetch_rows(
        committed_db, "select channel_code, entity, external_id, reason, errors::text from quarantine"
    )
    assert (channel, entity, ext) == ("tmall", "refund", "63011")
    assert reason == "field `tid`: order 6301 has not landed yet; replay after the next trades sync"
    assert _json(errors) == [
        {"loc": ["tid"], "msg": "order not landed", "type": "missing_order", "parent": "6301"}
    ]
