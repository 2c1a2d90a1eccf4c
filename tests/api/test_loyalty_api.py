"""Loyalty through the API over real HTTP: the customer's points, membership and coupons in a constant
number of statements, member self-service, role checks, idempotent replays, and 50 concurrent
redemptions against one balance."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from gql import gql
from gql.transport.exceptions import TransportQueryError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from crm.loyalty.config import get_config
from crm.loyalty.service import adjust, in_transaction, recompute_in
from schema.relay import to_global_id
from tests.api.graphql_support import api_server
from tests.conftest import fetch_rows

REDEEM = """mutation ($customer: ID, $points: Int, $reward: String, $key: String!) {
  redeemPoints(input: {customerId: $customer, points: $points, rewardCode: $reward, idempotencyKey: $key}) {
    points balance debt replayed userErrors { field message code } } }"""


async def customer_with_points(engine: AsyncEngine, points: int, name: str = "王芳") -> int:
    async def work(conn: AsyncConnection) -> int:
        cid = int(
            (
                await conn.execute(
                    sa.text("insert into golden_customer (status, name) values ('active', :n) returning id"),
                    {"n": name},
                )
            ).scalar_one()
        )
        now = datetime.now(UTC)
        await adjust(conn, get_config(), cid, points, kind="earn", reason="opening balance", key=f"seed-{cid}",
                     actor="test", now=now)  # fmt: skip
        await recompute_in(conn, get_config(), {cid}, now, daily=False)
        return cid

    return await in_transaction(engine, work)


async def balance_books(engine: AsyncEngine, cid: int) -> tuple[int, int, int]:
    [(balance, ledger, lots)] = await fetch_rows(
        engine,
        "select (select balance from points_balance where customer_id = :c),"
        " (select sum(points) from points_ledger_entry where customer_id = :c),"
        " (select sum(points_remaining) from points_lot where customer_id = :c and released_at is not null)",
        c=cid,
    )
    return int(balance), int(ledger), int(lots)


async def test_points_membership_and_coupons_in_constant_statements(
    committed_db: AsyncEngine, database_url: str
) -> None:
    for i in range(12):
        await customer_with_points(committed_db, 100 * (i + 1), name=f"客{i}")
    query = """query ($first: Int) { customers(first: $first) { edges { node { customerId
        points { balance pending debt expiringSoon(days: 400) lots { pointsRemaining pending }
                 ledger(first: 3) { totalCount edges { node { kind points reason ruleVersion actor } } } }
        membership { tier { code name benefits { discountPct } } progressToNext { metric current needed }
                     history { toTier reason } }
        coupons(first: 5) { totalCount }
        referrals { code count } } } } }"""
    counts = []
    with api_server(database_url) as api:
        await api.query("{ health { database } }")
        for first in (2, 12):
            api.statements.reset()
            edges = (await api.query(query, first=first))["customers"]["edges"]
            assert len(edges) == first
            counts.append(api.statements.count)
        node = edges[-1]["node"]
    assert counts[0] == counts[1], counts
    assert node["points"]["balance"] == node["points"]["ledger"]["edges"][0]["node"]["points"]
    assert node["points"]["ledger"]["edges"][0]["node"]["ruleVersion"] == get_config().version
    assert node["membership"]["tier"]["code"] == "ordinary"
    assert node["membership"]["progressToNext"][0]["needed"] > 0
    assert node["referrals"]["code"].startswith("R")


async def test_a_member_redeems_their_own_points_only(committed_db: AsyncEngine, database_url: str) -> None:
    me = await customer_with_points(committed_db, 2000)
    other = await customer_with_points(committed_db, 2000, name="赵强")
    with api_server(database_url) as api:
        mine = (await api.query(REDEEM, role="member", subject=str(me), points=300, key="m1"))["redeemPoints"]
        assert mine["userErrors"] == [] and mine["balance"] == 1700
        gift = (await api.query(REDEEM, role="member", subject=str(me), reward="towel-set", key="m2"))[
            "redeemPoints"
        ]
        assert gift["points"] == 1500 and gift["balance"] == 200
        short = (await api.query(REDEEM, role="member", subject=str(me), points=201, key="m3"))[
            "redeemPoints"
        ]
        assert short["userErrors"][0]["code"] == "INSUFFICIENT_POINTS" and short["balance"] is None
        with pytest.raises(TransportQueryError) as foreign:
            await api.query(
                REDEEM,
                role="member",
                subject=str(me),
                customer=to_global_id("Customer", other),
                points=1,
                key="m4",
            )
        assert "its own customer" in str(foreign.value)
        seen = await api.query(
            "{ me { points { balance ledger(first: 5) { edges { node { kind points actor } } } } } }",
            role="member",
            subject=str(me),
        )
        assert seen["me"]["points"]["balance"] == 200
        assert {e["node"]["actor"] for e in seen["me"]["points"]["ledger"]["edges"]} >= {f"member:{me}"}
        # Members cannot earn or adjust; staff cannot adjust (staff_admin only).
        earn = """mutation ($c: ID!) { earnPoints(input: {customerId: $c, points: 5, reason: "x", idempotencyKey: "e"}) {
            balance } }"""
        with pytest.raises(TransportQueryError):
            await api.query(earn, role="member", subject=str(me), c=to_global_id("Customer", me))
        adjust_q = """mutation ($c: ID!) { adjustPoints(input: {customerId: $c, points: -5, reason: "fix", idempotencyKey: "a"}) {
            balance userErrors { code } } }"""
        with pytest.raises(TransportQueryError):
            await api.query(adjust_q, role="staff", c=to_global_id("Customer", me))
        done = await api.query(adjust_q, role="staff_admin", subject="boss", c=to_global_id("Customer", me))
        assert done["adjustPoints"]["balance"] == 195
    assert await balance_books(committed_db, me) == (195, 195, 195)
    assert await balance_books(committed_db, other) == (2000, 2000, 2000)


async def test_a_replayed_key_returns_the_first_result(committed_db: AsyncEngine, database_url: str) -> None:
    cid = await customer_with_points(committed_db, 1000)
    gid = to_global_id("Customer", cid)
    with api_server(database_url) as api:
        first = (await api.query(REDEEM, customer=gid, points=100, key="once"))["redeemPoints"]
        again = (await api.query(REDEEM, customer=gid, points=100, key="once"))["redeemPoints"]
        other = (await api.query(REDEEM, customer=gid, points=999, key="once"))["redeemPoints"]
    assert (first["replayed"], again["replayed"]) == (False, True)
    assert first["balance"] == again["balance"] == 900
    assert other["userErrors"][0]["code"] == "IDEMPOTENCY_KEY_REUSED"
    assert await balance_books(committed_db, cid) == (900, 900, 900)


async def test_fifty_concurrent_redemptions_never_overdraw(
    committed_db: AsyncEngine, database_url: str
) -> None:
    cid = await customer_with_points(committed_db, 1000)
    gid = to_global_id("Customer", cid)
    with api_server(database_url) as api:

        async def one(n: int, session: Any) -> dict[str, Any]:
            request = gql(REDEEM)
            request.variable_values = {"customer": gid, "points": 30, "key": f"c{n}"}
            reply: dict[str, Any] = await session.execute(request)
            return reply["redeemPoints"]

        async def client_run(ns: range) -> list[dict[str, Any]]:
            async with api.client("service", "pos-till") as session:
                return [await one(n, session) for n in ns]

        batches = await asyncio.gather(*(client_run(range(i, 50, 10)) for i in range(10)))
        replies = [r for b in batches for r in b]
    ok = [r for r in replies if not r["userErrors"]]
    refused = [r for r in replies if r["userErrors"]]
    assert len(ok) == 33 and len(refused) == 17  # 33 x 30 = 990 of 1000
    assert {r["userErrors"][0]["code"] for r in refused} == {"INSUFFICIENT_POINTS"}
    assert await balance_books(committed_db, cid) == (10, 10, 10)
    assert (await fetch_rows(committed_db, "select count(*) from points_ledger_entry where kind = 'redeem'"))[
        0
    ][0] >= 33


async def test_tier_override_and_coupons_through_the_api(
    committed_db: AsyncEngine, database_url: str
) -> None:
    cid = await customer_with_points(committed_db, 10)
    gid = to_global_id("Customer", cid)
    expires = (datetime.now(UTC) + timedelta(days=30)).isoformat()
    with api_server(database_url) as api:
        override = """mutation ($c: ID!, $e: DateTime) { overrideTier(input: {customerId: $c, tier: "gold", expiresAt: $e,
            reason: "press partner"}) { tier userErrors { code message } } }"""
        refused = (await api.query(override, role="staff_admin", c=gid, e=None))["overrideTier"]
        assert refused["userErrors"][0]["code"] == "EXPIRY_REQUIRED"
        done = (await api.query(override, role="staff_admin", c=gid, e=expires))["overrideTier"]
        assert done["tier"] == "gold"
        seen = await api.query(
            "query ($c: ID!) { customer(id: $c) { membership { tier { code } override { tier reason } } } }",
            c=gid,
        )
        assert seen["customer"]["membership"]["override"]["tier"] == "gold"
        grant = """mutation ($c: ID!) { grantCoupon(input: {customerId: $c, kind: "amount", valueFen: 3000,
            minSpendFen: 10000, validDays: 10, reason: "apology", idempotencyKey: "g1"}) {
            coupon { code state value { yuan } } replayed userErrors { code } } }"""
        coupon = (await api.query(grant, c=gid))["grantCoupon"]["coupon"]
        assert coupon["state"] == "ISSUED" and coupon["value"]["yuan"] == "30.00"
        use = """mutation ($code: String!) { redeemCoupon(input: {code: $code}) { coupon { state } userErrors { code } } }"""
        # Another member cannot use it; its owner can, once.
        theirs = (await api.query(use, role="member", subject=str(cid + 999), code=coupon["code"]))[
            "redeemCoupon"
        ]
        assert theirs["userErrors"][0]["code"] == "NOT_FOUND"
        used = (await api.query(use, role="member", subject=str(cid), code=coupon["code"]))["redeemCoupon"]
        assert used["coupon"]["state"] == "REDEEMED"
        twice = (await api.query(use, role="member", subject=str(cid), code=coupon["code"]))["redeemCoupon"]
        assert twice["userErrors"][0]["code"] == "COUPON_USED"
        listed = await api.query(
            "query ($c: ID!) { customer(id: $c) { coupons(state: REDEEMED) { totalCount } } }", c=gid
        )
        assert listed["customer"]["coupons"]["totalCount"] == 1
