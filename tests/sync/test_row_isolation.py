"""No row fails a batch or a stream: every value a column or check would refuse is quarantined with the field
named, files that cannot be read as a whole go to rejected/, and a row that still breaks a batch in the
database is bisected out of it. Files and feeds are generated here, bad on purpose."""

from __future__ import annotations

import csv
import io
import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa

import sync.landing
from sync.canonical import (
    Batch,
    ConsentRecord,
    InteractionRecord,
    PersonIdentity,
    ProductRecord,
    WatermarkAdvance,
)
from sync.connectors.jd import normalize_orders as normalize_jd
from sync.connectors.pos import decode_export
from sync.connectors.taobao import normalize_trades
from sync.landing import Lander, read_watermark
from tests.conftest import fetch_rows
from tests.sync.conftest import list_files, run
from tests.sync.factories import jd_order, top_trade

COLUMNS = (
    "transaction_id", "store_id", "register_id", "sequence_no", "cashier_id", "business_day", "ended_at",
    "delivered_at", "member_phone", "member_card_no", "total", "discount_total", "tax_total", "tenders", "line_no",
    "sku", "description", "quantity", "unit_price", "discount", "amount", "void",
)  # fmt: skip


def sale(tid: str, **changes: Any) -> dict[str, Any]:
    """One CSV line of a one-line sale of 59.00 paid by WeChat Pay."""
    row = {
        "transaction_id": tid, "store_id": "S101", "register_id": "01", "sequence_no": tid[-4:],
        "cashier_id": "C1014", "business_day": "2026-09-01", "ended_at": "2026-09-01T10:31:56+08:00",
        "delivered_at": "", "member_phone": "", "member_card_no": "", "total": "59.00", "discount_total": "0.00",
        "tax_total": "", "tenders": "wechat_pay:59.00", "line_no": "1", "sku": "HG-KIT-007-02",
        "description": "保温杯 750ml", "quantity": "1", "unit_price": "59.00", "discount": "0.00", "amount": "59.00",
        "void": "False",
    }  # fmt: skip
    row.update(changes)
    return row


def write_csv(path: Path, rows: list[dict[str, Any]], encoding: str = "utf-8") -> Path:
    out = io.StringIO(newline="")
    writer = csv.DictWriter(out, fieldnames=COLUMNS)
    writer.writeheader()
    writer.writerows(rows)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(out.getvalue().encode(encoding))
    return path


async def quarantine_by_id(engine) -> dict[str, str]:
    return {
        r[0]: r[1]
        for r in await fetch_rows(
            engine, "select external_id, reason from quarantine where resolved_at is null"
        )
    }


async def landed_pos(engine) -> dict[str, tuple[Any, ...]]:
    rows = await fetch_rows(
        engine,
        "select o.external_id, o.total_fen, count(l.line_no), si.external_id, si.phone from orders o "
        "left join order_line l on l.order_id = o.id left join source_identity si on si.id = o.source_identity_id "
        "where o.channel_code = 'pos' group by o.id, si.id",
    )
    return {r[0]: r[1:] for r in rows}


# (transaction id, CSV changes, the field the quarantine reason must name)
BAD_SALES: list[tuple[str, dict[str, Any], str]] = [
    ("T-NEG-TOTAL", {"total": "-59.00"}, "total"),
    ("T-NEG-DISCOUNT", {"discount_total": "-1.00"}, "discount_total"),
    ("T-EXPONENT", {"total": "1e3"}, "total"),
    ("T-THREE-DECIMALS", {"total": "59.001"}, "total"),
    ("T-NEG-QTY", {"quantity": "-1"}, "quantity"),
    ("T-BLANK-LINE-NO", {"line_no": ""}, "line_no"),
    ("T-YEAR-2099", {"ended_at": "2099-09-01T10:31:56+08:00", "business_day": "2099-09-01"}, "placed_at"),
    ("T-YEAR-1900", {"ended_at": "1900-09-01T10:31:56+08:00", "business_day": "1900-09-01"}, "placed_at"),
    ("T-HUGE-SKU", {"sku": "S" * 1_000_000}, "sku"),
    ("T-BAD-TENDERS", {"tenders": '[{"type": "cash", "amount": '}, "tenders"),
    ("T-NEG-LINE", {"amount": "-10.00"}, "amount"),
]


async def test_a_drop_folder_of_bad_rows_lands_every_good_one_and_holds_the_rest(
    sim, settings_for, clean_db, caplog
):
    settings = settings_for(sim, pos_file_stable_seconds=0)
    drop = settings.pos_drop_dir
    good = [
        sale("T-GOOD-1", member_phone="+86 138-1234-5678"),
        sale("T-GOOD-2", member_phone="13812345678"),
        # Full-width digits are the same amount typed on a Chinese keyboard.
        sale("T-FULLWIDTH", total="５９.００"),
        sale("T-NUL", description="保温\x00杯"),
        sale("T-BAD-PHONE", member_phone="<script>alert(1)</script>"),
        sale("T-SHORT-PHONE", member_phone="12345"),
    ]
    # A derived id (store-register-day-sequence) wider than the order id column.
    long_id = sale("", store_id="S" * 32, register_id="R" * 16, sequence_no="9" * 16)
    bad = [sale(tid, **changes) for tid, changes, _ in BAD_SALES]
    write_csv(drop / "a_utf8.csv", good[:3] + bad[:6] + [long_id])
    write_csv(drop / "b_gbk.csv", [sale("T-GBK", description="实木餐桌 1.4米")], encoding="gbk")
    write_csv(drop / "c_bom.csv", good[3:] + bad[6:], encoding="utf-8-sig")
    (drop / "d_binary.csv").write_bytes(b"transaction_id,store_id\n\xff\xfe\x00\x9c" * 10)
    caplog.set_level(logging.DEBUG)

    result = await run(clean_db, settings, "pos", streams=("files",))

    landed = await landed_pos(clean_db)
    assert set(landed) == {
        "T-GOOD-1",
        "T-GOOD-2",
        "T-FULLWIDTH",
        "T-NUL",
        "T-BAD-PHONE",
        "T-SHORT-PHONE",
        "T-GBK",
    }
    assert landed["T-FULLWIDTH"][0] == 5900
    assert all(v[1] == 1 for v in landed.values()), "every landed sale keeps its line"
    # One phone in two spellings is one person; invalid phones are no key and no identity.
    assert landed["T-GOOD-1"][2] == landed["T-GOOD-2"][2] == "13812345678"
    assert landed["T-GOOD-1"][3] == "+8613812345678"
    assert landed["T-BAD-PHONE"][2] is None and landed["T-SHORT-PHONE"][2] is None
    assert await fetch_rows(clean_db, "select count(*) from source_identity where channel_code = 'pos'") == [
        (1,)
    ]
    titles = await fetch_rows(clean_db, "select distinct title from order_line order by 1")
    assert ("保温杯 750ml",) in titles and ("实木餐桌 1.4米",) in titles  # NUL removed, GBK read as GBK

    held = await quarantine_by_id(clean_db)
    for tid, _changes, field in BAD_SALES:
        assert tid in held, f"{tid} should be quarantined"
        assert f"{field}`" in held[tid], f"{tid}: {held[tid]}"
    assert "member_phone" in held["T-BAD-PHONE"] and "member_phone" in held["T-SHORT-PHONE"]
    derived = [reason for ext, reason in held.items() if ext.startswith("S" * 32)]
    assert len(derived) == 1 and "external_id`" in derived[0]
    assert "d_binary.csv" in held and "not UTF-8 or GB18030" in held["d_binary.csv"]

    # The unreadable file waits in rejected/ with its reason; the others are done; nothing is left behind.
    assert list_files(drop) == []
    assert sorted(p.name for p in list_files(drop / "done")) == ["a_utf8.csv", "b_gbk.csv", "c_bom.csv"]
    rejected = sorted(p.name for p in list_files(drop / "rejected"))
    assert rejected == ["d_binary.csv", "d_binary.csv.reason.txt"]
    assert "offset" in (drop / "rejected" / "d_binary.csv.reason.txt").read_text()
    assert result["files"]["orders"] == 7
    # No phone, card or raw bytes in the logs: errors name the file, the row and the field.
    assert "13812345678" not in caplog.text and "alert(1)" not in caplog.text

    # The next run finds nothing to do and fails on nothing.
    again = await run(clean_db, settings, "pos", streams=("files",))
    assert again["files"]["orders"] == 0


def test_exports_are_read_in_the_encodings_chinese_tills_write():
    text = "门店,保温杯\n"
    assert decode_export(text.encode("utf-8"), "x.csv") == text
    assert decode_export(b"\xef\xbb\xbf" + text.encode("utf-8"), "x.csv") == text
    assert decode_export(text.encode("gbk"), "x.csv") == text
    assert decode_export("𠀀 emoji-free gb18030".encode("gb18030"), "x.csv") == "𠀀 emoji-free gb18030"


async def test_negative_marketplace_fees_hold_their_order_only(committed_db):
    tmall = normalize_trades(
        [
            top_trade(9101),
            {**top_trade(9102), "discount_fee": "-5.00"},
            {**top_trade(9103), "post_fee": "-1.00"},
            top_trade(9104, price="-10.00"),
        ]
    )
    jd = normalize_jd(
        [
            jd_order(9201),
            jd_order(9202, freightPrice="-3.00"),
            jd_order(9203, sellerDiscount="-3.00"),
        ]
    )
    async with Lander.open(committed_db) as lander:
        await lander.land(tmall)
        await lander.land(jd)
    landed = {r[0] for r in await fetch_rows(committed_db, "select external_id from orders")}
    assert landed == {"9101", "9201"}
    held = await quarantine_by_id(committed_db)
    assert "discount_fee" in held["9102"] and "post_fee" in held["9103"]
    assert "price" in held["9104"]
    assert "freightPrice" in held["9202"] and "sellerDiscount" in held["9203"]


async def test_a_row_the_checks_miss_is_bisected_out_of_its_batch(committed_db, monkeypatch):
    # As if a constraint were added to the database that the checks do not know yet.
    monkeypatch.setattr(sync.landing, "check_batch", lambda batch, bounds=None: batch)
    batch = normalize_trades([top_trade(7000 + n, buyer=f"buyer-{n}") for n in range(40)])
    batch.orders[17].total_fen = -100
    batch.watermarks.append(WatermarkAdvance("tmall.trades", cursor="after-40"))
    async with Lander.open(committed_db) as lander:
        try:
            await lander.land(batch)
        except sync.landing.ROW_ERRORS:
            pass
        else:
            raise AssertionError("the batch should have failed whole")
        stats = await lander.land_isolating(batch)
    assert stats.orders == 39 and stats.isolated == 1
    # The run's accounting: the 40 read once (not once per piece tried), 39 landed, 1 held.
    assert (stats.read, stats.landed, stats.quarantined, stats.unchanged) == (40, 39, 1, 0)
    orders = {r[0] for r in await fetch_rows(committed_db, "select external_id from orders")}
    assert orders == {str(7000 + n) for n in range(40)} - {"7017"}
    held = await quarantine_by_id(committed_db)
    assert "ck_orders_amounts_non_negative" in held["7017"]
    watermark = await read_watermark(committed_db, "tmall.trades")
    assert watermark is not None and watermark["cursor"] == "after-40"
    # The buyer of the held order still landed, with the other 39.
    assert await fetch_rows(committed_db, "select count(*) from source_identity") == [(40,)]


async def test_a_catalogue_page_with_a_product_the_checks_miss_lands_the_others(committed_db, monkeypatch):
    monkeypatch.setattr(sync.landing, "check_batch", lambda batch, bounds=None: batch)
    products = [ProductRecord(f"SKU-{n}", f"保温杯 {n}", "kitchen", 5900) for n in range(5)]
    products[2].title = "x" * 301  # one over the column's width
    async with Lander.open(committed_db) as lander:
        stats = await lander.land_isolating(Batch(products=products))
    assert stats.products == 4
    landed = await fetch_rows(committed_db, "select sku from product order by sku")
    assert landed == [("SKU-0",), ("SKU-1",), ("SKU-3",), ("SKU-4",)]
    held = await fetch_rows(committed_db, "select channel_code, entity, external_id, reason from quarantine")
    assert [h[:3] for h in held] == [("catalog", "record:product", "SKU-2")]
    assert "22001" in held[0][3] and "x" * 20 not in held[0][3]


async def test_a_refused_person_holds_the_interaction_and_consent_that_name_them(committed_db, monkeypatch):
    # Interactions and consents land with the person they name: if the database refuses that person, they are
    # held with them (replayed once the person can land), not landed without their person.
    monkeypatch.setattr(sync.landing, "check_batch", lambda batch, bounds=None: batch)
    at = datetime(2026, 9, 1, 10, 0, tzinfo=UTC)

    def person(ext: str, name: str) -> PersonIdentity:
        return PersonIdentity("weibo", ext, at, {"name": name}, {"uid": ext})

    def comment(ext: str, uid: str) -> InteractionRecord:
        return InteractionRecord("weibo", ext, uid, "comment", at, "好用", {"id": ext})

    too_long = "u" * 129  # an id over the column's width
    batch = Batch(
        identities=[person("u-1", "张三"), person(too_long, "李四")],
        interactions=[comment("c-1", "u-1"), comment("c-2", too_long)],
        consents=[ConsentRecord("weibo", id_, "marketing_sms", "granted", at) for id_ in ("u-1", too_long)],
    )
    async with Lander.open(committed_db) as lander:
        await lander.land_isolating(batch)
    assert await fetch_rows(committed_db, "select external_id from interaction") == [("c-1",)]
    assert await fetch_rows(committed_db, "select count(*) from consent") == [(1,)]
    held = await fetch_rows(committed_db, "select entity, external_id from quarantine order by 1")
    assert held == [
        ("record:consent", too_long[:128]),
        ("record:identity", too_long[:128]),
        ("record:interaction", "c-2"),
    ]


async def test_the_runner_isolates_a_failing_row_instead_of_stopping_the_stream(
    sim, settings_for, clean_db, monkeypatch
):
    settings = settings_for(sim, pos_file_stable_seconds=0)
    monkeypatch.setattr(sync.landing, "check_batch", lambda batch, bounds=None: batch)
    # Past every check: a description over the column's width (as a value no check knows about would be).
    write_csv(settings.pos_drop_dir / "x.csv", [sale("T-1"), sale("T-2", description="x" * 400), sale("T-3")])
    result = await run(clean_db, settings, "pos", streams=("files",))
    assert result["files"]["orders"] == 2 and result["files"]["quarantined"] == 1
    assert set(await landed_pos(clean_db)) == {"T-1", "T-3"}
    held = await quarantine_by_id(clean_db)
    assert "22001" in held["T-2"]
    assert [p.name for p in list_files(settings.pos_drop_dir / "done")] == ["x.csv"]


async def test_identical_file_names_never_overwrite_each_other_in_done(sim, settings_for, clean_db):
    settings = settings_for(sim, pos_file_stable_seconds=0)
    path = settings.pos_drop_dir / "export.csv"
    write_csv(path, [sale("T-A")])
    await run(clean_db, settings, "pos", streams=("files",))
    write_csv(path, [sale("T-B")])
    await run(clean_db, settings, "pos", streams=("files",))
    done = list_files(settings.pos_drop_dir / "done")
    assert len(done) == 2
    contents = sorted(p.read_text() for p in done)
    assert "T-A" in contents[0] + contents[1] and "T-B" in contents[0] + contents[1]


async def test_a_file_still_being_written_waits_for_the_next_run(sim, settings_for, clean_db):
    settings = settings_for(sim, pos_file_ready="marker")
    path = write_csv(settings.pos_drop_dir / "half.csv", [sale("T-H1")])
    first = await run(clean_db, settings, "pos", streams=("files",))
    assert first["files"]["orders"] == 0 and path.exists()
    path.with_name("half.csv.done").write_text("")
    second = await run(clean_db, settings, "pos", streams=("files",))
    assert second["files"]["orders"] == 1 and not path.exists()
    assert list_files(settings.pos_drop_dir) == []


async def test_a_growing_file_is_left_until_its_size_stays_the_same(sim, settings_for, clean_db):
    import asyncio
    import threading

    settings = settings_for(sim, pos_file_stable_seconds=1.0)
    path = write_csv(settings.pos_drop_dir / "growing.csv", [sale("T-G1")])
    stop = threading.Event()

    def keep_writing() -> None:
        n = 2
        while not stop.is_set():
            with path.open("a", encoding="utf-8") as handle:
                handle.write(",".join(str(v) for v in sale(f"T-G{n}").values()) + "\n")
            n += 1
            stop.wait(0.2)

    writer = threading.Thread(target=keep_writing)
    writer.start()
    try:
        await asyncio.sleep(0.3)
        first = await run(clean_db, settings, "pos", streams=("files",))
    finally:
        stop.set()
        writer.join()
    assert first["files"]["orders"] == 0 and path.exists()
    second = await run(clean_db, settings, "pos", streams=("files",))
    assert second["files"]["orders"] >= 2 and not path.exists()


async def test_the_database_never_sees_a_nul_or_a_cut_value(committed_db):
    trade = top_trade(9301)
    trade["buyer_nick"] = "张\x00三"
    trade["orders"]["order"][0]["title"] = "t" * 301
    batch = normalize_trades([trade, top_trade(9302)])
    async with Lander.open(committed_db) as lander:
        await lander.land(batch)
    assert {r[0] for r in await fetch_rows(committed_db, "select external_id from orders")} == {"9302"}
    held = await quarantine_by_id(committed_db)
    assert "lines.0.title`" in held["9301"] and "301 characters" in held["9301"]
    async with committed_db.connect() as conn:
        nul = await conn.execute(
            sa.text("select count(*) from source_identity where raw::text like '%\\u0000%'")
        )
        assert nul.scalar_one() == 0
