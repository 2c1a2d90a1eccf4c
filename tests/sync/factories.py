"""Small payload factories in the platforms' shapes (CHANNELS.md), for landing tests without HTTP."""

from __future__ import annotations

from typing import Any


def top_trade(
    tid: int,
    *,
    status: str = "WAIT_SELLER_SEND_GOODS",
    modified: str = "2026-10-01 10:00:00",
    buyer: str = "AAHk5d-EXAMPLE",
    lines: int = 2,
    price: str = "199.00",
) -> dict[str, Any]:
    return {
        "tid": tid,
        "status": status,
        "buyer_open_uid": buyer,
        "buyer_nick": "张**",
        "receiver_name": "张*",
        "receiver_mobile": "138****5678",
        "receiver_state": "上海",
        "receiver_city": "上海市",
        "receiver_district": "浦东新区",
        "receiver_address": "上海市浦东新区**",
        "payment": f"{float(price) * lines:.2f}",
        "post_fee": "0.00",
        "total_fee": f"{float(price) * lines:.2f}",
        "discount_fee": "0.00",
        "created": "2026-10-01 09:00:00",
        "modified": modified,
        "pay_time": "2026-10-01 09:01:00",
        "orders": {
            "order": [
                {"oid": tid * 10 + n, "num_iid": 600, "outer_sku_id": f"SKU-{n}", "title": f"item {n}",
                 "price": price, "num": 1, "payment": price}
                for n in range(lines)
            ]
        },
    }  # fmt: skip


def pos_sale(
    sequence_no: int,
    *,
    store: str = "SH001",
    card: str | None = "M000123",
    phone: str | None = "13812345678",
    ended_at: str = "2026-10-01 10:00:00",
) -> dict[str, Any]:
    """A till transaction as the POS export sends it (one line, paid by WeChat Pay)."""
    return {
        "store_id": store, "register_id": "R1", "sequence_no": str(sequence_no), "business_day": ended_at[:10],
        "ended_at": ended_at, "member_phone": phone, "member_card_no": card, "total": "59.00",
        "lines": [{"line_no": 1, "sku": "SKU-1", "description": "mug", "quantity": 1, "unit_price": "59.00",
                   "amount": "59.00"}],
        "tenders": [{"type": "wechat_pay", "amount": "59.00"}],
    }  # fmt: skip
