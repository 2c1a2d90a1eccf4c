"""Store POS: GET /pos/v1/transactions (cursor paged by delivery time) and the file-drop writer.

Registers that were offline deliver transactions late (up to 72 h after `ended_at`), so `since`
filters on `delivered_at`, the time the back office received the transaction.
"""

from __future__ import annotations

import _random
import bisect
import csv
import itertools
import json
import random
import threading
from pathlib import Path
from typing import Any, Literal

import numpy as np
from starlette.requests import Request
from starlette.responses import Response

from sync.simulator.config import SimulatorConfig
from sync.simulator.control import malformed_requested
from sync.simulator.formats import ORJSONResponse, iso, yuan
from sync.simulator.orders import NEVER, OrderFeed, OrderRow
from sync.simulator.own_app import check_bearer, encode_cursor, page_request
from sync.simulator.people import population
from sync.simulator.seeding import hash_one
from sync.simulator.state import SimulatorState

_TENDERS = ("wechat_pay", "alipay", "card", "cash")
_TENDER_WEIGHTS = (45, 30, 17, 8)
CSV_COLUMNS = (
    "transaction_id",
    "store_id",
    "register_id",
    "sequence_no",
    "cashier_id",
    "business_day",
    "ended_at",
    "delivered_at",
    "member_phone",
    "member_card_no",
    "total",
    "discount_total",
    "tax_total",
    "tenders",
    "line_no",
    "sku",
    "description",
    "quantity",
    "unit_price",
    "discount",
    "amount",
    "void",
)


_TENDER_CUMULATIVE = tuple(itertools.accumulate(_TENDER_WEIGHTS))
_TENDER_TOTAL = _TENDER_CUMULATIVE[-1] + 0.0
# random.Random.seed minus its Python-level wrapper: for an int it is exactly what Random(int) does.
_seed = _random.Random.seed
_RNG = threading.local()


def render_transaction(row: OrderRow, key: int) -> dict[str, Any]:
    """A transaction shaped after ARTS POSLog / Square orders; money as yuan decimal strings."""
    store, register, sequence = _position(row)
    # The draws of `row_random(key, row.index + 2**40 * 2)`, from one reseeded generator per thread.
    rng = getattr(_RNG, "rng", None)
    if rng is None:
        rng = _RNG.rng = random.Random(0)
    _seed(rng, hash_one(key, row.index + (2 << 40), 0xFFFF))
    phone = card = None
    if row.buyer is not None:
        if row.buyer.extra.get("card"):
            card = row.buyer.external_id
        else:
            phone = row.buyer.external_id
    elif row.dummy_phone:
        phone = row.dummy_phone
    lines: list[dict[str, Any]] = []
    for line in row.lines:
        product = line.product
        lines.append(
            {
                "line_no": line.line_no,
                "sku": product.sku,
                "description": product.title,
                "quantity": line.quantity,
                "unit_price": yuan(line.unit_price_fen),
                "discount": yuan(line.discount_fen),
                "amount": yuan(line.unit_price_fen * line.quantity - line.discount_fen),
                "void": False,
            }
        )
    if rng.random() < 0.04:
        # A line scanned by mistake and voided at the till: listed, not counted.
        extra = rng.choice(row.lines)
        lines.append(
            {
                "line_no": len(lines) + 1,
                "sku": extra.product.sku,
                "description": extra.product.title,
                "quantity": 1,
                "unit_price": yuan(extra.unit_price_fen),
                "discount": "0.00",
                "amount": yuan(extra.unit_price_fen),
                "void": True,
            }
        )
    total = row.total_fen - row.discount_fen + row.shipping_fen
    tenders = []
    if rng.random() < 0.1 and total > 1000:
        points = min(total // 10, 5000)
        tenders.append({"type": "points", "amount": yuan(points)})
        total_left = total - points
    else:
        total_left = total
    # rng.choices(_TENDERS, weights=_TENDER_WEIGHTS)[0], with the cumulative weights computed once.
    tender = _TENDERS[bisect.bisect(_TENDER_CUMULATIVE, rng.random() * _TENDER_TOTAL, 0, len(_TENDERS) - 1)]
    tenders.append({"type": tender, "amount": yuan(total_left)})
    ended = iso(row.created)
    assert ended is not None
    # rng.randint(1, 6): randrange's rejection sampling on 3 random bits, spelled out.
    cashier = rng.getrandbits(3)
    while cashier >= 6:
        cashier = rng.getrandbits(3)
    return {
        "transaction_id": row.external_id,
        "store_id": store,
        "register_id": f"{register:02d}",
        "sequence_no": sequence,
        "cashier_id": f"C{int(store[1:]) * 10 + cashier + 1}",
        "business_day": ended[:10],
        "ended_at": ended,
        "delivered_at": iso(row.delivered),
        "member_phone": phone,
        "member_card_no": card,
        "currency": "CNY",
        "total": yuan(total),
        "discount_total": yuan(row.discount_fen),
        # Shelf prices include 13% VAT; the receipt shows the tax part.
        "tax_total": yuan(round(total * 13 / 113)),
        "lines": lines,
        "tenders": tenders,
    }


def _position(row: OrderRow) -> tuple[str, int, int]:
    store, register, sequence = row.external_id.split("-")
    return store, int(register), int(sequence)


def corrupt_transaction(transaction: dict[str, Any], index: int, key: int) -> None:
    """Break one field: a non-numeric quantity or an unparseable end time."""
    if hash_one(key, index, 77) % 2:
        transaction["lines"][0]["quantity"] = "two"
    else:
        transaction["ended_at"] = "yesterday 18:30"


async def transactions(request: Request, state: SimulatorState) -> Response:
    """GET /pos/v1/transactions?since=&cursor=&limit<=1000, by (delivered_at, transaction) ascending."""
    denied = check_bearer(request, state.config.pos_api_token)
    if denied:
        return denied
    page = page_request(request, "since", 1000)
    if isinstance(page, Response):
        return page
    feed: OrderFeed = state.feeds["pos"]
    found = feed.ascending_after(page.after, page.since, page.limit + 1, state.now, key="delivered")
    chosen = found[: page.limit]
    rows = feed.rows([i for _, i in chosen], state.now) if chosen else []
    data: list[dict[str, Any]] = []
    for n, row in enumerate(rows):
        transaction = render_transaction(row, feed.key)
        if row.malformed or (malformed_requested(request) and n == 0):
            corrupt_transaction(transaction, row.index, feed.key)
        data.append(transaction)
    more = len(found) > page.limit
    return ORJSONResponse({"data": data, "next_cursor": encode_cursor(*chosen[-1]) if more else None})


def write_pos_export(
    folder: Path,
    config: SimulatorConfig,
    *,
    fmt: Literal["csv", "jsonl"] = "csv",
    start_index: int = 0,
    count: int = 1000,
) -> Path:
    """Write POS transactions [start_index, start_index + count) as a register export file in
    `folder` and return its path. CSV has a header and one row per line (transaction columns
    repeated, tenders as "type:amount;..."); JSON Lines has one transaction per line. The same index
    gives the same transaction as the HTTP feed."""
    if fmt not in ("csv", "jsonl"):
        raise ValueError(f"fmt must be 'csv' or 'jsonl', got {fmt!r}")
    folder.mkdir(parents=True, exist_ok=True)
    feed = OrderFeed(config, "pos", population(config.seed, config.people))
    path = folder / f"pos_{start_index:09d}_{count}.{fmt}"
    with path.open("w", encoding="utf-8", newline="") as out:
        writer = csv.writer(out) if fmt == "csv" else None
        if writer is not None:
            writer.writerow(CSV_COLUMNS)
        for first in range(start_index, start_index + count, 5000):
            index = np.arange(first, min(start_index + count, first + 5000), dtype=np.int64)
            for row in feed.rows(index, NEVER - 1):
                transaction = render_transaction(row, feed.key)
                if row.malformed:
                    corrupt_transaction(transaction, row.index, feed.key)
                if writer is None:
                    out.write(json.dumps(transaction, ensure_ascii=False) + "\n")
                    continue
                tenders = ";".join(f"{t['type']}:{t['amount']}" for t in transaction["tenders"])
                head = [transaction[c] for c in CSV_COLUMNS[:13]]
                for line in transaction["lines"]:
                    writer.writerow([*head, tenders, *(line[c] for c in CSV_COLUMNS[14:])])
    return path
