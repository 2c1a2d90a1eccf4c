"""Tmall / Taobao Open Platform (TOP): incremental trades and refunds, signed form posts to /router/rest.

Trades come from `taobao.trades.sold.increment.get` in modified-time windows (≤ 1 day). Inside a window
results are newest-modified first, so pages are read from the last one backwards: a trade modified while
we page moves out of the window and shifts later items to lower page numbers, which we have not read yet.
The watermark (the newest `modified` landed) advances only with the batch holding a window's last page;
the next run re-reads from it, inclusive, so a tie at the boundary is read twice and landed once.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from operator import attrgetter
from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, field_validator

from sync.canonical import (
    GMT8,
    Batch,
    Fen,
    LocalTime,
    OptionalFen,
    OptionalLocalTime,
    OrderLineRecord,
    OrderRecord,
    PersonIdentity,
    RefundRecord,
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

TRADE_STATUS = {
    "WAIT_BUYER_PAY": "pending",
    "WAIT_SELLER_SEND_GOODS": "paid",
    "SELLER_CONSIGNED_PART": "shipped",
    "WAIT_BUYER_CONFIRM_GOODS": "shipped",
    "TRADE_BUYER_SIGNED": "completed",
    "TRADE_FINISHED": "completed",
    "TRADE_CLOSED": "refunded",
    "TRADE_CLOSED_BY_TAOBAO": "cancelled",
}
REFUND_STATUSES = {
    "WAIT_SELLER_AGREE", "WAIT_BUYER_RETURN_GOODS", "WAIT_SELLER_CONFIRM_GOODS", "SELLER_REFUSE_BUYER",
    "CLOSED", "SUCCESS",
}  # fmt: skip
INCREMENT_METHOD = "taobao.trades.sold.increment.get"
# Call limits (4, 5, 7, 8) are worth waiting out; 25-27 (signature, session) are not.
RETRYABLE_CODES = {"4", "5", "7", "8"}
TRADE_FIELDS = (
    "tid,status,buyer_open_uid,buyer_nick,receiver_name,receiver_mobile,receiver_state,receiver_city,"
    "receiver_district,receiver_address,receiver_zip,oaid,payment,post_fee,total_fee,discount_fee,created,"
    "modified,pay_time,end_time,orders"
)
IDENTITY_KEYS = (
    "buyer_open_uid", "buyer_nick", "receiver_name", "receiver_mobile", "receiver_state", "receiver_city",
    "receiver_district", "receiver_address", "receiver_zip", "oaid",
)  # fmt: skip
# The fast path's identity raw: the identity fields then tid, read in one C call instead of a dict comprehension.
_IDENTITY_RAW_KEYS = (*IDENTITY_KEYS, "tid")
_identity_raw_values = attrgetter(*_IDENTITY_RAW_KEYS)


def top_sign(params: dict[str, str], secret: str, method: str = "md5") -> str:
    """TOP signature: sorted key+value pairs, MD5 wrapped in the secret, or HMAC-MD5 keyed with it."""
    # As the platforms' SDKs do: the sign itself and parameters without a value are left out.
    joined = "".join(f"{k}{params[k]}" for k in sorted(params) if k != "sign" and params[k] not in (None, ""))
    if method == "hmac":
        return hmac.new(secret.encode(), joined.encode(), hashlib.md5).hexdigest().upper()
    return hashlib.md5((secret + joined + secret).encode()).hexdigest().upper()


def check_top(body: Any) -> None:
    """Map TOP's error envelope to retry (call limits, isp.*) or not (isv.*, signature, session)."""
    if not isinstance(body, dict) or "error_response" not in body:
        return
    err = body["error_response"] or {}
    code = str(err.get("code", ""))
    sub = str(err.get("sub_code") or "")
    text = f"TOP error {code} {err.get('msg', '')} {sub} {err.get('sub_msg') or ''}".strip()
    if code in RETRYABLE_CODES or sub.startswith("isp."):
        raise TransientError(text)
    raise PermanentError(text)


class TopOrderLine(BaseModel):
    model_config = ConfigDict(coerce_numbers_to_str=True)

    oid: str = Field(min_length=1, max_length=64)
    num_iid: str | None = None
    sku_id: str | None = None
    outer_sku_id: str | None = None
    title: str | None = None
    price: Fen
    num: int = Field(gt=0)
    payment: Fen
    refund_status: str | None = None


class TopOrders(BaseModel):
    order: list[TopOrderLine] = Field(default_factory=list)


class TopTrade(BaseModel):
    """One trade of `taobao.trades.sold.(increment.)get`."""

    model_config = ConfigDict(coerce_numbers_to_str=True)

    tid: str = Field(min_length=1, max_length=64, pattern=r"^\d+$")
    status: str
    buyer_open_uid: str = Field(min_length=1, max_length=128)
    buyer_nick: str | None = None
    receiver_name: str | None = None
    receiver_mobile: str | None = None
    receiver_state: str | None = None
    receiver_city: str | None = None
    receiver_district: str | None = None
    receiver_address: str | None = None
    receiver_zip: str | None = None
    oaid: str | None = None
    payment: Fen = Field(ge=0)
    post_fee: OptionalFen = None
    total_fee: Fen = Field(ge=0)
    discount_fee: OptionalFen = None
    created: LocalTime
    modified: LocalTime
    pay_time: OptionalLocalTime = None
    end_time: OptionalLocalTime = None
    orders: TopOrders = Field(default_factory=TopOrders)

    @field_validator("status")
    @classmethod
    def _known_status(cls, value: str) -> str:
        return require_known(value, TRADE_STATUS, "trade status")


class TopRefund(BaseModel):
    model_config = ConfigDict(coerce_numbers_to_str=True)

    refund_id: str = Field(min_length=1, max_length=64)
    tid: str = Field(min_length=1, max_length=64)
    oid: str | None = None
    refund_fee: Fen = Field(ge=0)
    reason: str | None = None
    status: str
    created: OptionalLocalTime = None
    modified: LocalTime

    @field_validator("status")
    @classmethod
    def _known_status(cls, value: str) -> str:
        if value not in REFUND_STATUSES:
            raise ValueError(f"unknown refund status {value!r}")
        return value


def normalize_trades(rows: list[Any], channel: str = "tmall") -> Batch:
    """Validate TOP trades and normalize them to buyer identities and orders with lines."""
    valid, bad = validate_rows(TopTrade, rows, channel=channel, entity="order", external_id=key_of("tid"))
    batch = trades_to_batch(valid, channel)
    batch.quarantined = bad
    return batch


def trades_to_batch(valid: list[tuple[TopTrade, Any]], channel: str = "tmall") -> Batch:
    """Validated trades (with their raw rows, or None on the fast path) to identities and orders."""
    batch = Batch()
    identities, orders = batch.identities, batch.orders
    for t, raw in valid:
        if raw is None:
            # Fast path: the page was validated straight from bytes; identity fields are strings, kept as sent.
            identity_raw = dict(zip(_IDENTITY_RAW_KEYS, _identity_raw_values(t), strict=True))
        else:
            identity_raw = {k: raw[k] for k in IDENTITY_KEYS if k in raw} | {"tid": raw.get("tid")}
        identities.append(
            PersonIdentity(
                channel,
                t.buyer_open_uid,
                t.modified,
                {
                    "name": t.receiver_name,
                    "phone": t.receiver_mobile,
                    "nickname": t.buyer_nick,
                    "province": t.receiver_state,
                    "city": t.receiver_city,
                    "district": t.receiver_district,
                    "address": t.receiver_address,
                    "postcode": t.receiver_zip,
                },
                identity_raw,
            )
        )
        lines = [
            OrderLineRecord(
                i,
                ln.outer_sku_id or ln.sku_id or ln.num_iid,
                ln.title,
                ln.num,
                ln.price,
                max(ln.price * ln.num - ln.payment, 0),
                ln.payment,
            )
            for i, ln in enumerate(t.orders.order, start=1)
        ]
        paid = t.pay_time is not None or t.status != "WAIT_BUYER_PAY"
        orders.append(
            OrderRecord(
                channel,
                t.tid,
                t.buyer_open_uid,
                None,
                TRADE_STATUS[t.status],
                t.status,
                t.total_fee,
                t.payment if paid else 0,
                t.discount_fee or 0,
                t.post_fee or 0,
                t.created,
                t.pay_time,
                t.modified,
                lines,
            )
        )
    return batch


class _Trades(BaseModel):
    trade: list[TopTrade] = Field(default_factory=list)


class _TradesPage(BaseModel):
    total_results: int | None = None
    trades: _Trades = Field(default_factory=_Trades)


class _IncrementEnvelope(BaseModel):
    trades_sold_increment_get_response: _TradesPage


_increment_adapter: TypeAdapter[_IncrementEnvelope] = TypeAdapter(_IncrementEnvelope)


@dataclass(slots=True)
class ValidatedPage:
    """A page whose every trade validated in one pass straight from the response bytes."""

    trades: list[TopTrade]


def parse_trades_page(content: bytes) -> Any:
    """Fast path: validate the whole page from bytes in pydantic-core (no intermediate dicts). Any
    error envelope or invalid row falls back to plain JSON, where rows are validated one by one."""
    if not content.startswith(b'{"error_response"'):
        try:
            page = _increment_adapter.validate_json(content)
        except ValidationError:
            pass
        else:
            return ValidatedPage(page.trades_sold_increment_get_response.trades.trade)
    return orjson.loads(content)


def normalize_refunds(rows: list[Any], channel: str = "tmall") -> Batch:
    valid, bad = validate_rows(
        TopRefund, rows, channel=channel, entity="refund", external_id=key_of("refund_id")
    )
    batch = Batch(quarantined=bad)
    for r, raw in valid:
        batch.refunds.append(
            RefundRecord(
                channel=channel,
                external_id=r.refund_id,
                order_external_id=r.tid,
                amount_fen=r.refund_fee,
                reason=r.reason,
                status=r.status,
                requested_at=r.created,
                source_updated_at=r.modified,
                raw=raw,
            )
        )
    return batch


class TaobaoConnector(Connector):
    """Tmall/Taobao trades (incremental by modified time) and refunds."""

    channel = "tmall"
    streams = ("trades", "refunds")
    path = "/taobao/router/rest"
    sign_method = "md5"

    def normalizers(self) -> dict[str, Callable[[list[Any]], Batch]]:
        return {"order": normalize_trades, "refund": normalize_refunds}

    async def call(
        self, method: str, params: dict[str, Any], parse: Callable[[bytes], Any] | None = None
    ) -> Any:
        """One signed gateway call; the timestamp and signature are fresh on every retry."""

        def signed() -> dict[str, Any]:
            p = {
                "method": method,
                "app_key": self.config.app_key,
                "session": self.config.token,
                "timestamp": datetime.now(GMT8).strftime("%Y-%m-%d %H:%M:%S"),
                "format": "json",
                "v": "2.0",
                "sign_method": self.sign_method,
                **{k: str(v) for k, v in params.items()},
            }
            p["sign"] = top_sign(p, self.config.app_secret, self.sign_method)
            return p

        return await self.client.request_json("POST", self.path, check=check_top, sign=signed, parse=parse)

    def pull(
        self, stream: str, watermark: dict[str, Any] | None, since: datetime | None
    ) -> AsyncIterator[Batch]:
        if stream == "trades":
            return self._windowed(
                stream, INCREMENT_METHOD, "trades_sold_increment_get_response",
                ("trades", "trade"), normalize_trades, watermark, since, {"fields": TRADE_FIELDS},
            )  # fmt: skip
        if stream == "refunds":
            return self._windowed(
                stream, "taobao.refunds.receive.get", "refunds_receive_get_response", ("refunds", "refund"),
                normalize_refunds, watermark, since,
                {"fields": "refund_id,tid,oid,refund_fee,reason,status,created,modified"},
            )  # fmt: skip
        raise ValueError(f"tmall has no stream {stream!r}")

    async def _windowed(
        self,
        stream: str,
        method: str,
        envelope: str,
        path: tuple[str, str],
        normalize: Callable[[list[Any]], Batch],
        watermark: dict[str, Any] | None,
        since: datetime | None,
        extra: dict[str, Any],
    ) -> AsyncIterator[Batch]:
        start, end = await self.start_time(watermark, since), await self.end_time()
        page_size = min(self.config.page_size, 100)
        windows = list(time_windows(start, end, self.settings.marketplace_window_minutes))

        def window_params(lo: datetime, hi: datetime) -> dict[str, Any]:
            return {"start_modified": gmt8_text(lo), "end_modified": gmt8_text(hi), **extra}

        def counter(lo: datetime, hi: datetime) -> Callable[[], Awaitable[tuple[datetime, datetime, int]]]:
            async def count() -> tuple[datetime, datetime, int]:
                body = await self.call(method, {**window_params(lo, hi), "page_no": 1, "page_size": 1})
                return lo, hi, int((body.get(envelope) or {}).get("total_results") or 0)

            return count

        def page(
            lo: datetime, hi: datetime, no: int, last: bool
        ) -> Callable[[], Awaitable[tuple[Batch, bool]]]:
            async def fetch() -> tuple[Batch, bool]:
                params = {**window_params(lo, hi), "page_no": no, "page_size": page_size}
                fast = parse_trades_page if method == INCREMENT_METHOD else None
                body = await self.call(method, params, parse=fast)
                if isinstance(body, ValidatedPage):
                    return trades_to_batch([(t, None) for t in body.trades]), last
                rows = ((body.get(envelope) or {}).get(path[0]) or {}).get(path[1]) or []
                return normalize(rows), last

            return fetch

        async def pages() -> AsyncIterator[Callable[[], Awaitable[tuple[Batch, bool]]]]:
            async for lo, hi, total in ordered_prefetch(
                (counter(lo, hi) for lo, hi in windows), self.settings.concurrency
            ):
                last_page = max(1, -(-total // page_size))
                for no in range(last_page, 0, -1):
                    yield page(lo, hi, no, last=no == 1)

        high = watermark_high(watermark)
        async for batch, last in ordered_prefetch(pages(), self.settings.concurrency):
            high = max_modified(batch, high)
            if last and high is not None:
                batch.watermarks.append(WatermarkAdvance(self.watermark_key(stream), watermark_at=high))
            yield batch
