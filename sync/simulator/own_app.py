"""The retailer's own member system (app, site, mini-program): a cursor-paged REST API.

GET /app/api/v1/members, /app/api/v1/orders, /app/api/v1/events. Bearer `app_api_token`.
Money is integer fen; times are ISO 8601 with +08:00.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from sync.simulator.control import malformed_requested
from sync.simulator.formats import ORJSONResponse, iso, parse_iso
from sync.simulator.orders import (
    CLOSED,
    CREATED,
    DAY,
    FINISHED,
    HOUR,
    PAID,
    REFUND_ASKED,
    REFUNDED,
    SHIPPED,
    OrderRow,
)
from sync.simulator.people import SourceIdentity
from sync.simulator.seeding import hash_one, row_random, stream_key, uniform_one
from sync.simulator.state import SimulatorState

APP_STATUS = {
    CREATED: "pending_payment",
    PAID: "paid",
    SHIPPED: "shipped",
    FINISHED: "completed",
    REFUND_ASKED: "refunding",
    REFUNDED: "refunded",
    CLOSED: "cancelled",
}
_TIERS = ("普通会员", "银卡会员", "金卡会员", "黑金会员")
_EVENT_TYPES = ("page_view", "page_view", "page_view", "add_to_cart", "search")
_KEYWORDS = ("四件套", "乳胶枕", "台灯", "收纳箱", "餐桌", "不粘锅", "羽绒被", "沙发", "浴巾", "香薰")
_ORDER_SOURCES = ("app", "mini_program", "web")


def api_error(status: int, code: str, message: str, field: str | None = None) -> JSONResponse:
    """Our own APIs' error body: {"error": {"code", "message", "field"?}}."""
    body: dict[str, Any] = {"code": code, "message": message}
    if field:
        body["field"] = field
    return JSONResponse({"error": body}, status_code=status)


def platform_error(request: Request, code: str | None) -> Response:
    """Injected fault for our own REST APIs: 503 with a JSON error body."""
    return api_error(503, code or "service_unavailable", "member system busy, retry later")


def check_bearer(request: Request, token: str) -> Response | None:
    """A 401 unless the request carries `Authorization: Bearer <token>`."""
    header = request.headers.get("authorization", "")
    if header != f"Bearer {token}":
        return api_error(401, "unauthorized", "send Authorization: Bearer <api token>")
    return None


def encode_cursor(at: int, index: int) -> str:
    """An opaque cursor for the position (time, index)."""
    return base64.urlsafe_b64encode(f"{at}:{index}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[int, int]:
    """ValueError when the cursor was not issued by us."""
    padded = cursor + "=" * (-len(cursor) % 4)
    at, index = base64.urlsafe_b64decode(padded.encode()).decode().split(":")
    return int(at), int(index)


@dataclass(frozen=True)
class PageRequest:
    after: tuple[int, int] | None
    since: int | None
    limit: int


def page_request(
    request: Request, since_name: str, max_limit: int, default: int = 100
) -> PageRequest | Response:
    """Parse `<since_name>`, `cursor` and `limit`, with a 400 naming the bad field."""
    q = request.query_params
    try:
        limit = int(q.get("limit", str(default)))
    except ValueError:
        return api_error(400, "invalid_parameter", "limit must be an integer", "limit")
    if not 1 <= limit <= max_limit:
        return api_error(400, "invalid_parameter", f"limit must be between 1 and {max_limit}", "limit")
    since = None
    if q.get(since_name):
        try:
            since = parse_iso(q[since_name])
        except ValueError:
            return api_error(
                400,
                "invalid_parameter",
                f"{since_name} must be ISO 8601, e.g. 2026-09-01T00:00:00+08:00",
                since_name,
            )
    after = None
    if q.get("cursor"):
        try:
            after = decode_cursor(q["cursor"])
        except ValueError:
            return api_error(400, "invalid_parameter", "cursor is not one this API issued", "cursor")
    return PageRequest(after, since, limit)


# ----------------------------------------------------------------------------------- members


@dataclass(frozen=True)
class MemberClock:
    position: int
    identity: SourceIdentity
    registered_at: int
    profile_update_at: int  # may lie after the initial now: revealed when the clock advances


def member_clocks(state: SimulatorState) -> list[MemberClock]:
    """Registration and profile-update times of every app member. A member registers before the
    first order the feed shows for them; about a third update their profile later."""
    cached = state.cache.get("member_clocks")
    if cached is not None:
        return list(cached)
    members = state.population.first_seen_order("app")
    feed = state.feeds["app"]
    key = stream_key(state.config.seed, "app-members")
    span = state.config.days * DAY
    clocks = []
    for position, identity in enumerate(members):
        u = [uniform_one(key, position, f) for f in range(5)]
        if u[0] < 0.4:
            registered = state.start - int(u[1] * 700 * DAY)
        else:
            registered = state.start + int(u[1] * span)
        if position < feed.base_count:
            registered = min(registered, feed.created_one(position) - HOUR - int(u[2] * 48 * HOUR))
        update = registered
        if u[3] < 0.35:
            update = max(registered + HOUR, state.start + int(u[4] * (span + 30 * DAY)))
        clocks.append(MemberClock(position, identity, registered, update))
    state.cache["member_clocks"] = clocks
    return clocks


def render_member(clock: MemberClock, now: int, seed: int) -> dict[str, Any]:
    """A member as the member API returns it at `now` (tier and points change with profile updates)."""
    f = clock.identity.fields
    updated = clock.profile_update_at if clock.profile_update_at <= now else clock.registered_at
    rng = row_random(stream_key(seed, "app-member-profile"), clock.position + (updated << 20))
    return {
        "member_no": clock.identity.external_id,
        "mobile": f["phone"],
        "email": f["email"],
        "name": f["name"],
        "gender": f["gender"],
        "birthday": f["birth_date"],
        "id_number": f["id_number"],
        "wechat_unionid": f["wechat_unionid"],
        "wechat_openid": clock.identity.extra["mini_openid"] if f["wechat_unionid"] else None,
        "province": f["province"],
        "city": f["city"],
        "district": f["district"],
        "address": f["address"],
        "tier": _TIERS[min(3, int(rng.random() ** 2 * 4))],
        "points": rng.randint(0, 20000),
        "marketing_opt_in": rng.random() < 0.6,
        "registered_at": iso(clock.registered_at),
        "updated_at": iso(updated),
    }


async def members(request: Request, state: SimulatorState) -> Response:
    """GET /app/api/v1/members?updated_since=&cursor=&limit<=500: members by (updated_at, member)
    ascending; `next_cursor` is null on the last page."""
    denied = check_bearer(request, state.config.app_api_token)
    if denied:
        return denied
    page = page_request(request, "updated_since", 500)
    if isinstance(page, Response):
        return page
    keyed = []
    for clock in member_clocks(state):
        if clock.registered_at > state.now:
            continue
        updated = clock.profile_update_at if clock.profile_update_at <= state.now else clock.registered_at
        if page.since is not None and updated < page.since:
            continue
        if page.after is not None and (updated, clock.position) <= page.after:
            continue
        keyed.append((updated, clock.position, clock))
    keyed.sort(key=lambda item: (item[0], item[1]))
    chosen = keyed[: page.limit]
    data = [render_member(clock, state.now, state.config.seed) for _, _, clock in chosen]
    key = stream_key(state.config.seed, "app-malformed")
    for n, (_, position, _) in enumerate(chosen):
        broken = uniform_one(key, position, 1) < state.config.malformed_rate
        if broken or (malformed_requested(request) and n == 0):
            data[n]["mobile"] = "abc"
    more = len(keyed) > page.limit
    return JSONResponse(
        {"data": data, "next_cursor": encode_cursor(chosen[-1][0], chosen[-1][1]) if more else None}
    )


# ----------------------------------------------------------------------------------- orders


def render_app_order(row: OrderRow) -> dict[str, Any]:
    """An order as the own app's order API returns it (money in integer fen)."""
    buyer = row.buyer
    assert buyer is not None
    f = buyer.fields
    refunded = 0
    lines = []
    for line in row.lines:
        refund_status = None
        if row.refund_line == line.line_no and row.refund_asked is not None:
            refund_status = "refunded" if row.refund_done is not None else "requested"
            if row.refund_done is not None:
                refunded += line.amount_fen
        lines.append(
            {
                "line_no": line.line_no,
                "sku": line.product.sku,
                "title": line.product.title,
                "quantity": line.quantity,
                "unit_price_fen": line.unit_price_fen,
                "discount_fen": line.discount_fen,
                "amount_fen": line.amount_fen,
                "refund_status": refund_status,
            }
        )
    return {
        "order_no": row.external_id,
        "member_no": buyer.external_id,
        "source": _ORDER_SOURCES[row.index % 3],
        "status": APP_STATUS[row.stage],
        "currency": "CNY",
        "total_fen": row.total_fen,
        "discount_fen": row.discount_fen,
        "shipping_fen": row.shipping_fen,
        "paid_fen": row.payment_fen if row.paid is not None else 0,
        "refunded_fen": refunded,
        "created_at": iso(row.created),
        "paid_at": iso(row.paid),
        "shipped_at": iso(row.shipped),
        "completed_at": iso(row.finished),
        "cancelled_at": iso(row.closed),
        "updated_at": iso(row.modified),
        "shipping_address": {
            "name": f["name"],
            "mobile": f["phone"],
            "province": f["province"],
            "city": f["city"],
            "district": f["district"],
            "address": f["address"],
        },
        "lines": lines,
    }


async def orders(request: Request, state: SimulatorState) -> Response:
    """GET /app/api/v1/orders?updated_since=&cursor=&limit<=500: orders by (updated_at, order)
    ascending."""
    denied = check_bearer(request, state.config.app_api_token)
    if denied:
        return denied
    page = page_request(request, "updated_since", 500)
    if isinstance(page, Response):
        return page
    feed = state.feeds["app"]
    found = feed.ascending_after(page.after, page.since, page.limit + 1, state.now)
    chosen = found[: page.limit]
    rows = feed.rows([i for _, i in chosen], state.now) if chosen else []
    data: list[dict[str, Any]] = []
    for n, row in enumerate(rows):
        order = render_app_order(row)
        if row.malformed or (malformed_requested(request) and n == 0):
            if hash_one(feed.key, row.index, 77) % 2:
                order["total_fen"] = "12.5"
            else:
                order.pop("order_no")
        data.append(order)
    more = len(found) > page.limit
    return ORJSONResponse({"data": data, "next_cursor": encode_cursor(*chosen[-1]) if more else None})


# ----------------------------------------------------------------------------------- events


async def events(request: Request, state: SimulatorState) -> Response:
    """GET /app/api/v1/events?since_id=&limit<=1000: browsing events with id > since_id, ascending."""
    denied = check_bearer(request, state.config.app_api_token)
    if denied:
        return denied
    q = request.query_params
    try:
        since_id = int(q.get("since_id", "0"))
        limit = int(q.get("limit", "200"))
    except ValueError:
        return api_error(400, "invalid_parameter", "since_id and limit must be integers", "since_id")
    if not 1 <= limit <= 1000:
        return api_error(400, "invalid_parameter", "limit must be between 1 and 1000", "limit")
    stream = state.stream("app-events")
    members = state.population.first_seen_order("app")
    visible = stream.visible_count(state.now) if members else 0
    first = max(0, since_id)
    data: list[dict[str, Any]] = []
    for i in range(first, min(visible, first + limit)):
        rng = row_random(stream.key, i + (1 << 40))
        kind = rng.choice(_EVENT_TYPES)
        event: dict[str, Any] = {
            "id": i + 1,
            "member_no": stream.subject(i, members).external_id,
            "type": kind,
            "occurred_at": iso(stream.time(i)),
            "source": rng.choice(_ORDER_SOURCES),
            "session_id": f"s{hash_one(stream.key, i // 4, 5) % 10**10:010d}",
        }
        if kind == "search":
            event["keyword"] = rng.choice(_KEYWORDS)
        else:
            event["sku"] = rng.choice(state.feeds["app"].products).sku
        if malformed_requested(request) and not data:
            event["occurred_at"] = "yesterday"
        data.append(event)
    return JSONResponse(
        {
            "data": data,
            "next_since_id": data[-1]["id"] if data else first,
            "has_more": first + limit < visible,
        }
    )
