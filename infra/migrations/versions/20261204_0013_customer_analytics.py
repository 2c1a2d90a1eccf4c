"""customer analytics: measures, lifecycle history, fitted models, segment history and sizes, households

Revision ID: 0013
Revises: 0015
Create Date: 2026-12-04 06:40:00

Why: the segment, tag and membership tables existed with nothing filling them. crm.analytics keeps one row
of measures per customer (RFM, value tier, ABC, lifecycle, portrait, CLV) so the API and rule segments read
them without aggregating orders per request; the lifecycle stages' history; what a full run fitted over the
whole base (RFM cut points, ABC thresholds, the CLV model), so an incremental run scores against the same
figures. Tags learn whether a rule or staff set them; segments where they were defined; a member who leaves
a segment moves to its history, and each segment's size is kept per day. Households relate golden
customers sharing a delivery address or phone by a hash of it, never merging them.
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TS = sa.DateTime(timezone=True)
NOW = sa.text("now()")


def _s(n: int) -> sqlmodel.sql.sqltypes.AutoString:
    return sqlmodel.sql.sqltypes.AutoString(length=n)


def upgrade() -> None:
    op.add_column("tag", sa.Column("system", sa.Boolean(), nullable=False, server_default=sa.text("false")))
    op.add_column("customer_tag", sa.Column("added_by", _s(100), nullable=True))
    op.add_column(
        "segment", sa.Column("source", sa.String(length=8), nullable=False, server_default="config")
    )
    op.add_column("segment", sa.Column("created_by", _s(100), nullable=True))
    op.add_column("segment", sa.Column("created_at", TS, nullable=False, server_default=NOW))
    op.add_column("segment", sa.Column("updated_at", TS, nullable=False, server_default=NOW))
    op.add_column("segment_membership", sa.Column("entered_at", TS, nullable=False, server_default=NOW))

    int0 = {"nullable": False, "server_default": sa.text("0")}
    op.create_table(
        "customer_metrics",
        sa.Column("customer_id", sa.BigInteger(), nullable=False),
        sa.Column("order_count", sa.Integer(), **int0),
        sa.Column("total_spent_fen", sa.BigInteger(), **int0),
        sa.Column("refunded_fen", sa.BigInteger(), **int0),
        sa.Column("net_spent_fen", sa.BigInteger(), **int0),
        sa.Column("average_order_value_fen", sa.BigInteger(), **int0),
        sa.Column("purchase_frequency", sa.Float(), nullable=True),
        sa.Column("first_order_at", TS, nullable=True),
        sa.Column("last_order_at", TS, nullable=True),
        sa.Column("preferred_channel", _s(32), nullable=True),
        sa.Column("preferred_store_id", sa.BigInteger(), nullable=True),
        sa.Column("preferred_category", _s(100), nullable=True),
        sa.Column("channels", postgresql.ARRAY(sa.Text()), nullable=False, server_default=sa.text("'{}'")),
        sa.Column(
            "order_channels", postgresql.ARRAY(sa.Text()), nullable=False, server_default=sa.text("'{}'")
        ),
        sa.Column("categories", postgresql.ARRAY(sa.Text()), nullable=False, server_default=sa.text("'{}'")),
        sa.Column("discounted_orders", sa.Integer(), **int0),
        sa.Column("price_sensitivity", sa.Float(), nullable=True),
        sa.Column("age_band", _s(16), nullable=True),
        sa.Column("city_tier", _s(16), nullable=True),
        sa.Column("recency_days", sa.Integer(), nullable=True),
        sa.Column("r_score", sa.SmallInteger(), nullable=True),
        sa.Column("f_score", sa.SmallInteger(), nullable=True),
        sa.Column("m_score", sa.SmallInteger(), nullable=True),
        sa.Column("rfm_cell", _s(32), nullable=True),
        sa.Column("value_tier", _s(4), nullable=True),
        sa.Column("abc_class", _s(1), nullable=True),
        sa.Column("lifecycle_stage", _s(16), nullable=False),
        sa.Column("lifecycle_since", TS, nullable=False),
        sa.Column("clv_historical_fen", sa.BigInteger(), **int0),
        sa.Column("clv_predicted_fen", sa.BigInteger(), nullable=True),
        sa.Column("expected_orders", sa.Float(), nullable=True),
        sa.Column("computed_at", TS, nullable=False, server_default=NOW),
        sa.ForeignKeyConstraint(["customer_id"], ["golden_customer.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("customer_id"),
    )
    op.create_table(
        "lifecycle_history",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("customer_id", sa.BigInteger(), nullable=False),
        sa.Column("stage", _s(16), nullable=False),
        sa.Column("from_stage", _s(16), nullable=True),
        sa.Column("started_at", TS, nullable=False),
        sa.Column("ended_at", TS, nullable=True),
        sa.Column("rule_version", _s(32), nullable=True),
        sa.ForeignKeyConstraint(["customer_id"], ["golden_customer.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        "ix_lifecycle_history_customer_started",
        "lifecycle_history",
        ["customer_id", sa.text("started_at desc")],
    )
    op.create_table(
        "analytics_model",
        sa.Column("kind", _s(16), nullable=False),
        sa.Column("fitted_at", TS, nullable=False),
        sa.Column("customers", sa.Integer(), **int0),
        sa.Column("rule_version", _s(32), nullable=True),
        sa.Column("parameters", postgresql.JSONB(), nullable=False, server_default=sa.text("'{}'::jsonb")),
        sa.PrimaryKeyConstraint("kind"),
    )
    op.create_table(
        "segment_membership_history",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("segment_id", sa.BigInteger(), nullable=False),
        sa.Column("customer_id", sa.BigInteger(), nullable=False),
        sa.Column("entered_at", TS, nullable=False),
        sa.Column("left_at", TS, nullable=False),
        sa.ForeignKeyConstraint(["segment_id"], ["segment.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["customer_id"], ["golden_customer.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        "ix_segment_membership_history_segment",
        "segment_membership_history",
        ["segment_id", sa.text("left_at desc")],
    )
    op.create_index("ix_segment_membership_history_customer", "segment_membership_history", ["customer_id"])
    op.create_table(
        "segment_size",
        sa.Column("segment_id", sa.BigInteger(), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("size", sa.Integer(), **int0),
        sa.Column("computed_at", TS, nullable=False, server_default=NOW),
        sa.ForeignKeyConstraint(["segment_id"], ["segment.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("segment_id", "day"),
    )
    op.create_table(
        "household",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("key_kind", _s(8), nullable=False),
        sa.Column("key", _s(64), nullable=False),
        sa.Column("status", _s(9), nullable=False),
        sa.Column("decided_by", _s(100), nullable=True),
        sa.Column("decided_at", TS, nullable=True),
        sa.Column("created_at", TS, nullable=False, server_default=NOW),
        sa.Column("updated_at", TS, nullable=False, server_default=NOW),
        sa.CheckConstraint("key_kind in ('address', 'phone')", name="ck_household_key_kind"),
        sa.CheckConstraint("status in ('auto', 'confirmed', 'split')", name="ck_household_status"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("key_kind", "key", name="uq_household_key"),
    )
    op.create_table(
        "household_evidence",
        sa.Column("key_kind", sa.String(length=8), nullable=False),
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("customer_id", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(["customer_id"], ["golden_customer.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("key_kind", "key", "customer_id"),
    )
    op.create_index("ix_household_evidence_customer", "household_evidence", ["customer_id"])
    op.create_table(
        "household_member",
        sa.Column("household_id", sa.BigInteger(), nullable=False),
        sa.Column("customer_id", sa.BigInteger(), nullable=False),
        sa.Column("role", _s(9), nullable=False),
        sa.Column("excluded", sa.Boolean(), nullable=False, server_default=sa.text("false")),
        sa.Column("joined_at", TS, nullable=False, server_default=NOW),
        sa.CheckConstraint("role in ('orderer', 'recipient', 'member')", name="ck_household_member_role"),
        sa.ForeignKeyConstraint(["household_id"], ["household.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["customer_id"], ["golden_customer.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("household_id", "customer_id"),
    )
    op.create_index("ix_household_member_customer", "household_member", ["customer_id"])


def downgrade() -> None:
    op.drop_index("ix_household_member_customer", table_name="household_member")
    op.drop_table("household_member")
    op.drop_index("ix_household_evidence_customer", table_name="household_evidence")
    op.drop_table("household_evidence")
    op.drop_table("household")
    op.drop_table("segment_size")
    op.drop_index("ix_segment_membership_history_customer", table_name="segment_membership_history")
    op.drop_index("ix_segment_membership_history_segment", table_name="segment_membership_history")
    op.drop_table("segment_membership_history")
    op.drop_table("analytics_model")
    op.drop_index("ix_lifecycle_history_customer_started", table_name="lifecycle_history")
    op.drop_table("lifecycle_history")
    op.drop_table("customer_metrics")
    op.drop_column("segment_membership", "entered_at")
    op.drop_column("segment", "updated_at")
    op.drop_column("segment", "created_at")
    op.drop_column("segment", "created_by")
    op.drop_column("segment", "source")
    op.drop_column("customer_tag", "added_by")
    op.drop_column("tag", "system")
