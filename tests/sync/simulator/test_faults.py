"""Fault injection: 500, 429 with Retry-After, timeouts, malformed rows, platform error envelopes."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal, InvalidOperation

import httpx
import pytest

from sync.simulator import SimulatorConfig


def _arm(sim, **fault) -> None:
    reply = sim.http.post("/_sim/faults", json=fault)
    assert reply.status_code == 200, reply.text


def test_500_then_recovery_after_count(start_sim):
    sim = start_sim()
    _arm(sim, path_prefix="/app", kind="500", count=2)
    assert sim.app_get("/app/api/v1/members").status_code == 500
    assert sim.app_get("/app/api/v1/orders").status_code == 500
    assert sim.app_get("/app/api/v1/members").status_code == 200
    # Other channels were never affected.
    assert sim.pos_get().status_code == 200


def test_429_carries_retry_after(start_sim):
    sim = start_sim()
    _arm(sim, path_prefix="/jd", kind="429", count=1, retry_after=7)
    reply = sim.http.post("/jd/routerjson", data={})
    assert reply.status_code == 429 and reply.headers["Retry-After"] == "7"


def test_timeout_outlasts_the_client(start_sim):
    sim = start_sim()
    _arm(sim, path_prefix="/pos", kind="timeout", count=1, delay_s=3)
    with pytest.raises(httpx.ReadTimeout):
        sim.http.get(
            "/pos/v1/transactions",
            headers={"Authorization": f"Bearer {sim.config.pos_api_token}"},
            timeout=0.5,
        )


def test_platform_errors_use_each_platform_envelope(start_sim):
    sim = start_sim()
    _arm(sim, path_prefix="/taobao", kind="platform_error", count=1)
    error = sim.top("taobao.trades.sold.get")["error_response"]
    assert error["code"] == 7 and error["sub_code"].startswith("accesscontrol")
    _arm(sim, path_prefix="/taobao", kind="platform_error", count=1, code="15")
    assert sim.top("taobao.trades.sold.get")["error_response"]["sub_code"].startswith("isp.")
    _arm(sim, path_prefix="/wechat", kind="platform_error", count=1, code="45009")
    assert sim.http.get("/wechat/cgi-bin/token").json()["errcode"] == 45009
    _arm(sim, path_prefix="/weibo", kind="platform_error", count=1)
    assert sim.weibo("/weibo/2/comments/to_me.json").json()["error_code"] == 10023
    _arm(sim, path_prefix="/jd", kind="platform_error", count=1)
    assert sim.jd({})["error_response"]["code"] == "2"


def _broken(trade: dict) -> bool:
    if "tid" not in trade:
        return True
    try:
        Decimal(trade["payment"])
    except InvalidOperation:
        return True
    return trade["created"][5:7] > "12"


def test_malformed_fault_breaks_one_row_of_the_page(start_sim):
    sim = start_sim()
    _arm(sim, path_prefix="/taobao", kind="malformed", count=1)
    broken = sim.top("taobao.trades.sold.get", page_size=20)["trades_sold_get_response"]["trades"]["trade"]
    assert [_broken(t) for t in broken].count(True) == 1
    clean = sim.top("taobao.trades.sold.get", page_size=20)["trades_sold_get_response"]["trades"]["trade"]
    assert not any(_broken(t) for t in clean)
    _arm(sim, path_prefix="/app/api/v1/members", kind="malformed", count=1)
    members = sim.app_get("/app/api/v1/members", limit=10).json()["data"]
    assert [m["mobile"] for m in members].count("abc") == 1


def test_malformed_rate_breaks_the_same_rows_every_time(start_sim):
    sim = start_sim(SimulatorConfig(malformed_rate=0.05))
    pages = [
        sim.top("taobao.trades.sold.get", page_size=100, page_no=n)["trades_sold_get_response"]["trades"][
            "trade"
        ]
        for n in (1, 2, 3)
    ]
    again = [
        sim.top("taobao.trades.sold.get", page_size=100, page_no=n)["trades_sold_get_response"]["trades"][
            "trade"
        ]
        for n in (1, 2, 3)
    ]
    assert pages == again
    broken = sum(_broken(t) for page in pages for t in page)
    assert 0 < broken < 60


def test_delete_clears_faults_and_bad_requests_are_explained(start_sim):
    sim = start_sim()
    _arm(sim, path_prefix="/app", kind="500", count=5)
    assert sim.http.delete("/_sim/faults").json() == {"faults": []}
    assert sim.app_get("/app/api/v1/members").status_code == 200
    reply = sim.http.post("/_sim/faults", json={"path_prefix": "/app", "kind": "explode"})
    assert reply.status_code == 400 and "kind" in reply.json()["error"]


def test_malformed_fault_on_every_other_channel(start_sim):
    sim = start_sim()
    end = sim.config.now
    window = {
        "start_date": f"{end - timedelta(days=5):%Y-%m-%d %H:%M:%S}",
        "end_date": f"{end:%Y-%m-%d %H:%M:%S}",
    }
    business = {
        **window,
        "order_state": "WAIT_SELLER_STOCK_OUT,WAIT_GOODS_RECEIVE_CONFIRM,FINISHED_L",
        "page_size": "20",
    }
    _arm(sim, path_prefix="/jd", kind="malformed", count=1)
    orders = sim.jd(business)["jingdong_pop_order_search_responce"]["searchorderinfo_result"]["orderInfoList"]
    assert sum("orderId" not in o or o["orderPayment"] == "abc" for o in orders) == 1

    _arm(sim, path_prefix="/app/api/v1/orders", kind="malformed", count=1)
    app_orders = sim.app_get("/app/api/v1/orders", limit=20).json()["data"]
    assert sum("order_no" not in o or not isinstance(o["total_fen"], int) for o in app_orders) == 1

    _arm(sim, path_prefix="/pos", kind="malformed", count=1)
    sales = sim.pos_get(limit=20).json()["data"]
    assert (
        sum(s["ended_at"].startswith("yesterday") or s["lines"][0]["quantity"] == "two" for s in sales) == 1
    )

    _arm(sim, path_prefix="/weibo", kind="malformed", count=1)
    comments = sim.weibo("/weibo/2/comments/to_me.json", count=20).json()["comments"]
    assert [c["created_at"] for c in comments].count("刚刚") == 1

    _arm(sim, path_prefix="/wechat/_sim/pushes", kind="malformed", count=1)
    items = sim.http.get("/wechat/_sim/pushes", params={"limit": 20}).json()["items"]
    assert sum(not i["xml"].endswith("</xml>") for i in items) == 1


def test_page_delay_applies_to_channel_routes_only(start_sim):
    sim = start_sim(SimulatorConfig(page_delay_s=3))
    with pytest.raises(httpx.ReadTimeout):
        sim.http.get("/catalog/v1/products", timeout=0.5)
    assert sim.http.get("/_sim/clock", timeout=0.5).status_code == 200
