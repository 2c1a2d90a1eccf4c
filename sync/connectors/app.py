"""Own app / site / mini-program: members, orders and browsing events (Bearer token, cursor paging).

Members and orders page with `updated_since` + `next_cursor`, oldest change first: after each landed
batch the watermark moves to the last `updated_at` it held (ties are re-read, which is harmless because
landing is idempotent). Events are append-only and page by `since_id`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from datetime import date, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, StrictInt, field_validator

from sync.canonical import (
    Batch,
    ConsentRecord,
    InteractionRecord,
    LocalTime,
    OptionalLocalTime,
    OrderLineRecord,
    OrderRecord,
    PersonIdentity,
    WatermarkAdvance,
)
from sync.connectors.base import Connector
from sync.validation import key_of, require_known, validate_rows

APP_ORDER_STATUS = {
    "pending_payment": "pending",
    "paid": "paid",
    "shipped": "shipped",
    "completed": "completed",
    # A refund being processed does not undo the sale until it is done.
    "refunding": "completed",
    "refunded": "refunded",
    "cancelled": "cancelled",
}


class AppMember(BaseModel):
    """A member registration or profile update. The member system verifies mobiles by SMS code at
    registration, so a mobile it sends is a verified one."""

    model_config = ConfigDict(coerce_numbers_to_str=True)

    member_no: str = Field(min_length=1, max_length=64)
    name: str | None = None
    nickname: str | None = None
    mobile: str | None = Field(None, pattern=r"^\+?[0-9][0-9 \-]{6,19}$")
    email: str | None = None
    id_number: str | None = None
    wechat_unionid: str | None = Field(None, max_length=64)
    wechat_openid: str | None = Field(None, max_length=64)
    birthday: date | None = None
    gender: str | None = None
    province: str | None = None
    city: str | None = None
    district: str | None = None
    address: str | None = None
    tier: str | None = None
    points: int | None = None
    marketing_opt_in: bool | None = None
    registered_at: OptionalLocalTime = None
    updated_at: LocalTime

    @field_validator("birthday", "mobile", "email", "id_number", mode="before")
    @classmethod
    def _blank(cls, value: Any) -> Any:
        return None if value == "" else value


class AppOrderLine(BaseModel):
    """Our own API sends money as integer fen: strict, so '12.5' is refused rather than guessed at."""

    line_no: int = Field(ge=1)
    sku: str | None = None
    title: str | None = None
    quantity: StrictInt = Field(gt=0)
    unit_price_fen: StrictInt = Field(ge=0)
    discount_fen: StrictInt = Field(0, ge=0)
    amount_fen: StrictInt = Field(ge=0)


class AppOrder(BaseModel):
    order_no: str = Field(min_length=1, max_length=64)
    member_no: str | None = Field(None, max_length=64)
    status: str
    currency: str = Field("CNY", min_length=3, max_length=3)
    total_fen: StrictInt = Field(ge=0)
    discount_fen: StrictInt = Field(0, ge=0)
    shipping_fen: StrictInt = Field(0, ge=0)
    paid_fen: StrictInt = Field(0, ge=0)
    created_at: LocalTime
    paid_at: OptionalLocalTime = None
    updated_at: LocalTime
    lines: list[AppOrderLine] = Field(default_factory=list)

    @field_validator("status")
    @classmethod
    def _known_status(cls, value: str) -> str:
        return require_known(value, APP_ORDER_STATUS, "order status")


class AppEvent(BaseModel):
    """A browsing event: page_view, add_to_cart, search, ..."""

    model_config = ConfigDict(coerce_numbers_to_str=True)

    id: str = Field(min_length=1, max_length=100)
    member_no: str | None = Field(None, max_length=64)
    type: str = Field(min_length=1, max_length=32)
    occurred_at: LocalTime
    source: str | None = None
    session_id: str | None = None
    sku: str | None = None
    keyword: str | None = None


def normalize_members(rows: list[Any], channel: str = "app") -> Batch:
    valid, bad = validate_rows(
        AppMember, rows, channel=channel, entity="customer", external_id=key_of("member_no")
    )
    batch = Batch(quarantined=bad)
    for m, raw in valid:
        batch.identities.append(
            PersonIdentity(
                channel=channel,
                external_id=m.member_no,
                source_updated_at=m.updated_at,
                attributes={
                    "member_no": m.member_no,
                    "name": m.name,
                    "nickname": m.nickname,
                    "phone": m.mobile,
                    "phone_verified": "true" if m.mobile else "false",
                    "email": m.email,
                    "id_number": m.id_number,
                    "wechat_unionid": m.wechat_unionid,
                    "wechat_openid": m.wechat_openid,
                    "birth_date": m.birthday.isoformat() if m.birthday else None,
                    "gender": m.gender,
                    "province": m.province,
                    "city": m.city,
                    "district": m.district,
                    "address": m.address,
                },
                raw=raw,
            )
        )
        if m.marketing_opt_in is not None:
            batch.consents.append(
                ConsentRecord(
                    channel=channel,
                    identity_external_id=m.member_no,
                    purpose="marketing_sms",
                    status="granted" if m.marketing_opt_in else "withdrawn",
                    recorded_at=m.updated_at,
                )
            )
    return batch


def normalize_orders(rows: list[Any], channel: str = "app") -> Batch:
    valid, bad = validate_rows(
        AppOrder, rows, channel=channel, entity="order", external_id=key_of("order_no")
    )
    batch = Batch(quarantined=bad)
    for o, _raw in valid:
        batch.orders.append(
            OrderRecord(
                channel=channel,
                external_id=o.order_no,
                identity_external_id=o.member_no,
                store_code=None,
                status=APP_ORDER_STATUS[o.status],
                source_status=o.status,
                total_fen=o.total_fen,
                paid_fen=o.paid_fen,
                discount_fen=o.discount_fen,
                shipping_fen=o.shipping_fen,
                currency=o.currency,
                placed_at=o.created_at,
                paid_at=o.paid_at,
                source_updated_at=o.updated_at,
                lines=[
                    OrderLineRecord(
                        ln.line_no,
                        ln.sku,
                        ln.title,
                        ln.quantity,
                        ln.unit_price_fen,
                        ln.discount_fen,
                        ln.amount_fen,
                    )
                    for ln in o.lines
                ],
            )
        )
    return batch


def normalize_events(rows: list[Any], channel: str = "app") -> Batch:
    valid, bad = validate_rows(
        AppEvent, rows, channel=channel, entity="interaction", external_id=key_of("id")
    )
    batch = Batch(quarantined=bad)
    for e, raw in valid:
        batch.interactions.append(
            InteractionRecord(
                channel=channel,
                external_id=f"event:{e.id}",
                identity_external_id=e.member_no,
                type=e.type,
                occurred_at=e.occurred_at,
                summary=e.keyword or e.sku,
                payload=raw,
            )
        )
    return batch


class AppConnector(Connector):
    """The retailer's own member system."""

    channel = "app"
    streams = ("members", "orders", "events")

    def default_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.config.token}"}

    def normalizers(self) -> dict[str, Callable[[list[Any]], Batch]]:
        return {"customer": normalize_members, "order": normalize_orders, "interaction": normalize_events}

    def pull(
        self, stream: str, watermark: dict[str, Any] | None, since: datetime | None
    ) -> AsyncIterator[Batch]:
        if stream == "members":
            return self._updated_since("/app/api/v1/members", stream, normalize_members, watermark, since)
        if stream == "orders":
            return self._updated_since("/app/api/v1/orders", stream, normalize_orders, watermark, since)
        if stream == "events":
            return self._events(watermark)
        raise ValueError(f"app has no stream {stream!r}")

    def full_first_pull(self, stream: str) -> bool:
        return stream == "members"

    async def _updated_since(
        self,
        path: str,
        stream: str,
        normalize: Callable[[list[Any]], Batch],
        watermark: dict[str, Any] | None,
        since: datetime | None,
    ) -> AsyncIterator[Batch]:
        # Members' first pull is complete (a member registered years ago is still a customer); orders'
        # first pull goes back `initial_lookback_days`.
        full = stream == "members" and since is None and _watermark_at(watermark) is None
        start = await self.start_time(watermark, since)
        cursor: str | None = None
        key = self.watermark_key(stream)
        while True:
            params: dict[str, Any] = {"limit": self.config.page_size}
            if not full:
                params["updated_since"] = start.isoformat()
            if cursor:
                params["cursor"] = cursor
            body = await self.client.request_json("GET", path, params=params)
            rows = body.get("data") or []
            batch = normalize(rows)
            cursor = body.get("next_cursor")
            newest = _max_updated(rows)
            if newest is not None or cursor is None:
                # Oldest-change-first: everything up to the newest row of this page has been read.
                high = newest or _watermark_at(watermark) or (None if full else start)
                if high is not None:
                    batch.watermarks.append(WatermarkAdvance(key, watermark_at=high))
            yield batch
            if not cursor or not rows:
                return

    async def _events(self, watermark: dict[str, Any] | None) -> AsyncIterator[Batch]:
        since_id = (watermark or {}).get("cursor") or "0"
        key = self.watermark_key("events")
        while True:
            body = await self.client.request_json(
                "GET",
                "/app/api/v1/events",
                params={"since_id": since_id, "limit": min(self.config.page_size * 2, 1000)},
            )
            rows = body.get("data") or []
            if not rows:
                return
            batch = normalize_events(rows)
            last = max((_int(r.get("id")) for r in rows if isinstance(r, dict)), default=_int(since_id))
            since_id = str(max(last, _int(since_id)))
            batch.watermarks.append(WatermarkAdvance(key, cursor=since_id))
            yield batch
            if not body.get("has_more"):
                return


def _int(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


def _watermark_at(watermark: dict[str, Any] | None) -> datetime | None:
    return (watermark or {}).get("watermark_at")


def _max_updated(rows: list[Any]) -> datetime | None:
    """The newest parseable `updated_at` of a page (a malformed row is quarantined, not a watermark)."""
    from pydantic import TypeAdapter

    adapter: TypeAdapter[datetime] = TypeAdapter(LocalTime)
    newest: datetime | None = None
    for r in rows:
        if isinstance(r, dict) and r.get("updated_at"):
            try:
                t = adapter.validate_python(r["updated_at"])
            except ValueError:
                continue
            if newest is None or t > newest:
                newest = t
    return newest
