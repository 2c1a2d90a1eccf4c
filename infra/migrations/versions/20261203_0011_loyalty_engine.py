"""loyalty engine: rule versions, pending lots, debts, membership state, coupons, campaigns, referrals

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-03 17:40:00

Why: the points tables existed without the bookkeeping the rules need. Every ledger entry now records the
rule version that produced it and any change of debt (points a refund took back after they were spent),
so a debt follows its rows through merges and unmerges like the points do. An earn lot is one per order
(unique), locked until the return window closes (`available_at`), and keeps its basis and what refunds
took back, so a second partial refund reverses only the difference. Membership keeps the qualified tier,
the grace period of a pending downgrade and a manual override with an expiry, never a silent floor.
Coupons, campaigns (with their holdout), referrals and the replay table of point mutations are new.

The balance trigger becomes a statement trigger for inserts (transition table): the engine writes ledger
entries set-based, tens of thousands per statement in the daily run, and a row trigger paid an insert and
an update per entry. Updates and deletes (merges moving rows) keep the row trigger; both now keep the debt.
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op
from sqlalchemy.dialects import postgresql

from infra.models import POINTS_BALANCE_TRIGGER_SQL

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TS = sa.DateTime(timezone=True)

BALANCE_TRIGGER_SQL = (
    """
create or replace function c360_points_balance_insert() returns trigger
language plpgsql as $$
begin
    -- CHECK runs on an INSERT's proposed row before ON CONFLICT, so create at zero, then apply.
    insert into points_balance (customer_id, balance, lifetime_earned, debt)
    select distinct customer_id, 0, 0, 0 from inserted
    on conflict (customer_id) do nothing;
    update points_balance b
       set balance = b.balance + s.points, lifetime_earned = b.lifetime_earned + s.earned,
           debt = b.debt + s.owed, updated_at = now()
      from (select customer_id, sum(points) as points, sum(case when kind = 'earn' then points else 0 end) as earned,
                   sum(owed_points) as owed
              from inserted group by customer_id) s
     where b.customer_id = s.customer_id;
    return null;
end $$
""",
    """
create or replace function c360_points_balance_apply() returns trigger
language plpgsql as $$
begin
    if tg_op in ('UPDATE', 'DELETE') then
        update points_balance
           set balance = balance - old.points,
               lifetime_earned = lifetime_earned - case when old.kind = 'earn' then old.points else 0 end,
               debt = debt - old.owed_points,
               updated_at = now()
         where customer_id = old.customer_id;
    end if;
    if tg_op = 'UPDATE' then
        insert into points_balance (customer_id, balance, lifetime_earned) values (new.customer_id, 0, 0)
        on conflict (customer_id) do nothing;
        update points_balance
           set balance = balance + new.points,
               lifetime_earned = lifetime_earned + case when new.kind = 'earn' then new.points else 0 end,
               debt = debt + new.owed_points,
               updated_at = now()
         where customer_id = new.customer_id;
    end if;
    return null;
end $$
""",
    "drop trigger trg_points_balance on points_ledger_entry",
    """
create trigger trg_points_balance
after delete or update of customer_id, points, owed_points on points_ledger_entry
for each row execute function c360_points_balance_apply()
""",
    """
create trigger trg_points_balance_insert
after insert on points_ledger_entry referencing new table as inserted
for each statement execute function c360_points_balance_insert()
""",
)


def upgrade() -> None:
    op.add_column("points_ledger_entry", sa.Column("rule_version", sa.String(32), nullable=True))
    op.add_column(
        "points_ledger_entry", sa.Column("owed_points", sa.Integer(), nullable=False, server_default="0")
    )
    op.add_column("points_lot", sa.Column("order_id", sa.BigInteger(), nullable=True))
    op.add_column("points_lot", sa.Column("basis_fen", sa.BigInteger(), nullable=True))
    op.add_column(
        "points_lot", sa.Column("points_reversed", sa.Integer(), nullable=False, server_default="0")
    )
    op.add_column("points_lot", sa.Column("available_at", TS, nullable=True))
    op.add_column("points_lot", sa.Column("released_at", TS, nullable=True))
    op.add_column("points_lot", sa.Column("rule_version", sa.String(32), nullable=True))
    op.create_index("uq_points_lot_order", "points_lot", ["order_id"], unique=True)
    op.create_index(
        "ix_points_lot_pending",
        "points_lot",
        ["available_at"],
        postgresql_where=sa.text("released_at is null"),
    )
    op.add_column("points_balance", sa.Column("debt", sa.Integer(), nullable=False, server_default="0"))
    op.create_check_constraint("ck_points_balance_debt_non_negative", "points_balance", "debt >= 0")
    for statement in BALANCE_TRIGGER_SQL:
        op.execute(statement)
    op.add_column("tier_history", sa.Column("actor", sa.String(100), nullable=True))
    op.add_column("tier_history", sa.Column("rule_version", sa.String(32), nullable=True))

    op.create_table(
        "membership",
        sa.Column("customer_id", sa.BigInteger(), sa.ForeignKey("golden_customer.id"), primary_key=True),
        sa.Column("tier_code", sa.String(16), sa.ForeignKey("membership_tier.code"), nullable=False),
        sa.Column("since", TS, nullable=False),
        sa.Column("qualified_tier", sa.String(16), nullable=False),
        sa.Column("window_spend_fen", sa.BigInteger(), nullable=False, server_default="0"),
        sa.Column("window_orders", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("window_points", sa.BigInteger(), nullable=False, server_default="0"),
        sa.Column("below_since", TS, nullable=True),
        sa.Column("next_review_at", TS, nullable=True),
        sa.Column("override_tier", sa.String(16), sa.ForeignKey("membership_tier.code"), nullable=True),
        sa.Column("override_expires_at", TS, nullable=True),
        sa.Column("override_reason", sqlmodel.sql.sqltypes.AutoString(), nullable=True),
        sa.Column("evaluated_at", TS, nullable=False, server_default=sa.func.now()),
    )
    op.create_index("ix_membership_next_review", "membership", ["next_review_at"])

    op.create_table(
        "campaign",
        sa.Column("id", sa.BigInteger(), sa.Identity(), primary_key=True),
        sa.Column("code", sa.String(64), nullable=False, unique=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("audience", postgresql.JSONB(), nullable=False, server_default="{}"),
        sa.Column("coupon", postgresql.JSONB(), nullable=False, server_default="{}"),
        sa.Column("holdout_pct", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("starts_at", TS, nullable=False),
        sa.Column("ends_at", TS, nullable=True),
        sa.Column("launched_at", TS, nullable=True),
        sa.Column("created_at", TS, nullable=False, server_default=sa.func.now()),
        sa.CheckConstraint("holdout_pct between 0 and 90", name="ck_campaign_holdout_pct"),
    )
    op.create_table(
        "campaign_member",
        sa.Column(
            "campaign_id", sa.BigInteger(), sa.ForeignKey("campaign.id", ondelete="CASCADE"), primary_key=True
        ),
        sa.Column("customer_id", sa.BigInteger(), sa.ForeignKey("golden_customer.id"), primary_key=True),
        sa.Column("holdout", sa.Boolean(), nullable=False),
        sa.Column("assigned_at", TS, nullable=False, server_default=sa.func.now()),
    )
    op.create_index("ix_campaign_member_customer", "campaign_member", ["customer_id"])
    op.create_table(
        "coupon",
        sa.Column("id", sa.BigInteger(), sa.Identity(), primary_key=True),
        sa.Column("code", sa.String(32), nullable=False, unique=True),
        sa.Column("customer_id", sa.BigInteger(), sa.ForeignKey("golden_customer.id"), nullable=False),
        sa.Column("campaign_id", sa.BigInteger(), sa.ForeignKey("campaign.id"), nullable=True),
        sa.Column("kind", sa.String(8), nullable=False),
        sa.Column("value_fen", sa.BigInteger(), nullable=False, server_default="0"),
        sa.Column("percent_off", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("min_spend_fen", sa.BigInteger(), nullable=False, server_default="0"),
        sa.Column("state", sa.String(9), nullable=False, server_default="issued"),
        sa.Column("issued_at", TS, nullable=False, server_default=sa.func.now()),
        sa.Column("expires_at", TS, nullable=False),
        sa.Column("redeemed_at", TS, nullable=True),
        sa.Column("redeemed_order_id", sa.BigInteger(), sa.ForeignKey("orders.id"), nullable=True),
        sa.Column("reason", sqlmodel.sql.sqltypes.AutoString(), nullable=True),
        sa.CheckConstraint("kind in ('amount', 'percent')", name="ck_coupon_kind"),
        sa.CheckConstraint("state in ('issued', 'redeemed', 'expired', 'void')", name="ck_coupon_state"),
        sa.CheckConstraint(
            "(kind = 'amount' and value_fen > 0) or (kind = 'percent' and percent_off between 1 and 99)",
            name="ck_coupon_value",
        ),
    )
    op.create_index("ix_coupon_customer_state", "coupon", ["customer_id", "state"])
    op.create_index("ix_coupon_campaign", "coupon", ["campaign_id"])
    op.create_table(
        "referral_code",
        sa.Column("customer_id", sa.BigInteger(), sa.ForeignKey("golden_customer.id"), primary_key=True),
        sa.Column("code", sa.String(16), nullable=False, unique=True),
    )
    op.create_table(
        "referral",
        sa.Column("id", sa.BigInteger(), sa.Identity(), primary_key=True),
        sa.Column("referrer_id", sa.BigInteger(), sa.ForeignKey("golden_customer.id"), nullable=False),
        sa.Column("referee_id", sa.BigInteger(), sa.ForeignKey("golden_customer.id"), nullable=False),
        sa.Column("code", sa.String(16), nullable=False),
        sa.Column("referred_at", TS, nullable=False, server_default=sa.func.now()),
        sa.Column("first_order_id", sa.BigInteger(), sa.ForeignKey("orders.id"), nullable=True),
        sa.Column("rewarded_at", TS, nullable=True),
        sa.CheckConstraint("referrer_id <> referee_id", name="ck_referral_not_self"),
        sa.UniqueConstraint("referee_id", name="uq_referral_referee"),
    )
    op.create_index("ix_referral_referrer", "referral", ["referrer_id"])
    op.create_table(
        "loyalty_operation",
        sa.Column("key", sa.String(128), primary_key=True),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("customer_id", sa.BigInteger(), nullable=True),
        sa.Column("request_hash", sa.String(64), nullable=False),
        sa.Column("result", postgresql.JSONB(), nullable=False),
        sa.Column("actor", sa.String(100), nullable=True),
        sa.Column("created_at", TS, nullable=False, server_default=sa.func.now()),
    )


def downgrade() -> None:
    op.drop_table("loyalty_operation")
    op.drop_index("ix_referral_referrer", table_name="referral")
    op.drop_table("referral")
    op.drop_table("referral_code")
    op.drop_index("ix_coupon_campaign", table_name="coupon")
    op.drop_index("ix_coupon_customer_state", table_name="coupon")
    op.drop_table("coupon")
    op.drop_index("ix_campaign_member_customer", table_name="campaign_member")
    op.drop_table("campaign_member")
    op.drop_table("campaign")
    op.drop_index("ix_membership_next_review", table_name="membership")
    op.drop_table("membership")
    op.drop_column("tier_history", "rule_version")
    op.drop_column("tier_history", "actor")
    op.drop_constraint("ck_points_balance_debt_non_negative", "points_balance")
    op.drop_column("points_balance", "debt")
    op.drop_index("ix_points_lot_pending", table_name="points_lot")
    op.drop_index("uq_points_lot_order", table_name="points_lot")
    for column in ("rule_version", "released_at", "available_at", "points_reversed", "basis_fen", "order_id"):
        op.drop_column("points_lot", column)
    op.execute("drop trigger trg_points_balance_insert on points_ledger_entry")
    op.execute("drop function c360_points_balance_insert()")
    op.execute("drop trigger trg_points_balance on points_ledger_entry")
    for statement in POINTS_BALANCE_TRIGGER_SQL:
        op.execute(statement)
    op.drop_column("points_ledger_entry", "owed_points")
    op.drop_column("points_ledger_entry", "rule_version")
