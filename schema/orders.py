"""Orders with their lines and refunds, as each customer's `orders` connection."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import strawberry

from schema.context import Info
from schema.relay import Connection, Node, connection, page_size, time_keyset, to_global_id
from schema.scalars import Money


@strawberry.type
class Product:
    id: strawberry.ID
    sku: str
    title: str
    category: str | None


@strawberry.type
class OrderLine:
    line_no: int
    sku: str | None
    title: str | None
    quantity: int
    unit_price: Money
    discount: Money
    amount: Money
    product: Product | None


@strawberry.type
class Refund(Node):
    channel: str
    external_id: str
    line_no: int | None = strawberry.field(description="The refunded line; null for a whole-order refund.")
    amount: Money
    reason: str | None
    status: str
    requested_at: datetime | None


@strawberry.type
class Order(Node):
    channel: str
    external_id: str
    status: str = strawberry.field(description="pending, paid, shipped, completed, cancelled or refunded.")
    source_status: str | None = strawberry.field(description="The channel's own status value.")
    total: Money
    paid: Money
    discount: Money
    shipping: Money
    placed_at: datetime
    paid_at: datetime | None
    pk: strawberry.Private[int]
    currency: strawberry.Private[str]

    @strawberry.field(description="The order's lines, in line order.")
    async def lines(self, info: Info) -> list[OrderLine]:
        found = await info.context.loaders.lines.load(self.pk)
        return [_line(r, self.currency) for r in found]

    @strawberry.field(description="Refunds of this order or of its lines.")
    async def refunds(self, info: Info) -> list[Refund]:
        found = await info.context.loaders.refunds.load(self.pk)
        return [
            Refund(
                id=to_global_id("Refund", r["id"]),
                channel=r["channel_code"],
                external_id=r["external_id"],
                line_no=r["line_no"],
                amount=Money(fen=r["amount_fen"], currency=self.currency),
                reason=r["reason"],
                status=r["status"],
                requested_at=r["requested_at"],
            )
            for r in found
        ]


def _line(r: dict[str, Any], currency: str) -> OrderLine:
    product = None
    if r["product_id"] is not None and r["product_sku"] is not None:
        product = Product(
            id=to_global_id("Product", r["product_id"]),
            sku=r["product_sku"],
            title=r["product_title"],
            category=r["product_category"],
        )
    return OrderLine(
        line_no=r["line_no"],
        sku=r["sku"],
        title=r["title"],
        quantity=r["quantity"],
        unit_price=Money(fen=r["unit_price_fen"], currency=currency),
        discount=Money(fen=r["discount_fen"], currency=currency),
        amount=Money(fen=r["amount_fen"], currency=currency),
        product=product,
    )


def order_node(r: dict[str, Any]) -> Order:
    cur = r["currency"]
    return Order(
        id=to_global_id("Order", r["id"]),
        pk=r["id"],
        currency=cur,
        channel=r["channel_code"],
        external_id=r["external_id"],
        status=r["status"],
        source_status=r["source_status"],
        total=Money(fen=r["total_fen"], currency=cur),
        paid=Money(fen=r["paid_fen"], currency=cur),
        discount=Money(fen=r["discount_fen"], currency=cur),
        shipping=Money(fen=r["shipping_fen"], currency=cur),
        placed_at=r["placed_at"],
        paid_at=r["paid_at"],
    )


@strawberry.input(description="Every field optional; given fields must all match.")
class OrderFilter:
    channel: str | None = None
    status: str | None = None
    placed_after: datetime | None = strawberry.field(default=None, description="Inclusive.")
    placed_before: datetime | None = strawberry.field(default=None, description="Exclusive.")


def _key(r: dict[str, Any]) -> list[Any]:
    return [r["placed_at"].isoformat(), r["id"]]


async def orders_of(
    info: Info, customer_id: int, filter: OrderFilter | None, first: int | None, after: str | None
) -> Connection[Order]:
    n = page_size(first)
    cursor = time_keyset(after)
    filters = tuple(
        sorted(
            (k, v)
            for k, v in {
                "channel": filter.channel if filter else None,
                "status": filter.status if filter else None,
                "placed_after": filter.placed_after if filter else None,
                "placed_before": filter.placed_before if filter else None,
            }.items()
            if v is not None
        )
    )
    page = await info.context.loaders.orders_page.load((customer_id, (filters, n, cursor)))
    result: Connection[Order] = connection(page, n, after, _key, order_node)
    return result
