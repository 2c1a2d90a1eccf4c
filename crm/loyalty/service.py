"""Loyalty operations on one customer (redeem, adjust, earn by hand, tier override, coupons, referrals)
and the recomputation entry points (after a sync, and the daily run).

Every operation that moves points or coupons takes an idempotency key: the first call's result is kept
in loyalty_operation, a replay returns it, and the same key with a different request is refused. An
expected refusal (too few points, an expired coupon) is a `LoyaltyRefusal` with a stable code; the
caller rolls the transaction back and shows it as a userError.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from crm.loyalty import campaigns
from crm.loyalty.config import CouponSpec, LoyaltyConfig, get_config
from crm.loyalty.engine import (
    StepCounts,
    consume,
    expiry_sql,
    pay_off_debts,
    run_points,
    sync_tiers,
)
from crm.loyalty.tiers import evaluate_tiers

T = TypeVar("T")
CODE_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"  # no 0/O, 1/I: codes are read aloud at tills


class LoyaltyRefusal(Exception):
    def __init__(self, code: str, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.field = field


def new_code(prefix: str, length: int = 10) -> str:
    return prefix + "".join(secrets.choice(CODE_ALPHABET) for _ in range(length))


async def in_transaction(engine: AsyncEngine, work: Callable[[AsyncConnection], Awaitable[T]]) -> T:
    """Run `work` in one transaction; a deadlock or serialization failure against a concurrent batch
    step is retried (twice), anything else propagates."""
    for attempt in range(3):
        try:
            async with engine.begin() as conn:
                return await work(conn)
        except DBAPIError as exc:
            code = getattr(getattr(exc, "orig", None), "sqlstate", None) or getattr(
                getattr(getattr(exc, "orig", None), "__cause__", None), "sqlstate", None
            )
            if code not in ("40P01", "40001") or attempt == 2:
                raise
    raise AssertionError("unreachable")


async def replay(
    conn: AsyncConnection, key: str, kind: str, customer_id: int | None, request: dict[str, Any], actor: str
) -> dict[str, Any] | None:
    """Claim `key` for this request; the stored result when it was done before (None: do it now).
    Keys are the caller's own: they are namespaced by actor."""
    if not key.strip() or len(key) > 100:
        raise LoyaltyRefusal(
            "BAD_IDEMPOTENCY_KEY", "idempotencyKey must be 1 to 100 characters", "idempotencyKey"
        )
    full = f"{actor}:{key}"[:128]
    digest = hashlib.sha256(
        json.dumps(
            {"kind": kind, "customer": customer_id, "request": request}, sort_keys=True, default=str
        ).encode()
    ).hexdigest()
    claimed = (
        await conn.execute(
            sa.text(
                "insert into loyalty_operation (key, kind, customer_id, request_hash, result, actor)"
                " values (:k, :kind, :c, :h, '{}', :a) on conflict (key) do nothing returning key"
            ),
            {"k": full, "kind": kind, "c": customer_id, "h": digest, "a": actor},
        )
    ).scalar()
    if claimed:
        return None
    row = (
        await conn.execute(
            sa.text("select request_hash, result from loyalty_operation where key = :k"), {"k": full}
        )
    ).one()
    if row[0] != digest:
        raise LoyaltyRefusal(
            "IDEMPOTENCY_KEY_REUSED",
            "this idempotencyKey was used for a different request; use a new key",
            "idempotencyKey",
        )
    return dict(row[1])


async def remember(conn: AsyncConnection, key: str, actor: str, result: dict[str, Any]) -> dict[str, Any]:
    await conn.execute(
        sa.text("update loyalty_operation set result = cast(:r as jsonb) where key = :k"),
        {"k": f"{actor}:{key}"[:128], "r": json.dumps(result, default=str)},
    )
    return result


async def active_customer(conn: AsyncConnection, customer_id: int) -> None:
    status = (
        await conn.execute(sa.text("select status from golden_customer where id = :c"), {"c": customer_id})
    ).scalar()
    if status is None:
        raise LoyaltyRefusal("NOT_FOUND", f"customer {customer_id} does not exist", "customerId")
    if status != "active":
        raise LoyaltyRefusal(
            "CUSTOMER_NOT_ACTIVE",
            f"customer {customer_id} is {status}: use the surviving customer",
            "customerId",
        )


async def locked_account(conn: AsyncConnection, customer_id: int) -> dict[str, int]:
    """The customer's balance, debt and lifetime points, with the balance row locked until the transaction
    ends (serializes a customer's operations); refused unless the customer exists and is active. One
    statement on the hot path (the balance row exists once the customer has earned)."""
    for _ in range(2):
        row = (
            await conn.execute(
                sa.text(
                    "select g.status, b.balance, b.debt, b.lifetime_earned from golden_customer g"
                    " left join lateral (select balance, debt, lifetime_earned from points_balance"
                    "   where customer_id = g.id for update) b on true where g.id = :c"
                ),
                {"c": customer_id},
            )
        ).first()
        if row is None:
            raise LoyaltyRefusal("NOT_FOUND", f"customer {customer_id} does not exist", "customerId")
        if row[0] != "active":
            raise LoyaltyRefusal(
                "CUSTOMER_NOT_ACTIVE",
                f"customer {customer_id} is {row[0]}: use the surviving customer",
                "customerId",
            )
        if row[1] is not None:
            return {"balance": int(row[1]), "debt": int(row[2]), "lifetime_earned": int(row[3])}
        await conn.execute(
            sa.text(
                "insert into points_balance (customer_id, balance, lifetime_earned) values (:c, 0, 0)"
                " on conflict do nothing"
            ),
            {"c": customer_id},
        )
    raise AssertionError("the balance row exists after its insert")


async def balance_of(conn: AsyncConnection, customer_id: int) -> dict[str, int]:
    row = (
        await conn.execute(
            sa.text("select balance, debt, lifetime_earned from points_balance where customer_id = :c"),
            {"c": customer_id},
        )
    ).first()
    return (
        {"balance": row[0], "debt": row[1], "lifetime_earned": row[2]}
        if row
        else {
            "balance": 0,
            "debt": 0,
            "lifetime_earned": 0,
        }
    )


@dataclass(frozen=True)
class Redemption:
    points: int | None = None
    reward_code: str | None = None
    cash_offset_fen: int | None = None
    order_id: int | None = None


async def redeem(
    conn: AsyncConnection,
    config: LoyaltyConfig,
    customer_id: int,
    what: Redemption,
    *,
    key: str,
    actor: str,
    now: datetime,
) -> dict[str, Any]:
    """Spend points on a gift or service (reward code), a cash offset (fen), or a plain amount of points,
    first-expiring lots first. Refused when the balance is short; never goes negative."""
    request = {
        "points": what.points,
        "reward": what.reward_code,
        "cash": what.cash_offset_fen,
        "order": what.order_id,
    }
    done = await replay(conn, key, "redeem", customer_id, request, actor)
    if done is not None:
        return {**done, "replayed": True}
    given = [x is not None for x in (what.points, what.reward_code, what.cash_offset_fen)]
    if sum(given) != 1:
        raise LoyaltyRefusal("BAD_REDEMPTION", "give exactly one of points, rewardCode or cashOffsetFen")
    reason: str
    if what.reward_code is not None:
        reward = next((r for r in config.redeem.rewards if r.code == what.reward_code), None)
        if reward is None:
            known = ", ".join(r.code for r in config.redeem.rewards)
            raise LoyaltyRefusal(
                "UNKNOWN_REWARD", f"no reward {what.reward_code!r} (known: {known})", "rewardCode"
            )
        points, reason = reward.points, f"redeemed for {reward.kind} {reward.code}"
    elif what.cash_offset_fen is not None:
        fen = what.cash_offset_fen
        if fen <= 0:
            raise LoyaltyRefusal("BAD_AMOUNT", "cashOffsetFen must be positive", "cashOffsetFen")
        if what.order_id is None:
            raise LoyaltyRefusal(
                "ORDER_REQUIRED", "a cash offset is taken off an order: give orderId", "orderId"
            )
        order = (
            await conn.execute(
                sa.text("select customer_id, total_fen from orders where id = :o"), {"o": what.order_id}
            )
        ).first()
        if order is None or order[0] != customer_id:
            raise LoyaltyRefusal("NOT_FOUND", "no such order of this customer", "orderId")
        cap = int(order[1] * config.redeem.max_offset_share)
        if fen > cap:
            raise LoyaltyRefusal(
                "OFFSET_OVER_CAP", f"at most {cap} fen of this order can be paid with points", "cashOffsetFen"
            )
        points = -(
            -fen * config.redeem.points_per_yuan // 100
        )  # rounded up: points never buy more than they cost
        reason = f"cash offset of {fen} fen on order {what.order_id}"
    else:
        points = int(what.points or 0)
        if points <= 0:
            raise LoyaltyRefusal("BAD_AMOUNT", "points must be positive", "points")
        reason = "points redeemed"
    account = await take(conn, config, customer_id, points, kind="redeem", key=f"redeem:{actor}:{key}",
                         reason=reason, actor=actor, now=now, order_id=what.order_id)  # fmt: skip
    result = {"points": points, "reason": reason, **account, "replayed": False}
    return await remember(conn, key, actor, result)


async def take(
    conn: AsyncConnection,
    config: LoyaltyConfig,
    customer_id: int,
    points: int,
    *,
    kind: str,
    key: str,
    reason: str,
    actor: str,
    now: datetime,
    order_id: int | None = None,
) -> dict[str, int]:
    """Take `points` from the active customer (first-expiring lots first) under the balance's row lock;
    refused, with nothing taken, when the spendable points are short. Returns the account after."""
    account = await locked_account(conn, customer_id)
    balance = account["balance"]
    if balance < points:
        raise LoyaltyRefusal(
            "INSUFFICIENT_POINTS", f"the balance is {balance} points; this needs {points}", "points"
        )
    taken = await consume(
        conn,
        config,
        [{"customer_id": customer_id, "points": points, "prefer_lot": None, "key": key, "order_id": order_id,
          "reason": reason}],
        kind=kind,
        actor=actor,
        now=now,
    )  # fmt: skip
    if taken < points:
        # Points in lots past their expiry that the daily run has not expired yet are in the balance but
        # not spendable; the caller's transaction rolls back what was taken.
        raise LoyaltyRefusal(
            "INSUFFICIENT_POINTS", f"{taken} points are spendable now; this needs {points}", "points"
        )
    # The balance row follows the ledger by trigger; under the lock it moved by exactly what was taken.
    return {**account, "balance": balance - points}


async def credit(
    conn: AsyncConnection,
    config: LoyaltyConfig,
    customer_id: int,
    points: int,
    *,
    kind: str,
    reason: str,
    key: str,
    actor: str,
    now: datetime,
    order_id: int | None = None,
) -> int:
    """Add `points` at once as a new lot with its ledger entry (kind earn or adjust); pays off debt first."""
    lot = (
        await conn.execute(
            sa.text(
                f"""
with lot as (
    insert into points_lot (customer_id, points_earned, points_remaining, earned_at, expires_at, available_at,
                            released_at, rule_version)
    values (:c, :p, :p, :now, {expiry_sql(config, "cast(:now as timestamptz)")}, :now, :now, :version)
    returning id, customer_id
), e as (
    insert into points_ledger_entry (customer_id, kind, points, idempotency_key, order_id, lot_id, reason, actor,
                                     rule_version)
    select customer_id, :kind, :p, :key, :order_id, id, :reason, :actor, :version from lot
    returning customer_id, points, case when kind = 'earn' then points else 0 end as earned, 0 as owed
)
select id from lot
"""
            ),
            {
                "c": customer_id,
                "p": points,
                "now": now,
                "tz": config.timezone,
                "version": config.version,
                "kind": kind,
                "key": key,
                "order_id": order_id,
                "reason": reason,
                "actor": actor,
            },
        )
    ).scalar_one()
    await pay_off_debts(conn, config, {customer_id}, now)
    return int(lot)


async def adjust(
    conn: AsyncConnection,
    config: LoyaltyConfig,
    customer_id: int,
    points: int,
    *,
    kind: str,
    reason: str,
    key: str,
    actor: str,
    now: datetime,
) -> dict[str, Any]:
    """Staff: credit (kind earn or adjust, points > 0) or debit (adjust, points < 0) with a reason."""
    if not reason.strip():
        raise LoyaltyRefusal("REASON_REQUIRED", "say why: reason must not be empty", "reason")
    if points == 0 or (kind == "earn" and points < 0):
        raise LoyaltyRefusal(
            "BAD_AMOUNT", "points must be positive (adjust may be negative, not zero)", "points"
        )
    request = {"points": points, "kind": kind, "reason": reason}
    done = await replay(conn, key, kind, customer_id, request, actor)
    if done is not None:
        return {**done, "replayed": True}
    op = f"{kind}:{actor}:{key}"
    if points > 0:
        await locked_account(conn, customer_id)  # serializes with the customer's other operations
        await credit(
            conn, config, customer_id, points, kind=kind, reason=reason, key=op, actor=actor, now=now
        )
        # A credit may pay off debt or wait as pending points: read what it did.
        account = await balance_of(conn, customer_id)
    else:
        account = await take(
            conn, config, customer_id, -points, kind="adjust", key=op, reason=reason, actor=actor, now=now
        )
    result = {"points": points, "reason": reason, **account, "replayed": False}
    return await remember(conn, key, actor, result)


async def override_tier(
    conn: AsyncConnection,
    config: LoyaltyConfig,
    customer_id: int,
    tier: str | None,
    *,
    expires_at: datetime | None,
    reason: str,
    actor: str,
    now: datetime,
) -> str:
    """Set (or, with tier None, lift) a manual tier that lasts until `expires_at`; audited. Returns the
    effective tier."""
    await active_customer(conn, customer_id)
    if not reason.strip():
        raise LoyaltyRefusal("REASON_REQUIRED", "say why: reason must not be empty", "reason")
    if tier is not None:
        if tier not in {lv.code for lv in config.tiers.levels}:
            known = ", ".join(lv.code for lv in config.tiers.levels)
            raise LoyaltyRefusal("UNKNOWN_TIER", f"no tier {tier!r} (known: {known})", "tier")
        if expires_at is None or expires_at <= now:
            raise LoyaltyRefusal(
                "EXPIRY_REQUIRED",
                "an override needs an expiry in the future: it is never a silent floor",
                "expiresAt",
            )
    await sync_tiers(conn, config)
    await evaluate_tiers(conn, config, {customer_id}, now, allow_downgrade=False)
    await conn.execute(
        sa.text(
            "update membership set override_tier = :t, override_expires_at = :e, override_reason = :r"
            " where customer_id = :c"
        ),
        {
            "t": tier,
            "e": expires_at if tier else None,
            "r": f"{reason} (by {actor})" if tier else None,
            "c": customer_id,
        },
    )
    if tier is None:
        # Lifting: the next evaluation treats it as expired and writes the history row.
        await conn.execute(
            sa.text(
                "update membership set override_tier = tier_code, override_expires_at = :now where customer_id = :c"
            ),
            {"now": now, "c": customer_id},
        )
    await evaluate_tiers(conn, config, {customer_id}, now, allow_downgrade=False, actor=actor)
    await conn.execute(
        sa.text(
            "insert into audit_log (actor, actor_role, action, subject_type, subject_id, detail)"
            " values (:a, 'staff_admin', 'override_tier', 'customer', :s, cast(:d as jsonb))"
        ),
        {
            "a": actor,
            "s": str(customer_id),
            "d": json.dumps(
                {"tier": tier, "expires_at": expires_at.isoformat() if expires_at else None, "reason": reason}
            ),
        },
    )
    return str(
        (
            await conn.execute(
                sa.text("select tier_code from golden_customer where id = :c"), {"c": customer_id}
            )
        ).scalar()
    )


async def grant_coupon(
    conn: AsyncConnection,
    customer_id: int,
    spec: CouponSpec,
    *,
    reason: str,
    key: str,
    actor: str,
    now: datetime,
) -> dict[str, Any]:
    done = await replay(
        conn, key, "grant_coupon", customer_id, {"spec": spec.model_dump(), "reason": reason}, actor
    )
    if done is not None:
        return {**done, "replayed": True}
    await active_customer(conn, customer_id)
    row = (
        await conn.execute(
            sa.text(
                "insert into coupon (code, customer_id, kind, value_fen, percent_off, min_spend_fen, issued_at,"
                " expires_at, reason) values (:code, :c, :kind, :v, :pct, :min, :now,"
                " cast(:now as timestamptz) + make_interval(days => :days), :reason) returning id, code"
            ),
            {
                "code": new_code("C"),
                "c": customer_id,
                "kind": spec.kind,
                "v": spec.value_yuan * 100,
                "pct": spec.percent_off,
                "min": spec.min_spend_yuan * 100,
                "now": now,
                "days": spec.valid_days,
                "reason": reason,
            },
        )
    ).one()
    return await remember(conn, key, actor, {"coupon_id": row[0], "code": row[1], "replayed": False})


async def redeem_coupon(
    conn: AsyncConnection,
    code: str,
    *,
    order_id: int | None,
    customer_id: int | None,
    actor: str,
    now: datetime,
) -> dict[str, Any]:
    """Mark a coupon used (on `order_id`, which links the order to the coupon's campaign). Idempotent by
    code: redeeming it again on the same order answers as the first time. `customer_id` restricts the
    coupon to its owner (a member's own call)."""
    row = (
        await conn.execute(
            sa.text(
                "select id, customer_id, state, expires_at, min_spend_fen, redeemed_order_id from coupon"
                " where code = :code for update"
            ),
            {"code": code.strip().upper()},
        )
    ).first()
    if row is None or (customer_id is not None and row[1] != customer_id):
        raise LoyaltyRefusal("NOT_FOUND", "no such coupon", "code")
    coupon_id, owner, state, expires_at, min_spend, redeemed_order = row
    if state == "redeemed":
        if redeemed_order is not None and redeemed_order == order_id:
            return {"coupon_id": coupon_id, "replayed": True}
        raise LoyaltyRefusal("COUPON_USED", "this coupon was already redeemed", "code")
    if state != "issued" or expires_at <= now:
        raise LoyaltyRefusal(
            "COUPON_EXPIRED", f"this coupon is {'expired' if state == 'issued' else state}", "code"
        )
    if order_id is not None:
        order = (
            await conn.execute(
                sa.text("select customer_id, total_fen from orders where id = :o"), {"o": order_id}
            )
        ).first()
        if order is None or order[0] != owner:
            raise LoyaltyRefusal("NOT_FOUND", "no such order of the coupon's customer", "orderId")
        if order[1] < min_spend:
            raise LoyaltyRefusal(
                "BELOW_MINIMUM_SPEND",
                f"the order is {order[1]} fen; this coupon needs {min_spend}",
                "orderId",
            )
    await conn.execute(
        sa.text(
            "update coupon set state = 'redeemed', redeemed_at = :now, redeemed_order_id = :o where id = :id"
        ),
        {"now": now, "o": order_id, "id": coupon_id},
    )
    return {"coupon_id": coupon_id, "replayed": False}


async def register_referral(conn: AsyncConnection, referee_id: int, code: str, *, now: datetime) -> int:
    """Record who referred `referee_id`: at registration or before the first order, once."""
    await active_customer(conn, referee_id)
    referrer = (
        await conn.execute(
            sa.text("select customer_id from referral_code where code = :c"), {"c": code.strip().upper()}
        )
    ).scalar()
    if referrer is None:
        raise LoyaltyRefusal("NOT_FOUND", "no such referral code", "code")
    if referrer == referee_id:
        raise LoyaltyRefusal("SELF_REFERRAL", "a customer cannot refer themselves", "code")
    config = get_config()
    earlier = (
        await conn.execute(
            sa.text(
                "select count(*) from orders where customer_id = :c and status = any(cast(:s as text[]))"
                " and coalesce(paid_at, placed_at) < cast(:now as timestamptz) - interval '1 day'"
            ),
            {"c": referee_id, "s": config.earn.earning_statuses, "now": now},
        )
    ).scalar_one()
    if earlier:
        raise LoyaltyRefusal(
            "TOO_LATE", "a referral counts at registration or on the first order only", "code"
        )
    row = (
        await conn.execute(
            sa.text(
                "insert into referral (referrer_id, referee_id, code, referred_at) values (:r, :e, :code, :now)"
                " on conflict (referee_id) do nothing returning id"
            ),
            {"r": referrer, "e": referee_id, "code": code.strip().upper(), "now": now},
        )
    ).scalar()
    if row is None:
        raise LoyaltyRefusal("ALREADY_REFERRED", "this customer was already referred", "code")
    return int(row)


async def recompute_in(
    conn: AsyncConnection, config: LoyaltyConfig, customer_ids: set[int] | None, now: datetime, *, daily: bool
) -> StepCounts:
    """Every loyalty rule for the customers (None: all): points, tiers (downgrades only when `daily`),
    campaigns, referrals, coupons used at tills; and, daily, birthday coupons and coupon expiry."""
    if customer_ids is None:
        # A full run aggregates every order in the tier window: let its hash aggregates stay in memory
        # (at 4 MB they spilled to disk at 30k customers). For this transaction only.
        await conn.execute(sa.text("set local work_mem = '64MB'"))
    await sync_tiers(conn, config)
    counts = await run_points(conn, config, customer_ids, now)
    with counts.timed("tiers"):
        await evaluate_tiers(conn, config, customer_ids, now, allow_downgrade=daily)
    with counts.timed("campaigns"):
        await campaigns.launch(conn, config, customer_ids, now)
    with counts.timed("referral_codes"):
        await campaigns.ensure_referral_codes(conn, customer_ids)
    with counts.timed("referrals"):
        await campaigns.reward_referrals(conn, config, customer_ids, now)
    with counts.timed("tendered_coupons"):
        await campaigns.redeem_tendered_coupons(conn, customer_ids, now)
    if daily:
        with counts.timed("birthday_coupons"):
            await campaigns.birthday_coupons(conn, config, now)
        with counts.timed("expire_coupons"):
            await campaigns.expire_coupons(conn, now)
    return counts


async def recompute(
    engine: AsyncEngine, customer_ids: set[int] | None, *, now: datetime | None = None
) -> int:
    """crm.registry's entry point: after a sync for the customers it touched, or for all (None)."""
    config = get_config()
    when = now or datetime.now(UTC)

    async def work(conn: AsyncConnection) -> int:
        await recompute_in(conn, config, customer_ids, when, daily=False)
        if customer_ids is not None:
            return len(customer_ids)
        return int((await conn.execute(sa.text("select count(*) from membership"))).scalar_one())

    return await in_transaction(engine, work)
