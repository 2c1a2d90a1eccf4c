"""The domain model: every table of Customer 360, as SQLModel classes.

Conventions (why they matter):
- Money is integer fen (`*_fen`, BIGINT). Never float, so totals reconcile to the fen.
- Times are `timestamptz`; naive datetimes are refused at the boundary (sync) before they get here.
- Every relation a query walks has an index in the order it is read, e.g. (customer_id, placed_at desc).
- Constraints that protect money-like state (idempotency keys, non-negative balances) live in the
  database, so no code path can bypass them.
"""

from __future__ import annotations

import uuid
from datetime import date, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlmodel import Field, SQLModel

NOW = sa.text("now()")


def _ts(nullable: bool = True, default_now: bool = False, index: bool = False) -> Any:
    return Field(
        default=None,
        sa_column=sa.Column(
            sa.DateTime(timezone=True),
            nullable=nullable,
            server_default=NOW if default_now else None,
            index=index,
        ),
    )


def _jsonb(nullable: bool = False, default: str = "'{}'::jsonb") -> Any:
    return Field(
        default=None,
        sa_column=sa.Column(
            JSONB, nullable=nullable, server_default=sa.text(default) if not nullable else None
        ),
    )


def _fk(target: str, nullable: bool = True, ondelete: str | None = None, index: bool = False) -> Any:
    return Field(
        default=None,
        sa_column=sa.Column(
            sa.BigInteger, sa.ForeignKey(target, ondelete=ondelete), nullable=nullable, index=index
        ),
    )


def _external_id(width: int) -> Any:
    """A channel's own id for a row: an opaque code, compared and sorted bytewise (COLLATE "C", 0005)."""
    return Field(sa_column=sa.Column(sa.String(width, collation="C"), nullable=False))


def _checked_ref(nullable: bool = True) -> Any:
    """A reference checked by triggers instead of a foreign key (migration 0004): inserts once per statement,
    updates only where the key changed; same rule, same 23503 error. For the columns landing writes in bulk."""
    return Field(default=None, sa_column=sa.Column(sa.BigInteger, nullable=nullable))


def _fen(nullable: bool = False, default: int | None = 0) -> Any:
    return Field(
        default=default,
        sa_column=sa.Column(
            sa.BigInteger,
            nullable=nullable,
            server_default=None if default is None else sa.text(str(default)),
        ),
    )


def _int0() -> Any:
    return Field(default=0, sa_column=sa.Column(sa.Integer, nullable=False, server_default=sa.text("0")))


def _pk() -> Any:
    return Field(default=None, sa_column=sa.Column(sa.BigInteger, sa.Identity(), primary_key=True))


# --------------------------------------------------------------------------- channels and stores


class Channel(SQLModel, table=True):
    """A source of customers and orders: a marketplace shop, the own app, a social account, POS."""

    __tablename__ = "channel"
    __table_args__ = (
        sa.CheckConstraint("family in ('marketplace', 'own', 'social', 'pos')", name="ck_channel_family"),
    )

    code: str = Field(primary_key=True, max_length=32)
    family: str = Field(max_length=16)
    name: str = Field(max_length=100)
    # Per-channel priority for survivorship: lower wins (a verified own-app profile beats a masked marketplace one).
    trust_rank: int = Field(default=100)
    config: dict[str, Any] = _jsonb()


class Store(SQLModel, table=True):
    __tablename__ = "store"

    id: int | None = _pk()
    code: str = Field(max_length=32, sa_column_kwargs={"unique": True})
    name: str = Field(max_length=200)
    province: str | None = Field(default=None, max_length=32)
    city: str | None = Field(default=None, max_length=32)
    district: str | None = Field(default=None, max_length=32)
    address: str | None = Field(default=None, max_length=300)
    opened_on: date | None = None


class Product(SQLModel, table=True):
    __tablename__ = "product"

    id: int | None = _pk()
    sku: str = Field(max_length=64, sa_column_kwargs={"unique": True})
    title: str = Field(max_length=300)
    category: str | None = Field(default=None, max_length=100, index=True)
    list_price_fen: int | None = _fen(nullable=True, default=None)


# --------------------------------------------------------------------------- identity


class GoldenCustomer(SQLModel, table=True):
    """One real person. The id is stable: it survives re-runs, merges keep the oldest, splits keep it
    on the side holding the oldest identity."""

    __tablename__ = "golden_customer"
    __table_args__ = (
        sa.CheckConstraint("status in ('active', 'merged', 'erased')", name="ck_golden_customer_status"),
        sa.CheckConstraint(
            "(status = 'merged') = (merged_into is not null)", name="ck_golden_customer_merged_into"
        ),
        sa.CheckConstraint("merged_into is null or merged_into <> id", name="ck_golden_customer_not_self"),
        sa.Index("ix_golden_customer_phone", "phone"),
        sa.Index("ix_golden_customer_email", "email"),
        sa.Index("ix_golden_customer_member_no", "member_no"),
    )

    id: int | None = _pk()
    status: str = Field(default="active", max_length=8)
    merged_into: int | None = _fk("golden_customer.id", index=True)
    name: str | None = Field(default=None, max_length=100)
    name_pinyin: str | None = Field(default=None, max_length=200)
    phone: str | None = Field(default=None, max_length=20)
    email: str | None = Field(default=None, max_length=254)
    birth_date: date | None = None
    gender: str | None = Field(default=None, max_length=1)
    member_no: str | None = Field(default=None, max_length=64)
    province: str | None = Field(default=None, max_length=32)
    city: str | None = Field(default=None, max_length=32)
    district: str | None = Field(default=None, max_length=32)
    address: str | None = Field(default=None, max_length=300)
    tier_code: str | None = Field(
        default=None, sa_column=sa.Column(sa.String(16), sa.ForeignKey("membership_tier.code"), nullable=True)
    )
    # attribute -> {"source_identity_id", "channel", "observed_at", "rule"}: why each surviving value won.
    lineage: dict[str, Any] = _jsonb()
    created_at: datetime | None = _ts(nullable=False, default_now=True)
    updated_at: datetime | None = _ts(nullable=False, default_now=True)
    erased_at: datetime | None = _ts()


class SourceIdentity(SQLModel, table=True):
    """A person as one channel knows them, with the raw payload and the standardized attributes."""

    __tablename__ = "source_identity"
    __table_args__ = (
        sa.UniqueConstraint("channel_code", "external_id", name="uq_source_identity_channel_external"),
        sa.Index("ix_source_identity_phone", "phone", postgresql_where=sa.text("phone is not null")),
        sa.Index("ix_source_identity_email", "email", postgresql_where=sa.text("email is not null")),
        sa.Index(
            "ix_source_identity_unionid",
            "wechat_unionid",
            postgresql_where=sa.text("wechat_unionid is not null"),
        ),
        sa.Index(
            "ix_source_identity_member_no", "member_no", postgresql_where=sa.text("member_no is not null")
        ),
        sa.Index(
            "ix_source_identity_id_number", "id_number", postgresql_where=sa.text("id_number is not null")
        ),
        sa.Index("ix_source_identity_pinyin_city", "name_pinyin", "city"),
        # No index on updated_at: no query reads through one, and it changes on every re-landed version,
        # so it would make each identity update a non-HOT one (a new entry in every index) (0002).
        # The identities waiting to be linked (landed by a run that stopped before linking): every run links
        # them (0014).
        sa.Index("ix_source_identity_unlinked", "id", postgresql_where=sa.text("customer_id is null")),
        # Room on each page for the next version of an identity (every repeat order rewrites it), so that
        # the update stays on its page and touches none of the eight indexes (0007).
        {"postgresql_with": {"fillfactor": 70}},
    )

    id: int | None = _pk()
    channel_code: str = Field(
        sa_column=sa.Column(sa.String(32), sa.ForeignKey("channel.code"), nullable=False)
    )
    external_id: str = _external_id(128)
    raw: dict[str, Any] = _jsonb()
    name: str | None = Field(default=None, max_length=100)
    name_pinyin: str | None = Field(default=None, max_length=200)
    nickname: str | None = Field(default=None, max_length=100)
    phone: str | None = Field(default=None, max_length=20)  # E.164, verified or unmasked only
    phone_masked: str | None = Field(default=None, max_length=20)  # e.g. 138****5678: partial evidence
    phone_verified: bool = Field(default=False)
    email: str | None = Field(default=None, max_length=254)
    birth_date: date | None = None
    gender: str | None = Field(default=None, max_length=1)
    id_number: str | None = Field(default=None, max_length=18)
    member_no: str | None = Field(default=None, max_length=64)
    wechat_unionid: str | None = Field(default=None, max_length=64)
    wechat_openid: str | None = Field(default=None, max_length=64)
    province: str | None = Field(default=None, max_length=32)
    city: str | None = Field(default=None, max_length=32)
    district: str | None = Field(default=None, max_length=32)
    address_detail: str | None = Field(default=None, max_length=300)
    postcode: str | None = Field(default=None, max_length=10)
    customer_id: int | None = _fk("golden_customer.id", index=True)
    link_score: float | None = None
    link_rule: str | None = Field(default=None, max_length=64)
    linked_at: datetime | None = _ts()
    source_updated_at: datetime | None = _ts()  # the channel's own modified time
    created_at: datetime | None = _ts(nullable=False, default_now=True)
    updated_at: datetime | None = _ts(nullable=False, default_now=True)


class MergeEvent(SQLModel, table=True):
    """One merge, unmerge, link or split: who, when, why, the evidence and what it takes to undo it."""

    __tablename__ = "merge_event"
    __table_args__ = (
        sa.CheckConstraint(
            "kind in ('merge', 'unmerge', 'link', 'unlink', 'split')", name="ck_merge_event_kind"
        ),
    )

    id: int | None = _pk()
    kind: str = Field(max_length=8)
    actor: str = Field(max_length=100)
    reason: str | None = None
    surviving_customer_id: int | None = _fk("golden_customer.id", index=True)
    absorbed_customer_ids: list[int] = Field(
        default_factory=list,
        sa_column=sa.Column(ARRAY(sa.BigInteger), nullable=False, server_default=sa.text("'{}'")),
    )
    # rule or score, and the features that matched.
    evidence: dict[str, Any] = _jsonb()
    # The prior state (identity -> customer, golden attributes) needed to restore it exactly.
    snapshot: dict[str, Any] = _jsonb()
    undoes_event_id: int | None = _fk("merge_event.id")
    undone_by_event_id: int | None = _fk("merge_event.id")
    created_at: datetime | None = _ts(nullable=False, default_now=True)


class IdentityLinkAudit(SQLModel, table=True):
    """Every move of a source identity between golden customers."""

    __tablename__ = "identity_link_audit"
    __table_args__ = (sa.Index("ix_identity_link_audit_identity", "source_identity_id", "created_at"),)

    id: int | None = _pk()
    source_identity_id: int = _fk("source_identity.id", nullable=False, ondelete="CASCADE")
    from_customer_id: int | None = _fk("golden_customer.id")
    to_customer_id: int | None = _fk("golden_customer.id")
    merge_event_id: int | None = _fk("merge_event.id", index=True)
    score: float | None = None
    rule: str | None = Field(default=None, max_length=64)
    features: dict[str, Any] = _jsonb()
    created_at: datetime | None = _ts(nullable=False, default_now=True)


class IdentityReview(SQLModel, table=True):
    """A candidate pair scored between the two thresholds, waiting for a person to decide."""

    __tablename__ = "identity_review"
    __table_args__ = (
        sa.UniqueConstraint("left_identity_id", "right_identity_id", name="uq_identity_review_pair"),
        sa.CheckConstraint("left_identity_id < right_identity_id", name="ck_identity_review_ordered"),
        sa.CheckConstraint("status in ('pending', 'accepted', 'rejected')", name="ck_identity_review_status"),
        sa.Index("ix_identity_review_pending", "status", "score"),
    )

    id: int | None = _pk()
    left_identity_id: int = _fk("source_identity.id", nullable=False, ondelete="CASCADE")
    right_identity_id: int = _fk("source_identity.id", nullable=False, ondelete="CASCADE")
    score: float
    features: dict[str, Any] = _jsonb()
    status: str = Field(default="pending", max_length=8)
    decided_by: str | None = Field(default=None, max_length=100)
    decided_at: datetime | None = _ts()
    created_at: datetime | None = _ts(nullable=False, default_now=True)


# --------------------------------------------------------------------------- orders


class Order(SQLModel, table=True):
    __tablename__ = "orders"
    __table_args__ = (
        sa.UniqueConstraint("channel_code", "external_id", name="uq_orders_channel_external"),
        sa.CheckConstraint(
            "total_fen >= 0 and paid_fen >= 0 and discount_fen >= 0 and shipping_fen >= 0",
            name="ck_orders_amounts_non_negative",
        ),
        # Rows not yet linked to a customer stay out: landing inserts them before linking, and no query reads
        # them by a null customer (0006).
        sa.Index(
            "ix_orders_customer_placed",
            "customer_id",
            sa.text("placed_at desc"),
            postgresql_where=sa.text("customer_id is not null"),
        ),
        sa.Index("ix_orders_identity", "source_identity_id"),
        # No (channel_code, source_updated_at) index: no query reads orders in that order, and landing paid
        # for it on every insert and status update (0002).
    )

    id: int | None = _pk()
    # channel_code -> channel.code, source_identity_id -> source_identity.id, customer_id -> golden_customer.id
    # and store_id -> store.id are checked by triggers, inserts once per statement, not by foreign keys (0004).
    channel_code: str = Field(sa_column=sa.Column(sa.String(32), nullable=False))
    external_id: str = _external_id(64)
    source_identity_id: int | None = _checked_ref()
    customer_id: int | None = _checked_ref()
    store_id: int | None = _checked_ref()
    status: str = Field(max_length=32)  # canonical: pending, paid, shipped, completed, cancelled, refunded
    source_status: str | None = Field(default=None, max_length=40)  # the channel's own status value
    total_fen: int = _fen()
    paid_fen: int = _fen()
    discount_fen: int = _fen()
    shipping_fen: int = _fen()
    currency: str = Field(default="CNY", max_length=3)
    placed_at: datetime | None = _ts(nullable=False)
    paid_at: datetime | None = _ts()
    source_updated_at: datetime | None = _ts()
    # Store sales only: who rang it up, and how it was paid ([{"type": "wechat_pay", "amount_fen": 12300}, ...];
    # points tenders included, so a redemption at the till is visible to CRM).
    cashier_code: str | None = Field(default=None, max_length=64)
    tenders: list[dict[str, Any]] | None = _jsonb(nullable=True)
    landed_at: datetime | None = _ts(nullable=False, default_now=True)
    updated_at: datetime | None = _ts(nullable=False, default_now=True)


class OrderLine(SQLModel, table=True):
    __tablename__ = "order_line"
    __table_args__ = (sa.CheckConstraint("quantity > 0", name="ck_order_line_quantity_positive"),)

    # A line is its order's line number (0008): no surrogate id, which cost every landed line a sequence value
    # and a second unique index. order_id -> orders.id (lines are deleted with their order) and product_id ->
    # product.id: checked per statement by triggers, like the references of orders (0004).
    order_id: int = Field(sa_column=sa.Column(sa.BigInteger, primary_key=True, autoincrement=False))
    line_no: int = Field(sa_column=sa.Column(sa.Integer, primary_key=True, autoincrement=False))
    sku: str | None = Field(default=None, max_length=64)  # no index: no query reads lines by SKU (0005)
    product_id: int | None = _checked_ref()
    title: str | None = Field(default=None, max_length=300)
    quantity: int = 1
    unit_price_fen: int = _fen()
    discount_fen: int = _fen()
    amount_fen: int = _fen()
    # The channel's own id for the line (Tmall's sub-order `oid`), where it has one: refunds name lines by it.
    external_id: str | None = Field(default=None, max_length=64)


class Refund(SQLModel, table=True):
    __tablename__ = "refund"
    __table_args__ = (
        sa.UniqueConstraint("channel_code", "external_id", name="uq_refund_channel_external"),
        sa.CheckConstraint("amount_fen >= 0", name="ck_refund_amount_non_negative"),
    )

    id: int | None = _pk()
    channel_code: str = Field(
        sa_column=sa.Column(sa.String(32), sa.ForeignKey("channel.code"), nullable=False)
    )
    external_id: str = _external_id(64)
    order_id: int | None = _fk("orders.id", ondelete="CASCADE", index=True)
    # The refunded line, by number within the order: lines are replaced when their order changes, numbers stay.
    line_no: int | None = None
    amount_fen: int = _fen()
    reason: str | None = Field(default=None, max_length=300)
    status: str = Field(max_length=40)
    requested_at: datetime | None = _ts()
    source_updated_at: datetime | None = _ts()
    landed_at: datetime | None = _ts(nullable=False, default_now=True)


# --------------------------------------------------------------------------- points and tiers


class MembershipTier(SQLModel, table=True):
    __tablename__ = "membership_tier"

    code: str = Field(primary_key=True, max_length=16)
    name: str = Field(max_length=50)
    rank: int = Field(sa_column_kwargs={"unique": True})
    min_points: int = 0  # qualifying points over the review window
    min_spend_fen: int = _fen()
    earn_multiplier_pct: int = 100  # 150 = 1.5x points per yuan
    benefits: dict[str, Any] = _jsonb()


class TierHistory(SQLModel, table=True):
    __tablename__ = "tier_history"
    __table_args__ = (
        sa.Index("ix_tier_history_customer_changed", "customer_id", sa.text("changed_at desc")),
    )

    id: int | None = _pk()
    customer_id: int = _fk("golden_customer.id", nullable=False)
    from_tier: str | None = Field(default=None, max_length=16)
    to_tier: str | None = Field(default=None, max_length=16)
    reason: str | None = None
    actor: str | None = Field(default=None, max_length=100)
    rule_version: str | None = Field(default=None, max_length=32)
    changed_at: datetime | None = _ts(nullable=False, default_now=True)


class PointsLedgerEntry(SQLModel, table=True):
    """Append-only: a correction is a `reverse` or `adjust` entry, never an update of points."""

    __tablename__ = "points_ledger_entry"
    __table_args__ = (
        sa.CheckConstraint(
            "kind in ('earn', 'redeem', 'expire', 'adjust', 'reverse')", name="ck_points_ledger_kind"
        ),
        sa.CheckConstraint(
            "(kind = 'earn' and points > 0) or (kind in ('redeem', 'expire') and points < 0)"
            " or kind in ('adjust', 'reverse')",
            name="ck_points_ledger_sign",
        ),
        sa.Index("ix_points_ledger_customer_created", "customer_id", sa.text("created_at desc")),
        sa.Index("ix_points_ledger_identity", "source_identity_id"),
    )

    id: int | None = _pk()
    customer_id: int = _fk("golden_customer.id", nullable=False)
    source_identity_id: int | None = _fk("source_identity.id")
    kind: str = Field(max_length=8)
    points: int
    idempotency_key: str = Field(max_length=128, sa_column_kwargs={"unique": True})
    order_id: int | None = _fk("orders.id")
    lot_id: int | None = _fk("points_lot.id")
    reverses_entry_id: int | None = _fk("points_ledger_entry.id")
    reason: str | None = None
    actor: str | None = Field(default=None, max_length=100)
    rule_version: str | None = Field(default=None, max_length=32)
    # A refund that took back points already spent: + what became owed, - what later earnings paid off.
    owed_points: int = _int0()
    created_at: datetime | None = _ts(nullable=False, default_now=True)


class PointsLot(SQLModel, table=True):
    """Points earned together expire together; redemptions consume the oldest lots first (FIFO)."""

    __tablename__ = "points_lot"
    __table_args__ = (
        sa.CheckConstraint("points_earned > 0", name="ck_points_lot_earned_positive"),
        sa.CheckConstraint(
            "points_remaining >= 0 and points_remaining <= points_earned", name="ck_points_lot_remaining"
        ),
        sa.Index(
            "ix_points_lot_open",
            "customer_id",
            "expires_at",
            postgresql_where=sa.text("points_remaining > 0"),
        ),
        sa.Index("ix_points_lot_identity", "source_identity_id"),
        sa.Index("uq_points_lot_order", "order_id", unique=True),
        sa.Index("ix_points_lot_pending", "available_at", postgresql_where=sa.text("released_at is null")),
    )

    id: int | None = _pk()
    customer_id: int = _fk("golden_customer.id", nullable=False)
    source_identity_id: int | None = _fk("source_identity.id")
    points_earned: int
    points_remaining: int
    earned_at: datetime | None = _ts(nullable=False, default_now=True)
    expires_at: datetime | None = _ts(nullable=False)
    # An order's lot: what was paid, what refunds took back, and the return window it is locked for.
    order_id: int | None = Field(default=None, sa_column=sa.Column(sa.BigInteger, nullable=True))
    basis_fen: int | None = _fen(nullable=True, default=None)
    points_reversed: int = _int0()
    available_at: datetime | None = _ts()
    released_at: datetime | None = _ts()  # null: pending, not in the balance yet
    rule_version: str | None = Field(default=None, max_length=32)


class PointsBalance(SQLModel, table=True):
    """Maintained by a trigger on the ledger; the check makes a negative balance impossible."""

    __tablename__ = "points_balance"
    __table_args__ = (
        sa.CheckConstraint("balance >= 0", name="ck_points_balance_non_negative"),
        sa.CheckConstraint("debt >= 0", name="ck_points_balance_debt_non_negative"),
    )

    customer_id: int = Field(
        sa_column=sa.Column(sa.BigInteger, sa.ForeignKey("golden_customer.id"), primary_key=True)
    )
    balance: int = 0
    lifetime_earned: int = 0
    debt: int = _int0()  # the sum of the ledger's owed_points
    updated_at: datetime | None = _ts(nullable=False, default_now=True)


class Membership(SQLModel, table=True):
    """A customer's tier now: what the rolling window qualifies for, a pending downgrade's grace, and a
    manual override that expires (never a silent floor). golden_customer.tier_code mirrors tier_code."""

    __tablename__ = "membership"
    __table_args__ = (sa.Index("ix_membership_next_review", "next_review_at"),)

    customer_id: int = Field(
        sa_column=sa.Column(sa.BigInteger, sa.ForeignKey("golden_customer.id"), primary_key=True)
    )
    tier_code: str = Field(
        sa_column=sa.Column(sa.String(16), sa.ForeignKey("membership_tier.code"), nullable=False)
    )
    since: datetime | None = _ts(nullable=False)
    qualified_tier: str = Field(max_length=16)
    window_spend_fen: int = _fen()
    window_orders: int = _int0()
    window_points: int = _fen()
    below_since: datetime | None = _ts()  # first evaluation that qualified below tier_code
    next_review_at: datetime | None = _ts()
    override_tier: str | None = Field(
        default=None, sa_column=sa.Column(sa.String(16), sa.ForeignKey("membership_tier.code"), nullable=True)
    )
    override_expires_at: datetime | None = _ts()
    override_reason: str | None = None
    evaluated_at: datetime | None = _ts(nullable=False, default_now=True)


class Campaign(SQLModel, table=True):
    __tablename__ = "campaign"
    __table_args__ = (sa.CheckConstraint("holdout_pct between 0 and 90", name="ck_campaign_holdout_pct"),)

    id: int | None = _pk()
    code: str = Field(max_length=64, sa_column_kwargs={"unique": True})
    name: str = Field(max_length=200)
    audience: dict[str, Any] = _jsonb()  # {"tiers": [...]} | {"segment": code} | {"customers": [ids]}
    coupon: dict[str, Any] = _jsonb()  # the coupon each member gets
    holdout_pct: int = _int0()
    starts_at: datetime | None = _ts(nullable=False)
    ends_at: datetime | None = _ts()
    launched_at: datetime | None = _ts()
    created_at: datetime | None = _ts(nullable=False, default_now=True)


class CampaignMember(SQLModel, table=True):
    __tablename__ = "campaign_member"
    __table_args__ = (sa.Index("ix_campaign_member_customer", "customer_id"),)

    campaign_id: int = Field(
        sa_column=sa.Column(sa.BigInteger, sa.ForeignKey("campaign.id", ondelete="CASCADE"), primary_key=True)
    )
    customer_id: int = Field(
        sa_column=sa.Column(sa.BigInteger, sa.ForeignKey("golden_customer.id"), primary_key=True)
    )
    holdout: bool
    assigned_at: datetime | None = _ts(nullable=False, default_now=True)


class Coupon(SQLModel, table=True):
    __tablename__ = "coupon"
    __table_args__ = (
        sa.CheckConstraint("kind in ('amount', 'percent')", name="ck_coupon_kind"),
        sa.CheckConstraint("state in ('issued', 'redeemed', 'expired', 'void')", name="ck_coupon_state"),
        sa.CheckConstraint(
            "(kind = 'amount' and value_fen > 0) or (kind = 'percent' and percent_off between 1 and 99)",
            name="ck_coupon_value",
        ),
        sa.Index("ix_coupon_customer_state", "customer_id", "state"),
        sa.Index("ix_coupon_campaign", "campaign_id"),
    )

    id: int | None = _pk()
    code: str = Field(max_length=32, sa_column_kwargs={"unique": True})
    customer_id: int = _fk("golden_customer.id", nullable=False)
    campaign_id: int | None = _fk("campaign.id")
    kind: str = Field(max_length=8)
    value_fen: int = _fen()
    percent_off: int = _int0()
    min_spend_fen: int = _fen()
    state: str = Field(default="issued", max_length=9, sa_column_kwargs={"server_default": "issued"})
    issued_at: datetime | None = _ts(nullable=False, default_now=True)
    expires_at: datetime | None = _ts(nullable=False)
    redeemed_at: datetime | None = _ts()
    redeemed_order_id: int | None = _fk("orders.id")
    reason: str | None = None


class ReferralCode(SQLModel, table=True):
    __tablename__ = "referral_code"

    customer_id: int = Field(
        sa_column=sa.Column(sa.BigInteger, sa.ForeignKey("golden_customer.id"), primary_key=True)
    )
    code: str = Field(max_length=16, sa_column_kwargs={"unique": True})


class Referral(SQLModel, table=True):
    __tablename__ = "referral"
    __table_args__ = (
        sa.CheckConstraint("referrer_id <> referee_id", name="ck_referral_not_self"),
        sa.UniqueConstraint("referee_id", name="uq_referral_referee"),
        sa.Index("ix_referral_referrer", "referrer_id"),
    )

    id: int | None = _pk()
    referrer_id: int = _fk("golden_customer.id", nullable=False)
    referee_id: int = _fk("golden_customer.id", nullable=False)
    code: str = Field(max_length=16)
    referred_at: datetime | None = _ts(nullable=False, default_now=True)
    first_order_id: int | None = _fk("orders.id")
    rewarded_at: datetime | None = _ts()


class LoyaltyOperation(SQLModel, table=True):
    """One row per idempotency key of a points or coupon mutation: a replay returns `result`."""

    __tablename__ = "loyalty_operation"

    key: str = Field(max_length=128, primary_key=True)
    kind: str = Field(max_length=32)
    customer_id: int | None = Field(default=None, sa_column=sa.Column(sa.BigInteger, nullable=True))
    request_hash: str = Field(max_length=64)
    result: dict[str, Any] = _jsonb(nullable=False, default="'{}'::jsonb")
    actor: str | None = Field(default=None, max_length=100)
    created_at: datetime | None = _ts(nullable=False, default_now=True)


# --------------------------------------------------------------------------- engagement and service


class Interaction(SQLModel, table=True):
    __tablename__ = "interaction"
    __table_args__ = (
        sa.UniqueConstraint("channel_code", "external_id", name="uq_interaction_channel_external"),
        sa.CheckConstraint("direction in ('inbound', 'outbound')", name="ck_interaction_direction"),
        sa.Index(
            "ix_interaction_customer_occurred",
            "customer_id",
            sa.text("occurred_at desc"),
            postgresql_where=sa.text("customer_id is not null"),
        ),
        sa.Index("ix_interaction_identity", "source_identity_id"),
    )

    id: int | None = _pk()
    channel_code: str = Field(
        sa_column=sa.Column(sa.String(32), sa.ForeignKey("channel.code"), nullable=False)
    )
    external_id: str = _external_id(128)
    source_identity_id: int | None = _fk("source_identity.id")
    customer_id: int | None = _fk("golden_customer.id")
    type: str = Field(max_length=32)  # follow, unfollow, message, comment, mention, page_view, ...
    direction: str = Field(default="inbound", max_length=8)
    occurred_at: datetime | None = _ts(nullable=False)
    summary: str | None = None
    payload: dict[str, Any] = _jsonb()
    landed_at: datetime | None = _ts(nullable=False, default_now=True)


class ServiceCase(SQLModel, table=True):
    """A complaint, inquiry, return/exchange or repair, moved through its type's configured state machine
    (crm.service): the status values are the configuration's, so no check constraint lists them (0012)."""

    __tablename__ = "service_case"
    __table_args__ = (
        sa.CheckConstraint(
            "priority in ('low', 'normal', 'high', 'urgent')", name="ck_service_case_priority"
        ),
        sa.CheckConstraint("compensation_fen >= 0 and points_granted >= 0", name="ck_service_case_grants"),
        sa.Index("ix_service_case_customer_opened", "customer_id", sa.text("opened_at desc")),
        # sla_due_at is the next deadline still running (first response, then resolution): the queue's order.
        sa.Index("ix_service_case_open_sla", "status", "sla_due_at"),
        sa.Index("ix_service_case_identity", "source_identity_id"),
        sa.Index("ix_service_case_opened", "opened_at"),
    )

    id: int | None = _pk()
    case_no: str = Field(max_length=32, sa_column_kwargs={"unique": True})
    customer_id: int | None = _fk("golden_customer.id")
    source_identity_id: int | None = _fk("source_identity.id")
    order_id: int | None = _fk("orders.id")
    order_line_no: int | None = None
    store_id: int | None = _fk("store.id")
    product_id: int | None = _fk("product.id")
    channel_code: str | None = Field(
        default=None, sa_column=sa.Column(sa.String(32), sa.ForeignKey("channel.code"), nullable=True)
    )
    source: str = Field(
        default="service_desk",
        sa_column=sa.Column(sa.String(16), nullable=False, server_default="service_desk"),
    )  # service_desk, app, wechat, store, ... (configured)
    type: str = Field(max_length=32)  # complaint, inquiry, return, repair (configured)
    status: str = Field(default="open", max_length=16)
    priority: str = Field(default="normal", max_length=8)
    subject: str = Field(max_length=300)
    description: str | None = None
    request: str | None = None  # what the customer asks for
    department: str | None = Field(default=None, max_length=64)
    assignee: str | None = Field(default=None, max_length=100)
    explanation: str | None = None  # given to the customer when the case is judged invalid
    cause: str | None = None
    responsible_party: str | None = Field(default=None, max_length=100)
    # {"kind": return|exchange|repair|discount|compensation|explanation, "compensation_fen", "points", "note"}
    resolution: dict[str, Any] | None = _jsonb(nullable=True)
    compensation_fen: int = _fen()
    points_granted: int = _int0()
    coupon_id: int | None = _fk("coupon.id")
    approved_by: str | None = Field(default=None, max_length=100)
    approved_at: datetime | None = _ts()
    executed_at: datetime | None = _ts()
    summary: str | None = None
    customer_feedback: str | None = None
    outcome: str | None = Field(default=None, max_length=16)  # invalid or resolved, once closed
    reopen_count: int = _int0()
    sla_clock: str = Field(
        default="calendar", sa_column=sa.Column(sa.String(8), nullable=False, server_default="calendar")
    )
    first_response_due_at: datetime | None = _ts()
    resolve_due_at: datetime | None = _ts()
    first_response_breached_at: datetime | None = _ts()
    resolve_breached_at: datetime | None = _ts()
    sla_due_at: datetime | None = _ts()
    opened_by: str | None = Field(default=None, max_length=100)
    rule_version: str | None = Field(default=None, max_length=32)
    opened_at: datetime | None = _ts(nullable=False, default_now=True)
    first_response_at: datetime | None = _ts()
    resolved_at: datetime | None = _ts()
    closed_at: datetime | None = _ts()
    updated_at: datetime | None = _ts(nullable=False, default_now=True)
    resolution_type: str | None = Field(default=None, max_length=32)  # refund, replace, explain, ...


class CaseEvent(SQLModel, table=True):
    __tablename__ = "case_event"
    __table_args__ = (sa.Index("ix_case_event_case_created", "case_id", "created_at"),)

    id: int | None = _pk()
    case_id: int = _fk("service_case.id", nullable=False, ondelete="CASCADE")
    kind: str = Field(max_length=32)  # opened, transition, assigned, sla_breached, note
    action: str | None = Field(default=None, max_length=100)  # the configured step's name
    actor: str | None = Field(default=None, max_length=100)
    from_status: str | None = Field(default=None, max_length=16)
    to_status: str | None = Field(default=None, max_length=16)
    note: str | None = None
    detail: dict[str, Any] = _jsonb()  # what the step recorded (department, cause, resolution, grants)
    rule_version: str | None = Field(default=None, max_length=32)
    created_at: datetime | None = _ts(nullable=False, default_now=True)


class SurveyResponse(SQLModel, table=True):
    __tablename__ = "survey_response"
    __table_args__ = (
        sa.CheckConstraint("kind in ('csat', 'nps')", name="ck_survey_response_kind"),
        sa.CheckConstraint(
            "(kind = 'csat' and score between 1 and 5) or (kind = 'nps' and score between 0 and 10)",
            name="ck_survey_response_score_range",
        ),
        sa.CheckConstraint(
            "expected_score is null or expected_score > 0", name="ck_survey_response_expected_positive"
        ),
        # One answer per survey, customer and what it is about ('case:12', 'order:5'): a resubmit is refused.
        sa.UniqueConstraint("survey_code", "customer_id", "subject_key", name="uq_survey_response_subject"),
        sa.Index("ix_survey_response_customer", "customer_id", sa.text("responded_at desc")),
        sa.Index("ix_survey_response_responded", "responded_at"),
    )

    id: int | None = _pk()
    customer_id: int | None = _fk("golden_customer.id")
    case_id: int | None = _fk("service_case.id", index=True)
    order_id: int | None = _fk("orders.id")
    store_id: int | None = _fk("store.id")
    survey_code: str | None = Field(default=None, max_length=32)
    subject_key: str | None = Field(default=None, max_length=48)
    kind: str = Field(max_length=4)
    score: int
    expected_score: int | None = None
    perceived_score: int | None = None
    answers: dict[str, Any] = _jsonb()
    comment: str | None = None
    channel_code: str | None = Field(default=None, max_length=32)
    submitted_by: str | None = Field(default=None, max_length=100)
    responded_at: datetime | None = _ts(nullable=False, default_now=True)


class Feedback(SQLModel, table=True):
    """Free-form feedback from any channel, classified by need and priority (crm.service.feedback)."""

    __tablename__ = "feedback"
    __table_args__ = (
        sa.CheckConstraint("priority in ('high', 'medium', 'low')", name="ck_feedback_priority"),
        sa.CheckConstraint(
            "status in ('new', 'acknowledged', 'acted_on', 'closed')", name="ck_feedback_status"
        ),
        sa.CheckConstraint("sentiment in ('negative', 'neutral', 'positive')", name="ck_feedback_sentiment"),
        sa.Index("ix_feedback_customer_created", "customer_id", sa.text("created_at desc")),
        sa.Index("ix_feedback_open", "status", "priority", "created_at"),
    )

    id: int | None = _pk()
    customer_id: int | None = _fk("golden_customer.id")
    channel_code: str | None = Field(default=None, max_length=32)
    source: str = Field(max_length=16)  # review, wechat, survey, app, store, ...
    body: str
    need_type: str = Field(max_length=32)
    priority: str = Field(max_length=8)
    sentiment: str = Field(max_length=8)
    keywords: list[Any] = Field(
        default_factory=list,
        sa_column=sa.Column(JSONB, nullable=False, server_default=sa.text("'[]'::jsonb")),
    )
    classified_by: str = Field(max_length=100)  # "rules" or the staff member who overrode it
    status: str = Field(default="new", max_length=12)
    owner: str | None = Field(default=None, max_length=100)
    order_id: int | None = _fk("orders.id")
    case_id: int | None = _fk("service_case.id")
    survey_response_id: int | None = _fk("survey_response.id")
    rule_version: str | None = Field(default=None, max_length=32)
    created_at: datetime | None = _ts(nullable=False, default_now=True)
    updated_at: datetime | None = _ts(nullable=False, default_now=True)


class CareAction(SQLModel, table=True):
    """The care outbox: one action per customer, kind and period, for a messaging system to deliver; a
    suppressed one says why. Delivery workers claim with a lease (FOR UPDATE SKIP LOCKED) and acknowledge."""

    __tablename__ = "care_action"
    __table_args__ = (
        sa.UniqueConstraint("customer_id", "kind", "period", name="uq_care_action_period"),
        sa.CheckConstraint(
            "state in ('pending', 'claimed', 'delivered', 'failed', 'suppressed')",
            name="ck_care_action_state",
        ),
        sa.CheckConstraint("purpose in ('marketing', 'service')", name="ck_care_action_purpose"),
        sa.CheckConstraint(
            "(state = 'suppressed') = (suppressed_reason is not null)",
            name="ck_care_action_suppressed_reason",
        ),
        # The claim query reads pending (and lease-expired claimed) actions by due time.
        sa.Index("ix_care_action_claimable", "state", "due_at"),
        sa.Index("ix_care_action_customer_created", "customer_id", sa.text("created_at desc")),
        sa.Index("ix_care_action_kind_state", "kind", "state"),
    )

    id: int | None = _pk()
    customer_id: int = _fk("golden_customer.id", nullable=False)
    kind: str = Field(max_length=24)
    period: str = Field(max_length=48)  # '2026' (birthday), 'case:12', 'order:5', 'v:226' (regular visit)
    channel: str = Field(max_length=16)  # sms, wechat_template, app_push, call_list
    purpose: str = Field(max_length=10)
    state: str = Field(default="pending", max_length=10)
    suppressed_reason: str | None = Field(default=None, max_length=64)
    payload: dict[str, Any] = _jsonb()  # what the message needs, never PII (the worker reads the contact)
    due_at: datetime | None = _ts(nullable=False, default_now=True)
    attempts: int = _int0()
    claimed_by: str | None = Field(default=None, max_length=100)
    claimed_at: datetime | None = _ts()
    lease_expires_at: datetime | None = _ts()
    delivered_at: datetime | None = _ts()
    last_error: str | None = None
    rule_version: str | None = Field(default=None, max_length=32)
    created_at: datetime | None = _ts(nullable=False, default_now=True)


class Consent(SQLModel, table=True):
    """Append-only history per purpose; the latest row per (customer, purpose) is in force."""

    __tablename__ = "consent"
    __table_args__ = (
        sa.CheckConstraint("status in ('granted', 'withdrawn')", name="ck_consent_status"),
        sa.Index("ix_consent_customer_purpose", "customer_id", "purpose", sa.text("recorded_at desc")),
        sa.Index("ix_consent_identity", "source_identity_id"),
    )

    id: int | None = _pk()
    customer_id: int | None = _fk("golden_customer.id")
    source_identity_id: int | None = _fk("source_identity.id")
    purpose: str = Field(max_length=32)  # marketing_sms, marketing_wechat, marketing_email, profiling
    status: str = Field(max_length=9)
    source: str = Field(max_length=32)  # the channel or "staff"
    recorded_at: datetime | None = _ts(nullable=False, default_now=True)


# --------------------------------------------------------------------------- tags and segments


class Tag(SQLModel, table=True):
    __tablename__ = "tag"

    id: int | None = _pk()
    name: str = Field(max_length=64, sa_column_kwargs={"unique": True})
    # True for the tags analytics computes from config/analytics.toml's rules (0013): staff cannot set them.
    system: bool = Field(
        default=False, sa_column=sa.Column(sa.Boolean, nullable=False, server_default=sa.text("false"))
    )


class CustomerTag(SQLModel, table=True):
    __tablename__ = "customer_tag"

    customer_id: int = Field(
        sa_column=sa.Column(
            sa.BigInteger, sa.ForeignKey("golden_customer.id", ondelete="CASCADE"), primary_key=True
        )
    )
    tag_id: int = Field(
        sa_column=sa.Column(sa.BigInteger, sa.ForeignKey("tag.id", ondelete="CASCADE"), primary_key=True)
    )
    source: str | None = Field(default=None, max_length=32)  # system (a rule) or manual (staff)
    created_at: datetime | None = _ts(nullable=False, default_now=True)
    added_by: str | None = Field(default=None, max_length=100)  # the staff subject of a manual tag (0013)


class Segment(SQLModel, table=True):
    __tablename__ = "segment"
    __table_args__ = (
        sa.CheckConstraint("kind in ('rfm', 'value', 'lifecycle', 'custom')", name="ck_segment_kind"),
    )

    id: int | None = _pk()
    code: str = Field(max_length=64, sa_column_kwargs={"unique": True})
    name: str = Field(max_length=100)
    kind: str = Field(max_length=16)
    definition: dict[str, Any] = _jsonb()
    # config (config/analytics.toml) or api (defineSegment); who defined it and when (0013).
    source: str = Field(
        default="config", sa_column=sa.Column(sa.String(8), nullable=False, server_default="config")
    )
    created_by: str | None = Field(default=None, max_length=100)
    created_at: datetime | None = _ts(nullable=False, default_now=True)
    updated_at: datetime | None = _ts(nullable=False, default_now=True)


class SegmentMembership(SQLModel, table=True):
    """The segment's members now; a member who leaves moves to segment_membership_history (0013)."""

    __tablename__ = "segment_membership"
    __table_args__ = (sa.Index("ix_segment_membership_customer", "customer_id"),)

    segment_id: int = Field(
        sa_column=sa.Column(sa.BigInteger, sa.ForeignKey("segment.id", ondelete="CASCADE"), primary_key=True)
    )
    customer_id: int = Field(
        sa_column=sa.Column(
            sa.BigInteger, sa.ForeignKey("golden_customer.id", ondelete="CASCADE"), primary_key=True
        )
    )
    scores: dict[str, Any] = _jsonb()
    computed_at: datetime | None = _ts(nullable=False, default_now=True)
    entered_at: datetime | None = _ts(nullable=False, default_now=True)


# --------------------------------------------------------------------------- sync bookkeeping and audit


class Quarantine(SQLModel, table=True):
    """A row that failed validation: kept whole with the reason, until a replay lands it."""

    __tablename__ = "quarantine"
    __table_args__ = (
        sa.UniqueConstraint("channel_code", "payload_hash", name="uq_quarantine_channel_payload"),
        sa.Index(
            "ix_quarantine_open",
            "channel_code",
            "first_seen_at",
            postgresql_where=sa.text("resolved_at is null"),
        ),
    )

    id: int | None = _pk()
    channel_code: str = Field(max_length=32)
    entity: str = Field(max_length=32)  # customer, order, refund, interaction, pos_transaction
    external_id: str | None = Field(default=None, max_length=128)
    payload_hash: str = Field(max_length=64)  # sha256 of the canonical JSON: the same bad row is kept once
    raw: dict[str, Any] = _jsonb()
    reason: str
    errors: list[Any] = Field(
        default_factory=list,
        sa_column=sa.Column(JSONB, nullable=False, server_default=sa.text("'[]'::jsonb")),
    )
    seen_count: int = 1
    first_seen_at: datetime | None = _ts(nullable=False, default_now=True)
    last_seen_at: datetime | None = _ts(nullable=False, default_now=True)
    replayed_at: datetime | None = _ts()
    resolved_at: datetime | None = _ts()
    # Every reason the row was held for, oldest first ({"at", "reason"}): a replay adds, never overwrites (0014).
    history: list[Any] = Field(
        default_factory=list,
        sa_column=sa.Column(JSONB, nullable=False, server_default=sa.text("'[]'::jsonb")),
    )
    # How the row is retried: `revalidate` (its payload, after a mapping change) or `refetch` (from the
    # channel by its id, when the payload itself was bad) (0014).
    retry: str = Field(default="revalidate", max_length=16, sa_column_kwargs={"server_default": "revalidate"})
    # Where a `refetch` entry is read again: {"stream", "since", "until", "external_id"} (0016).
    refetch: dict[str, Any] | None = Field(default=None, sa_column=sa.Column(JSONB, nullable=True))


class SyncWatermark(SQLModel, table=True):
    """Where a connector's next incremental pull starts. Advanced in the transaction that lands a batch."""

    __tablename__ = "sync_watermark"

    connector: str = Field(primary_key=True, max_length=64)
    watermark_at: datetime | None = _ts()
    cursor: str | None = Field(default=None, max_length=200)
    extra: dict[str, Any] = _jsonb()
    updated_at: datetime | None = _ts(nullable=False, default_now=True)


class SyncStreamRun(SQLModel, table=True):
    """What one run of one stream read and what became of it: rows_read = landed + quarantined + rejected +
    unchanged (0014)."""

    __tablename__ = "sync_stream_run"
    __table_args__ = (
        sa.Index("ix_sync_stream_run_stream", "stream", sa.text("finished_at desc")),
        sa.Index("ix_sync_stream_run_run", "run_id"),
    )

    id: int | None = _pk()
    # The sync run (Prefect's root flow run) the stream ran in; null for runs outside a flow (0016).
    run_id: uuid.UUID | None = Field(default=None, sa_column=sa.Column(sa.Uuid, nullable=True))
    stream: str = Field(max_length=64)
    started_at: datetime | None = _ts(nullable=False)
    finished_at: datetime | None = _ts(nullable=False, default_now=True)
    rows_read: int = Field(sa_column=sa.Column(sa.BigInteger, nullable=False))
    landed: int = Field(sa_column=sa.Column(sa.BigInteger, nullable=False))
    quarantined: int = Field(sa_column=sa.Column(sa.BigInteger, nullable=False))
    rejected: int = Field(sa_column=sa.Column(sa.BigInteger, nullable=False))
    unchanged: int = Field(sa_column=sa.Column(sa.BigInteger, nullable=False))
    counts: dict[str, Any] = _jsonb()


class AuditLog(SQLModel, table=True):
    """Who read unmasked PII, and who merged, unmerged, adjusted or erased what."""

    __tablename__ = "audit_log"
    __table_args__ = (
        sa.Index("ix_audit_log_subject", "subject_type", "subject_id", sa.text("at desc")),
        sa.Index("ix_audit_log_actor", "actor", sa.text("at desc")),
    )

    id: int | None = _pk()
    actor: str = Field(max_length=100)
    actor_role: str | None = Field(default=None, max_length=32)
    action: str = Field(max_length=64)
    subject_type: str = Field(max_length=32)
    subject_id: str = Field(max_length=64)
    detail: dict[str, Any] = _jsonb()
    at: datetime | None = _ts(nullable=False, default_now=True)


class CustomerChange(SQLModel, table=True):
    """One row per golden customer created or changed (attributes, tier, merge, erasure), written by
    statement-level triggers: the change feed downstream jobs read (`customerChanges`). `xact_id` is the
    writing transaction, so a reader can serve only changes of transactions that can no longer commit
    behind it (see schema/changes.py)."""

    __tablename__ = "customer_change"
    __table_args__ = (
        sa.CheckConstraint(
            "kind in ('created', 'updated', 'merged', 'erased')", name="ck_customer_change_kind"
        ),
        sa.Index("ix_customer_change_xact", "xact_id", "id"),
    )

    id: int | None = _pk()
    xact_id: int = Field(
        sa_column=sa.Column(
            sa.BigInteger, nullable=False, server_default=sa.text("(pg_current_xact_id())::text::bigint")
        )
    )
    customer_id: int = Field(sa_column=sa.Column(sa.BigInteger, nullable=False))
    kind: str = Field(max_length=8)
    changed_at: datetime | None = _ts(nullable=False, default_now=True)


CUSTOMER_CHANGE_COLUMNS = (
    "status, merged_into, name, name_pinyin, phone, email, birth_date, gender, member_no, province, city, "
    "district, address, tier_code, erased_at"
)
CUSTOMER_CHANGE_TRIGGER_SQL: tuple[str, ...] = (
    f"""
create or replace function c360_customer_change() returns trigger
language plpgsql as $$
begin
    if tg_op = 'INSERT' then
        insert into customer_change (customer_id, kind) select id, 'created' from new_rows;
    else
        -- Only real changes: a golden refresh that rewrites the same values (and updated_at) is not one.
        insert into customer_change (customer_id, kind)
        select n.id, case n.status when 'merged' then 'merged' when 'erased' then 'erased' else 'updated' end
          from new_rows n join old_rows o on o.id = n.id
         where ({", ".join("o." + c.strip() for c in CUSTOMER_CHANGE_COLUMNS.split(","))})
               is distinct from ({", ".join("n." + c.strip() for c in CUSTOMER_CHANGE_COLUMNS.split(","))});
    end if;
    return null;
end $$
""",  # noqa: S608 - the column list is a constant of this module
    """
create trigger trg_customer_change_insert after insert on golden_customer
referencing new table as new_rows for each statement execute function c360_customer_change()
""",
    """
create trigger trg_customer_change_update after update on golden_customer
referencing old table as old_rows new table as new_rows for each statement execute function c360_customer_change()
""",
)
CUSTOMER_CHANGE_TRIGGER_DROP_SQL: tuple[str, ...] = (
    "drop trigger if exists trg_customer_change_update on golden_customer",
    "drop trigger if exists trg_customer_change_insert on golden_customer",
    "drop function if exists c360_customer_change()",
)


# Kept next to the tables so the migration and the tests share one definition. One statement per item:
# asyncpg prepares each statement, so they cannot be sent as one script.
POINTS_BALANCE_TRIGGER_SQL: tuple[str, ...] = (
    """
create or replace function c360_points_balance_apply() returns trigger
language plpgsql as $$
begin
    if tg_op in ('UPDATE', 'DELETE') then
        update points_balance
           set balance = balance - old.points,
               lifetime_earned = lifetime_earned - case when old.kind = 'earn' then old.points else 0 end,
               updated_at = now()
         where customer_id = old.customer_id;
    end if;
    if tg_op in ('INSERT', 'UPDATE') then
        -- CHECK runs on an INSERT's proposed row before ON CONFLICT, so create at zero, then apply.
        insert into points_balance (customer_id, balance, lifetime_earned)
        values (new.customer_id, 0, 0)
        on conflict (customer_id) do nothing;
        update points_balance
           set balance = balance + new.points,
               lifetime_earned = lifetime_earned + case when new.kind = 'earn' then new.points else 0 end,
               updated_at = now()
         where customer_id = new.customer_id;
    end if;
    return null;
end $$
""",
    """
create trigger trg_points_balance
after insert or delete or update of customer_id, points on points_ledger_entry
for each row execute function c360_points_balance_apply()
""",
)

POINTS_BALANCE_TRIGGER_DROP_SQL: tuple[str, ...] = (
    "drop trigger if exists trg_points_balance on points_ledger_entry",
    "drop function if exists c360_points_balance_apply()",
)


class ErasureSuppression(SQLModel, table=True):
    """The identifiers of erased people, as keyed hashes (identity.erasure): landing drops an incoming
    identity that carries one, so a channel that still has the person does not bring them back."""

    __tablename__ = "erasure_suppression"

    # The hash leads the key: landing looks a batch up by hash alone.
    value_hash: str = Field(primary_key=True, max_length=64)
    kind: str = Field(primary_key=True, max_length=48)  # external:<channel>, phone, email, unionid, member_no
    customer_id: int = Field(sa_column=sa.Column(sa.BigInteger, nullable=False))
    erased_at: datetime | None = _ts(nullable=False, default_now=True)


# --------------------------------------------------------------------------- customer analytics (0013)


def _arr() -> Any:
    return Field(
        default_factory=list,
        sa_column=sa.Column(ARRAY(sa.Text), nullable=False, server_default=sa.text("'{}'")),
    )


class CustomerMetrics(SQLModel, table=True):
    """One row per active golden customer: measures, RFM, value tier, ABC, lifecycle, portrait and CLV, as
    crm.analytics last computed them (set-based, incrementally for the customers a sync touched)."""

    __tablename__ = "customer_metrics"

    customer_id: int = Field(
        sa_column=sa.Column(
            sa.BigInteger, sa.ForeignKey("golden_customer.id", ondelete="CASCADE"), primary_key=True
        )
    )
    order_count: int = _int0()  # counted orders not refunded in full
    total_spent_fen: int = _fen()
    refunded_fen: int = _fen()
    net_spent_fen: int = _fen()
    average_order_value_fen: int = _fen()
    purchase_frequency: float | None = Field(default=None, sa_column=sa.Column(sa.Float, nullable=True))
    first_order_at: datetime | None = _ts()
    last_order_at: datetime | None = _ts()
    preferred_channel: str | None = Field(default=None, max_length=32)
    preferred_store_id: int | None = Field(default=None, sa_column=sa.Column(sa.BigInteger, nullable=True))
    preferred_category: str | None = Field(default=None, max_length=100)
    channels: list[str] = _arr()  # channels of the customer's identities (social ones included)
    order_channels: list[str] = _arr()
    categories: list[str] = _arr()
    discounted_orders: int = _int0()
    price_sensitivity: float | None = Field(default=None, sa_column=sa.Column(sa.Float, nullable=True))
    age_band: str | None = Field(default=None, max_length=16)
    city_tier: str | None = Field(default=None, max_length=16)
    recency_days: int | None = None
    r_score: int | None = Field(default=None, sa_column=sa.Column(sa.SmallInteger, nullable=True))
    f_score: int | None = Field(default=None, sa_column=sa.Column(sa.SmallInteger, nullable=True))
    m_score: int | None = Field(default=None, sa_column=sa.Column(sa.SmallInteger, nullable=True))
    rfm_cell: str | None = Field(default=None, max_length=32)
    value_tier: str | None = Field(default=None, max_length=4)
    abc_class: str | None = Field(default=None, max_length=1)
    lifecycle_stage: str = Field(max_length=16)
    lifecycle_since: datetime | None = _ts(nullable=False)
    clv_historical_fen: int = _fen()
    clv_predicted_fen: int | None = _fen(nullable=True, default=None)
    expected_orders: float | None = Field(default=None, sa_column=sa.Column(sa.Float, nullable=True))
    computed_at: datetime | None = _ts(nullable=False, default_now=True)


class LifecycleHistory(SQLModel, table=True):
    """Every lifecycle stage a customer has been in, with when it began and ended (null: current)."""

    __tablename__ = "lifecycle_history"
    __table_args__ = (
        sa.Index("ix_lifecycle_history_customer_started", "customer_id", sa.text("started_at desc")),
    )

    id: int | None = _pk()
    customer_id: int = _fk("golden_customer.id", nullable=False, ondelete="CASCADE")
    stage: str = Field(max_length=16)
    from_stage: str | None = Field(default=None, max_length=16)
    started_at: datetime | None = _ts(nullable=False)
    ended_at: datetime | None = _ts()
    rule_version: str | None = Field(default=None, max_length=32)


class AnalyticsModel(SQLModel, table=True):
    """What a full run fitted over the whole base, so incremental runs score against the same figures:
    RFM cut points, ABC spend thresholds, the BG/NBD and Gamma-Gamma parameters."""

    __tablename__ = "analytics_model"

    kind: str = Field(primary_key=True, max_length=16)  # rfm, abc, clv
    fitted_at: datetime | None = _ts(nullable=False)
    customers: int = _int0()
    rule_version: str | None = Field(default=None, max_length=32)
    parameters: dict[str, Any] = _jsonb()


class SegmentMembershipHistory(SQLModel, table=True):
    """A finished stay in a segment: entered and left."""

    __tablename__ = "segment_membership_history"
    __table_args__ = (
        sa.Index("ix_segment_membership_history_segment", "segment_id", sa.text("left_at desc")),
        sa.Index("ix_segment_membership_history_customer", "customer_id"),
    )

    id: int | None = _pk()
    segment_id: int = _fk("segment.id", nullable=False, ondelete="CASCADE")
    customer_id: int = _fk("golden_customer.id", nullable=False, ondelete="CASCADE")
    entered_at: datetime | None = _ts(nullable=False)
    left_at: datetime | None = _ts(nullable=False)


class SegmentSize(SQLModel, table=True):
    """A segment's size per local day, as of the day's last recompute."""

    __tablename__ = "segment_size"

    segment_id: int = Field(
        sa_column=sa.Column(sa.BigInteger, sa.ForeignKey("segment.id", ondelete="CASCADE"), primary_key=True)
    )
    day: date = Field(sa_column=sa.Column(sa.Date, primary_key=True))
    size: int = _int0()
    computed_at: datetime | None = _ts(nullable=False, default_now=True)


class Household(SQLModel, table=True):
    """Golden customers who share a delivery address or a family phone: a relation, never a merge. `key` is a
    hash of the normalized address or phone, so the table holds no PII of its own."""

    __tablename__ = "household"
    __table_args__ = (
        sa.UniqueConstraint("key_kind", "key", name="uq_household_key"),
        sa.CheckConstraint("key_kind in ('address', 'phone')", name="ck_household_key_kind"),
        sa.CheckConstraint("status in ('auto', 'confirmed', 'split')", name="ck_household_status"),
    )

    id: int | None = _pk()
    key_kind: str = Field(max_length=8)
    key: str = Field(max_length=64)
    status: str = Field(default="auto", max_length=9)
    decided_by: str | None = Field(default=None, max_length=100)
    decided_at: datetime | None = _ts()
    created_at: datetime | None = _ts(nullable=False, default_now=True)
    updated_at: datetime | None = _ts(nullable=False, default_now=True)


class HouseholdEvidence(SQLModel, table=True):
    """What each customer's identities say they share: a hash of a normalized delivery address or a phone.
    Kept per customer so an incremental run regroups only the keys its customers touch."""

    __tablename__ = "household_evidence"
    __table_args__ = (sa.Index("ix_household_evidence_customer", "customer_id"),)

    key_kind: str = Field(sa_column=sa.Column(sa.String(8), primary_key=True))
    key: str = Field(sa_column=sa.Column(sa.String(64), primary_key=True))
    customer_id: int = Field(
        sa_column=sa.Column(
            sa.BigInteger, sa.ForeignKey("golden_customer.id", ondelete="CASCADE"), primary_key=True
        )
    )


class HouseholdMember(SQLModel, table=True):
    __tablename__ = "household_member"
    __table_args__ = (
        sa.CheckConstraint("role in ('orderer', 'recipient', 'member')", name="ck_household_member_role"),
        sa.Index("ix_household_member_customer", "customer_id"),
    )

    household_id: int = Field(
        sa_column=sa.Column(
            sa.BigInteger, sa.ForeignKey("household.id", ondelete="CASCADE"), primary_key=True
        )
    )
    customer_id: int = Field(
        sa_column=sa.Column(
            sa.BigInteger, sa.ForeignKey("golden_customer.id", ondelete="CASCADE"), primary_key=True
        )
    )
    role: str = Field(default="member", max_length=9)
    # Split off by staff: kept so the next recompute does not put the customer back.
    excluded: bool = Field(
        default=False, sa_column=sa.Column(sa.Boolean, nullable=False, server_default=sa.text("false"))
    )
    joined_at: datetime | None = _ts(nullable=False, default_now=True)
