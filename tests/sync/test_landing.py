"""Landing: idempotent upserts keyed on (channel, external id), in-place updates, stale versions ignored,
lines replaced whole, watermark in the same transaction, quarantine kept once per payload."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import asyncpg
import pytest
import sqlalchemy as sa

from sync.canonical import Batch, ConsentRecord, PersonIdentity, WatermarkAdvance
from sync.connectors.pos import normalize_transactions
from sync.connectors.taobao import normalize_refunds, normalize_trades
from sync.landing import Lander, LandingStats, read_watermark
from tests.conftest import fetch_rows
from tests.sync.factories import pos_sale, top_trade


async def _orders(engine):
    return await fetch_rows(
        engine,
        "select o.external_id, o.status, o.source_status, o.total_fen, count(l.line_no) as lines, "
        "o.source_identity_id is not null as has_identity from orders o "
        "left join order_line l on l.order_id = o.id group by o.id order by o.external_id",
    )


async def test_landing_twice_gives_the_same_rows(committed_db):
    batch = normalize_trades([top_trade(1001), top_trade(1002, lines=3)])
    async with Lander.open(committed_db) as lander:
        first = await lander.land(batch)
        await lander.land(normalize_trades([top_trade(1001), top_trade(1002, lines=3)]))
    assert first.orders == 2 and first.order_lines == 5
    assert await _orders(committed_db) == [
        ("1001", "paid", "WAIT_SELLER_SEND_GOODS", 39800, 2, True),
        ("1002", "paid", "WAIT_SELLER_SEND_GOODS", 59700, 3, True),
    ]


async def test_later_status_updates_in_place_and_stale_versions_are_ignored(committed_db):
    async with Lander.open(committed_db) as lander:
        await lander.land(normalize_trades([top_trade(2001)]))
        await lander.land(
            normalize_trades(
                [top_trade(2001, status="WAIT_BUYER_CONFIRM_GOODS", modified="2026-10-02 10:00:00", lines=1)]
            )
        )
        # An older version arriving late must not roll the order back.
        await lander.land(normalize_trades([top_trade(2001, modified="2026-10-01 11:00:00")]))
    assert await _orders(committed_db) == [("2001", "shipped", "WAIT_BUYER_CONFIRM_GOODS", 19900, 1, True)]


async def test_a_version_with_the_same_source_time_updates_the_order(committed_db):
    # Paid right after it was placed, within the same second of the channel's clock (its `modified` has whole
    # seconds): the status further on, with the same amounts, is progress and lands; it is not taken for a
    # stale copy or a conflict. (Other amounts at the same time are a conflict: tests/sync/test_conflicts.py.)
    async with Lander.open(committed_db) as lander:
        await lander.land(
            normalize_trades([top_trade(2101, status="WAIT_BUYER_PAY", modified="2026-10-02 10:00:00")])
        )
        placed = await _orders(committed_db)
        stats = await lander.land(
            normalize_trades(
                [top_trade(2101, status="WAIT_SELLER_SEND_GOODS", modified="2026-10-02 10:00:00")]
            )
        )
    assert stats.orders == 1 and stats.quarantined == 0
    assert [r[1:3] for r in placed] == [("pending", "WAIT_BUYER_PAY")]
    assert await _orders(committed_db) == [("2101", "paid", "WAIT_SELLER_SEND_GOODS", *placed[0][3:])]


async def test_bad_rows_are_quarantined_once_with_the_field_named(committed_db):
    bad = top_trade(3002, price="19.999")
    batch = normalize_trades([top_trade(3001), bad])
    async with Lander.open(committed_db) as lander:
        await lander.land(batch)
        await lander.land(normalize_trades([bad]))
    async with committed_db.connect() as conn:
        rows = (
            await conn.execute(sa.text("select external_id, reason, seen_count, raw from quarantine"))
        ).all()
    assert len(rows) == 1
    assert rows[0].external_id == "3002"
    assert "orders.order.0.price" in rows[0].reason and "fractions of a fen" in rows[0].reason
    assert rows[0].seen_count == 2
    assert rows[0].raw == bad
    assert [r[0] for r in await _orders(committed_db)] == ["3001"]


async def test_watermark_commits_with_its_batch_only(committed_db):
    batch = normalize_trades([top_trade(4001)])
    batch.watermarks.append(WatermarkAdvance("tmall.trades", cursor="page-1"))
    # A batch that fails inside the transaction takes its watermark down with it.
    broken = normalize_trades([top_trade(4002)])
    broken.watermarks.append(WatermarkAdvance("tmall.trades", cursor="page-2"))
    # Rows are checked before they land, so the failure is a watermark key wider than its column: the last
    # statement of the transaction fails.
    broken.watermarks.append(WatermarkAdvance("x" * 100, cursor="page-2"))
    async with Lander.open(committed_db) as lander:
        await lander.land(batch)
        with pytest.raises(asyncpg.StringDataRightTruncationError):
            await lander.land(broken)
    watermark = await read_watermark(committed_db, "tmall.trades")
    assert watermark is not None and watermark["cursor"] == "page-1"
    assert [r[0] for r in await _orders(committed_db)] == ["4001"]


async def _lines(engine, external_id):
    # xmin first: the transaction that wrote each line's row, which changes only if the line is written again.
    return await fetch_rows(
        engine,
        "select l.xmin::text, l.line_no, l.sku, l.title, l.unit_price_fen, l.amount_fen from order_line l "
        "join orders o on o.id = l.order_id where o.external_id = :e order by l.line_no",
        e=external_id,
    )


async def test_a_status_update_leaves_unchanged_lines_in_place(committed_db):
    async with Lander.open(committed_db) as lander:
        await lander.land(normalize_trades([top_trade(5001, lines=2)]))
        before = await _lines(committed_db, "5001")
        later = await lander.land(
            normalize_trades(
                [top_trade(5001, lines=2, status="WAIT_BUYER_CONFIRM_GOODS", modified="2026-10-02 10:00:00")]
            )
        )
    # The same row versions: nothing was deleted and inserted again.
    assert await _lines(committed_db, "5001") == before
    assert [r[1:] for r in before] == [
        (1, "SKU-0", "item 0", 19900, 19900),
        (2, "SKU-1", "item 1", 19900, 19900),
    ]
    assert (later.orders, later.order_lines) == (1, 2)
    assert ("5001", "shipped", "WAIT_BUYER_CONFIRM_GOODS", 39800, 2, True) in await _orders(committed_db)


async def test_a_batch_of_new_and_updated_orders_counts_the_lines_of_both(committed_db):
    async with Lander.open(committed_db) as lander:
        await lander.land(normalize_trades([top_trade(5101, lines=2)]))
        later = await lander.land(
            normalize_trades(
                [
                    top_trade(
                        5101, lines=2, status="WAIT_BUYER_CONFIRM_GOODS", modified="2026-10-02 10:00:00"
                    ),
                    top_trade(5102, lines=3),
                ]
            )
        )
    # What the run reports: two orders written, with their 2 + 3 lines.
    assert (later.orders, later.order_lines) == (2, 5)


async def test_changed_lines_are_replaced_and_gone_lines_removed(committed_db):
    async with Lander.open(committed_db) as lander:
        await lander.land(normalize_trades([top_trade(5002, lines=3)]))
        before = await _lines(committed_db, "5002")
        changed = top_trade(5002, lines=2, modified="2026-10-02 10:00:00")
        changed["orders"]["order"][0]["title"] = "item 0, new colour"
        stats = await lander.land(normalize_trades([changed]))
    after = await _lines(committed_db, "5002")
    assert [r[1:] for r in after] == [
        (1, "SKU-0", "item 0, new colour", 19900, 19900),
        (2, "SKU-1", "item 1", 19900, 19900),
    ]
    assert after[0][0] not in {r[0] for r in before}  # line 1 changed: a new row
    assert after[1][0] == before[1][0]  # line 2 did not change: the same row
    assert (stats.orders, stats.order_lines) == (1, 2)

    # Lines added to an order land with it, tied to the catalogue; the ones it had stay as they were.
    async with committed_db.begin() as conn:
        await conn.execute(
            sa.text("insert into product (sku, title) values ('SKU-3', 'item 3') on conflict do nothing")
        )
    async with Lander.open(committed_db) as lander:
        grown = top_trade(5002, lines=4, modified="2026-10-03 10:00:00")
        grown["orders"]["order"][0]["title"] = "item 0, new colour"
        stats = await lander.land(normalize_trades([grown]))
    final = await _lines(committed_db, "5002")
    assert [r[1:3] for r in final] == [(1, "SKU-0"), (2, "SKU-1"), (3, "SKU-2"), (4, "SKU-3")]
    assert [r[0] for r in final[:2]] == [r[0] for r in after]
    assert (stats.orders, stats.order_lines) == (1, 4)
    assert await fetch_rows(
        committed_db,
        "select p.sku from order_line l join orders o on o.id = l.order_id join product p on p.id = l.product_id "
        "where o.external_id = '5002' and l.line_no = 4",
    ) == [("SKU-3",)]


async def test_a_stale_version_changes_no_lines(committed_db):
    async with Lander.open(committed_db) as lander:
        await lander.land(normalize_trades([top_trade(5003, lines=1, modified="2026-10-02 10:00:00")]))
        before = await _lines(committed_db, "5003")
        stale = await lander.land(
            normalize_trades([top_trade(5003, lines=3, modified="2026-10-01 10:00:00")])
        )
    assert await _lines(committed_db, "5003") == before
    assert (stale.orders, stale.order_lines) == (0, 0)


async def test_a_batch_of_orders_is_a_fixed_number_of_statements(committed_db, monkeypatch):
    """New orders with their buyers and lines: staging copies, one statement for the identities, one for
    the orders and their lines, the watermark. A statement more per batch shows up here."""
    batch = normalize_trades([top_trade(6000 + n, buyer=f"buyer-{n % 3}") for n in range(10)])
    batch.watermarks.append(WatermarkAdvance("tmall.trades", cursor="page-1"))
    sent: list[str] = []
    async with Lander.open(committed_db) as lander:
        for name in ("execute", "executemany", "fetch", "fetchrow", "fetchval", "copy_records_to_table"):
            original = getattr(asyncpg.Connection, name)

            def spy(self, *args, _original=original, _copy=name == "copy_records_to_table", **kwargs):
                if self is lander.connection:
                    sent.append(f"copy {args[0]}" if _copy else " ".join(args[0].split()[:3]))
                return _original(self, *args, **kwargs)

            monkeypatch.setattr(asyncpg.Connection, name, spy)
        stats = await lander.land(batch)
    assert (stats.orders, stats.order_lines, stats.identities) == (10, 20, 3)
    assert sent == [
        "BEGIN;",
        "set local enable_mergejoin",
        "copy stage_identities",
        "insert into source_identity",
        "copy stage_orders",
        "copy stage_order_lines",
        "with conflicts as",  # the orders and their lines, conflicts kept out
        "insert into sync_watermark",
        "COMMIT;",
    ]


async def test_a_buyer_whose_address_changes_mid_run_lands_the_new_one(committed_db):
    """The lander reuses standardized attributes of a buyer it has seen; a change must not hit that cache."""
    moved = top_trade(7002, modified="2026-10-02 10:00:00")
    moved |= {"receiver_state": "浙江省", "receiver_city": "杭州市", "receiver_district": "西湖区"}
    async with Lander.open(committed_db) as lander:
        await lander.land(normalize_trades([top_trade(7001)]))
        await lander.land(normalize_trades([top_trade(7001, modified="2026-10-01 12:00:00")]))
        await lander.land(normalize_trades([moved]))
    async with committed_db.connect() as conn:
        row = (
            await conn.execute(
                sa.text(
                    "select province, city, district, raw ->> 'tid' as tid from source_identity "
                    "where external_id = 'AAHk5d-EXAMPLE'"
                )
            )
        ).one()
    assert tuple(row) == ("浙江省", "杭州市", "西湖区", "7002")


def _break_first_order(share):
    """Give the share's first staged order a status wider than its column, as a row the checks missed would."""
    row = share.order_records[0]
    share.order_records[0] = (*row[:4], "x" * 100, *row[5:])


async def test_a_failed_write_forgets_the_identities_it_was_to_write(committed_db):
    # The runner prepares a batch (and remembers its identities as written) before the previous write ends;
    # a write that fails must not leave those identities skipped as "already written" by a later batch.
    broken = normalize_trades([top_trade(4101, buyer="buyer-after-failure")])
    async with Lander.open(committed_db) as lander:
        prepared = lander.prepare(broken)
        # Past the checks: a status wider than its column fails the insert after the identity upsert.
        _break_first_order(prepared.shares[0])
        assert prepared.shares[0].identity_records, "the buyer should be written"
        with pytest.raises(asyncpg.StringDataRightTruncationError):
            await lander.write(prepared)
        # The same buyer at the same version, in a good batch: written, not skipped.
        stats = await lander.land(normalize_trades([top_trade(4102, buyer="buyer-after-failure")]))
    assert stats.identities == 1
    async with committed_db.connect() as conn:
        found = await conn.scalar(
            sa.text("select count(*) from source_identity where external_id = 'buyer-after-failure'")
        )
    assert found == 1


def _buyers_by_share(count: int, writers: int = 2) -> list[list[str]]:
    """Buyer ids grouped by the writer their rows go to (the lander splits by the identity's key)."""
    shares: list[list[str]] = [[] for _ in range(writers)]
    n = 0
    while min(len(s) for s in shares) < count:
        buyer = f"split-buyer-{n}"
        shares[hash(("tmall", buyer)) % writers].append(buyer)
        n += 1
    return [s[:count] for s in shares]


async def test_two_writers_land_the_same_rows_as_one(committed_db):
    first, second = _buyers_by_share(5)
    trades = [top_trade(8000 + i, buyer=b, lines=1 + i % 3) for i, b in enumerate(first + second)]
    batch = normalize_trades(trades)
    batch.watermarks.append(WatermarkAdvance("tmall.trades", cursor="both-shares"))
    async with Lander.open(committed_db, writers=2) as lander:
        prepared = lander.prepare(batch)
        assert [len(s.order_records) for s in prepared.shares] == [5, 5]
        stats = await lander.write(prepared)
    assert (stats.orders, stats.identities, stats.order_lines) == (10, 10, sum(1 + i % 3 for i in range(10)))
    async with committed_db.connect() as conn:
        rows = (
            await conn.execute(
                sa.text(
                    "select o.external_id, si.external_id, count(l.line_no) from orders o "
                    "join source_identity si on si.id = o.source_identity_id "
                    "left join order_line l on l.order_id = o.id "
                    "where o.external_id like '80%' group by o.external_id, si.external_id order by 1"
                )
            )
        ).all()
    # Every order found its buyer, written by the same writer in the same round, and has its lines.
    assert [tuple(r) for r in rows] == [(str(8000 + i), b, 1 + i % 3) for i, b in enumerate(first + second)]
    watermark = await read_watermark(committed_db, "tmall.trades")
    assert watermark is not None and watermark["cursor"] == "both-shares"


async def test_with_two_writers_a_failed_share_keeps_the_watermark_back(committed_db):
    first, second = _buyers_by_share(2)
    good = normalize_trades([top_trade(8100, buyer=first[0])])
    good.watermarks.append(WatermarkAdvance("tmall.trades", cursor="before"))
    # The second writer's order is broken: the first writer's rows and the watermark must not commit ahead.
    broken = normalize_trades([top_trade(8101, buyer=first[1]), top_trade(8102, buyer=second[1])])
    broken.watermarks.append(WatermarkAdvance("tmall.trades", cursor="after"))
    async with Lander.open(committed_db, writers=2) as lander:
        await lander.land(good)
        prepared = lander.prepare(broken)
        _break_first_order(prepared.shares[1])
        with pytest.raises(asyncpg.StringDataRightTruncationError):
            await lander.write(prepared)
    watermark = await read_watermark(committed_db, "tmall.trades")
    assert watermark is not None and watermark["cursor"] == "before"
    assert [r[0] for r in await _orders(committed_db) if r[0].startswith("81")] == ["8100"]


async def test_preparing_a_batch_lets_the_write_in_flight_go_on(committed_db):
    # The runner prepares batch N+1 on the event loop while batch N's write needs that loop for its next
    # statement: prepare_async must hand the loop back as it goes, and build what prepare builds.
    trades = [top_trade(9000 + i, buyer=f"buyer-{i % 1500}") for i in range(3 * Lander.PREPARE_SLICE)]
    ticks = 0

    async def other_work() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0)

    async with Lander.open(committed_db, writers=2) as lander, Lander.open(committed_db, writers=2) as plain:
        ticker = asyncio.create_task(other_work())
        await asyncio.sleep(0)
        started = ticks
        prepared = await lander.prepare_async(normalize_trades(trades))
        during = ticks - started
        ticker.cancel()
        expected = plain.prepare(normalize_trades(trades))
    assert during >= 3, "the loop was held for the whole batch"
    for got, want in zip(prepared.shares, expected.shares, strict=True):
        assert (got.identity_records, got.order_records, got.line_records) == (
            want.identity_records, want.order_records, want.line_records,
        )  # fmt: skip
    assert sum(len(s.order_records) for s in prepared.shares) == len(trades)


async def _buyer(engine, buyer: str = "AAHk5d-EXAMPLE") -> tuple[object, ...]:
    (row,) = await fetch_rows(
        engine,
        "select city, to_char(source_updated_at at time zone 'Asia/Shanghai', 'YYYY-MM-DD HH24:MI'), "
        "raw ->> 'tid', raw ->> 'receiver_city' from source_identity where external_id = :buyer",
        buyer=buyer,
    )
    return row


def _spy_on_fetch(monkeypatch) -> list[str]:
    """The first three words of every query sent with `fetch` from now on (the identity statements use it)."""
    sent: list[str] = []
    original = asyncpg.Connection.fetch

    def spy(self, query, *args, **kwargs):
        sent.append(" ".join(query.split()[:3]))
        return original(self, query, *args, **kwargs)

    monkeypatch.setattr(asyncpg.Connection, "fetch", spy)
    return sent


async def test_a_repeat_buyers_next_order_only_moves_their_source_time_and_tid(committed_db, monkeypatch):
    # The buyer's second order says the same about them: the identity row is touched (one UPDATE, no staging
    # of the identity) and ends exactly as a full upsert would leave it.
    async with Lander.open(committed_db) as lander:
        await lander.land(normalize_trades([top_trade(7101, modified="2026-10-01 10:00:00")]))
        sent = _spy_on_fetch(monkeypatch)
        stats = await lander.land(normalize_trades([top_trade(7102, modified="2026-10-02 11:00:00")]))
    assert sent == ["update source_identity si"]
    assert stats.identities == 1 and len(stats.identity_ids) == 1  # linking still hears of the buyer
    assert await _buyer(committed_db) == ("上海市", "2026-10-02 11:00", "7102", "上海市")


async def test_a_members_next_sale_in_another_store_only_moves_the_sale_in_raw(committed_db, monkeypatch):
    # The store and the transaction travel as the identity's event: the member's next sale is a touch too.
    async with Lander.open(committed_db) as lander:
        await lander.land(normalize_transactions([pos_sale(1)]))
        sent = _spy_on_fetch(monkeypatch)
        await lander.land(
            normalize_transactions([pos_sale(2, store="SH002", ended_at="2026-10-02 18:30:00")])
        )
    assert sent == ["update source_identity si"]
    (row,) = await fetch_rows(
        committed_db,
        "select phone, member_no, raw ->> 'member_card_no', raw ->> 'store_id', raw ->> 'transaction', "
        "to_char(source_updated_at at time zone 'Asia/Shanghai', 'YYYY-MM-DD HH24:MI') "
        "from source_identity where channel_code = 'pos' and external_id = 'M000123'",
    )
    assert row == (None, "M000123", "M000123", "SH002", "SH002-R1-20261002-2", "2026-10-02 18:30")


async def test_a_touch_falls_back_to_the_upsert_when_another_writer_changed_the_row(committed_db):
    moved = {"receiver_state": "浙江省", "receiver_city": "杭州市", "receiver_district": "西湖区"}
    async with Lander.open(committed_db) as ours, Lander.open(committed_db) as theirs:
        await ours.land(normalize_trades([top_trade(7201, modified="2026-10-01 10:00:00")]))
        # Another writer lands a newer version, which moved the buyer...
        await theirs.land(normalize_trades([top_trade(7202, modified="2026-10-02 10:00:00") | moved]))
        # ...and our next version repeats what we wrote first: it is the newest, so it must win in full.
        await ours.land(normalize_trades([top_trade(7203, modified="2026-10-03 10:00:00")]))
    assert await _buyer(committed_db) == ("上海市", "2026-10-03 10:00", "7203", "上海市")

    async with Lander.open(committed_db) as ours, Lander.open(committed_db) as theirs:
        await ours.land(normalize_trades([top_trade(7301, buyer="b-73", modified="2026-10-01 10:00:00")]))
        # Here the other writer's version is the newest: our repeat, older than it, must not undo it.
        await theirs.land(
            normalize_trades([top_trade(7303, buyer="b-73", modified="2026-10-03 10:00:00") | moved])
        )
        await ours.land(normalize_trades([top_trade(7302, buyer="b-73", modified="2026-10-02 10:00:00")]))
    assert await _buyer(committed_db, "b-73") == ("杭州市", "2026-10-03 10:00", "7303", "杭州市")


async def test_a_refund_lands_on_the_line_it_names(committed_db):
    def refund(refund_id: str, oid: int | None) -> dict[str, object]:
        return {"refund_id": refund_id, "tid": 9001, "oid": oid, "refund_fee": "199.00", "reason": "size",
                "status": "SUCCESS", "created": "2026-10-03 09:00:00", "modified": "2026-10-03 10:00:00"}  # fmt: skip

    async with Lander.open(committed_db) as lander:
        await lander.land(normalize_trades([top_trade(9001, lines=3)]))
        # A line with no channel id (landed before lines kept one) gets it when its order lands again.
        async with committed_db.begin() as conn:
            await conn.execute(sa.text("update order_line set external_id = null where order_id = "
                                       "(select id from orders where external_id = '9001') and line_no = 1"))  # fmt: skip
        await lander.land(normalize_trades([top_trade(9001, lines=3, status="TRADE_FINISHED",
                                                      modified="2026-10-02 10:00:00")]))  # fmt: skip
        await lander.land(normalize_refunds([refund("R1", 90012), refund("R2", 99999), refund("R3", None)]))
    assert await fetch_rows(
        committed_db,
        "select l.line_no, l.external_id from order_line l join orders o on o.id = l.order_id "
        "where o.external_id = '9001' order by 1",
    ) == [(1, "90010"), (2, "90011"), (3, "90012")]
    # The third line's refund names it; an id the order has no line for, or none, refunds the order.
    refunds = "select r.external_id, r.line_no from refund r join orders o on o.id = r.order_id where o.external_id = '9001'"
    assert await fetch_rows(committed_db, refunds + " order by 1") == [
        ("R1", 3),
        ("R2", None),
        ("R3", None),
    ]


def test_the_stats_of_a_runs_batches_add_up_in_what_it_reports() -> None:
    # A run merges its batches' stats; the summary is what `c360 sync run` prints and the flows report.
    first = LandingStats(orders=2, interactions=1, read=3, landed=3, quarantined_hashes={"h1"})
    first.merge(LandingStats(interactions=4, read=5, landed=4, quarantined=1, quarantined_hashes={"h2"}))
    summary = first.summary()
    assert (summary["orders"], summary["interactions"], summary["read"], summary["landed"]) == (2, 5, 8, 7)
    assert (summary["quarantined"], summary["unchanged"]) == (1, 0)
    # Replay asks which of the rows it tried were held again, in any batch of the run.
    assert first.quarantined_hashes == {"h1", "h2"}


async def test_consents_are_counted_as_they_land_and_land_once(committed_db):
    at = datetime(2026, 9, 1, 10, 0, tzinfo=UTC)

    def batch() -> Batch:
        return Batch(
            identities=[PersonIdentity("wechat", "o-7", at, {"name": "王五"}, {"openid": "o-7"})],
            consents=[
                ConsentRecord("wechat", "o-7", "marketing_sms", "granted", at),
                ConsentRecord("wechat", "o-7", "marketing_email", "withdrawn", at),
            ],
        )

    async with Lander.open(committed_db) as lander:
        first = await lander.land(batch())
        again = await lander.land(batch())
    assert (first.consents, again.consents) == (2, 0)
    assert await fetch_rows(committed_db, "select count(*) from consent") == [(2,)]
