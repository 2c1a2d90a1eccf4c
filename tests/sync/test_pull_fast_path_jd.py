"""The JD orders fast path (a page validated from bytes by pydantic-core alone, finished in
`fast_orders_to_batch`) accepts nothing JdOrder rejects and gives the same canonical records as JdOrder +
`normalize_orders`; anything it does not take goes row by row through JdOrder."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import orjson
import pytest

from sync.canonical import Batch
from sync.connectors.jd import (
    ORDER_STATE,
    RESPONSE_KEY,
    JdConnector,
    ValidatedPage,
    check_jd,
    normalize_orders,
    parse_orders_page,
)
from sync.connectors.registry import make_connector
from sync.simulator import CST, SimulatorConfig
from tests.sync.conftest import assert_same_orders, simulator


def page_bytes(orders: list[Any], api: dict[str, Any] | None = None) -> bytes:
    result = {"apiResult": api or {"success": True, "resultCode": "0"}, "orderTotal": len(orders),
              "orderInfoList": orders}  # fmt: skip
    return orjson.dumps({RESPONSE_KEY: {"code": "0", "searchorderinfo_result": result}})


def rows_of(content: bytes) -> list[Any]:
    rows: list[Any] = orjson.loads(content)[RESPONSE_KEY]["searchorderinfo_result"]["orderInfoList"]
    return rows


def assert_same_records(fast: Batch, slow: Batch) -> None:
    assert_same_orders(fast, slow)
    assert fast.identities == slow.identities  # raw included: the consignee as sent


async def fetch_pages(base: str, settings_for: Any, pages: int) -> list[bytes]:
    connector = make_connector("jd", settings_for(base))
    assert isinstance(connector, JdConnector)
    out: list[bytes] = []

    class Kept(dict[str, Any]):
        """The page as plain JSON (for check_jd), with its bytes."""

        content = b""

    def keep(content: bytes) -> Kept:
        kept = Kept(orjson.loads(content))
        kept.content = content
        return kept

    try:
        end = await connector.end_time()
        for day in range(12):
            lo = datetime(2026, 9, 1, tzinfo=CST) + timedelta(days=day)
            business = {
                "start_date": lo.strftime("%Y-%m-%d %H:%M:%S"),
                "end_date": min(lo + timedelta(days=1), end).strftime("%Y-%m-%d %H:%M:%S"),
                "order_state": ",".join(ORDER_STATE), "dateType": 0, "sortType": 1, "page": "1", "page_size": "100",
            }  # fmt: skip
            body = await connector.call("jingdong.pop.order.search", business, parse=keep)
            if b'"orderId"' in body.content:
                out.append(body.content)
            if len(out) >= pages:
                break
    finally:
        await connector.aclose()
    return out


async def test_simulator_pages_give_the_same_records_on_both_paths(sim, settings_for):
    pages = await fetch_pages(sim, settings_for, pages=6)
    assert len(pages) >= 3
    orders = 0
    for content in pages:
        fast = parse_orders_page(content)
        slow = normalize_orders(rows_of(content))
        assert isinstance(fast, ValidatedPage)
        check_jd(fast)  # a fast page is a successful search
        assert_same_records(fast.batch, slow)
        orders += len(slow.orders)
    assert orders > 50


async def test_a_page_with_broken_rows_goes_row_by_row(settings_for):
    broken = SimulatorConfig(seed=5, people=120, orders=900, days=12, malformed_rate=0.05,
                             start=datetime(2026, 9, 1, tzinfo=CST))  # fmt: skip
    with simulator(broken) as base:
        pages = await fetch_pages(base, settings_for, pages=6)
    fell_back = 0
    for content in pages:
        parsed = parse_orders_page(content)
        slow = normalize_orders(rows_of(content))
        if slow.quarantined:
            assert parsed == orjson.loads(content)
            fell_back += 1
        else:
            assert isinstance(parsed, ValidatedPage)
            assert_same_records(parsed.batch, slow)
    assert fell_back >= 1


BASE_ORDER: dict[str, Any] = {
    "orderId": "230000000000123", "venderId": "10086", "orderTotalPrice": "1299.00", "orderSellerPrice": "1279.00",
    "orderPayment": "1289.00", "freightPrice": "10.00", "sellerDiscount": "20.00",
    "orderState": "WAIT_GOODS_RECEIVE_CONFIRM", "orderRemark": "", "orderStartTime": "2026-09-02 10:11:12",
    "paymentConfirmTime": "2026-09-02 10:15:00", "orderEndTime": None, "modified": "2026-09-03 08:00:00",
    "pin": "jd_4f2a", "open_id_buyer": "o-4f2a9c",
    "consigneeInfo": {"fullname": "张*", "telephone": "138****0000", "mobile": "138****0000",
                      "desen_mobile": "138****0000", "fullAddress": "广东深圳市南山区科技园****", "province": "广东",
                      "city": "深圳市", "county": "南山区", "town": ""},
    "itemInfoList": [
        {"skuId": "100012345678", "outerSkuId": "HG-KIT-007-02", "skuName": "304不锈钢保温杯 750ml",
         "jdPrice": "149.00", "itemTotal": "2", "wareId": "10001234567"},
        {"skuId": "100098524000", "outerSkuId": None, "skuName": "实木餐桌 1.4米", "jdPrice": "1001.00",
         "itemTotal": 1},
    ],
}  # fmt: skip
DROP = object()


def variant(changes: dict[str, Any], item: dict[str, Any] | None = None) -> dict[str, Any]:
    order = {k: v for k, v in BASE_ORDER.items() if changes.get(k) is not DROP}
    order.update({k: v for k, v in changes.items() if v is not DROP})
    if item is not None:
        first = {k: v for k, v in BASE_ORDER["itemInfoList"][0].items() if item.get(k) is not DROP}
        first.update({k: v for k, v in item.items() if v is not DROP})
        order["itemInfoList"] = [first, *BASE_ORDER["itemInfoList"][1:]]
    return order


CASES: list[tuple[str, dict[str, Any], dict[str, Any] | None, bool]] = [
    ("as sent", {}, None, True),
    ("amounts one decimal and whole", {"orderPayment": "12.3", "orderTotalPrice": "12"}, None, True),
    ("amount zero", {"freightPrice": "0.00", "sellerDiscount": "0"}, None, True),
    ("amount garbled", {"orderPayment": "abc"}, None, False),
    ("amount negative", {"orderPayment": "-1.00"}, None, False),
    ("amount fraction of a fen", {"orderTotalPrice": "1.001"}, None, False),
    ("amount exponent", {"orderTotalPrice": "1e3"}, None, False),
    ("amount with spaces", {"orderTotalPrice": " 12.00"}, None, False),
    ("amount as a JSON number", {"orderTotalPrice": 12.5}, None, False),
    ("optional fees empty", {"freightPrice": ""}, None, False),
    ("optional fees null", {"freightPrice": None, "sellerDiscount": None}, None, True),
    ("optional fees missing", {"freightPrice": DROP, "sellerDiscount": DROP}, None, True),
    ("item price garbled", {}, {"jdPrice": "1.2.3"}, False),
    ("item price negative", {}, {"jdPrice": "-1.00"}, False),
    ("item quantity zero", {}, {"itemTotal": "0"}, False),
    ("item quantity a number", {}, {"itemTotal": 3}, True),
    ("item quantity fractional", {}, {"itemTotal": "1.5"}, False),
    ("item sku a number", {}, {"skuId": 100012345678}, False),
    ("item without skus", {}, {"skuId": DROP, "outerSkuId": DROP}, True),
    ("time with zone", {"modified": "2026-09-03T08:00:00+08:00"}, None, False),
    ("time impossible", {"orderStartTime": "2026-02-30 10:00:00"}, None, False),
    ("time hour 24", {"modified": "2026-09-03 24:00:00"}, None, False),
    ("payment time empty", {"paymentConfirmTime": ""}, None, False),
    ("payment time null", {"paymentConfirmTime": None}, None, True),
    ("state unknown", {"orderState": "TRADE_NOT_A_STATE"}, None, False),
    ("state each known", {"orderState": "LOCKED"}, None, True),
    ("order id missing", {"orderId": DROP}, None, False),
    ("order id a number", {"orderId": 230000000000123}, None, False),
    ("order id empty", {"orderId": ""}, None, False),
    ("no buyer at all", {"pin": DROP, "open_id_buyer": DROP}, None, True),
    ("pin only", {"open_id_buyer": None}, None, True),
    ("empty open id falls back to pin", {"open_id_buyer": ""}, None, True),
    ("pin too long", {"pin": "p" * 129}, None, False),
    ("consignee missing", {"consigneeInfo": DROP}, None, True),
    ("consignee null", {"consigneeInfo": None}, None, False),
    (
        "consignee field a number",
        {"consigneeInfo": {**BASE_ORDER["consigneeInfo"], "city": 755}},
        None,
        False,
    ),
    (
        "consignee only telephone",
        {"consigneeInfo": {"telephone": "0755-1234", "extra": {"k": [1, 2.5]}}},
        None,
        True,
    ),
    ("items missing", {"itemInfoList": DROP}, None, True),
    ("items null", {"itemInfoList": None}, None, False),
]


@pytest.mark.parametrize(
    ("changes", "item", "fast_expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_crafted_rows_are_taken_only_when_jdorder_takes_them_and_mean_the_same(changes, item, fast_expected):
    content = page_bytes([BASE_ORDER, variant(changes, item)])
    fast = parse_orders_page(content)
    slow = normalize_orders(rows_of(content))
    if isinstance(fast, ValidatedPage):
        assert_same_records(fast.batch, slow)
    else:
        assert fast == orjson.loads(content)
    assert isinstance(fast, ValidatedPage) == fast_expected


@pytest.mark.parametrize(
    "api", [{"success": False, "resultCode": "INVALID_PARAM"}, {"success": "false"}, {"success": 1}]
)
def test_anything_but_a_plain_success_is_left_to_check_jd(api):
    content = page_bytes([BASE_ORDER], api)
    assert parse_orders_page(content) == orjson.loads(content)


def test_error_envelopes_are_left_to_check_jd():
    error = orjson.dumps({"error_response": {"code": "2", "en_desc": "App Call Limited"}})
    assert parse_orders_page(error) == orjson.loads(error)
