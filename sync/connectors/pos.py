"""Store POS: transactions over HTTP (`/pos/v1/transactions`) and exports in a watched drop folder.

Offline registers deliver late (up to ~72 h), so each HTTP pull re-reads `pos_lateness_hours` behind the
watermark; re-reads land idempotently. Drop-folder files are CSV (one row per sale line, transaction
columns repeated, header first) or JSON Lines (one transaction per line). A file moves to `done/` only
after the transaction that landed its last row has committed.
"""

from __future__ import annotations

import asyncio
import csv
import hashlib
import io
import re
import shutil
import time
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

    line_no: int = Field(ge=1, le=2**31 - 1)
    sku: str | None = None
    description: str | None = None
    # A return is its own transaction at the till, never a negative line on a sale.
    quantity: int = Field(ge=1, le=2**31 - 1)
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


def canonical_phone(phone: str | None) -> tuple[str | None, bool]:
    """(the phone in one form, whether a phone was given but is no valid number). `+86 138-1234-5678` and
    `13812345678` are one phone, `13812345678` (a Chinese number in its national digits, as tills and the app
    show it: a landline with its leading 0; a foreign one in E.164); `12345` or `abc` is none, never a key."""
    if not phone:
        return None, False
    from identity.standardize import standardize_phone

    e164, _masked = standardize_phone(phone)
    if e164 is None:
        return None, True
    if e164.startswith("+86"):
        national = e164[3:]
        return (national if len(national) == 11 and national.startswith("1") else "0" + national), False
    return e164, False


def _member_key(t: PosTransaction, phone: str | None) -> str | None:
    """The identity a sale belongs to: the member card no. (the app's member no.), else the phone typed
    at the till (in E.164). A placeholder phone is an anonymous sale, not one person buying in every store."""
    if t.member_card_no:
        return t.member_card_no
    if phone and not is_placeholder_phone(phone):
        return phone
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
    for t, raw in valid:
        phone, invalid_phone = canonical_phone(t.member_phone)
        if invalid_phone:
            # The sale lands; the phone is no key and no attribute, and the note says why it is missing.
            batch.quarantined.append(
                QuarantinedRow(
                    channel=channel,
                    entity="pos_transaction",
                    external_id=t.external_id,
                    raw=raw if isinstance(raw, dict) else {"value": raw},
                    reason="field `member_phone`: not a valid Chinese mobile or landline number; the sale "
                    "landed without it",
                    errors=[{"loc": ["member_phone"], "msg": "invalid phone", "type": "dropped_value"}],
                )
            )
        member = _member_key(t, phone)
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
                        "phone": phone if member == phone else None,
                        "member_no": t.member_card_no,
                    },
                    raw={"member_phone": phone, "member_card_no": t.member_card_no},
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
            if not ln.void
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


class RejectedFile(Exception):
    """A drop-folder file that cannot be read as a whole (its encoding, its CSV structure): it moves to
    `rejected/` with a reason file. The message names the file and the place, never its bytes."""


# The encodings Chinese POS exports use: UTF-8 (Excel adds a BOM) and GB18030, the superset of GBK and GB2312.
ENCODINGS = ("utf-8-sig", "gb18030")


def decode_export(data: bytes, name: str) -> str:
    """The text of an export: UTF-8 with or without BOM, else GB18030/GBK; anything else is rejected."""
    for encoding in ENCODINGS:
        try:
            return data.decode(encoding)
        except UnicodeDecodeError:
            continue
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise RejectedFile(
            f"{name}: not UTF-8 or GB18030 text (first undecodable byte at offset {exc.start}, line {line})"
        ) from None
    raise RejectedFile(f"{name}: not UTF-8 or GB18030 text")  # pragma: no cover - utf-8-sig took it


def csv_transactions(path: Path, text: str | None = None) -> Iterator[dict[str, Any]]:
    """Group a line-level CSV export into transactions (transaction columns repeat on every line).

    A repeated header row (exports are often concatenated) is skipped. Tenders come as
    `type:amount;type:amount` (or a JSON list) in a `tenders` column. A row with any line column filled is
    a line, even with its line number blank (validation then names the field): a line is never dropped.
    """
    if text is None:
        text = decode_export(path.read_bytes(), path.name)
    # A cell as long as the file is read whole, and its width checked where it lands, not refused by csv.
    csv.field_size_limit(max(csv.field_size_limit(), len(text) + 1))
    reader = csv.DictReader(io.StringIO(text, newline=""))
    current: dict[str, Any] | None = None
    key: tuple[Any, ...] | None = None
    try:
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
            if any(row.get(k) not in (None, "") for k in LINE_COLUMNS if k != "void"):
                line = {k: row.get(k) for k in LINE_COLUMNS}
                line["void"] = _truthy(line.get("void"))
                current["lines"].append(line)
    except csv.Error as exc:
        raise RejectedFile(f"{path.name}: not a readable CSV at line {reader.line_num} ({exc})") from None
    if current is not None:
        yield current


def _parse_tenders(value: str | None) -> list[dict[str, Any]] | Any:
    """Tenders from their cell; a malformed JSON list is kept as its text, which validation then refuses
    (field `tenders`), so the transaction is quarantined, not the file."""
    if not value:
        return []
    text = value.strip()
    if text.startswith("["):
        try:
            return orjson.loads(text)
        except orjson.JSONDecodeError:
            return text
    tenders = []
    for part in text.split(";"):
        kind, _, amount = part.partition(":")
        tenders.append({"type": kind.strip(), "amount": amount.strip()})
    return tenders


def jsonl_transactions(path: Path, text: str | None = None) -> Iterator[dict[str, Any] | QuarantinedRow]:
    if text is None:
        text = decode_export(path.read_bytes(), path.name)
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            yield orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            yield QuarantinedRow("pos", "pos_transaction", f"{path.name}:{n}",
                                 {"file": path.name, "line": n, "text": line},
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
            # The high-water mark moves with every page (it lands with the page's rows): a restart re-reads
            # only the lateness window behind what has landed, not the whole lookback.
            if high is not None:
                batch.watermarks.append(WatermarkAdvance(key, watermark_at=high))
            yield batch
            if not cursor or not rows:
                return

    async def _files(self) -> AsyncIterator[Batch]:
        folder = self.settings.pos_drop_dir
        if not folder.is_dir():
            return
        for path in await self._complete_files(folder):
            data = path.read_bytes()
            digest = hashlib.sha256(data).hexdigest()[:16]
            try:
                text = decode_export(data, path.name)
                source: Iterator[Any] = (
                    csv_transactions(path, text)
                    if path.suffix.lower() == ".csv"
                    else jsonl_transactions(path, text)
                )
                items = list(source)
            except RejectedFile as exc:
                self._reject(path, str(exc))
                # One quarantine entry for the file: what it was, why; the file itself waits in rejected/.
                yield Batch(
                    quarantined=[
                        QuarantinedRow(
                            "pos",
                            "pos_file",
                            path.name,
                            {"file": path.name, "sha256_16": digest, "size": len(data)},
                            f"field `file`: {exc}; moved to rejected/",
                            [{"loc": ["file"], "msg": str(exc)}],
                        )  # fmt: skip
                    ],
                    watermarks=[
                        WatermarkAdvance(
                            self.watermark_key("files"), cursor=path.name, extra={"sha256_16": digest}
                        )
                    ],
                )
                continue
            rows: list[Any] = []
            quarantined: list[QuarantinedRow] = []
            for item in items:
                if isinstance(item, QuarantinedRow):
                    quarantined.append(item)
                else:
                    rows.append(item)
                if len(rows) >= self.settings.batch_size:
                    yield normalize_transactions(rows)
                    rows = []
            batch = normalize_transactions(rows)
            batch.quarantined.extend(quarantined)
            batch.watermarks.append(
                WatermarkAdvance(self.watermark_key("files"), cursor=path.name, extra={"sha256_16": digest})
            )
            batch.files_done.append(str(path))
            yield batch

    async def _complete_files(self, folder: Path) -> list[Path]:
        """The exports ready to read: with `pos_file_ready = "marker"` those with a `<name>.done` beside them;
        otherwise those whose size and modification time stay the same over `pos_file_stable_seconds` (a file
        a register is still writing grows meanwhile, and is left for the next run)."""
        first = _exports(folder)
        if self.settings.pos_file_ready == "marker":
            return [p for p in first if p.with_name(p.name + ".done").exists()]
        interval = self.settings.pos_file_stable_seconds
        now = time.time()
        if any(now - st[2] < interval for st in first.values()):
            await asyncio.sleep(interval)
        later = _exports(folder)
        return [p for p, st in first.items() if later.get(p) == st]

    def _reject(self, path: Path, reason: str) -> None:
        rejected = self.settings.pos_drop_dir / "rejected"
        rejected.mkdir(parents=True, exist_ok=True)
        target = _free_name(rejected, path)
        shutil.move(str(path), str(target))
        target.with_name(target.name + ".reason.txt").write_text(reason + "\n", encoding="utf-8")
        marker = path.with_name(path.name + ".done")
        if marker.exists():
            marker.unlink()

    def files_landed(self, paths: list[str]) -> None:
        done = self.settings.pos_drop_dir / "done"
        done.mkdir(parents=True, exist_ok=True)
        for p in paths:
            src = Path(p)
            if src.exists():
                shutil.move(str(src), str(_free_name(done, src)))
            marker = src.with_name(src.name + ".done")
            if marker.exists():
                marker.unlink()


def _exports(folder: Path) -> dict[Path, tuple[int, int, float]]:
    """The export files in the drop folder, sorted by name, with (size, mtime_ns, mtime)."""
    out: dict[Path, tuple[int, int, float]] = {}
    for p in sorted(folder.iterdir()):
        if p.is_file() and p.suffix.lower() in {".csv", ".jsonl", ".ndjson"}:
            st = p.stat()
            out[p] = (st.st_size, st.st_mtime_ns, st.st_mtime)
    return out


def _free_name(folder: Path, src: Path) -> Path:
    """Where `src` goes in `folder`: its own name, or, when another file already has it there, the name with
    the content's digest (the same file moved twice keeps one copy) and then a counter."""
    target = folder / src.name
    if not target.exists():
        return target
    digest = hashlib.sha256(src.read_bytes()).hexdigest()[:16]
    target = folder / f"{src.stem}.{digest}{src.suffix}"
    n = 1
    while target.exists() and target.read_bytes() != src.read_bytes():
        target = folder / f"{src.stem}.{digest}.{n}{src.suffix}"
        n += 1
    return target
