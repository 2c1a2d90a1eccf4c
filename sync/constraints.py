"""The database's constraints, checked on canonical records before they land.

Every channel's records pass here (the lander runs it first), whatever path built them (a connector's
fast path, its pydantic models, a quarantine replay), so no row can fail a batch on a constraint: a
record that would break one (a width, a non-negative amount, a positive quantity, a time out of bounds,
a duplicate line number, a value the column cannot hold) is moved to quarantine with a reason naming
the field, and the rest of the batch lands.

Text is cleaned first, the same way every time: control characters (NUL among them, which PostgreSQL
refuses in text and JSON) are removed, and identifiers and codes are NFKC-normalized (full-width
ASCII typed on a Chinese keyboard becomes plain ASCII); free text (titles, summaries) keeps its form
but loses control characters other than tab and newline. Nothing is cut to fit: a value wider than its
column is a bad row.
"""

from __future__ import annotations

import dataclasses
import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any, TypeVar

from sync.canonical import (
    Batch,
    ConsentRecord,
    InteractionRecord,
    OrderLineRecord,
    OrderRecord,
    PersonIdentity,
    ProductRecord,
    QuarantinedRow,
    RefundRecord,
    StoreRecord,
)

# C0 and C1 control characters; free text keeps tab, newline and carriage return.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_CONTROL_IN_TEXT = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
INT32_MAX = 2**31 - 1
BIGINT_MAX = 2**63 - 1


@dataclass(frozen=True, slots=True)
class TimeBounds:
    """Times a record may carry: not before `earliest`, not more than `future` ahead of the clock."""

    earliest: datetime = datetime(2000, 1, 1, tzinfo=UTC)
    future: timedelta = timedelta(days=1)


class Violation(ValueError):
    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"field `{field}`: {message}")
        self.field = field
        self.message = message


def clean_code(value: str) -> str:
    """An identifier or code: NFKC, no control characters."""
    if value.isascii():
        return _CONTROL.sub("", value) if _CONTROL.search(value) else value
    if not unicodedata.is_normalized("NFKC", value):
        value = unicodedata.normalize("NFKC", value)
    return _CONTROL.sub("", value)


def clean_text(value: str) -> str:
    """Free text: its own form, minus control characters other than tab and newline."""
    return _CONTROL_IN_TEXT.sub("", value) if _CONTROL_IN_TEXT.search(value) else value


def _code(record: Any, name: str, width: int, *, required: bool = False) -> None:
    value = getattr(record, name)
    if value is None:
        if required:
            raise Violation(name, "is missing")
        return
    if not isinstance(value, str):
        value = str(value)
    cleaned = clean_code(value)
    if cleaned is not value:
        setattr(record, name, cleaned)
    if required and not cleaned:
        raise Violation(name, "is empty")
    if len(cleaned) > width:
        raise Violation(name, f"is {len(cleaned)} characters, the column holds {width}")


def _text(record: Any, name: str, width: int | None) -> None:
    value = getattr(record, name)
    if value is None:
        return
    if not isinstance(value, str):
        value = str(value)
    cleaned = clean_text(value)
    if cleaned is not value:
        setattr(record, name, cleaned)
    if width is not None and len(cleaned) > width:
        raise Violation(name, f"is {len(cleaned)} characters, the column holds {width}")


def _amount(name: str, value: int | None, *, limit: int = BIGINT_MAX) -> None:
    if value is None:
        return
    if value < 0:
        raise Violation(name, "amount must not be negative")
    if value > limit:
        raise Violation(name, "amount is out of range")


def _time(name: str, value: datetime | None, bounds: TimeBounds, now: datetime) -> None:
    if value is None:
        return
    if value.tzinfo is None:
        raise Violation(name, "time has no zone")
    if value < bounds.earliest:
        raise Violation(
            name, f"{value:%Y-%m-%d} is before the earliest accepted date {bounds.earliest:%Y-%m-%d}"
        )
    if value > now + bounds.future:
        raise Violation(name, f"{value:%Y-%m-%d} is in the future")


def _json_clean(value: Any) -> Any:
    """A JSON-like value without NUL characters (jsonb refuses them), rebuilt only where it has one."""
    if isinstance(value, str):
        return value.replace("\x00", "") if "\x00" in value else value
    if isinstance(value, dict):
        return {_json_clean(k): _json_clean(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_clean(v) for v in value]
    return value


def _has_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_has_nul(k) or _has_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_nul(v) for v in value)
    return False


def check_identity(p: PersonIdentity) -> None:
    _code(p, "channel", 32, required=True)
    _code(p, "external_id", 128, required=True)
    attributes = p.attributes
    for key, value in attributes.items():
        if isinstance(value, str):
            cleaned = clean_code(value)
            if cleaned is not value:
                attributes[key] = cleaned
    if _has_nul(p.raw):
        p.raw = _json_clean(p.raw)
    if p.event is not None and _has_nul(p.event):
        p.event = _json_clean(p.event)


def check_order(o: OrderRecord, bounds: TimeBounds, now: datetime) -> None:
    _code(o, "channel", 32, required=True)
    _code(o, "external_id", 64, required=True)
    _code(o, "identity_external_id", 128)
    _code(o, "store_code", 32)
    _code(o, "status", 32, required=True)
    _code(o, "source_status", 40)
    _code(o, "currency", 3, required=True)
    _code(o, "cashier_code", 64)
    _amount("total_fen", o.total_fen)
    _amount("paid_fen", o.paid_fen)
    _amount("discount_fen", o.discount_fen)
    _amount("shipping_fen", o.shipping_fen)
    _time("placed_at", o.placed_at, bounds, now)
    _time("paid_at", o.paid_at, bounds, now)
    _time("source_updated_at", o.source_updated_at, bounds, now)
    numbers: set[int] = set()
    for i, ln in enumerate(o.lines):
        try:
            check_line(ln)
        except Violation as exc:
            raise Violation(f"lines.{i}.{exc.field}", exc.message) from None
        if ln.line_no in numbers:
            raise Violation(f"lines.{i}.line_no", f"line number {ln.line_no} appears twice in the order")
        numbers.add(ln.line_no)
    if o.tenders:
        for i, t in enumerate(o.tenders):
            amount = t.get("amount_fen")
            if not isinstance(amount, int):
                raise Violation(f"tenders.{i}.amount", "is not an amount")
            _amount(f"tenders.{i}.amount", amount)
            kind = t.get("type")
            if not isinstance(kind, str) or not kind or len(kind) > 32:
                raise Violation(f"tenders.{i}.type", "is not a tender type")


def check_line(ln: OrderLineRecord) -> None:
    if not 1 <= ln.line_no <= INT32_MAX:
        raise Violation("line_no", "line number must be positive")
    if not 1 <= ln.quantity <= INT32_MAX:
        raise Violation("quantity", "quantity must be positive")
    _code(ln, "sku", 64)
    _text(ln, "title", 300)
    _code(ln, "external_id", 64)
    _amount("unit_price_fen", ln.unit_price_fen)
    _amount("discount_fen", ln.discount_fen)
    _amount("amount_fen", ln.amount_fen)


def check_refund(r: RefundRecord, bounds: TimeBounds, now: datetime) -> None:
    _code(r, "channel", 32, required=True)
    _code(r, "external_id", 64, required=True)
    _code(r, "order_external_id", 64, required=True)
    _code(r, "line_external_id", 64)
    _code(r, "status", 40, required=True)
    _text(r, "reason", 300)
    _amount("amount_fen", r.amount_fen)
    _time("requested_at", r.requested_at, bounds, now)
    _time("source_updated_at", r.source_updated_at, bounds, now)


def check_interaction(i: InteractionRecord, bounds: TimeBounds, now: datetime) -> None:
    _code(i, "channel", 32, required=True)
    _code(i, "external_id", 128, required=True)
    _code(i, "identity_external_id", 128)
    _code(i, "type", 32, required=True)
    if i.direction not in ("inbound", "outbound"):
        raise Violation("direction", "must be inbound or outbound")
    _text(i, "summary", None)
    _time("occurred_at", i.occurred_at, bounds, now)
    if _has_nul(i.payload):
        i.payload = _json_clean(i.payload)


def check_consent(c: ConsentRecord, bounds: TimeBounds, now: datetime) -> None:
    _code(c, "identity_external_id", 128, required=True)
    _code(c, "purpose", 32, required=True)
    if c.status not in ("granted", "withdrawn"):
        raise Violation("status", "must be granted or withdrawn")
    _time("recorded_at", c.recorded_at, bounds, now)


def check_product(p: ProductRecord) -> None:
    _code(p, "sku", 64, required=True)
    _text(p, "title", 300)
    if not p.title:
        raise Violation("title", "is missing")
    _text(p, "category", 100)
    _amount("list_price_fen", p.list_price_fen)


def check_store(s: StoreRecord) -> None:
    _code(s, "code", 32, required=True)
    _text(s, "name", 200)
    for name in ("province", "city", "district"):
        _text(s, name, 32)
    _text(s, "address", 300)


def record_payload(record: Any) -> dict[str, Any]:
    """A canonical record as JSON-ready data (what quarantine keeps of a record that failed a check)."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(record):
        value = getattr(record, f.name)
        if isinstance(value, list) and value and dataclasses.is_dataclass(value[0]):
            value = [record_payload(v) for v in value]
        elif isinstance(value, datetime | date):
            value = value.isoformat()
        out[f.name] = value
    return _json_clean(out)


KINDS: dict[str, type[Any]] = {
    "identity": PersonIdentity,
    "order": OrderRecord,
    "refund": RefundRecord,
    "interaction": InteractionRecord,
    "consent": ConsentRecord,
    "product": ProductRecord,
    "store": StoreRecord,
}
RECORD_ENTITY_PREFIX = "record:"


def record_from_payload(kind: str, payload: dict[str, Any]) -> Any:
    """The canonical record `record_payload` kept (for replay after a mapping or bounds change)."""
    cls = KINDS[kind]
    values: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if f.name not in payload:
            continue
        value = payload[f.name]
        if f.name == "lines" and isinstance(value, list):
            value = [OrderLineRecord(**v) for v in value]
        elif isinstance(value, str) and (f.name.endswith("_at")):
            value = datetime.fromisoformat(value)
        elif isinstance(value, str) and f.name == "opened_on":
            value = date.fromisoformat(value)
        values[f.name] = value
    return cls(**values)


R = TypeVar("R")


def _quarantine(
    kind: str, record: Any, channel: str, external_id: str | None, exc: Violation
) -> QuarantinedRow:
    return QuarantinedRow(
        channel=channel,
        entity=RECORD_ENTITY_PREFIX + kind,
        external_id=None if external_id is None else clean_code(str(external_id))[:128],
        raw=record_payload(record),
        reason=str(exc),
        errors=[{"loc": exc.field.split("."), "msg": exc.message, "type": "constraint"}],
    )


def check_batch(batch: Batch, bounds: TimeBounds | None = None, now: datetime | None = None) -> Batch:
    """`batch` with every record that would break a database constraint moved to its quarantine (text
    cleaned in place). Records that need a quarantined identity (its orders, interactions, consents) go
    with it, so they land together once it is fixed."""
    bounds = bounds or TimeBounds()
    now = now or datetime.now(UTC)
    held: list[QuarantinedRow] = []
    bad_people: set[tuple[str, str]] = set()

    def keep(
        kind: str,
        records: list[R],
        check: Callable[[R], None],
        key: Callable[[R], tuple[str, str | None]],
        person: Callable[[R], str | None] | None = None,
    ) -> list[R]:
        """The records that pass `check` (and whose person was not quarantined); the rest held."""
        kept: list[R] = []
        for r in records:
            try:
                check(r)
                if person is not None:
                    channel, _ = key(r)
                    owner = person(r)
                    if owner is not None and (channel, owner) in bad_people:
                        raise Violation(
                            "identity_external_id", "its person was quarantined; it lands with them"
                        )
            except Violation as exc:
                channel, external_id = key(r)
                if kind == "identity" and external_id is not None:
                    bad_people.add((channel, external_id))
                held.append(_quarantine(kind, r, channel, external_id, exc))
                continue
            kept.append(r)
        return kept

    # Identities first: the records of a quarantined person are held with it.
    identities = keep("identity", batch.identities, check_identity, lambda p: (p.channel, p.external_id))
    orders = keep(
        "order",
        batch.orders,
        lambda o: check_order(o, bounds, now),
        lambda o: (o.channel, o.external_id),
        lambda o: o.identity_external_id,
    )
    refunds = keep(
        "refund", batch.refunds, lambda r: check_refund(r, bounds, now), lambda r: (r.channel, r.external_id)
    )
    interactions = keep(
        "interaction",
        batch.interactions,
        lambda i: check_interaction(i, bounds, now),
        lambda i: (i.channel, i.external_id),
        lambda i: i.identity_external_id,
    )
    consents = keep(
        "consent",
        batch.consents,
        lambda c: check_consent(c, bounds, now),
        lambda c: (c.channel, c.identity_external_id),
        lambda c: c.identity_external_id,
    )
    products = keep("product", batch.products, check_product, lambda pr: ("catalog", pr.sku))
    stores = keep("store", batch.stores, check_store, lambda st: ("pos", st.code))
    quarantined = batch.quarantined
    for q in quarantined:
        if _has_nul(q.raw):
            q.raw = _json_clean(q.raw)
        if "\x00" in q.reason:
            q.reason = q.reason.replace("\x00", "")
    if not held:
        return batch
    return dataclasses.replace(
        batch,
        identities=identities,
        orders=orders,
        refunds=refunds,
        interactions=interactions,
        consents=consents,
        products=products,
        stores=stores,
        quarantined=quarantined + held,
    )
