"""JD Open Service (JOS) gateway: POST /jd/routerjson, method jingdong.pop.order.search.

Business parameters arrive as JSON in `360buy_param_json`. The window (start_date..end_date) may
span at most one month; dateType 0 searches by modified time, 1 by order creation time; sortType 1
returns newest first, anything else oldest first.
"""

from __future__ import annotations

import json
import time
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from sync.simulator.control import malformed_requested
from sync.simulator.formats import gateway_params, gmt8, parse_gmt8, yuan
from sync.simulator.orders import FINISHED, PAID, REFUND_ASKED, REFUNDED, SHIPPED, OrderFeed, OrderRow
from sync.simulator.render_cache import RenderCache, order_fragments
from sync.simulator.seeding import hash_one
from sync.simulator.signing import jos_sign
from sync.simulator.state import SimulatorState

I64 = npt.NDArray[np.int64]
DAY = 86400
VENDER_ID = "10086123"
ORDER_STATES = (
    "WAIT_SELLER_STOCK_OUT",
    "WAIT_GOODS_RECEIVE_CONFIRM",
    "FINISHED_L",
    "TRADE_CANCELED",
    "LOCKED",
    "PAUSE",
)
# JD orders are visible from payment on; an after-sales refund locks, then cancels the order.
_STAGE_STATE = {
    PAID: ("WAIT_SELLER_STOCK_OUT", "等待出库"),
    SHIPPED: ("WAIT_GOODS_RECEIVE_CONFIRM", "等待确认收货"),
    FINISHED: ("FINISHED_L", "完成"),
    REFUND_ASKED: ("LOCKED", "锁定"),
    REFUNDED: ("TRADE_CANCELED", "取消"),
}
_GATEWAY_ERRORS = {
    "2": ("限制时间内调用失败次数", "App Call Limited"),
    "4": ("缺少版本参数", "Missing Version"),
    "7": ("缺少时间戳参数", "Missing Timestamp"),
    "8": ("非法的时间戳参数", "Invalid Timestamp"),
    "11": ("缺少签名参数", "Missing Signature"),
    "12": ("无效签名", "Invalid Signature"),
    "14": ("缺少方法名参数", "Missing Method"),
    "15": ("不存在的方法名", "Invalid Method"),
    "17": ("无效的app_key", "Invalid app_key"),
    "19": ("无效的access_token", "Invalid access_token"),
    "66": ("平台连接后端服务不可用", "Service Unavailable"),
}


def jos_error(code: str) -> JSONResponse:
    """JOS gateway error envelope (HTTP 200)."""
    zh, en = _GATEWAY_ERRORS.get(code, ("平台错误", "Platform Error"))
    return JSONResponse({"error_response": {"code": code, "zh_desc": zh, "en_desc": en}})


def platform_error(request: Request, code: str | None) -> Response:
    """Injected platform fault: the call limit (code 2) unless another gateway code is given."""
    return jos_error(code or "2")


def _business_error(code: str, describe: str) -> JSONResponse:
    """A business failure: HTTP 200, code "0", apiResult.success false."""
    return JSONResponse(
        {
            "jingdong_pop_order_search_responce": {
                "code": "0",
                "searchorderinfo_result": {
                    "apiResult": {"success": False, "resultCode": code, "resultDescribe": describe},
                    "orderTotal": 0,
                    "orderInfoList": [],
                },
            }
        }
    )


def _check_gateway(params: dict[str, str], state: SimulatorState) -> Response | None:
    config = state.config
    if not params.get("method"):
        return jos_error("14")
    if params.get("app_key") != config.jd_app_key:
        return jos_error("17")
    if not params.get("v"):
        return jos_error("4")
    if not params.get("timestamp"):
        return jos_error("7")
    try:
        sent = parse_gmt8(params["timestamp"])
    except ValueError:
        return jos_error("8")
    if config.check_timestamp and abs(sent - time.time()) > 360:
        return jos_error("8")
    if not params.get("sign"):
        return jos_error("11")
    if jos_sign(params, config.jd_app_secret) != params["sign"].upper():
        return jos_error("12")
    if params.get("access_token") != config.jd_access_token:
        return jos_error("19")
    if params["method"] != "jingdong.pop.order.search":
        return jos_error("15")
    return None


def render_order(row: OrderRow) -> dict[str, Any]:
    """An order as jingdong.pop.order.search returns it (consignee masked)."""
    buyer = row.buyer
    assert buyer is not None  # every JD order has a buyer
    bf = buyer.fields
    state, remark = _STAGE_STATE[row.stage]
    return {
        "orderId": row.external_id,
        "venderId": VENDER_ID,
        "orderType": "22",
        "payType": "4-在线支付",
        "orderTotalPrice": yuan(row.total_fen),
        "orderSellerPrice": yuan(row.total_fen - row.discount_fen),
        "orderPayment": yuan(row.payment_fen),
        "freightPrice": yuan(row.shipping_fen),
        "sellerDiscount": yuan(row.discount_fen),
        "orderState": state,
        "orderStateRemark": remark,
        "deliveryType": "任意时间",
        "invoiceInfo": "不需要开具发票",
        "orderRemark": "",
        "orderStartTime": gmt8(row.created),
        "paymentConfirmTime": gmt8(row.paid),
        "orderEndTime": gmt8(row.finished),
        "modified": gmt8(row.modified),
        "pin": buyer.extra["pin"],
        "open_id_buyer": buyer.external_id,
        "consigneeInfo": {
            "fullname": bf["name"],
            "telephone": bf["phone"],
            "mobile": bf["phone"],
            "desen_mobile": bf["phone"],
            "fullAddress": bf["address"],
            "province": bf["province"],
            "city": bf["city"],
            "county": bf["district"],
            "town": "",
        },
        "itemInfoList": [
            {
                "skuId": str(line.product.jd_sku_id),
                "outerSkuId": line.product.sku,
                "skuName": line.product.title,
                "jdPrice": yuan(line.unit_price_fen),
                "itemTotal": str(line.quantity),
                "wareId": str(line.product.jd_sku_id // 10),
            }
            for line in row.lines
        ],
    }


# A successful search with no orders; pages splice their total and orders into it.
_SUCCESS = orjson.dumps(
    {
        "jingdong_pop_order_search_responce": {
            "code": "0",
            "searchorderinfo_result": {
                "apiResult": {"success": True, "resultCode": "0", "resultDescribe": "成功"},
                "orderInfoList": [],
            },
        }
    }
)


def _corrupt(order: dict[str, Any], index: int, key: int) -> None:
    if hash_one(key, index, 77) % 2 == 0:
        order["orderPayment"] = "abc"
    else:
        order.pop("orderId", None)


async def routerjson(request: Request, state: SimulatorState) -> Response:
    """POST /jd/routerjson."""
    params = await gateway_params(request)
    problem = _check_gateway(params, state)
    if problem is not None:
        return problem
    try:
        business = json.loads(params.get("360buy_param_json") or "{}")
        if not isinstance(business, dict):
            raise ValueError("not an object")
    except ValueError:
        return _business_error("INVALID_PARAM", "360buy_param_json must be a JSON object")
    try:
        start = parse_gmt8(str(business["start_date"]))
        end = parse_gmt8(str(business["end_date"]))
    except KeyError as exc:
        return _business_error("MISSING_PARAM", f"{exc.args[0]} is required (yyyy-MM-dd HH:mm:ss)")
    except ValueError:
        return _business_error("INVALID_PARAM", "start_date and end_date must be yyyy-MM-dd HH:mm:ss")
    if end < start or end - start > 31 * DAY:
        return _business_error(
            "INVALID_PARAM", "end_date must be after start_date and within one month of it"
        )
    raw_states = str(business.get("order_state") or "")
    if not raw_states:
        return _business_error(
            "MISSING_PARAM", "order_state is required, e.g. WAIT_SELLER_STOCK_OUT,FINISHED_L"
        )
    wanted = {s.strip() for s in raw_states.split(",") if s.strip()}
    if not wanted <= set(ORDER_STATES):
        return _business_error("INVALID_PARAM", f"order_state values must be among {','.join(ORDER_STATES)}")
    try:
        page = int(str(business.get("page", "1")))
        page_size = int(str(business.get("page_size", "20")))
    except ValueError:
        return _business_error("INVALID_PARAM", "page and page_size must be integer strings")
    if page < 1 or not 1 <= page_size <= 100:
        return _business_error("INVALID_PARAM", "page must be >= 1 and page_size between 1 and 100")
    by_created = str(business.get("dateType", "0")) == "1"
    newest_first = str(business.get("sortType", "1")) == "1"
    stages = {stage for stage, (name, _) in _STAGE_STATE.items() if name in wanted}
    feed = state.feeds["jd"]
    if by_created:
        lo = feed.first_index_at_or_after(start)
        hi = max(
            lo, min(feed.visible_count(state.now), feed.first_index_at_or_after(min(end, state.now) + 1))
        )
        index = np.arange(lo, hi, dtype=np.int64)
        if len(index):
            index = index[np.isin(feed.timeline(index).stage_at(state.now), list(stages))]
        index = index[::-1]
        modified = None
    else:
        index, modified = feed.window_by_modified(start, end, state.now, stages=stages)
    if not newest_first:
        index = index[::-1]
        modified = None if modified is None else modified[::-1]
    total = len(index)
    chosen = slice((page - 1) * page_size, page * page_size)
    if modified is None:
        page_index = index[chosen]
        page_modified = feed.timeline(page_index).modified_at(state.now) if len(page_index) else page_index
    else:
        page_index, page_modified = index[chosen], modified[chosen]
    orders = _order_fragments(
        feed, page_index, page_modified, state.now, malformed_requested(request), state.render_cache
    )
    head, _, tail = _SUCCESS.partition(b'"orderInfoList":[]')
    return Response(
        b"".join(
            (
                head,
                b'"orderTotal":',
                str(total).encode(),
                b',"orderInfoList":[',
                b",".join(orders),
                b"]",
                tail,
            )
        ),
        media_type="application/json",
    )


def _order_fragments(
    feed: OrderFeed, index: I64, modified: I64, now: int, force_malformed: bool, cache: RenderCache
) -> list[bytes]:
    """The orders at `index` (modified at `now` at `modified`) as JSON fragments, the bytes orjson
    gives `render_order`, each reused from `cache` while the order is unchanged."""

    def render(row: OrderRow, broken: bool) -> dict[str, Any]:
        order = render_order(row)
        if row.malformed or broken:
            _corrupt(order, row.index, feed.key)
        return order

    return order_fragments(cache, feed, index, modified, now, None, force_malformed, render)
