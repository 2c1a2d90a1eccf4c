"""Canonical records: what every channel's payload is normalized to before it lands.

Channel payload models (in each connector) validate a row; their `to_canonical()` turns it into these.
Canonical records are plain slotted dataclasses: they are built by our own code from already validated
values, so a second validation pass would only cost time on the hot path.

Money is integer fen (parsed from yuan strings with Decimal, never float). Times are timezone-aware;
a time the source gives without a zone is Asia/Shanghai.
"""

from __future__ import annotations

import math
import re
import unicodedata
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from decimal import ROUND_HALF_UP, Decimal
from typing import Annotated, Any
from zoneinfo import ZoneInfo

from pydantic import AfterValidator, BeforeValidator

SHANGHAI = ZoneInfo("Asia/Shanghai")
# A fixed +08:00 is what the platforms mean by "GMT+8"; cheaper than zoneinfo on the hot path.
GMT8 = timezone(timedelta(hours=8))


def gmt8_text(value: datetime) -> str:
    """A time as TOP and JOS take it on the wire: `yyyy-MM-dd HH:mm:ss` in GMT+8."""
    return value.astimezone(GMT8).strftime("%Y-%m-%d %H:%M:%S")


ORDER_STATUSES = ("pending", "paid", "shipped", "completed", "cancelled", "refunded")
FEN = Decimal("0.01")


class _FenTable(dict[str, int]):
    """Amount strings already converted to fen: prices and fees repeat (a 10k-trade feed has ~3k distinct
    amounts among ~70k), so a lookup beats re-parsing. `PLAIN_FEN[text]` converts on a miss (with
    `yuan_to_fen`, raising as it does) and remembers plain 'yuan.fen' strings until the table is full."""

    def __missing__(self, key: str) -> int:
        return yuan_to_fen(key)


PLAIN_FEN = _FenTable()
_PLAIN_FEN_LIMIT = 65_536


def yuan_to_fen(value: Any) -> int:
    """'12.30' -> 1230 exactly. Rejects fractions of a fen; negatives are left to the model."""
    if type(value) is str:
        fen = PLAIN_FEN.get(value)
        if fen is not None:
            return fen
    if value is None or isinstance(value, bool):
        raise ValueError("amount is missing")
    if isinstance(value, int):
        return value * 100
    if isinstance(value, str):
        # Fast path for the platforms' plain 'yuan.fen' strings: integer arithmetic only, no Decimal.
        whole, dot, frac = value.partition(".")
        if (
            whole.isdigit()
            and whole.isascii()
            and (not dot or (frac.isdigit() and frac.isascii() and len(frac) <= 2))
        ):
            fen = int(whole) * 100 + (int(frac.ljust(2, "0")) if dot else 0)
            if len(PLAIN_FEN) < _PLAIN_FEN_LIMIT:
                PLAIN_FEN[value] = fen
            return fen
    if isinstance(value, str):
        # Full-width digits and points (１２．００) are the same amount typed on a Chinese keyboard: NFKC makes
        # them ASCII; anything else (exponents, thousands separators, currency signs) is refused, not guessed.
        text = unicodedata.normalize("NFKC", value).strip()
        if not _PLAIN_AMOUNT.match(text):
            raise ValueError(f"not a plain yuan amount: {_shown(value)} (digits with at most two decimals)")
        amount = Decimal(text)
    elif isinstance(value, float):
        # str() of a float is its shortest round-trip form, so 12.3 stays 12.30, never 12.2999...
        text = str(value)
        if not math.isfinite(value) or not _PLAIN_AMOUNT.match(text):
            raise ValueError(f"not a plain yuan amount: {_shown(value)}")
        amount = Decimal(text)
    else:
        raise ValueError(f"not a yuan amount: {type(value).__name__}")
    if len(text.partition(".")[2]) > 2:
        raise ValueError(f"amount {_shown(value)} has fractions of a fen (at most two decimals)")
    return int((amount * 100).to_integral_value(ROUND_HALF_UP))


_PLAIN_AMOUNT = re.compile(r"^-?[0-9]+(?:\.[0-9]+)?$")


def _shown(value: Any) -> str:
    """A value as an error message may show it: short, so a megabyte cell never reaches a log or a reason."""
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def non_negative(value: int) -> int:
    if value < 0:
        raise ValueError("amount must not be negative")
    return value


def optional_non_negative(value: int | None) -> int | None:
    return None if value is None else non_negative(value)


def aware(value: datetime) -> datetime:
    """Attach Asia/Shanghai to a naive time; keep an explicit zone as given."""
    return value.replace(tzinfo=GMT8) if value.tzinfo is None else value


def empty_to_none(value: Any) -> Any:
    return None if value == "" else value


# Payload field types: validated and converted in one pass by pydantic.
# Every amount column of ours is non-negative (the database checks it too): a negative fee is a bad row.
Fen = Annotated[int, BeforeValidator(yuan_to_fen), AfterValidator(non_negative)]
OptionalFen = Annotated[
    int | None,
    BeforeValidator(lambda v: None if v in (None, "") else yuan_to_fen(v)),
    AfterValidator(optional_non_negative),
]
LocalTime = Annotated[datetime, AfterValidator(aware)]
OptionalLocalTime = Annotated[
    datetime | None, BeforeValidator(empty_to_none), AfterValidator(lambda v: None if v is None else aware(v))
]


@dataclass(slots=True)
class PersonIdentity:
    """A person as one channel knows them. `attributes` uses the identity standardizer's input names:
    name, phone, email, birth_date, gender, id_number, member_no, wechat_unionid, wechat_openid,
    nickname, phone_verified, address, district, city, province, postcode."""

    channel: str
    external_id: str
    source_updated_at: datetime | None
    attributes: dict[str, Any]
    raw: dict[str, Any]
    # Seen only in passing (e.g. a pushed openid): created if missing, never overwrites a full identity.
    stub: bool = False
    # The record that carried this version (a marketplace's order id, e.g. {"tid": ...}): landed as part of
    # `raw`, but not part of what the identity says, so a repeat buyer's next order does not count as a change.
    event: dict[str, Any] | None = None


@dataclass(slots=True)
class OrderLineRecord:
    line_no: int
    sku: str | None
    title: str | None
    quantity: int
    unit_price_fen: int
    discount_fen: int
    amount_fen: int
    # The channel's own id for the line where it has one (Tmall's sub-order `oid`): what its refunds name.
    external_id: str | None = None


@dataclass(slots=True)
class OrderRecord:
    """An order with its lines; lines are replaced as a whole whenever the order lands."""

    channel: str
    external_id: str
    identity_external_id: str | None
    store_code: str | None
    status: str
    source_status: str | None
    total_fen: int
    paid_fen: int
    discount_fen: int
    shipping_fen: int
    placed_at: datetime
    paid_at: datetime | None
    source_updated_at: datetime
    lines: list[OrderLineRecord] = field(default_factory=list)
    currency: str = "CNY"
    # Store sales: the cashier, and the tenders as [{"type": ..., "amount_fen": ...}] (None elsewhere).
    cashier_code: str | None = None
    tenders: list[dict[str, Any]] | None = None


@dataclass(slots=True)
class RefundRecord:
    channel: str
    external_id: str
    order_external_id: str
    amount_fen: int
    reason: str | None
    status: str
    requested_at: datetime | None
    source_updated_at: datetime
    raw: dict[str, Any] = field(default_factory=dict)
    # The refunded line by the channel's id for it (`OrderLineRecord.external_id`); None for a whole order.
    line_external_id: str | None = None


@dataclass(slots=True)
class InteractionRecord:
    channel: str
    external_id: str
    identity_external_id: str | None
    type: str
    occurred_at: datetime
    summary: str | None
    payload: dict[str, Any]
    direction: str = "inbound"


@dataclass(slots=True)
class ConsentRecord:
    """Consent history is append-only; the same (identity, purpose, status, time) lands once."""

    channel: str
    identity_external_id: str
    purpose: str
    status: str
    recorded_at: datetime


@dataclass(slots=True)
class ProductRecord:
    sku: str
    title: str
    category: str | None
    list_price_fen: int | None


@dataclass(slots=True)
class StoreRecord:
    code: str
    name: str
    province: str | None = None
    city: str | None = None
    district: str | None = None
    address: str | None = None
    opened_on: date | None = None


@dataclass(slots=True)
class QuarantinedRow:
    """A row that failed validation: the raw payload and the reason naming the field."""

    channel: str
    entity: str
    external_id: str | None
    raw: dict[str, Any]
    reason: str
    errors: list[dict[str, Any]]
    # Where to read the row again when its payload itself was bad ({"stream", "since", "external_id"}); None:
    # re-validating the stored payload (after a mapping change) is the way back.
    refetch: dict[str, Any] | None = None


@dataclass(slots=True)
class WatermarkAdvance:
    """Where the connector's next pull starts; written in the transaction that lands its batch."""

    connector: str
    watermark_at: datetime | None = None
    cursor: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class Batch:
    """What a connector yields and the lander writes in one transaction."""

    identities: list[PersonIdentity] = field(default_factory=list)
    orders: list[OrderRecord] = field(default_factory=list)
    refunds: list[RefundRecord] = field(default_factory=list)
    interactions: list[InteractionRecord] = field(default_factory=list)
    consents: list[ConsentRecord] = field(default_factory=list)
    products: list[ProductRecord] = field(default_factory=list)
    stores: list[StoreRecord] = field(default_factory=list)
    quarantined: list[QuarantinedRow] = field(default_factory=list)
    watermarks: list[WatermarkAdvance] = field(default_factory=list)
    # Files of the POS drop folder fully contained in this batch: moved to done/ after the commit.
    files_done: list[str] = field(default_factory=list)
    # Rows the channel said it will send, where it tells (TOP and JD count each window): the progress total.
    expected: int = 0

    def size(self) -> int:
        return (
            len(self.orders)
            + len(self.refunds)
            + len(self.interactions)
            + len(self.products)
            + len(self.stores)
            + len(self.quarantined)
            + (len(self.identities) if not (self.orders or self.interactions) else 0)
        )

    def extend(self, other: Batch) -> None:
        self.identities.extend(other.identities)
        self.orders.extend(other.orders)
        self.refunds.extend(other.refunds)
        self.interactions.extend(other.interactions)
        self.consents.extend(other.consents)
        self.products.extend(other.products)
        self.stores.extend(other.stores)
        self.quarantined.extend(other.quarantined)
        self.watermarks.extend(other.watermarks)
        self.files_done.extend(other.files_done)
        self.expected += other.expected
