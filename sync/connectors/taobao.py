"""Tmall / Taobao Open Platform (TOP): incremental trades and refunds, signed form posts to /router/rest.

Trades come from `taobao.trades.sold.increment.get` in modified-time windows (≤ 1 day). Inside a window
results are newest-modified first, so pages are read from the last one backwards: a trade modified while
we page moves out of the window and shifts later items to lower page numbers, which we have not read yet.
The watermark (the newest `modified` landed) advances only with the batch holding a window's last page;
the next run re-reads from it, inclusive, so a tie at the boundary is read twice and landed once.

A shop connected for the first time (no watermark, no --since) is read in full instead with
`taobao.trades.sold.get` by creation time over the look-back, in windows of a week rather than the
increment method's one day (13 count calls for 90 days instead of 90 or more). Its watermark is the pull's
end time, written with the last page: everything modified after it is the next incremental run's. A killed
full pull leaves no watermark, so the next run pulls in full again (landing is idempotent). Trades created
before the look-back but modified inside it are not in a full pull; `--since` reads them by modified time.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, NotRequired

import orjson
from pydantic import BaseModel, ConfigDict, Field, Strict, TypeAdapter, field_validator
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
FULL_METHOD = "taobao.trades.sold.get"
FULL_WINDOW_MINUTES = 7 * 24 * 60
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
    """Validated trades (with their raw rows) to identities and orders."""
    batch = Batch()
    identities, orders = batch.identities, batch.orders
    for t, raw in valid:
        identity_raw = {k: raw[k] for k in IDENTITY_KEYS if k in raw}
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
                event={"tid": raw.get("tid")},
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
                ln.oid,
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


# The fast path: a whole `taobao.trades.sold.increment.get` page validated from bytes by pydantic-core alone,
# with the same constraints as TopTrade in pydantic-core's own types, so that no Python callback runs per
# field (those callbacks cost more than the rest of the validation). What the callbacks did is done after,
# in `fast_trades_to_batch`: the status is looked up in TRADE_STATUS as it is then (KeyError if unknown);
# amounts, accepted only as plain 'yuan' or 'yuan.fen' strings, are converted by `PLAIN_FEN`; times,
# accepted only as TOP's zoneless `yyyy-MM-dd HH:mm:ss`, are parsed in GMT+8 as `aware` does (ValueError
# for a date that does not exist), by `datetime.fromisoformat`: a fifth of the cost of pydantic's datetime
# plus `replace(tzinfo=...)`. So the fast path accepts a subset of what TopTrade accepts (no negative or
# exotic amounts, no amounts sent as numbers, no empty strings, no times with a zone) and means the same
# by it; a page with anything else goes through TopTrade row by row, and the quarantine reasons are
# TopTrade's. TypedDicts rather than models: a dict costs much less to build than a model instance.
# tests/sync/test_pull_fast_path.py checks that both paths give the same records.
_PlainAmount = Annotated[str, Strict(), Field(pattern=r"^[0-9]+(?:\.[0-9]{1,2})?$")]
_PlainTime = Annotated[
    str, Strict(), Field(pattern=r"^[0-9]{4}-[0-9]{2}-[0-9]{2} [0-9]{2}:[0-9]{2}:[0-9]{2}$")
]
# Text only as JSON strings: TopTrade's coerce_numbers_to_str turns a JSON float into text differently when
# validating JSON ('1000') than Python values (str(1000.0)). Integers are taken where TOP sends them (ids),
# within the range orjson (the slow path) reads, and turned into text after where they land.
_Text = Annotated[str, Strict()]
_IdInt = Annotated[int, Strict(), Field(ge=-(2**63), lt=2**64)]


class _FastLine(TypedDict):
    oid: Annotated[str, Strict(), Field(min_length=1, max_length=64)] | _IdInt
    num_iid: NotRequired[_Text | _IdInt | None]
    sku_id: NotRequired[_Text | None]
    outer_sku_id: NotRequired[_Text | None]
    title: NotRequired[_Text | None]
    price: _PlainAmount
    num: Annotated[int, Field(gt=0, lt=2**63)]
    payment: _PlainAmount
    refund_status: NotRequired[_Text | None]


class _FastOrders(TypedDict):
    order: NotRequired[list[_FastLine]]


class _FastTrade(TypedDict):
    tid: (
        Annotated[str, Strict(), Field(min_length=1, max_length=64, pattern=r"^\d+$")]
        | Annotated[int, Strict(), Field(ge=0, lt=2**64)]
    )
    status: _Text  # looked up in TRADE_STATUS (as it is now) in fast_trades_to_batch
    buyer_open_uid: Annotated[str, Strict(), Field(min_length=1, max_length=128)]
    buyer_nick: NotRequired[_Text | None]
    receiver_name: NotRequired[_Text | None]
    receiver_mobile: NotRequired[_Text | None]
    receiver_state: NotRequired[_Text | None]
    receiver_city: NotRequired[_Text | None]
    receiver_district: NotRequired[_Text | None]
    receiver_address: NotRequired[_Text | None]
    receiver_zip: NotRequired[_Text | None]
    oaid: NotRequired[_Text | None]
    payment: _PlainAmount
    post_fee: NotRequired[_PlainAmount | None]
    total_fee: _PlainAmount
    discount_fee: NotRequired[_PlainAmount | None]
    created: _PlainTime
    modified: _PlainTime
    pay_time: NotRequired[_PlainTime | None]
    end_time: NotRequired[Annotated[datetime, Strict()] | None]  # not landed: checked only
    orders: NotRequired[_FastOrders]


class _FastTrades(TypedDict):
    trade: NotRequired[list[_FastTrade]]


class _FastPage(TypedDict):
    trades: NotRequired[_FastTrades]


class _FastEnvelope(TypedDict):
    trades_sold_increment_get_response: _FastPage


_fast_adapter: TypeAdapter[_FastEnvelope] = TypeAdapter(_FastEnvelope)


@dataclass(slots=True)
class ValidatedPage:
    """A page whose every trade validated in one pass straight from the response bytes, normalized."""

    batch: Batch


def parse_trades_page(content: bytes) -> Any:
    """Fast path: validate the whole page from bytes in pydantic-core (no intermediate dicts) and normalize
    it. An error envelope, or any row outside the fast schema, falls back to plain JSON, where rows are
    validated one by one with TopTrade."""
    if not content.startswith(b'{"error_response"'):
        try:
            page = _fast_adapter.validate_json(content)
            trades = page["trades_sold_increment_get_response"].get("trades", {}).get("trade", [])
            return ValidatedPage(fast_trades_to_batch(trades))
        except (ValueError, KeyError):
            # ValidationError is a ValueError: a row outside the fast schema, a time that is no date, or
            # (KeyError) a status TRADE_STATUS does not map.
            pass
    return orjson.loads(content)


def _text(value: str | int | None) -> str | None:
    return str(value) if isinstance(value, int) else value


def fast_trades_to_batch(trades: list[_FastTrade], channel: str = "tmall") -> Batch:
    """`trades_to_batch` for a page the fast path validated: the same records, with amounts converted here
    (`PLAIN_FEN`) and times parsed here in GMT+8 (ValueError for a time that is no date, KeyError for a
    status TRADE_STATUS does not map). The identity raw holds every identity field (None when not sent), its
    event the tid."""
    batch = Batch()
    identities, orders = batch.identities, batch.orders
    fen = PLAIN_FEN
    status_of = TRADE_STATUS
    parse_time = datetime.fromisoformat
    for t in trades:
        get: Any = t.get  # one bound method for the dozen optional keys
        tid = str(t["tid"])  # a JSON integer as TOP sends it, or a string (str() returns it as is)
        uid = t["buyer_open_uid"]
        nick = get("buyer_nick")
        name = get("receiver_name")
        mobile = get("receiver_mobile")
        state = get("receiver_state")
        city = get("receiver_city")
        district = get("receiver_district")
        address = get("receiver_address")
        postcode = get("receiver_zip")
        created = parse_time(t["created"] + "+08:00")
        modified = parse_time(t["modified"] + "+08:00")
        pay_time = get("pay_time")
        if pay_time is not None:
            pay_time = parse_time(pay_time + "+08:00")
        identities.append(
            PersonIdentity(
                channel,
                uid,
                modified,
                {
                    "name": name,
                    "phone": mobile,
                    "nickname": nick,
                    "province": state,
                    "city": city,
                    "district": district,
                    "address": address,
                    "postcode": postcode,
                },
                {
                    "buyer_open_uid": uid,
                    "buyer_nick": nick,
                    "receiver_name": name,
                    "receiver_mobile": mobile,
                    "receiver_state": state,
                    "receiver_city": city,
                    "receiver_district": district,
                    "receiver_address": address,
                    "receiver_zip": postcode,
                    "oaid": get("oaid"),
                },
                False,
                {"tid": tid},
            )
        )
        lines = []
        line_no = 0
        for ln in get("orders", {}).get("order", ()):
            line_no += 1
            lget: Any = ln.get
            price = fen[ln["price"]]
            num = ln["num"]
            amount = fen[ln["payment"]]
            discount = price * num - amount
            lines.append(
                OrderLineRecord(
                    line_no,
                    lget("outer_sku_id") or lget("sku_id") or _text(lget("num_iid")),
                    lget("title"),
                    num,
                    price,
                    discount if discount > 0 else 0,
                    amount,
                    str(ln["oid"]),
                )
            )
        status = t["status"]
        discount_fee = get("discount_fee")
        post_fee = get("post_fee")
        orders.append(
            OrderRecord(
                channel,
                tid,
                uid,
                None,
                status_of[status],
                status,
                fen[t["total_fee"]],
                fen[t["payment"]] if pay_time is not None or status != "WAIT_BUYER_PAY" else 0,
                fen[discount_fee] if discount_fee is not None else 0,
                fen[post_fee] if post_fee is not None else 0,
                created,
                pay_time,
                modified,
                lines,
            )
        )
    return batch


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
                line_external_id=r.oid,
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
        if stream == "trades" and watermark_high(watermark) is None and since is None:
            return self._windowed(
                stream, FULL_METHOD, "trades_sold_get_response", ("trades", "trade"), normalize_trades,
                watermark, since, {"fields": TRADE_FIELDS}, full=True,
            )  # fmt: skip
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
        full: bool = False,
    ) -> AsyncIterator[Batch]:
        start, end = await self.start_time(watermark, since), await self.end_time()
        page_size = min(self.config.page_size, 100)
        minutes = FULL_WINDOW_MINUTES if full else self.settings.marketplace_window_minutes
        windows = list(time_windows(start, end, minutes))
        first, last_key = ("start_created", "end_created") if full else ("start_modified", "end_modified")
        final = windows[-1] if windows else None

        def window_params(lo: datetime, hi: datetime) -> dict[str, Any]:
            return {first: gmt8_text(lo), last_key: gmt8_text(hi), **extra}

        def counter(lo: datetime, hi: datetime) -> Callable[[], Awaitable[tuple[datetime, datetime, int]]]:
            async def count() -> tuple[datetime, datetime, int]:
                body = await self.call(method, {**window_params(lo, hi), "page_no": 1, "page_size": 1})
                return lo, hi, int((body.get(envelope) or {}).get("total_results") or 0)

            return count

        def page(
            lo: datetime, hi: datetime, no: int, last: bool, expected: int = 0
        ) -> Callable[[], Awaitable[tuple[Batch, bool, bool]]]:
            async def fetch() -> tuple[Batch, bool, bool]:
                params = {**window_params(lo, hi), "page_no": no, "page_size": page_size}
                fast = parse_trades_page if method == INCREMENT_METHOD else None
                body = await self.call(method, params, parse=fast)
                if isinstance(body, ValidatedPage):
                    batch = body.batch
                else:
                    rows = ((body.get(envelope) or {}).get(path[0]) or {}).get(path[1]) or []
                    batch = normalize(rows)
                batch.expected = expected
                return batch, last, last and (lo, hi) == final

            return fetch

        async def pages() -> AsyncIterator[Callable[[], Awaitable[tuple[Batch, bool, bool]]]]:
            async for lo, hi, total in ordered_prefetch(
                (counter(lo, hi) for lo, hi in windows), self.settings.concurrency
            ):
                last_page = max(1, -(-total // page_size))
                for no in range(last_page, 0, -1):
                    # The window's count rides on its first page read: the progress bar's total grows by it.
                    yield page(lo, hi, no, last=no == 1, expected=total if no == last_page else 0)

        high = watermark_high(watermark)
        async for batch, last, done in ordered_prefetch(pages(), self.settings.concurrency):
            if full:
                # Trades read late in a full pull may carry modifications newer than ones read early: only
                # the pull's end is a point before which everything was seen, once the last window is in.
                if done:
                    batch.watermarks.append(WatermarkAdvance(self.watermark_key(stream), watermark_at=end))
                yield batch
                continue
            high = max_modified(batch, high)
            if last and high is not None:
                batch.watermarks.append(WatermarkAdvance(self.watermark_key(stream), watermark_at=high))
            yield batch
