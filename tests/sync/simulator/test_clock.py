"""The virtual clock: advancing reveals new orders and status changes; update_orders stamps late updates."""

from __future__ import annotations

from datetime import datetime, timedelta

INC = "taobao.trades.sold.increment.get"


def _t(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S")


def _window(sim, start: datetime, end: datetime) -> list[dict]:
    reply = sim.top(INC, start_modified=_t(start), end_modified=_t(end), page_size=100)
    return list(reply["trades_sold_increment_get_response"]["trades"]["trade"])


def test_advance_reveals_new_orders_and_progress(start_sim):
    sim = start_sim()
    old_now = sim.config.now
    before = sim.top("taobao.trades.sold.get", page_size=1)["trades_sold_get_response"]["total_results"]
    assert _window(sim, old_now + timedelta(seconds=1), old_now + timedelta(hours=12)) == []
    clock = sim.http.post("/_sim/advance", json={"minutes": 12 * 60}).json()
    assert datetime.fromisoformat(clock["now"]) == old_now + timedelta(hours=12)
    after = sim.top("taobao.trades.sold.get", page_size=1)["trades_sold_get_response"]["total_results"]
    assert after > before
    late = _window(sim, old_now + timedelta(seconds=1), old_now + timedelta(hours=12))
    # Both brand-new trades and older trades that moved on (shipped, finished) show up.
    assert any(t["created"] > _t(old_now) for t in late)
    assert any(t["created"] <= _t(old_now) for t in late)


def test_update_orders_moves_status_with_a_new_modified_time(start_sim):
    sim = start_sim()
    old_now = sim.config.now
    reply = sim.http.post("/_sim/update_orders", json={"count": 5, "channels": ["tmall", "app"]}).json()
    updated = [u for u in reply["updated"] if u["channel"] == "tmall"]
    assert len(updated) == 5
    seen = {str(t["tid"]): t for t in _window(sim, old_now, old_now + timedelta(minutes=1))}
    for item in updated:
        assert item["external_id"] in seen
        assert seen[item["external_id"]]["modified"] == _t(old_now + timedelta(seconds=1))
    app_orders = sim.app_get(
        "/app/api/v1/orders", updated_since=(old_now + timedelta(seconds=1)).isoformat()
    ).json()["data"]
    assert {o["order_no"] for o in app_orders} == {
        u["external_id"] for u in reply["updated"] if u["channel"] == "app"
    }


def test_clock_never_goes_back(start_sim):
    sim = start_sim()
    assert sim.http.post("/_sim/advance", json={"minutes": -5}).status_code == 400
    assert sim.http.post("/_sim/advance", json={"minutes": 60 * 24 * 365 * 10}).status_code == 400


def test_advance_delivers_late_pos_sales_and_member_updates(start_sim):
    sim = start_sim()
    old_now = sim.config.now
    sim.http.post("/_sim/advance", json={"minutes": 3 * 24 * 60})
    sales = sim.pos_get(since=old_now.isoformat(), limit=1000).json()["data"]
    assert sales and all(datetime.fromisoformat(s["delivered_at"]) >= old_now for s in sales)
    # Sales rung up before the old now that only reached the back office after it.
    assert any(datetime.fromisoformat(s["ended_at"]) < old_now for s in sales)
    sim.http.post("/_sim/advance", json={"minutes": 27 * 24 * 60})
    members = sim.app_get("/app/api/v1/members", updated_since=old_now.isoformat(), limit=500).json()["data"]
    assert members and all(datetime.fromisoformat(m["updated_at"]) >= old_now for m in members)
    assert all(datetime.fromisoformat(m["registered_at"]) < old_now for m in members)
