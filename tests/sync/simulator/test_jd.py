"""JD JOS gateway: signature, token, business errors, paging by modified time."""

from __future__ import annotations

from datetime import timedelta

ALL_STATES = "WAIT_SELLER_STOCK_OUT,WAIT_GOODS_RECEIVE_CONFIRM,FINISHED_L,TRADE_CANCELED,LOCKED"


def _window(sim, days_back: int, days: int) -> dict[str, str]:
    end = sim.config.now - timedelta(days=days_back)
    start = end - timedelta(days=days)
    return {"start_date": f"{start:%Y-%m-%d %H:%M:%S}", "end_date": f"{end:%Y-%m-%d %H:%M:%S}"}


def _result(reply: dict) -> dict:
    return dict(reply["jingdong_pop_order_search_responce"]["searchorderinfo_result"])


def test_good_sign_returns_orders_bad_sign_is_code_12(sim):
    business = {**_window(sim, 0, 5), "order_state": ALL_STATES, "page": "1", "page_size": "10"}
    result = _result(sim.jd(business))
    assert result["apiResult"]["success"] is True
    assert len(result["orderInfoList"]) == 10
    assert sim.jd(business, secret="wrong")["error_response"]["code"] == "12"
    assert sim.jd(business, token="expired")["error_response"]["code"] == "19"


def test_business_errors_are_http_200_with_success_false(sim):
    too_long = {**_window(sim, 0, 32), "order_state": ALL_STATES}
    assert _result(sim.jd(too_long))["apiResult"]["success"] is False
    no_state = _window(sim, 0, 5)
    assert _result(sim.jd(no_state))["apiResult"]["success"] is False
    big_page = {**_window(sim, 0, 5), "order_state": ALL_STATES, "page_size": "101"}
    assert _result(sim.jd(big_page))["apiResult"]["success"] is False


def test_pages_by_modified_time_are_disjoint_and_complete(sim):
    business = {
        **_window(sim, 1, 10),
        "order_state": ALL_STATES,
        "page_size": "50",
        "dateType": "0",
        "sortType": "1",
    }
    total = _result(sim.jd({**business, "page": "1"}))["orderTotal"]
    assert total > 100
    ids: list[str] = []
    modified: list[str] = []
    for page in range(1, total // 50 + 2):
        orders = _result(sim.jd({**business, "page": str(page)}))["orderInfoList"]
        ids += [o["orderId"] for o in orders]
        modified += [o["modified"] for o in orders]
    assert len(ids) == len(set(ids)) == total
    assert modified == sorted(modified, reverse=True)
    assert business["start_date"] <= min(modified) and max(modified) <= business["end_date"]


def test_order_state_filter_and_masked_consignee(sim):
    business = {**_window(sim, 0, 20), "order_state": "FINISHED_L", "page_size": "100"}
    orders = _result(sim.jd(business))["orderInfoList"]
    assert orders and {o["orderState"] for o in orders} == {"FINISHED_L"}
    for order in orders:
        consignee = order["consigneeInfo"]
        assert consignee["mobile"][3:7] == "****" and consignee["fullname"].endswith("*")
        assert order["pin"].startswith("jd_")
        assert all(item["itemTotal"].isdigit() for item in order["itemInfoList"])


def test_by_creation_time_oldest_first(sim):
    business = {
        **_window(sim, 40, 10),
        "order_state": ALL_STATES,
        "page_size": "100",
        "dateType": "1",
        "sortType": "0",
    }
    orders = _result(sim.jd(business))["orderInfoList"]
    starts = [o["orderStartTime"] for o in orders]
    assert starts and starts == sorted(starts)
    assert business["start_date"] <= starts[0]
