"""Tmall/Taobao Open Platform gateway: POST /taobao/router/rest.

Methods: taobao.trades.sold.get (by created time), taobao.trades.sold.increment.get (by modified
time, window <= 1 day, newest-modified first) and taobao.refunds.receive.get.
"""

from __future__ import annotations

import functools
import time
import uuid
from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from sync.simulator.control import malformed_requested
from sync.simulator.formats import ORJSONResponse, gateway_params, gmt8, parse_gmt8, yuan
from sync.simulator.orders import (
    CLOSED,
    CREATED,
    FINISHED,
    PAID,
    REFUND_ASKED,
    REFUNDED,
    SHIPPED,
    OrderFeed,
    OrderRow,
)
from sync.simulator.render_cache import RenderCache, order_fragments
from sync.simulator.seeding import hash_one
from sync.simulator.signing import top_sign
from sync.simulator.state import SimulatorState

I64 = npt.NDArray[np.int64]
DAY = 86400
SELLER_NICK = "栖居家居旗舰店"
TRADE_STATUSES = (
    "WAIT_BUYER_PAY",
    "WAIT_SELLER_SEND_GOODS",
    "SELLER_CONSIGNED_PART",
    "WAIT_BUYER_CONFIRM_GOODS",
    "TRADE_BUYER_SIGNED",
    "TRADE_FINISHED",
    "TRADE_CLOSED",
    "TRADE_CLOSED_BY_TAOBAO",
)
_STAGE_STATUS = {
    CREATED: "WAIT_BUYER_PAY",
    PAID: "WAIT_SELLER_SEND_GOODS",
    SHIPPED: "WAIT_BUYER_CONFIRM_GOODS",
    FINISHED: "TRADE_FINISHED",
    REFUND_ASKED: "TRADE_FINISHED",
    REFUNDED: "TRADE_FINISHED",
    CLOSED: "TRADE_CLOSED_BY_TAOBAO",
}
# Top-level keys of a trade, in the order TOP sends them.
TRADE_KEYS = (
    "tid",
    "tid_str",
    "status",
    "type",
    "seller_nick",
    "buyer_open_uid",
    "buyer_nick",
    "receiver_name",
    "receiver_mobile",
    "receiver_state",
    "receiver_city",
    "receiver_district",
    "receiver_address",
    "oaid",
    "num",
    "total_fee",
    "discount_fee",
    "post_fee",
    "payment",
    "created",
    "pay_time",
    "consign_time",
    "end_time",
    "modified",
    "orders",
)
_REASONS = ("七天无理由退换货", "商品质量问题", "尺寸/规格不合适", "收到商品与描述不符", "不喜欢/不想要")
_MESSAGES = {
    "7": "App Call Limited",
    "15": "Remote service error",
    "21": "Missing Method",
    "22": "Invalid Method",
    "24": "Missing Signature",
    "25": "Invalid Signature",
    "26": "Missing Session",
    "27": "Invalid Session",
    "28": "Missing App Key",
    "29": "Invalid App Key",
    "30": "Missing Timestamp",
    "31": "Invalid Timestamp",
    "41": "Invalid Arguments",
    "50": "Invalid Sign Method",
}


def top_error(code: int | str, sub_code: str | None = None, sub_msg: str | None = None) -> JSONResponse:
    """TOP's error envelope; HTTP 200 like the real gateway."""
    body: dict[str, Any] = {"code": int(code), "msg": _MESSAGES.get(str(code), "Platform Error")}
    if sub_code:
        body["sub_code"] = sub_code
    if sub_msg:
        body["sub_msg"] = sub_msg
    body["request_id"] = uuid.uuid4().hex[:13]
    return JSONResponse({"error_response": body})


def platform_error(request: Request, code: str | None) -> Response:
    """Injected platform fault: call limit (code 7) by default, or an `isp.` server fault (15)."""
    if code in (None, "7"):
        return top_error(
            7, "accesscontrol.limited-by-app-access-count", "This ban will last for 1 more seconds"
        )
    if code == "15":
        return top_error(15, "isp.remote-service-error", "服务暂时不可用，请稍后重试")
    return top_error(code or 7)


def tmall_status(stage: int, lines: int) -> str:
    """A whole-order refund (the only line refunded) closes the trade; a partial one leaves it finished."""
    if stage == REFUNDED and lines == 1:
        return "TRADE_CLOSED"
    return _STAGE_STATUS[stage]


def _statuses(feed: OrderFeed, index: I64, stages: I64) -> npt.NDArray[np.str_]:
    lines = feed.line_counts(index)
    out = np.array([_STAGE_STATUS[int(s)] for s in stages], dtype=object)
    out[(stages == REFUNDED) & (lines == 1)] = "TRADE_CLOSED"
    return out.astype(str)


def _check_gateway(params: dict[str, str], state: SimulatorState) -> Response | None:
    config = state.config
    if not params.get("app_key"):
        return top_error(28)
    if params["app_key"] != config.taobao_app_key:
        return top_error(29)
    if not params.get("method"):
        return top_error(21)
    if not params.get("timestamp"):
        return top_error(30)
    try:
        sent = parse_gmt8(params["timestamp"])
    except ValueError:
        return top_error(31, sub_msg="timestamp must be yyyy-MM-dd HH:mm:ss in GMT+8")
    if config.check_timestamp and abs(sent - time.time()) > 600:
        return top_error(31, sub_msg="timestamp is more than 10 minutes from the server time")
    if not params.get("sign"):
        return top_error(24)
    sign_method = params.get("sign_method", "md5")
    if sign_method not in ("md5", "hmac", "hmac-sha256"):
        return top_error(50)
    if top_sign(params, config.taobao_app_secret, sign_method) != params["sign"].upper():
        return top_error(25)
    if not params.get("session"):
        return top_error(26)
    if params["session"] != config.taobao_session:
        return top_error(27)
    return None


def _paging(params: dict[str, str]) -> tuple[int, int, bool] | Response:
    try:
        page_no = int(params.get("page_no", "1"))
        page_size = int(params.get("page_size", "40"))
    except ValueError:
        return top_error(41, "isv.invalid-parameter:page_no", "page_no and page_size must be integers")
    if page_no < 1:
        return top_error(41, "isv.invalid-parameter:page_no", "page_no must be >= 1")
    if not 1 <= page_size <= 100:
        return top_error(41, "isv.invalid-parameter:page_size", "page_size must be between 1 and 100")
    return page_no, page_size, params.get("use_has_next", "false").lower() == "true"


def _time_param(params: dict[str, str], name: str) -> int | Response | None:
    value = params.get(name)
    if not value:
        return None
    try:
        return parse_gmt8(value)
    except ValueError:
        return top_error(41, f"isv.invalid-parameter:{name}", f"{name} must be yyyy-MM-dd HH:mm:ss")


def oid(row: OrderRow, line_no: int) -> int:
    """Sub-order id: distinct from every tid and below 2**63 (tids step by 7 from 3.1e18)."""
    return int(row.external_id) + 10_000_000_000_000 * line_no


def render_trade(row: OrderRow, fields: set[str] | None) -> dict[str, Any]:
    """A trade as TOP returns it (personal fields masked, money as yuan strings, GMT+8 times)."""
    trade = _full_trade(row)
    if fields:
        for name in _dropped(frozenset(fields)):
            del trade[name]
    return trade


@functools.lru_cache(maxsize=64)
def _dropped(fields: frozenset[str]) -> tuple[str, ...]:
    # Deleting the few keys a `fields` list leaves out keeps the order and costs less than a copy.
    return tuple(name for name in TRADE_KEYS if name not in fields)


def _full_trade(row: OrderRow) -> dict[str, Any]:
    buyer = row.buyer
    assert buyer is not None  # every Tmall trade has a buyer
    bf = buyer.fields
    lines = row.lines
    status = tmall_status(row.stage, len(lines))
    tid = int(row.external_id)
    refunded_line = row.refund_line if row.refund_asked is not None else 0
    refund_state = "SUCCESS" if row.refund_done is not None else "WAIT_SELLER_AGREE"
    orders = []
    num = 0
    for line in lines:
        product = line.product
        line_no = line.line_no
        sub_order = tid + 10_000_000_000_000 * line_no
        amount = yuan(line.unit_price_fen * line.quantity - line.discount_fen)
        if line_no == refunded_line:
            refund_status = refund_state
            line_status = "TRADE_CLOSED" if refund_state == "SUCCESS" else status
        else:
            refund_status, line_status = "NO_REFUND", status
        num += line.quantity
        orders.append(
            {
                "oid": sub_order,
                "oid_str": str(sub_order),
                "num_iid": product.num_iid,
                "sku_id": str(product.taobao_sku_id),
                "outer_sku_id": product.sku,
                "title": product.title,
                "price": yuan(line.unit_price_fen),
                "num": line.quantity,
                "total_fee": amount,
                "payment": amount,
                "discount_fee": yuan(line.discount_fen),
                "refund_status": refund_status,
                "status": line_status,
            }
        )
    trade: dict[str, Any] = {
        "tid": tid,
        "tid_str": row.external_id,
        "status": status,
        "type": "fixed",
        "seller_nick": SELLER_NICK,
        "buyer_open_uid": buyer.external_id,
        "buyer_nick": buyer.extra["nick"],
        "receiver_name": bf["name"],
        "receiver_mobile": bf["phone"],
        "receiver_state": bf["province"],
        "receiver_city": bf["city"],
        "receiver_district": bf["district"],
        "receiver_address": bf["address"],
        "oaid": buyer.extra["oaid"],
        "num": num,
        "total_fee": yuan(row.total_fen),
        "discount_fee": yuan(row.discount_fen),
        "post_fee": yuan(row.shipping_fen),
        "payment": yuan(row.total_fen - row.discount_fen + row.shipping_fen),
        "created": gmt8(row.created),
        "pay_time": gmt8(row.paid),
        "consign_time": gmt8(row.shipped),
        "end_time": gmt8(row.finished or row.closed),
        "modified": gmt8(row.modified),
        "orders": {"order": orders},
    }
    return trade


def corrupt_trade(trade: dict[str, Any], index: int, key: int) -> None:
    """Break one field the way real feeds break: a non-numeric amount, a missing id, a bad time."""
    kind = hash_one(key, index, 77) % 3
    if kind == 0:
        trade["payment"] = "12.3O"
    elif kind == 1:
        trade.pop("tid", None)
        trade.pop("tid_str", None)
    else:
        trade["created"] = "2026-13-45 25:61:00"


def _trades_page(
    feed: OrderFeed, index: I64, now: int, params: dict[str, str], force_malformed: bool
) -> list[dict[str, Any]]:
    fields = frozenset(f.strip() for f in params.get("fields", "").split(",") if f.strip())
    dropped = _dropped(fields) if fields else ()
    trades = []
    for n, row in enumerate(feed.rows(index, now)):
        trade = _full_trade(row)
        for name in dropped:
            del trade[name]
        if row.malformed or (force_malformed and n == 0):
            corrupt_trade(trade, row.index, feed.key)
        trades.append(trade)
    return trades


def _fields_dropped(params: dict[str, str]) -> tuple[str, ...]:
    return _dropped_by_text(params.get("fields", ""))


@functools.lru_cache(maxsize=64)
def _dropped_by_text(text: str) -> tuple[str, ...]:
    fields = frozenset(f.strip() for f in text.split(",") if f.strip())
    return _dropped(fields) if fields else ()


def _trade_fragments(
    feed: OrderFeed,
    index: I64,
    modified: I64,
    now: int,
    params: dict[str, str],
    force_malformed: bool,
    cache: RenderCache,
) -> list[bytes]:
    """The trades at `index` (whose modified times at `now` are `modified`) as JSON fragments: the
    same bytes `_trades_page` encodes to, each reused from `cache` while the trade is unchanged."""
    dropped = _fields_dropped(params)

    def render(row: OrderRow, broken: bool) -> dict[str, Any]:
        trade = _full_trade(row)
        for name in dropped:
            del trade[name]
        if row.malformed or broken:
            corrupt_trade(trade, row.index, feed.key)
        return trade

    return order_fragments(cache, feed, index, modified, now, dropped, force_malformed, render)


def _page_response(
    name: str,
    items_key: str,
    item_key: str,
    fragments: list[bytes],
    total: int,
    page_no: int,
    page_size: int,
    use_has_next: bool,
) -> Response:
    """`_envelope` for items already encoded: the same bytes, with the items joined in."""
    body: dict[str, Any] = {}
    if use_has_next:
        body["has_next"] = page_no * page_size < total
    else:
        body["total_results"] = total
    body[items_key] = {item_key: []}
    body["request_id"] = uuid.uuid4().hex[:13]
    empty = orjson.dumps({name: body})
    marker = b'"' + item_key.encode() + b'":[]'
    head, _, tail = empty.partition(marker)
    content = b"".join((head, marker[:-1], b",".join(fragments), b"]", tail))
    return Response(content, media_type="application/json")


def _envelope(
    name: str,
    items_key: str,
    item_key: str,
    items: list[dict[str, Any]],
    total: int,
    page_no: int,
    page_size: int,
    use_has_next: bool,
) -> JSONResponse:
    body: dict[str, Any] = {}
    if use_has_next:
        body["has_next"] = page_no * page_size < total
    else:
        body["total_results"] = total
    body[items_key] = {item_key: items}
    body["request_id"] = uuid.uuid4().hex[:13]
    return ORJSONResponse({name: body})


def _status_filter(params: dict[str, str]) -> str | None | Response:
    status = params.get("status") or None
    if status is not None and status not in TRADE_STATUSES:
        return top_error(
            41, "isv.invalid-parameter:status", f"status must be one of {', '.join(TRADE_STATUSES)}"
        )
    return status


def trades_sold_get(params: dict[str, str], state: SimulatorState, malformed: bool) -> Response:
    """Trades by creation time, newest created first (the full pull)."""
    paging = _paging(params)
    if isinstance(paging, Response):
        return paging
    page_no, page_size, use_has_next = paging
    feed = state.feeds["tmall"]
    start = _time_param(params, "start_created")
    end = _time_param(params, "end_created")
    for value in (start, end):
        if isinstance(value, Response):
            return value
    status = _status_filter(params)
    if isinstance(status, Response):
        return status
    end_t = min(state.now, end if isinstance(end, int) else state.now)
    start_t = start if isinstance(start, int) else state.now - 90 * DAY
    lo = feed.first_index_at_or_after(start_t)
    hi = max(lo, min(feed.visible_count(state.now), feed.first_index_at_or_after(end_t + 1)))
    if status is None:
        total = hi - lo
        top = hi - (page_no - 1) * page_size
        index = np.arange(top - 1, max(lo, top - page_size) - 1, -1, dtype=np.int64)
    else:
        matches = []
        for piece in feed.scan(lo, hi):
            stages = piece.stage_at(state.now)
            matches.append(piece.index[_statuses(feed, piece.index, stages) == status])
        found = np.concatenate(matches)[::-1] if matches else np.empty(0, dtype=np.int64)
        total = len(found)
        index = found[(page_no - 1) * page_size : page_no * page_size]
    modified = feed.timeline(index).modified_at(state.now) if len(index) else index
    trades = _trade_fragments(feed, index, modified, state.now, params, malformed, state.render_cache)
    return _page_response(
        "trades_sold_get_response", "trades", "trade", trades, total, page_no, page_size, use_has_next
    )


def _modified_window(params: dict[str, str], first: str, last: str) -> tuple[int, int] | Response:
    start = _time_param(params, first)
    end = _time_param(params, last)
    for value in (start, end):
        if isinstance(value, Response):
            return value
    if not isinstance(start, int) or not isinstance(end, int):
        return top_error(
            40,
            f"isv.missing-parameter:{first if start is None else last}",
            f"{first} and {last} are required",
        )
    if end < start:
        return top_error(41, f"isv.invalid-parameter:{last}", f"{last} must not be before {first}")
    return start, end


def trades_sold_increment_get(params: dict[str, str], state: SimulatorState, malformed: bool) -> Response:
    """Trades whose modified time lies in [start_modified, end_modified] (both inclusive, at most one
    day apart), newest modified first."""
    paging = _paging(params)
    if isinstance(paging, Response):
        return paging
    page_no, page_size, use_has_next = paging
    window = _modified_window(params, "start_modified", "end_modified")
    if isinstance(window, Response):
        return window
    start, end = window
    if end - start > DAY:
        return top_error(
            41, "isv.invalid-parameter:start_modified", "start_modified 和 end_modified 的间隔不能超过一天"
        )
    status = _status_filter(params)
    if isinstance(status, Response):
        return status
    feed = state.feeds["tmall"]
    index, modified = feed.window_by_modified(start, end, state.now)
    if status is not None and len(index):
        line = feed.timeline(index)
        keep = _statuses(feed, index, line.stage_at(state.now)) == status
        index, modified = index[keep], modified[keep]
    total = len(index)
    chosen = slice((page_no - 1) * page_size, page_no * page_size)
    trades = _trade_fragments(
        feed, index[chosen], modified[chosen], state.now, params, malformed, state.render_cache
    )
    return _page_response(
        "trades_sold_increment_get_response",
        "trades",
        "trade",
        trades,
        total,
        page_no,
        page_size,
        use_has_next,
    )


def refunds_receive_get(params: dict[str, str], state: SimulatorState, malformed: bool) -> Response:
    """Refunds whose modified time lies in [start_modified, end_modified], newest first."""
    paging = _paging(params)
    if isinstance(paging, Response):
        return paging
    page_no, page_size, use_has_next = paging
    window = _modified_window(params, "start_modified", "end_modified")
    if isinstance(window, Response):
        return window
    start, end = window
    feed = state.feeds["tmall"]
    index, _ = feed.window_by_modified(start, end, state.now, key="refund")
    status = params.get("status") or None
    rows = feed.rows(index, state.now) if len(index) else []
    refunds = [_render_refund(row, feed.key) for row in rows]
    if status:
        refunds = [r for r in refunds if r["status"] == status]
    total = len(refunds)
    page = refunds[(page_no - 1) * page_size : page_no * page_size]
    if malformed and page:
        page[0]["refund_fee"] = "退款"
    return _envelope(
        "refunds_receive_get_response", "refunds", "refund", page, total, page_no, page_size, use_has_next
    )


def _render_refund(row: OrderRow, key: int) -> dict[str, Any]:
    line = row.lines[row.refund_line - 1]
    buyer = row.buyer
    assert buyer is not None
    return {
        "refund_id": int(row.external_id) + 90_000_000_000_000,
        "tid": int(row.external_id),
        "oid": oid(row, line.line_no),
        "title": line.product.title,
        "num": line.quantity,
        "buyer_open_uid": buyer.external_id,
        "buyer_nick": buyer.extra["nick"],
        "seller_nick": SELLER_NICK,
        "total_fee": yuan(line.amount_fen),
        "payment": yuan(line.amount_fen),
        "refund_fee": yuan(line.amount_fen),
        "reason": _REASONS[hash_one(key, row.index, 78) % len(_REASONS)],
        "status": "SUCCESS" if row.refund_done is not None else "WAIT_SELLER_AGREE",
        "has_good_return": True,
        "good_status": "BUYER_RETURNED_GOODS",
        "order_status": tmall_status(row.stage, len(row.lines)),
        "created": gmt8(row.refund_asked),
        "modified": gmt8(row.refund_done or row.refund_asked),
    }


METHODS: dict[str, Callable[[dict[str, str], SimulatorState, bool], Response]] = {
    "taobao.trades.sold.get": trades_sold_get,
    "taobao.trades.sold.increment.get": trades_sold_increment_get,
    "taobao.refunds.receive.get": refunds_receive_get,
}


async def router_rest(request: Request, state: SimulatorState) -> Response:
    """POST /taobao/router/rest: check app key, timestamp, signature and session, then dispatch."""
    params = await gateway_params(request)
    problem = _check_gateway(params, state)
    if problem is not None:
        return problem
    method = METHODS.get(params["method"])
    if method is None:
        return top_error(
            22, sub_msg=f"method {params['method']} is not simulated; use one of {sorted(METHODS)}"
        )
    return method(params, state, malformed_requested(request))
