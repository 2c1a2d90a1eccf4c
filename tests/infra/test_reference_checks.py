"""The references of orders and order lines are checked per statement by triggers (migration 0004), not per
row by foreign keys: the database must still refuse every dangling reference a foreign key refused, in both
directions, with the same error (23503, the key's name), and delete an order's lines with it."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel.ext.asyncio.session import AsyncSession

from tests.factories import create_channel, create_customer, create_identity, create_order


async def _sql(session: AsyncSession, statement: str, **params: Any) -> Any:
    result = await (await session.connection()).execute(sa.text(statement), params)
    return result.scalar() if result.returns_rows else None


async def _product(session: AsyncSession, sku: str) -> int:
    return int(
        await _sql(session, "insert into product (sku, title) values (:sku, 'x') returning id", sku=sku)
    )


async def _line(session: AsyncSession, order_id: int, line_no: int, product_id: int | None) -> None:
    await _sql(
        session,
        "insert into order_line (order_id, line_no, product_id, quantity, unit_price_fen, discount_fen, amount_fen) "
        "values (:o, :n, :p, 1, 100, 0, 100)",
        o=order_id,
        n=line_no,
        p=product_id,
    )


async def _refused(session: AsyncSession, statement: str, key: str, **params: Any) -> str:
    """Run `statement` in a savepoint; it must fail as the foreign key `key` would. Returns the detail."""
    with pytest.raises(IntegrityError) as caught:
        async with session.begin_nested():
            await _sql(session, statement, **params)
    cause = getattr(caught.value.orig, "__cause__", None)  # asyncpg's error, with the server's fields
    assert (getattr(cause, "sqlstate", None), getattr(cause, "constraint_name", None)) == ("23503", key)
    return str(getattr(cause, "detail", ""))


async def test_an_order_of_an_unknown_channel_is_refused(session: AsyncSession) -> None:
    await create_channel(session, "tmall")
    message = await _refused(
        session,
        "insert into orders (channel_code, external_id, status, total_fen, paid_fen, discount_fen, shipping_fen, "
        "currency, placed_at) values ('tmall', 'a', 'paid', 0, 0, 0, 0, 'CNY', now()), "
        "('douyin', 'b', 'paid', 0, 0, 0, 0, 'CNY', now())",
        "orders_channel_code_fkey",
    )
    assert "Key (channel_code)=(douyin) is not present" in message
    # The whole statement failed, the good row with it, as with a foreign key.
    assert await _sql(session, "select count(*) from orders") == 0
    order = await create_order(session, "tmall")
    await _refused(
        session,
        "update orders set channel_code = 'douyin' where id = :id",
        "orders_channel_code_fkey",
        id=order.id,
    )


async def test_a_line_of_an_unknown_product_is_refused_and_no_product_is_fine(session: AsyncSession) -> None:
    order = await create_order(session, "tmall")
    assert order.id is not None
    product = await _product(session, "SKU-1")
    await _line(session, order.id, 1, product)
    await _line(session, order.id, 2, None)  # a SKU the catalogue does not know
    message = await _refused(
        session,
        "insert into order_line (order_id, line_no, product_id, quantity, unit_price_fen, discount_fen, "
        "amount_fen) values (:o, 3, :p, 1, 1, 0, 1)",
        "order_line_product_id_fkey",
        o=order.id,
        p=product + 1000,
    )
    assert f"Key (product_id)=({product + 1000}) is not present" in message
    await _refused(
        session, "update order_line set product_id = :p where line_no = 1", "order_line_product_id_fkey",
        p=product + 1000,
    )  # fmt: skip


async def test_a_referenced_channel_or_product_cannot_be_deleted_or_rekeyed(session: AsyncSession) -> None:
    order = await create_order(session, "jd")
    assert order.id is not None
    used, unused = await _product(session, "SKU-USED"), await _product(session, "SKU-UNUSED")
    await _line(session, order.id, 1, used)

    await _refused(session, "delete from channel where code = 'jd'", "orders_channel_code_fkey")
    await _refused(session, "update channel set code = 'jd2' where code = 'jd'", "orders_channel_code_fkey")
    message = await _refused(
        session, "delete from product where id = :id", "order_line_product_id_fkey", id=used
    )
    assert f"Key (id)=({used}) is still referenced" in message
    # service_case has a plain foreign key to product, so it goes along (cascade) for the trigger to be reached.
    await _refused(session, "truncate product, service_case cascade", "order_line_product_id_fkey")

    # What nothing refers to can go, and a referenced row can change anything but its key.
    await _sql(session, "update channel set name = 'JD.com' where code = 'jd'")
    await _sql(session, "update product set title = 'renamed' where id = :id", id=used)
    await _sql(session, "delete from product where id = :id", id=unused)
    assert await _sql(session, "select count(*) from product") == 1


@pytest.mark.parametrize(
    ("column", "key"),
    [
        ("source_identity_id", "orders_source_identity_id_fkey"),
        ("customer_id", "orders_customer_id_fkey"),
        ("store_id", "orders_store_id_fkey"),
    ],
)
async def test_an_order_of_an_unknown_buyer_customer_or_store_is_refused(
    session: AsyncSession, column: str, key: str
) -> None:
    order = await create_order(session, "tmall")
    detail = await _refused(session, f"update orders set {column} = 987654 where id = :id", key, id=order.id)  # noqa: S608 - column names from the parameter list above
    assert f"Key ({column})=(987654) is not present" in detail


async def test_a_bulk_update_is_checked_for_every_changed_key(session: AsyncSession) -> None:
    # Merges and customer-id propagation move many orders in one statement: one missing key fails it all.
    customer = await create_customer(session)
    orders = [await create_order(session, "tmall") for _ in range(3)]
    ids = [o.id for o in orders]
    await _sql(session, "update orders set customer_id = :c where id = any(:ids)", c=customer.id, ids=ids)
    await _refused(
        session,
        "update orders set customer_id = case when id = :last then 987654 else :c end where id = any(:ids)",
        "orders_customer_id_fkey",
        c=customer.id,
        last=ids[-1],
        ids=ids,
    )
    assert await _sql(session, "select count(*) from orders where customer_id = :c", c=customer.id) == 3


async def test_a_line_of_an_unknown_order_is_refused_and_lines_go_with_their_order(
    session: AsyncSession,
) -> None:
    order = await create_order(session, "tmall")
    assert order.id is not None
    await _line(session, order.id, 1, None)
    await _line(session, order.id, 2, None)
    await _refused(
        session,
        "insert into order_line (order_id, line_no, quantity, unit_price_fen, discount_fen, amount_fen) "
        "values (987654, 1, 1, 1, 0, 1)",
        "order_line_order_id_fkey",
    )
    await _sql(session, "delete from orders where id = :id", id=order.id)
    assert await _sql(session, "select count(*) from order_line") == 0


async def test_a_referenced_buyer_or_customer_cannot_be_deleted(session: AsyncSession) -> None:
    identity = await create_identity(session, "tmall")
    customer = await create_customer(session)
    await create_order(session, "tmall", source_identity_id=identity.id, customer_id=customer.id)
    await _refused(
        session,
        "delete from source_identity where id = :id",
        "orders_source_identity_id_fkey",
        id=identity.id,
    )
    await _refused(
        session, "delete from golden_customer where id = :id", "orders_customer_id_fkey", id=customer.id
    )


async def test_truncating_both_sides_together_is_allowed(committed_db: AsyncEngine) -> None:
    async with AsyncSession(committed_db) as session:
        order = await create_order(session, "tmall")
        assert order.id is not None
        await _line(session, order.id, 1, await _product(session, "SKU-T"))
        await session.commit()
    async with committed_db.begin() as connection:
        # service_case (and what hangs off it) refers to product by a plain foreign key: it goes along.
        await connection.execute(sa.text("truncate product, order_line, refund, service_case cascade"))
        assert (await connection.execute(sa.text("select count(*) from order_line"))).scalar() == 0


async def test_deleting_reference_rows_under_repeatable_read_is_refused(committed_db: AsyncEngine) -> None:
    # Its snapshot could miss a reference committed after it began, so the check would not be sound there.
    async with committed_db.begin() as connection:
        await connection.execute(sa.text("insert into product (sku, title) values ('SKU-RR', 'x')"))
    rr = committed_db.execution_options(isolation_level="REPEATABLE READ")
    with pytest.raises(DBAPIError, match="READ COMMITTED"):
        async with rr.begin() as connection:
            await connection.execute(sa.text("delete from product where sku = 'SKU-RR'"))
    async with committed_db.begin() as connection:
        deleted = await connection.execute(sa.text("delete from product where sku = 'SKU-RR'"))
        assert deleted.rowcount == 1


async def test_a_delete_waits_for_an_uncommitted_reference_then_fails(committed_db: AsyncEngine) -> None:
    """The race a foreign key closes: a line referencing a product is being inserted while another
    transaction deletes the product. The delete must wait for the insert and then see its line."""
    async with AsyncSession(committed_db) as session:
        order = await create_order(session, "tmall")
        order_id = order.id
        product = await _product(session, "SKU-RACE")
        await session.commit()
    async with committed_db.connect() as inserting, committed_db.connect() as deleting:
        await inserting.execute(
            sa.text(
                "insert into order_line (order_id, line_no, product_id, quantity, unit_price_fen, discount_fen, "
                "amount_fen) values (:o, 1, :p, 1, 1, 0, 1)"
            ),
            {"o": order_id, "p": product},
        )
        deleter_pid = (await deleting.execute(sa.text("select pg_backend_pid()"))).scalar()

        async def delete() -> None:
            await deleting.execute(sa.text("delete from product where id = :id"), {"id": product})

        task = asyncio.create_task(delete())
        # Wait until the delete is blocked on the inserting transaction's lock (not a timing guess).
        async with committed_db.connect() as watcher:
            waiting = None
            # Bounded, so that a delete stuck on anything else fails the test instead of hanging it.
            for _ in range(2000):
                if waiting == "Lock" or task.done():
                    break
                await asyncio.sleep(0.02)
                waiting = (
                    await watcher.execute(
                        sa.text("select wait_event_type from pg_stat_activity where pid = :pid"),
                        {"pid": deleter_pid},
                    )
                ).scalar()
        assert not task.done(), "the delete did not wait for the uncommitted reference"
        assert waiting == "Lock", f"the delete waits on {waiting}, not on the inserting transaction's lock"
        await inserting.commit()
        with pytest.raises(IntegrityError, match="order_line_product_id_fkey"):
            await task
