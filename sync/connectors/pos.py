"""Store POS: transactions over HTTP (`/pos/v1/transactions`) and exports in a watched drop folder.

Offline registers deliver late (up to ~72 h), so each HTTP pull re-reads `pos_lateness_hours` behind the
watermark; re-reads land idempotently. Drop-folder files are CSV (one row per sale line, transaction
columns repeated, header first) or JSON Lines (one transaction per line). A file moves to `done/` only
after the transaction that landed its last row has committed.
"""

from __future__ import annotations

import csv
import hashlib
import re
import shutil
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from sync.canonical import (
    Batch,
    Fen,
    LocalTime,
    OptionalFen,
    OptionalLocalTime,
    OrderLineRecord,
    OrderRecord,
    PersonIdentity,
    QuarantinedRow,
    StoreRecord,
    WatermarkAdvance,
)
from sync.connectors.base import Connector
from sync.validation import require_known, validate_rows

# Sorted once: the order the quarantine reason lists them in.
TENDER_TYPES = tuple(sorted({"cash", "card", "wechat_pay", "alipay", "voucher", "points"}))
LINE_COLUMNS = ("line_no", "sku", "description", "quantity", "unit_price", "discount", "amount", "void")


class PosLine(BaseModel):
    model_config = ConfigDict(coerce_numbers_to_str=True)

    line_no: int = Field(ge=1)
    sku: str | None = None
    description: str | None = None
    quantity: int
    unit_price: Fen
    discount: OptionalFen = None
    amount: Fen
    void: bool = False


class PosTender(BaseModel):
    type: str
    amount: Fen

    @field_validator("type")
    @classmethod
    def _known(cls, value: str) -> str:
        return require_known(value, TENDER_TYPES, "tender type")


class PosTransaction(BaseModel):
    """One till transaction (ARTS POSLog / Square Orders shaped)."""

    model_config = ConfigDict(coerce_numbers_to_str=True)

    transaction_id: str | None = Field(None, max_length=64)
    store_id: str = Field(min_length=1, max_length=32)
    register_id: str = Field(min_length=1, max_length=16)
    sequence_no: str = Field(min_length=1, max_length=16)
    cashier_id: str | None = None
    business_day: date
    ended_at: LocalTime
    delivered_at: OptionalLocalTime = None
    currency: str = Field("CNY", min_length=3, max_length=3)
    member_phone: str | None = None
    member_card_no: str | None = Field(None, max_length=60)
    total: Fen
    discount_total: OptionalFen = None
    tax_total: OptionalFen = None
    lines: list[PosLine] = Field(default_factory=list)
    tenders: list[PosTender] = Field(default_factory=list)

    @field_validator(
        "member_phone", "member_card_no", "cashier_id", "transaction_id", "delivered_at", mode="before"
    )
    @classmethod
    def _blank(cls, value: Any) -> Any:
        return None if value == "" else value

    @model_validator(mode="after")
    def _tenders_cover_total(self) -> PosTransaction:
        if self.tenders and sum(t.amount for t in self.tenders) < self.total:
            raise ValueError("tenders do not cover the total")
        return self

    @property
    def external_id(self) -> str:
        return (
            self.transaction_id
            or f"{self.store_id}-{self.register_id}-{self.business_day:%Y%m%d}-{self.sequence_no}"
        )


# Cashiers type a placeholder when a shopper will not give a number: 138 0000 0000, 188 8888 8888.
_PLACEHOLDER_PHONE = re.compile(r"^1\d{2}(\d)\1{7}$")


def is_placeholder_phone(phone: str) -> bool:
    return bool(_PLACEHOLDER_PHONE.match(re.sub(r"\D", "", phone)[-11:]))


def _member_key(t: PosTransaction) -> str | None:
    """The identity a sale belongs to: the member card no. (the app's member no.), else the phone typed
    at the till. A placeholder phone is an anonymous sale, not one person buying in every store."""
    if t.member_card_no:
        return t.member_card_no
    if t.member_phone and not is_placeholder_phone(t.member_phone):
        return t.member_phone
    return None


def _tx_id(raw: Any) -> str | None:
    if not isinstance(raw, dict):
        return None
    if raw.get("transaction_id"):
        return str(raw["transaction_id"])
    parts = [raw.get(k) for k in ("store_id", "register_id", "business_day", "sequence_no")]
    return "-".join(str(p) for p in parts) if all(parts) else None


def normalize_transactions(rows: list[Any], channel: str = "pos") -> Batch:
    """Validate POS transactions and normalize them to stores, member identities and orders."""
    valid, bad = validate_rows(
        PosTransaction, rows, channel=channel, entity="pos_transaction", external_id=_tx_id
    )
    batch = Batch(quarantined=bad)
    stores: set[str] = set()
    for t, _raw in valid:
        member = _member_key(t)
        # POS sales are final: the only "modification" is the back office receiving them.
        updated = t.delivered_at or t.ended_at
        if member:
            batch.identities.append(
                PersonIdentity(
                    channel=channel,
                    external_id=member,
                    source_updated_at=updated,
                    attributes={
                        # Only a sale keyed by its phone says whose phone it is (beside a card, it is
                        # whatever number was typed at the till).
                        "phone": t.member_phone if member == t.member_phone else None,
                        "member_no": t.member_card_no,
                    },
                    raw={"member_phone": t.member_phone, "member_card_no": t.member_card_no},
                    # Landed as part of raw, but the sale is not something the identity says: a member's next
                    # sale with the same phone and card is a repeat (touched, not upserted).
                    event={"store_id": t.store_id, "transaction": t.external_id},
                )  # fmt: skip
            )
        if t.store_id not in stores:
            stores.add(t.store_id)
            batch.stores.append(StoreRecord(code=t.store_id, name=f"Store {t.store_id}"))
        lines = [
            OrderLineRecord(
                ln.line_no, ln.sku, ln.description, ln.quantity, ln.unit_price, ln.discount or 0, ln.amount
            )
            for ln in t.lines
            if not ln.void and ln.quantity > 0
        ]
        tendered = sum(x.amount for x in t.tenders if x.type != "points")
        batch.orders.append(
            OrderRecord(
                channel=channel,
                external_id=t.external_id,
                identity_external_id=member,
                store_code=t.store_id,
                status="completed",
                source_status="sale",
                total_fen=t.total,
                paid_fen=min(tendered, t.total) if t.tenders else t.total,
                discount_fen=t.discount_total or 0,
                shipping_fen=0,
                placed_at=t.ended_at,
                paid_at=t.ended_at,
                source_updated_at=updated,
                lines=lines,
                currency=t.currency,
                cashier_code=t.cashier_id,
                tenders=[{"type": x.type, "amount_fen": x.amount} for x in t.tenders] or None,
            )
        )
    return batch


def _truthy(value: Any) -> bool:
    return str(value).strip().lower() in {"1", "true", "t", "yes", "y"}


def csv_transactions(path: Path) -> Iterator[dict[str, Any]]:
    """Group a line-level CSV export into transactions (transaction columns repeat on every line).

    A repeated header row (exports are often concatenated) is skipped. Tenders come as
    `type:amount;type:amount` in a `tenders` column.
    """
    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        current: dict[str, Any] | None = None
        key: tuple[Any, ...] | None = None
        for row in reader:
            if row.get("store_id") == "store_id":
                continue
            row_key = (row.get("transaction_id"), row.get("store_id"), row.get("register_id"),
                       row.get("business_day"), row.get("sequence_no"))  # fmt: skip
            if current is None or row_key != key:
                if current is not None:
                    yield current
                key = row_key
                current = {
                    k: v for k, v in row.items() if k not in LINE_COLUMNS and k != "tenders" and k is not None
                }
                current["lines"] = []
                current["tenders"] = _parse_tenders(row.get("tenders"))
            if row.get("line_no") not in (None, ""):
                line = {k: row.get(k) for k in LINE_COLUMNS}
                line["void"] = _truthy(line.get("void"))
                current["lines"].append(line)
        if current is not None:
            yield current


def _parse_tenders(value: str | None) -> list[dict[str, Any]] | Any:
    if not value:
        return []
    text = value.strip()
    if text.startswith("["):
        return orjson.loads(text)
    tenders = []
    for part in text.split(";"):
        kind, _, amount = part.partition(":")
        tenders.append({"type": kind.strip(), "amount": amount.strip()})
    return tenders


def jsonl_transactions(path: Path) -> Iterator[dict[str, Any] | QuarantinedRow]:
    with path.open("rb") as handle:
        for n, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                yield orjson.loads(line)
            except orjson.JSONDecodeError as exc:
                yield QuarantinedRow("pos", "pos_transaction", f"{path.name}:{n}",
                                     {"file": path.name, "line": n, "text": line.decode("utf-8", "replace")},
                                     f"field `line {n}`: not valid JSON ({exc})", [{"loc": [n], "msg": str(exc)}])  # fmt: skip


class PosConnector(Connector):
    channel = "pos"
    streams = ("transactions", "files")

    def default_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.config.token}"}

    def normalizers(self) -> dict[str, Callable[[list[Any]], Batch]]:
        return {"pos_transaction": normalize_transactions}

    def pull(
        self, stream: str, watermark: dict[str, Any] | None, since: datetime | None
    ) -> AsyncIterator[Batch]:
        if stream == "transactions":
            return self._http(watermark, since)
        if stream == "files":
            return self._files()
        raise ValueError(f"pos has no stream {stream!r}")

    async def _http(self, watermark: dict[str, Any] | None, since: datetime | None) -> AsyncIterator[Batch]:
        if since is None and watermark and watermark.get("watermark_at"):
            start = watermark["watermark_at"] - timedelta(hours=self.settings.pos_lateness_hours)
        else:
            start = await self.start_time(watermark, since)
        key = self.watermark_key("transactions")
        high = (watermark or {}).get("watermark_at")
        cursor: str | None = None
        while True:
            params: dict[str, Any] = {"since": start.isoformat(), "limit": self.config.page_size}
            if cursor:
                params["cursor"] = cursor
            body = await self.client.request_json("GET", "/pos/v1/transactions", params=params)
            rows = body.get("data") or []
            batch = normalize_transactions(rows)
            for o in batch.orders:
                if high is None or o.source_updated_at > high:
                    high = o.source_updated_at
            cursor = body.get("next_cursor")
            if not cursor or not rows:
                # The high-water mark only moves at the end: the lateness re-read starts behind it anyway.
                if high is not None:
                    batch.watermarks.append(WatermarkAdvance(key, watermark_at=high))
                yield batch
                return
            yield batch

    async def _files(self) -> AsyncIterator[Batch]:
        folder = self.settings.pos_drop_dir
        if not folder.is_dir():
            return
        for path in sorted(
            p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in {".csv", ".jsonl", ".ndjson"}
        ):
            rows: list[Any] = []
            quarantined: list[QuarantinedRow] = []
            source: Iterator[Any] = (
                csv_transactions(path) if path.suffix.lower() == ".csv" else jsonl_transactions(path)
            )
            for item in source:
                if isinstance(item, QuarantinedRow):
                    quarantined.append(item)
                else:
                    rows.append(item)
                if len(rows) >= self.settings.batch_size:
                    yield normalize_transactions(rows)
                    rows = []
            batch = normalize_transactions(rows)
            batch.quarantined.extend(quarantined)
            digest = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
            batch.watermarks.append(
                WatermarkAdvance(self.watermark_key("files"), cursor=path.name, extra={"sha256_16": digest})
            )
            batch.files_done.append(str(path))
            yield batch

    def files_landed(self, paths: list[str]) -> None:
        done = self.settings.pos_drop_dir / "done"
        done.mkdir(parents=True, exist_ok=True)
        for p in paths:
            src = Path(p)
            if src.exists():
                shutil.move(str(src), str(done / src.name))
