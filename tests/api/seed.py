"""A small, fully known customer-360 for the API tests, committed (the API reads on its own connections)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import orjson
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

T0 = datetime(2026, 10, 1, 10, 0, tzinfo=UTC)


@dataclass
class Seeded:
    zhang: int  # two identities (tmall, app), 3 orders, a refund, interactions, consents
    li: int  # one identity (pos), 1 order
    absorbed: int  # merged into zhang
    zhang_tmall_identity: int


async def seed(engine: AsyncEngine, extra_orders: int = 0) -> Seeded:
    async with engine.begin() as conn:
        x = conn.execute
        await x(sa.text("insert into channel (code, family, name, trust_rank) values ('tmall','marketplace','Tmall',50), "
                        "('app','own','App',10), ('pos','pos','POS',30), ('wechat','social','WeChat',70) on conflict do nothing"))  # fmt: skip
        await x(
            sa.text("insert into product (sku, title, category) values ('SKU-1', 'Linen duvet', 'bedding')")
        )
        product = (await x(sa.text("select id from product where sku = 'SKU-1'"))).scalar_one()
        zhang = (await x(sa.text(
            "insert into golden_customer (status, name, phone, email, birth_date, gender, province, city, district, address, member_no) "
            "values ('active', '张伟', '+8613812345678', 'zhangwei@163.com', '1988-03-05', 'M', '浙江省', '杭州市', '西湖区', "
            "'文三路 90 号', 'M0001') returning id"))).scalar_one()  # fmt: skip
        li = (
            await x(
                sa.text(
                    "insert into golden_customer (status, name, phone, city) values ('active', '李娜', '+8613900001111', '上海市') returning id"
                )
            )
        ).scalar_one()
        absorbed = (
            await x(
                sa.text(
                    "insert into golden_customer (name, status, merged_into) values ('张伟', 'merged', :z) returning id"
                ),
                {"z": zhang},
            )
        ).scalar_one()
        tmall = (await x(sa.text(
            "insert into source_identity (channel_code, external_id, name, phone, phone_masked, phone_verified, customer_id, link_rule, source_updated_at) "
            "values ('tmall', 'buyer-zw', '张伟', '+8613812345678', '138****5678', false, :c, 'phone', :t) returning id"), {"c": zhang, "t": T0})).scalar_one()  # fmt: skip
        app = (await x(sa.text(
            "insert into source_identity (channel_code, external_id, name, phone, phone_verified, email, member_no, wechat_unionid, customer_id, link_rule, source_updated_at) "
            "values ('app', 'M0001', '张伟', '+8613812345678', true, 'zhangwei@163.com', 'M0001', 'union-zw', :c, 'verified_phone', :t) returning id"),
            {"c": zhang, "t": T0 + timedelta(days=1)})).scalar_one()  # fmt: skip
        await x(
            sa.text(
                "insert into source_identity (channel_code, external_id, name, phone, phone_verified, customer_id) values ('pos', 'card-ln', '李娜', '+8613900001111', false, :c)"
            ),
            {"c": li},
        )
        lineage = {
            "name": {
                "source_identity_id": app,
                "channel": "app",
                "observed_at": (T0 + timedelta(days=1)).isoformat(),
                "rule": "trusted_channel",
            },
            "phone": {
                "source_identity_id": tmall,
                "channel": "tmall",
                "observed_at": T0.isoformat(),
                "rule": "most_recent_verified",
            },
        }
        await x(
            sa.text("update golden_customer set lineage = cast(:l as jsonb) where id = :z"),
            {"l": orjson.dumps(lineage).decode(), "z": zhang},
        )
        orders = [("tmall", "T1", "paid", 12300, T0), ("app", "A1", "completed", 45600, T0 + timedelta(days=2)),
                  ("tmall", "T2", "cancelled", 9900, T0 + timedelta(days=3))]  # fmt: skip
        orders += [("app", f"X{i}", "paid", 100 + i, T0 - timedelta(days=i + 1)) for i in range(extra_orders)]
        for channel, ext, status, fen, at in orders:
            identity = tmall if channel == "tmall" else app
            oid = (await x(sa.text(
                "insert into orders (channel_code, external_id, source_identity_id, customer_id, status, total_fen, paid_fen, currency, placed_at) "
                "values (:ch, :e, :si, :c, :s, :f, :f, 'CNY', :at) returning id"),
                {"ch": channel, "e": ext, "si": identity, "c": zhang, "s": status, "f": fen, "at": at})).scalar_one()  # fmt: skip
            await x(sa.text(
                "insert into order_line (order_id, line_no, sku, product_id, title, quantity, unit_price_fen, amount_fen) "
                "values (:o, 1, 'SKU-1', :p, 'Linen duvet', 1, :f, :f)"), {"o": oid, "p": product, "f": fen})  # fmt: skip
            if ext == "T1":
                await x(sa.text("insert into refund (channel_code, external_id, order_id, line_no, amount_fen, status, requested_at) "
                                "values ('tmall', 'R1', :o, 1, 2300, 'success', :at)"), {"o": oid, "at": T0 + timedelta(days=1)})  # fmt: skip
        await x(sa.text("insert into orders (channel_code, external_id, customer_id, status, total_fen, paid_fen, currency, placed_at) "
                        "values ('pos', 'P1', :c, 'paid', 5000, 5000, 'CNY', :at)"), {"c": li, "at": T0})  # fmt: skip
        for i, (channel, kind) in enumerate(
            [("wechat", "follow"), ("wechat", "message"), ("app", "page_view")]
        ):
            await x(sa.text("insert into interaction (channel_code, external_id, customer_id, type, direction, occurred_at, summary) "
                            "values (:ch, :e, :c, :k, 'inbound', :at, 'hi')"), {"ch": channel, "e": f"i{i}", "c": zhang, "k": kind, "at": T0 + timedelta(hours=i)})  # fmt: skip
        await x(sa.text("insert into consent (customer_id, purpose, status, source, recorded_at) values "
                        "(:c, 'marketing_sms', 'granted', 'app', :t0), (:c, 'marketing_sms', 'withdrawn', 'app', :t1)"),
                {"c": zhang, "t0": T0, "t1": T0 + timedelta(days=5)})  # fmt: skip
        await x(sa.text("insert into merge_event (kind, actor, reason, surviving_customer_id, absorbed_customer_ids, evidence) "
                        "values ('merge', 'staff:alice', 'same phone', :z, array[cast(:a as bigint)], '{\"rule\": \"phone\"}')"),
                {"z": zhang, "a": absorbed})  # fmt: skip
    return Seeded(zhang=zhang, li=li, absorbed=absorbed, zhang_tmall_identity=tmall)
