"""The Tmall trades fast path (a page validated from bytes by pydantic-core alone, finished in
`fast_trades_to_batch`) accepts nothing TopTrade rejects and gives the same canonical records as
TopTrade + `trades_to_batch`; anything it does not take goes row by row through TopTrade."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import orjson
import pytest

from sync.canonical import Batch
from sync.connectors.registry import make_connector
from sync.connectors.taobao import (
    IDENTITY_KEYS,
    INCREMENT_METHOD,
    TRADE_FIELDS,
    TaobaoConnector,
    ValidatedPage,
    normalize_trades,
    parse_trades_page,
)
from sync.simulator import CST, SimulatorConfig
from tests.sync.conftest import assert_same_orders, simulator

ENVELOPE = "trades_sold_increment_get_response"


def page_bytes(trades: list[Any]) -> bytes:
    return orjson.dumps(
        {ENVELOPE: {"total_results": len(trades), "trades": {"trade": trades}, "request_id": "x"}}
    )


def assert_same_records(fast: Batch, slow: Batch) -> None:
    """The fast batch equals the slow one; the identity raw differs only as documented (every identity
    key, None when not sent); the event is the tid as the validated string."""
    assert_same_orders(fast, slow)
    assert len(fast.identities) == len(slow.identities)
    for fi, si in zip(fast.identities, slow.identities, strict=True):
        assert (fi.channel, fi.external_id, fi.source_updated_at, fi.attributes, fi.stub) == (
            si.channel, si.external_id, si.source_updated_at, si.attributes, si.stub,
        )  # fmt: skip
        expected_raw = {k: si.raw.get(k) for k in IDENTITY_KEYS}
        assert fi.raw == expected_raw and list(fi.raw) == list(expected_raw)
        assert si.event is not None and fi.event == {"tid": str(si.event["tid"])}


def both_paths(content: bytes) -> tuple[Any, Batch]:
    rows = orjson.loads(content)[ENVELOPE]["trades"]["trade"]
    return parse_trades_page(content), normalize_trades(rows)


async def fetch_pages(base: str, settings_for: Any, pages: int) -> list[bytes]:
    """Raw `taobao.trades.sold.increment.get` pages from the simulator, as the connector requests them."""
    connector = make_connector("tmall", settings_for(base))
    assert isinstance(connector, TaobaoConnector)
    out: list[bytes] = []
    try:
        end = await connector.end_time()
        for day in range(12):
            lo = datetime(2026, 9, 1 + day, tzinfo=CST)
            params = {
                "start_modified": lo.strftime("%Y-%m-%d %H:%M:%S"),
                "end_modified": min(lo.replace(day=2 + day), end).strftime("%Y-%m-%d %H:%M:%S"),
                "fields": TRADE_FIELDS,
                "page_size": 100,
            }
            for no in (1, 2):
                body = await connector.call(INCREMENT_METHOD, {**params, "page_no": no}, parse=bytes)
                if b'"tid"' in body:
                    out.append(body)
            if len(out) >= pages:
                break
    finally:
        await connector.aclose()
    return out


async def test_simulator_pages_give_the_same_records_on_both_paths(sim, settings_for):
    pages = await fetch_pages(sim, settings_for, pages=8)
    assert len(pages) >= 4
    trades = 0
    for content in pages:
        fast, slow = both_paths(content)
        assert isinstance(fast, ValidatedPage)
        assert_same_records(fast.batch, slow)
        trades += len(slow.orders)
    assert trades > 200


async def test_a_page_with_broken_rows_goes_row_by_row_with_toptrades_reasons(settings_for):
    broken = SimulatorConfig(seed=5, people=120, orders=600, days=12, malformed_rate=0.05,
                             start=datetime(2026, 9, 1, tzinfo=CST))  # fmt: skip
    with simulator(broken) as base:
        pages = await fetch_pages(base, settings_for, pages=6)
    fell_back = 0
    for content in pages:
        parsed = parse_trades_page(content)
        rows = orjson.loads(content)[ENVELOPE]["trades"]["trade"]
        slow = normalize_trades(rows)
        if slow.quarantined:
            # What the connector does with such a page: plain JSON, validated row by row with TopTrade.
            assert not isinstance(parsed, ValidatedPage)
            assert parsed == orjson.loads(content)
            fell_back += 1
            reasons = [q.reason for q in slow.quarantined]
            assert all(r.startswith("field `") for r in reasons)
        else:
            assert isinstance(parsed, ValidatedPage)
            assert_same_records(parsed.batch, slow)
    assert fell_back >= 1


BASE_TRADE: dict[str, Any] = {
    "tid": 3100000000000000787,
    "status": "TRADE_FINISHED",
    "buyer_open_uid": "AAHSiaBGRGUoWNNF4PYDD7YI",
    "buyer_nick": "云**",
    "receiver_name": "王**",
    "receiver_mobile": "159****3897",
    "receiver_state": "北京",
    "receiver_city": "北京市",
    "receiver_district": "东城区",
    "receiver_address": "安定门外大街********",
    "oaid": "4IFfpBOYJjaRMz7q0PTgMq0xlJFwJ7Fj",
    "total_fee": "3777.00",
    "discount_fee": "20.00",
    "post_fee": "0.00",
    "payment": "3757.00",
    "created": "2026-09-01 13:02:37",
    "pay_time": "2026-09-01 13:09:59",
    "end_time": "2026-09-04 23:42:08",
    "modified": "2026-09-04 23:42:08",
    "orders": {"order": [
        {"oid": 3100010000000000787, "oid_str": "3100010000000000787", "num_iid": 655793313776,
         "sku_id": "5000031377601", "outer_sku_id": "HG-KIT-007-02", "title": "304不锈钢保温杯 750ml",
         "price": "149.00", "num": 2, "total_fee": "298.00", "payment": "298.00", "discount_fee": "0.00",
         "refund_status": "NO_REFUND", "status": "TRADE_FINISHED"},
        {"oid": 3100020000000000787, "num_iid": 688868985240, "sku_id": "5000098524000",
         "outer_sku_id": "HG-FUR-011-01", "title": "实木餐桌 1.4米", "price": "3479.00", "num": 1,
         "payment": "3479.00"},
    ]},
}  # fmt: skip
DROP = object()


def variant(changes: dict[str, Any], line: dict[str, Any] | None = None) -> dict[str, Any]:
    trade = {k: v for k, v in BASE_TRADE.items() if changes.get(k) is not DROP}
    trade.update({k: v for k, v in changes.items() if v is not DROP})
    if line is not None:
        first = {k: v for k, v in BASE_TRADE["orders"]["order"][0].items() if line.get(k) is not DROP}
        first.update({k: v for k, v in line.items() if v is not DROP})
        trade["orders"] = {"order": [first, *BASE_TRADE["orders"]["order"][1:]]}
    return trade


# (id, trade changes, first-line changes, must the fast path take it?)
CASES: list[tuple[str, dict[str, Any], dict[str, Any] | None, bool]] = [
    ("as sent", {}, None, True),
    ("amount one decimal", {"payment": "12.3", "total_fee": "12.3"}, None, True),
    ("amount zero", {"payment": "0.00", "post_fee": "0", "discount_fee": "0.0"}, None, True),
    ("amount whole yuan", {"payment": "12"}, {"price": "7"}, True),
    ("amount leading zeros", {"payment": "007.50"}, None, True),
    ("amount leading space", {"payment": " 1"}, None, False),
    ("amount trailing newline", {"payment": "1.00\n"}, None, False),
    ("amount exponent", {"payment": "1e3"}, None, False),
    ("amount fraction of a fen", {"payment": "12.345"}, None, False),
    ("amount fraction of a fen on a line", {}, {"price": "1.001"}, False),
    ("amount negative", {"payment": "-1.00"}, None, False),
    ("negative line price", {}, {"price": "-5.00"}, False),
    ("amount garbled", {"payment": "12.3O"}, None, False),
    ("amount trailing dot", {"payment": "12."}, None, False),
    ("amount leading dot", {"payment": ".5"}, None, False),
    ("amount fullwidth digits", {"payment": "１２.００"}, None, False),
    ("amount arabic-indic digits", {"payment": "١٢"}, None, False),
    ("amount as a JSON integer", {"payment": 12}, None, False),
    ("amount as a JSON float", {"payment": 12.3}, None, False),
    ("big amount as a JSON number", {"payment": 12345678901234567.89}, None, False),
    ("optional fee empty", {"post_fee": ""}, None, False),
    ("optional fee null", {"post_fee": None, "discount_fee": None}, None, True),
    ("optional fees missing", {"post_fee": DROP, "discount_fee": DROP}, None, True),
    ("required amount missing", {"total_fee": DROP}, None, False),
    ("line payment above price", {}, {"price": "10.00", "num": 1, "payment": "12.00"}, True),
    ("time with zone", {"created": "2026-09-01T13:02:37+08:00"}, None, False),
    ("time in UTC", {"modified": "2026-09-04 15:42:08Z"}, None, False),
    ("time with T", {"created": "2026-09-01T13:02:37"}, None, False),
    ("time impossible", {"created": "2026-13-45 25:61:00"}, None, False),
    ("time day out of month", {"modified": "2026-02-30 10:00:00"}, None, False),
    ("time hour 24", {"created": "2026-09-01 24:00:00"}, None, False),
    ("time leap second", {"created": "2026-09-01 23:59:60"}, None, False),
    ("time fraction of a second", {"created": "2026-09-01 13:02:37.5"}, None, False),
    ("time as epoch number", {"created": 1788231757}, None, False),
    ("time as epoch string", {"created": "1788231757"}, None, False),
    ("pay_time empty", {"pay_time": ""}, None, False),
    ("pay_time null, unpaid", {"pay_time": None, "status": "WAIT_BUYER_PAY"}, None, True),
    ("pay_time missing, unpaid", {"pay_time": DROP, "status": "WAIT_BUYER_PAY"}, None, True),
    ("pay_time missing, closed", {"pay_time": DROP, "status": "TRADE_CLOSED_BY_TAOBAO"}, None, True),
    ("end_time impossible", {"end_time": "2026-13-45 25:61:00"}, None, False),
    ("end_time with zone", {"end_time": "2026-09-04T23:42:08+08:00"}, None, True),
    ("end_time missing", {"end_time": DROP}, None, True),
    ("end_time as epoch number", {"end_time": 1788231757}, None, False),
    ("end_time empty", {"end_time": ""}, None, False),
    ("status unknown", {"status": "TRADE_NO_CREATE_PAY"}, None, False),
    ("status a number", {"status": 3}, None, False),
    ("tid missing", {"tid": DROP}, None, False),
    ("tid a string", {"tid": "3100000000000000787"}, None, True),
    ("tid not digits", {"tid": "31000a"}, None, False),
    ("tid empty", {"tid": ""}, None, False),
    ("tid a float", {"tid": 1e3}, None, False),
    ("tid negative", {"tid": -5}, None, False),
    ("tid zero", {"tid": 0}, None, True),
    ("tid longest", {"tid": "9" * 64}, None, True),
    ("tid too long", {"tid": "9" * 65}, None, False),
    ("tid unicode digits", {"tid": "٣١٠"}, None, True),
    ("buyer missing", {"buyer_open_uid": DROP}, None, False),
    ("buyer empty", {"buyer_open_uid": ""}, None, False),
    ("optional strings missing", {k: DROP for k in IDENTITY_KEYS if k != "buyer_open_uid"}, None, True),
    ("optional strings null", {k: None for k in IDENTITY_KEYS if k != "buyer_open_uid"}, None, True),
    ("receiver zip sent", {"receiver_zip": "100011"}, None, True),
    ("receiver zip a number", {"receiver_zip": 100011}, None, False),
    ("nick an object", {"buyer_nick": {"x": 1}}, None, False),
    ("orders missing", {"orders": DROP}, None, True),
    ("orders empty", {"orders": {"order": []}}, None, True),
    ("orders without order", {"orders": {}}, None, True),
    ("orders null", {"orders": None}, None, False),
    ("order list null", {"orders": {"order": None}}, None, False),
    ("line quantity zero", {}, {"num": 0}, False),
    ("line quantity a string", {}, {"num": "2"}, True),
    ("line quantity a float", {}, {"num": 2.0}, True),
    ("line quantity fractional", {}, {"num": 2.5}, False),
    ("line title a number", {}, {"title": 750}, False),
    ("line title a float", {}, {"title": 1e3}, False),
    ("line num_iid as the sku", {}, {"outer_sku_id": DROP, "sku_id": None}, True),
    ("line num_iid a string", {}, {"outer_sku_id": DROP, "sku_id": DROP, "num_iid": "655793313776"}, True),
    ("line num_iid a float", {}, {"num_iid": 655793313776.0}, False),
    ("line oid a string", {}, {"oid": "3100010000000000787"}, True),
    ("line oid empty", {}, {"oid": ""}, False),
    ("line without sku ids", {}, {"outer_sku_id": DROP, "sku_id": DROP}, True),
    ("line oid missing", {}, {"oid": DROP}, False),
    ("line refund_status a list", {}, {"refund_status": ["x"]}, False),
    ("extra fields", {"seller_nick": "栖居家居旗舰店", "num": 3}, None, True),
]


@pytest.mark.parametrize(
    ("changes", "line", "fast_expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_crafted_rows_are_taken_only_when_toptrade_takes_them_and_mean_the_same(changes, line, fast_expected):
    trade = variant(changes, line)
    fast, slow = both_paths(page_bytes([BASE_TRADE, trade]))
    if isinstance(fast, ValidatedPage):
        assert_same_records(fast.batch, slow)
    else:
        # Not taken: the connector reads the plain JSON and validates it row by row with TopTrade.
        assert fast == orjson.loads(page_bytes([BASE_TRADE, trade]))
    assert isinstance(fast, ValidatedPage) == fast_expected


def test_the_fast_path_follows_the_status_mapping_as_it_is_now(monkeypatch):
    from sync.connectors import taobao

    content = page_bytes([BASE_TRADE])
    assert isinstance(parse_trades_page(content), ValidatedPage)
    monkeypatch.delitem(taobao.TRADE_STATUS, "TRADE_FINISHED")
    fast, slow = both_paths(content)
    assert not isinstance(fast, ValidatedPage)
    assert [q.reason for q in slow.quarantined] == [
        "field `status`: unknown trade status 'TRADE_FINISHED'; known: " + ", ".join(taobao.TRADE_STATUS)
    ]
    monkeypatch.setitem(taobao.TRADE_STATUS, "TRADE_NO_CREATE_PAY", "cancelled")
    fast, slow = both_paths(page_bytes([variant({"status": "TRADE_NO_CREATE_PAY"})]))
    assert slow.orders[0].status == "cancelled"
    if isinstance(fast, ValidatedPage):
        assert_same_records(fast.batch, slow)


def test_error_envelopes_and_empty_pages():
    error = orjson.dumps({"error_response": {"code": 7, "msg": "App Call Limited"}})
    assert parse_trades_page(error) == orjson.loads(error)
    empty = orjson.dumps({ENVELOPE: {"total_results": 0}})
    parsed = parse_trades_page(empty)
    assert isinstance(parsed, ValidatedPage) and parsed.batch.orders == [] and parsed.batch.identities == []
