"""Tmall/Taobao TOP gateway: signatures, sessions, windows and paging over real HTTP."""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal

from sync.simulator import CST, SimulatorConfig, top_sign

INC = "taobao.trades.sold.increment.get"
FMT = "%Y-%m-%d %H:%M:%S"


def _t(moment: datetime) -> str:
    return moment.strftime(FMT)


def _trades(reply: dict, name: str = "trades_sold_increment_get_response") -> list[dict]:
    return list(reply[name]["trades"]["trade"])


def test_good_md5_and_hmac_signatures_are_accepted(sim):
    for method in ("md5", "hmac", "hmac-sha256"):
        reply = sim.top("taobao.trades.sold.get", sign_method=method, page_size=5)
        assert "error_response" not in reply, reply
        assert len(_trades(reply, "trades_sold_get_response")) == 5


def test_bad_signature_is_code_25_and_bad_session_26_27(sim):
    assert sim.top("taobao.trades.sold.get", secret="not-the-secret")["error_response"]["code"] == 25
    assert (
        sim.top("taobao.trades.sold.get", sign_method="hmac", secret="nope")["error_response"]["code"] == 25
    )
    assert sim.top("taobao.trades.sold.get", session="")["error_response"]["code"] == 26
    assert sim.top("taobao.trades.sold.get", session="someone-else")["error_response"]["code"] == 27


def test_tampered_parameter_breaks_the_signature(sim):
    form = {
        "method": "taobao.trades.sold.get",
        "app_key": sim.config.taobao_app_key,
        "session": sim.config.taobao_session,
        "timestamp": "2026-11-20 10:00:00",
        "format": "json",
        "v": "2.0",
        "sign_method": "md5",
        "page_size": "5",
    }
    form["sign"] = top_sign(form, sim.config.taobao_app_secret)
    form["page_size"] = "6"
    assert sim.http.post("/taobao/router/rest", data=form).json()["error_response"]["code"] == 25


def test_increment_window_over_one_day_is_an_isv_error(sim):
    now = sim.config.now
    reply = sim.top(INC, start_modified=_t(now - timedelta(days=1, seconds=1)), end_modified=_t(now))
    error = reply["error_response"]
    assert error["code"] == 41 and error["sub_code"].startswith("isv.")
    assert (
        sim.top(INC, start_modified=_t(now - timedelta(days=1)), end_modified=_t(now), page_size=101)[
            "error_response"
        ]["sub_code"]
        == "isv.invalid-parameter:page_size"
    )


def test_increment_pages_are_disjoint_newest_first_and_inside_the_window(sim):
    end = sim.config.now - timedelta(days=2)
    start = end - timedelta(days=1)
    first = sim.top(INC, start_modified=_t(start), end_modified=_t(end), page_size=40)
    total = first["trades_sold_increment_get_response"]["total_results"]
    assert total > 40  # several pages, or the test proves nothing
    seen: list[dict] = []
    page = 1
    while True:
        reply = sim.top(
            INC,
            start_modified=_t(start),
            end_modified=_t(end),
            page_size=40,
            page_no=page,
            use_has_next="true",
        )
        body = reply["trades_sold_increment_get_response"]
        seen += _trades(reply)
        if not body["has_next"]:
            break
        page += 1
    tids = [t["tid"] for t in seen]
    assert len(tids) == len(set(tids)) == total
    modified = [t["modified"] for t in seen]
    assert modified == sorted(modified, reverse=True)
    assert all(_t(start) <= m <= _t(end) for m in modified)


def test_consecutive_windows_partition_a_day(sim):
    end = sim.config.now - timedelta(days=5)
    start = end - timedelta(days=1)
    whole = _all(sim, start, end)
    parts: list[int] = []
    edge = start
    while edge < end:
        upper = min(end, edge + timedelta(minutes=30 * 16))
        # Windows are inclusive at both ends: stop one second short of the next start.
        last = upper if upper == end else upper - timedelta(seconds=1)
        parts += _all(sim, edge, last)
        edge = upper
    assert sorted(parts) == sorted(whole)
    assert len(parts) == len(set(parts))


def _all(sim, start: datetime, end: datetime) -> list[int]:
    tids: list[int] = []
    page = 1
    while True:
        reply = sim.top(INC, start_modified=_t(start), end_modified=_t(end), page_size=100, page_no=page)
        batch = _trades(reply)
        tids += [t["tid"] for t in batch]
        if len(batch) < 100:
            return tids
        page += 1


def test_full_pull_pages_cover_every_trade_once(sim):
    total = sim.config.orders_for("tmall")
    tids: set[int] = set()
    pages = 0
    for page in range(1, total // 100 + 2):
        reply = sim.top("taobao.trades.sold.get", page_size=100, page_no=page)
        body = reply["trades_sold_get_response"]
        assert body["total_results"] == total
        batch = _trades(reply, "trades_sold_get_response")
        assert not tids & {t["tid"] for t in batch}
        tids |= {t["tid"] for t in batch}
        pages += 1
        if not batch:
            break
    assert len(tids) == total


def test_trade_fields_follow_the_platform_shapes(sim):
    reply = sim.top("taobao.trades.sold.get", page_size=100, page_no=3)
    for trade in _trades(reply, "trades_sold_get_response"):
        assert trade["buyer_nick"].endswith("**")
        assert trade["receiver_mobile"][3:7] == "****"
        assert "*" in trade["receiver_name"]
        for money in ("payment", "post_fee", "total_fee", "discount_fee"):
            assert Decimal(trade[money]).as_tuple().exponent == -2
        assert Decimal(trade["payment"]) == Decimal(trade["total_fee"]) - Decimal(
            trade["discount_fee"]
        ) + Decimal(trade["post_fee"])
        datetime.strptime(trade["created"], FMT).replace(tzinfo=CST)
        assert trade["modified"] >= trade["created"]
        lines = trade["orders"]["order"]
        assert lines and all(line["outer_sku_id"].startswith("HG-") for line in lines)


def test_status_filter_returns_only_that_status(sim):
    for status in ("TRADE_FINISHED", "WAIT_SELLER_SEND_GOODS", "TRADE_CLOSED"):
        reply = sim.top("taobao.trades.sold.get", status=status, page_size=100)
        trades = _trades(reply, "trades_sold_get_response")
        assert trades, status
        assert {t["status"] for t in trades} == {status}
    assert sim.top("taobao.trades.sold.get", status="PAID")["error_response"]["code"] == 41


def test_refunds_point_at_trades_and_lines(sim):
    end = sim.config.now
    start = end - timedelta(days=30)
    reply = sim.top(
        "taobao.refunds.receive.get", start_modified=_t(start), end_modified=_t(end), page_size=100
    )
    refunds = reply["refunds_receive_get_response"]["refunds"]["refund"]
    assert refunds
    for refund in refunds[:10]:
        trade_reply = sim.top(
            INC,
            start_modified=_t(datetime.strptime(refund["modified"], FMT) - timedelta(hours=1)),
            end_modified=refund["modified"],
            page_size=100,
        )
        trades = {t["tid"]: t for t in _trades(trade_reply)}
        assert refund["tid"] in trades
        oids = {line["oid"] for line in trades[refund["tid"]]["orders"]["order"]}
        assert refund["oid"] in oids
        assert refund["status"] in ("WAIT_SELLER_AGREE", "SUCCESS")


def test_timestamps_are_checked_against_the_wall_clock_when_asked(start_sim):
    sim = start_sim(SimulatorConfig(check_timestamp=True))
    # The helper signs with a fixed 2026-11-20 timestamp; only a fresh one passes the check.
    assert sim.top("taobao.trades.sold.get")["error_response"]["code"] == 31
    fresh = datetime.now(CST).strftime(FMT)
    reply = sim.top("taobao.trades.sold.get", timestamp=fresh, page_size=1)
    assert "error_response" not in reply
