"""a change feed of golden customers for downstream jobs

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-03 15:00:00

Why: sync jobs downstream of the product (a data warehouse, a marketing tool) need "what changed since
my last read" without rescanning every customer. Statement-level triggers with transition tables write one
row per created or really changed customer (merges and erasures named as such), so a bulk golden refresh
costs one insert per statement, not one per row. `xact_id` lets the API serve only changes whose
transaction can no longer commit behind a reader's cursor.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from infra.models import CUSTOMER_CHANGE_TRIGGER_DROP_SQL, CUSTOMER_CHANGE_TRIGGER_SQL

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "customer_change",
        sa.Column("id", sa.BigInteger(), sa.Identity(), primary_key=True),
        sa.Column(
            "xact_id",
            sa.BigInteger(),
            nullable=False,
            server_default=sa.text("(pg_current_xact_id())::text::bigint"),
        ),
        sa.Column("customer_id", sa.BigInteger(), nullable=False),
        sa.Column("kind", sa.String(length=8), nullable=False),
        sa.Column("changed_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.text("now()")),
        sa.CheckConstraint(
            "kind in ('created', 'updated', 'merged', 'erased')", name="ck_customer_change_kind"
        ),
    )
    op.create_index("ix_customer_change_xact", "customer_change", ["xact_id", "id"])
    for statement in CUSTOMER_CHANGE_TRIGGER_SQL:
        op.execute(statement)


def downgrade() -> None:
    for statement in CUSTOMER_CHANGE_TRIGGER_DROP_SQL:
        op.execute(statement)
    op.drop_index("ix_customer_change_xact", table_name="customer_change")
    op.drop_table("customer_change")
