"""Own member system: bearer auth, cursor paging of members, orders and events."""

from __future__ import annotations

from datetime import datetime

from sync.simulator.dataset import identity_frame


def _walk(sim, path: str, limit: int, **params) -> list[dict]:
    rows: list[dict] = []
    cursor = None
    while True:
        query = {"limit": limit, **params, **({"cursor": cursor} if cursor else {})}
        body = sim.app_get(path, **query).json()
        rows += body["data"]
        cursor = body["next_cursor"]
        if cursor is None:
            return rows


def test_requires_the_bearer_token(sim):
    assert sim.http.get("/app/api/v1/members").status_code == 401
    reply = sim.http.get("/app/api/v1/members", headers={"Authorization": "Bearer nope"})
    assert reply.status_code == 401 and reply.json()["error"]["code"] == "unauthorized"


def test_bad_parameters_name_the_field(sim):
    for params, field in (
        ({"limit": 501}, "limit"),
        ({"updated_since": "yesterday"}, "updated_since"),
        ({"cursor": "%%%"}, "cursor"),
    ):
        reply = sim.app_get("/app/api/v1/members", **params)
        assert reply.status_code == 400 and reply.json()["error"]["field"] == field


def test_member_pages_cover_every_member_once_in_update_order(sim):
    members = _walk(sim, "/app/api/v1/members", 97)
    numbers = [m["member_no"] for m in members]
    truth = identity_frame()
    assert len(numbers) == len(set(numbers))
    assert set(numbers) == set(truth[truth.source == "app"].member_no)
    stamps = [datetime.fromisoformat(m["updated_at"]) for m in members]
    assert stamps == sorted(stamps)
    assert all(m["updated_at"].endswith("+08:00") for m in members)


def test_updated_since_is_inclusive_and_filters(sim):
    members = _walk(sim, "/app/api/v1/members", 500)
    pivot = members[len(members) // 2]["updated_at"]
    later = _walk(sim, "/app/api/v1/members", 500, updated_since=pivot)
    assert later and all(m["updated_at"] >= pivot for m in later)
    assert {m["member_no"] for m in later} == {m["member_no"] for m in members if m["updated_at"] >= pivot}


def test_orders_are_paged_by_update_time_with_integer_fen(sim):
    orders = _walk(sim, "/app/api/v1/orders", 250)
    numbers = [o["order_no"] for o in orders]
    assert len(numbers) == len(set(numbers)) == sim.config.orders_for("app")
    stamps = [datetime.fromisoformat(o["updated_at"]) for o in orders]
    assert stamps == sorted(stamps)
    for order in orders[:200]:
        assert isinstance(order["total_fen"], int)
        assert sum(line["unit_price_fen"] * line["quantity"] for line in order["lines"]) == order["total_fen"]
        if order["status"] != "pending_payment" and order["status"] != "cancelled":
            assert order["paid_fen"] == order["total_fen"] - order["discount_fen"] + order["shipping_fen"]


def test_events_follow_since_id(sim):
    first = sim.app_get("/app/api/v1/events", limit=50).json()
    ids = [e["id"] for e in first["data"]]
    assert ids == list(range(1, 51)) and first["has_more"]
    second = sim.app_get("/app/api/v1/events", since_id=first["next_since_id"], limit=50).json()
    assert second["data"][0]["id"] == 51
    assert {e["type"] for e in first["data"] + second["data"]} <= {"page_view", "add_to_cart", "search"}
