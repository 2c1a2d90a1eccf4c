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


def jd_order(order_id: int, **changes: Any) -> dict[str, Any]:
    """A JD order as jingdong.pop.order.search returns it (two items, freight and a seller discount)."""
    order: dict[str, Any] = {
        "orderId": str(order_id), "venderId": "10086", "orderTotalPrice": "1299.00", "orderSellerPrice": "1279.00",
        "orderPayment": "1289.00", "freightPrice": "10.00", "sellerDiscount": "20.00",
        "orderState": "WAIT_GOODS_RECEIVE_CONFIRM", "orderRemark": "", "orderStartTime": "2026-09-02 10:11:12",
        "paymentConfirmTime": "2026-09-02 10:15:00", "orderEndTime": None, "modified": "2026-09-03 08:00:00",
        "pin": f"jd_{order_id}", "open_id_buyer": f"o-{order_id}",
        "consigneeInfo": {"fullname": "张*", "mobile": "138****0000", "province": "广东", "city": "深圳市",
                          "county": "南山区", "fullAddress": "广东深圳市南山区科技园****"},
        "itemInfoList": [
            {"skuId": "100012345678", "outerSkuId": "HG-KIT-007-02", "skuName": "保温杯 750ml", "jdPrice": "149.00",
             "itemTotal": "2"},
            {"skuId": "100098524000", "outerSkuId": None, "skuName": "实木餐桌 1.4米", "jdPrice": "1001.00",
             "itemTotal": 1},
        ],
    }  # fmt: skip
    order.update(changes)
    return order
