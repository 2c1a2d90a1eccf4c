"""JD (JOS): `jingdong.pop.order.search` by modified time (dateType=0), signed, through /routerjson.

Business parameters travel as one JSON string in `360buy_param_json`. The reply key really is spelled
`..._responce`. A business failure is HTTP 200 with `apiResult.success=false`.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, NotRequired

import orjson
from pydantic import BaseModel, ConfigDict, Field, Strict, TypeAdapter, field_validator, with_config
from typing_extensions import TypedDict

from sync.canonical import (
    GMT8,
    PLAIN_FEN,
    Batch,
    Fen,
    LocalTime,
    OptionalFen,
    OptionalLocalTime,
    OrderLineRecord,
    OrderRecord,
    PersonIdentity,
    WatermarkAdvance,
    gmt8_text,
)
from sync.connectors.base import (
    Connector,
    PermanentError,
    TransientError,
    max_modified,
    ordered_prefetch,
    time_windows,
    watermark_high,
)
from sync.validation import key_of, require_known, validate_rows

ORDER_STATE = {
    "WAIT_SELLER_STOCK_OUT": "paid",
    "WAIT_GOODS_RECEIVE_CONFIRM": "shipped",
    "FINISHED_L": "completed",
    "TRADE_CANCELED": "cancelled",
    # Locked (an after-sale in progress) and paused orders have been paid and not yet shipped.
    "LOCKED": "paid",
    "PAUSE": "paid",
}
RESPONSE_KEY = "jingdong_pop_order_search_responce"
# Gateway codes that are caller faults (missing/invalid version, timestamp, signature, method, app_key,
# access_token); the others (2: call limit, 66: service unavailable, ...) are worth retrying.
PERMANENT_GATEWAY_CODES = {"4", "7", "8", "11", "12", "13", "14", "15", "16", "17", "18", "19", "20"}
# Business failures that are our fault: retrying the same parameters cannot succeed.
PERMANENT_BUSINESS_CODES = {"INVALID_PARAM", "MISSING_PARAM"}


def jd_sign(params: dict[str, str], secret: str) -> str:
    # As the platforms' SDKs do: the sign itself and parameters without a value are left out.
    joined = "".join(f"{k}{params[k]}" for k in sorted(params) if k != "sign" and params[k] not in (None, ""))
    return hashlib.md5((secret + joined + secret).encode()).hexdigest().upper()


def check_jd(body: Any) -> None:
    """Gateway errors and business failures: caller faults are permanent, the rest are retried."""
    if isinstance(body, ValidatedPage):
        return  # the fast path took it: a successful search, by its schema
    if not isinstance(body, dict):
        raise TransientError("JD reply is not an object")
    if "error_response" in body:
        err = body["error_response"] or {}
        code = str(err.get("code", ""))
        text = f"JD error {code}: {err.get('en_desc') or err.get('zh_desc') or ''}"
        if code in PERMANENT_GATEWAY_CODES:
            raise PermanentError(text)
        raise TransientError(text)
    result = (body.get(RESPONSE_KEY) or {}).get("searchorderinfo_result") or {}
    api = result.get("apiResult") or {}
    if api and not api.get("success", True):
        code = str(api.get("resultCode"))
        text = f"JD business error {code}: {api.get('resultDescribe') or api.get('chineseErrCode') or ''}"
        if code in PERMANENT_BUSINESS_CODES:
            raise PermanentError(text)
        raise TransientError(text)


class JdConsignee(BaseModel):
    fullname: str | None = None
    mobile: str | None = None
    telephone: str | None = None
    province: str | None = None
    city: str | None = None
    county: str | None = None
    fullAddress: str | None = None
    desen_mobile: str | None = None


class JdItem(BaseModel):
    model_config = ConfigDict(coerce_numbers_to_str=True)

    skuId: str | None = None
    outerSkuId: str | None = None
    skuName: str | None = None
    jdPrice: Fen = Field(ge=0)
    itemTotal: int = Field(gt=0)


class JdOrder(BaseModel):
    """One order of `jingdong.pop.order.search`."""

    model_config = ConfigDict(coerce_numbers_to_str=True)

    orderId: str = Field(min_length=1, max_length=64)
    orderState: str
    pin: str | None = Field(None, max_length=128)
    open_id_buyer: str | None = Field(None, max_length=128)
    orderTotalPrice: Fen = Field(ge=0)
    orderPayment: Fen = Field(ge=0)
    freightPrice: OptionalFen = None
    sellerDiscount: OptionalFen = None
    orderStartTime: LocalTime
    paymentConfirmTime: OptionalLocalTime = None
    modified: LocalTime
    consigneeInfo: JdConsignee = Field(default_factory=JdConsignee)
    itemInfoList: list[JdItem] = Field(default_factory=list)

    @field_validator("orderState")
    @classmethod
    def _known_state(cls, value: str) -> str:
        return require_known(value, ORDER_STATE, "orderState")

    @property
    def buyer(self) -> str | None:
        return self.open_id_buyer or self.pin


def normalize_orders(rows: list[Any], channel: str = "jd") -> Batch:
    """Validate JD orders and normalize them to buyer identities and orders with lines."""
    valid, bad = validate_rows(JdOrder, rows, channel=channel, entity="order", external_id=key_of("orderId"))
    batch = Batch(quarantined=bad)
    for o, raw in valid:
        buyer = o.buyer
        c = o.consigneeInfo
        if buyer:
            batch.identities.append(
                PersonIdentity(
                    channel=channel,
                    external_id=buyer,
                    source_updated_at=o.modified,
                    attributes={
                        "name": c.fullname,
                        "phone": c.mobile or c.desen_mobile or c.telephone,
                        "province": c.province,
                        "city": c.city,
                        "district": c.county,
                        "address": c.fullAddress,
                        "nickname": o.pin,
                    },
                    raw={
                        "pin": raw.get("pin"),
                        "open_id_buyer": raw.get("open_id_buyer"),
                        "consigneeInfo": raw.get("consigneeInfo"),
                    },
                    event={"orderId": raw.get("orderId")},
                )  # fmt: skip
            )
        lines = [
            OrderLineRecord(
                line_no=i,
                sku=it.outerSkuId or it.skuId,
                title=it.skuName,
                quantity=it.itemTotal,
                unit_price_fen=it.jdPrice,
                discount_fen=0,
                amount_fen=it.jdPrice * it.itemTotal,
            )
            for i, it in enumerate(o.itemInfoList, start=1)
        ]
        batch.orders.append(
            OrderRecord(
                channel=channel,
                external_id=o.orderId,
                identity_external_id=buyer,
                store_code=None,
                status=ORDER_STATE[o.orderState],
                source_status=o.orderState,
                total_fen=o.orderTotalPrice,
                paid_fen=o.orderPayment,
                discount_fen=o.sellerDiscount or 0,
                shipping_fen=o.freightPrice or 0,
                placed_at=o.orderStartTime,
                paid_at=o.paymentConfirmTime,
                source_updated_at=o.modified,
                lines=lines,
            )
        )
    return batch


# The fast path, as for Tmall (see taobao.py): a whole page validated from bytes by pydantic-core alone, in
# its own types; status, amounts and times finished in `fast_orders_to_batch`. It accepts a subset of what
# JdOrder accepts and means the same by it; anything else (an error envelope, a failed apiResult, text sent
# as numbers, exotic amounts, zoned times, a state ORDER_STATE does not map) goes through JdOrder row by row.
_PlainAmount = Annotated[str, Strict(), Field(pattern=r"^[0-9]+(?:\.[0-9]{1,2})?$")]
_PlainTime = Annotated[
    str, Strict(), Field(pattern=r"^[0-9]{4}-[0-9]{2}-[0-9]{2} [0-9]{2}:[0-9]{2}:[0-9]{2}$")
]
_Text = Annotated[str, Strict()]


@with_config(ConfigDict(extra="allow"))  # the identity raw keeps the consignee as sent, extra keys too
class _FastConsignee(TypedDict):
    fullname: NotRequired[_Text | None]
    mobile: NotRequired[_Text | None]
    telephone: NotRequired[_Text | None]
    province: NotRequired[_Text | None]
    city: NotRequired[_Text | None]
    county: NotRequired[_Text | None]
    fullAddress: NotRequired[_Text | None]
    desen_mobile: NotRequired[_Text | None]


class _FastItem(TypedDict):
    skuId: NotRequired[_Text | None]
    outerSkuId: NotRequired[_Text | None]
    skuName: NotRequired[_Text | None]
    jdPrice: _PlainAmount
    itemTotal: Annotated[int, Field(gt=0, lt=2**63)]


class _FastOrder(TypedDict):
    orderId: Annotated[str, Strict(), Field(min_length=1, max_length=64)]
    orderState: _Text  # looked up in ORDER_STATE (as it is now) in fast_orders_to_batch
    pin: NotRequired[Annotated[str, Strict(), Field(max_length=128)] | None]
    open_id_buyer: NotRequired[Annotated[str, Strict(), Field(max_length=128)] | None]
    orderTotalPrice: _PlainAmount
    orderPayment: _PlainAmount
    freightPrice: NotRequired[_PlainAmount | None]
    sellerDiscount: NotRequired[_PlainAmount | None]
    orderStartTime: _PlainTime
    paymentConfirmTime: NotRequired[_PlainTime | None]
    modified: _PlainTime
    consigneeInfo: NotRequired[_FastConsignee]
    itemInfoList: NotRequired[list[_FastItem]]


class _FastApiResult(TypedDict):
    success: NotRequired[Annotated[bool, Strict()]]  # false: a business error, left to check_jd


class _FastResult(TypedDict):
    apiResult: NotRequired[_FastApiResult]
    orderInfoList: NotRequired[list[_FastOrder]]


class _FastResponse(TypedDict):
    searchorderinfo_result: _FastResult


class _FastEnvelope(TypedDict):
    jingdong_pop_order_search_responce: _FastResponse


_fast_adapter: TypeAdapter[_FastEnvelope] = TypeAdapter(_FastEnvelope)


@dataclass(slots=True)
class ValidatedPage:
    """A page whose every order validated in one pass straight from the response bytes, normalized."""

    batch: Batch


def parse_orders_page(content: bytes) -> Any:
    """Fast path: validate and normalize the whole page from bytes; anything outside the fast schema (error
    envelopes included) falls back to plain JSON, checked by `check_jd` and validated row by row."""
    if not content.startswith(b'{"error_response"'):
        try:
            page = _fast_adapter.validate_json(content)
            result = page["jingdong_pop_order_search_responce"]["searchorderinfo_result"]
            if result.get("apiResult", {}).get("success", True):
                return ValidatedPage(fast_orders_to_batch(result.get("orderInfoList", [])))
        except (ValueError, KeyError):
            # ValidationError is a ValueError: a row outside the fast schema, a time that is no date, or
            # (KeyError) a state ORDER_STATE does not map.
            pass
    return orjson.loads(content)


def fast_orders_to_batch(orders: list[_FastOrder], channel: str = "jd") -> Batch:
    """`normalize_orders` for a page the fast path validated: the same records, amounts converted by
    `PLAIN_FEN`, times parsed in GMT+8 (ValueError for a date that does not exist), the state looked up
    in ORDER_STATE (KeyError if unknown)."""
    batch = Batch()
    identities, records = batch.identities, batch.orders
    fen = PLAIN_FEN
    state_of = ORDER_STATE
    parse_time = datetime.fromisoformat
    for o in orders:
        get: Any = o.get  # one bound method for the optional keys
        order_id = o["orderId"]
        state = o["orderState"]
        status = state_of[state]
        pin = get("pin")
        buyer = get("open_id_buyer") or pin
        modified = parse_time(o["modified"] + "+08:00")
        paid_at = get("paymentConfirmTime")
        if paid_at is not None:
            paid_at = parse_time(paid_at + "+08:00")
        if buyer:
            consignee = get("consigneeInfo")
            c: Any = consignee or {}
            identities.append(
                PersonIdentity(
                    channel,
                    buyer,
                    modified,
                    {
                        "name": c.get("fullname"),
                        "phone": c.get("mobile") or c.get("desen_mobile") or c.get("telephone"),
                        "province": c.get("province"),
                        "city": c.get("city"),
                        "district": c.get("county"),
                        "address": c.get("fullAddress"),
                        "nickname": pin,
                    },
                    {"pin": pin, "open_id_buyer": get("open_id_buyer"), "consigneeInfo": consignee},
                    False,
                    {"orderId": order_id},
                )
            )
        lines = []
        line_no = 0
        for it in get("itemInfoList", ()):
            line_no += 1
            iget: Any = it.get
            price = fen[it["jdPrice"]]
            quantity = it["itemTotal"]
            lines.append(
                OrderLineRecord(
                    line_no,
                    iget("outerSkuId") or iget("skuId"),
                    iget("skuName"),
                    quantity,
                    price,
                    0,
                    price * quantity,
                )
            )
        discount = get("sellerDiscount")
        freight = get("freightPrice")
        records.append(
            OrderRecord(
                channel,
                order_id,
                buyer,
                None,
                status,
                state,
                fen[o["orderTotalPrice"]],
                fen[o["orderPayment"]],
                fen[discount] if discount is not None else 0,
                fen[freight] if freight is not None else 0,
                parse_time(o["orderStartTime"] + "+08:00"),
                paid_at,
                modified,
                lines,
            )
        )
    return batch


class JdConnector(Connector):
    """JD orders, incremental by modified time in windows of at most a day."""

    channel = "jd"
    streams = ("orders",)
    path = "/jd/routerjson"

    def normalizers(self) -> dict[str, Callable[[list[Any]], Batch]]:
        return {"order": normalize_orders}

    async def call(
        self, method: str, business: dict[str, Any], parse: Callable[[bytes], Any] | None = None
    ) -> Any:
        param_json = orjson.dumps(business).decode()

        def signed() -> dict[str, Any]:
            p = {
                "method": method,
                "app_key": self.config.app_key,
                "access_token": self.config.token,
                "timestamp": datetime.now(GMT8).strftime("%Y-%m-%d %H:%M:%S"),
                "v": "2.0",
                "360buy_param_json": param_json,
            }
            p["sign"] = jd_sign(p, self.config.app_secret)
            return p

        return await self.client.request_json("POST", self.path, check=check_jd, sign=signed, parse=parse)

    def pull(
        self, stream: str, watermark: dict[str, Any] | None, since: datetime | None
    ) -> AsyncIterator[Batch]:
        if stream != "orders":
            raise ValueError(f"jd has no stream {stream!r}")
        return self._orders(watermark, since)

    async def _orders(self, watermark: dict[str, Any] | None, since: datetime | None) -> AsyncIterator[Batch]:
        start, end = await self.start_time(watermark, since), await self.end_time()
        page_size = min(self.config.page_size, 100)
        key = self.watermark_key("orders")

        def params(lo: datetime, hi: datetime, page: int, size: int) -> dict[str, Any]:
            return {
                "start_date": gmt8_text(lo),
                "end_date": gmt8_text(hi),
                "order_state": ",".join(ORDER_STATE),
                "dateType": 0,
                "sortType": 1,
                "page": str(page),
                "page_size": str(size),
            }

        def result(body: Any) -> dict[str, Any]:
            res: dict[str, Any] = (body.get(RESPONSE_KEY) or {}).get("searchorderinfo_result") or {}
            return res

        def counter(lo: datetime, hi: datetime) -> Callable[[], Awaitable[tuple[datetime, datetime, int]]]:
            async def count() -> tuple[datetime, datetime, int]:
                body = await self.call("jingdong.pop.order.search", params(lo, hi, 1, 1))
                return lo, hi, int(result(body).get("orderTotal") or 0)

            return count

        def page(
            lo: datetime, hi: datetime, no: int, last: bool, expected: int = 0
        ) -> Callable[[], Awaitable[tuple[Batch, bool]]]:
            async def fetch() -> tuple[Batch, bool]:
                body = await self.call(
                    "jingdong.pop.order.search", params(lo, hi, no, page_size), parse=parse_orders_page
                )
                if isinstance(body, ValidatedPage):
                    batch = body.batch
                else:
                    batch = normalize_orders(result(body).get("orderInfoList") or [])
                batch.expected = expected
                return batch, last

            return fetch

        windows = list(time_windows(start, end, self.settings.marketplace_window_minutes))

        async def pages() -> AsyncIterator[Callable[[], Awaitable[tuple[Batch, bool]]]]:
            async for lo, hi, total in ordered_prefetch(
                (counter(lo, hi) for lo, hi in windows), self.settings.concurrency
            ):
                # Newest first, so read from the last page back (as for TOP) to never skip a shifted order.
                last_page = max(1, -(-total // page_size))
                for no in range(last_page, 0, -1):
                    # The window's count rides on its first page read: the progress bar's total grows by it.
                    yield page(lo, hi, no, last=no == 1, expected=total if no == last_page else 0)

        high = watermark_high(watermark)
        async for batch, last in ordered_prefetch(pages(), self.settings.concurrency):
            high = max_modified(batch, high)
            if last and high is not None:
                batch.watermarks.append(WatermarkAdvance(key, watermark_at=high))
            yield batch
