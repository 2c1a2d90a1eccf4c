"""leave rows not yet linked to a customer out of the orders and interaction customer indexes

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-30 11:30:00

Why: sync lands orders and interactions before identity resolution links their buyer to a golden customer,
so most arrive with customer_id null, and each still cost an insert into the (customer_id, time) index
that no query reads by null: rows are read by customer (`customer_id = $1`, `= any($1)`), which the
partial index serves as before, generic plans included. Linking sets customer_id later, which was already
an update of an indexed column, so it costs the same. The rebuild is a one-off on upgrade.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

CUSTOMER_INDEXES = (
    ("ix_orders_customer_placed", "orders", "placed_at"),
    ("ix_interaction_customer_occurred", "interaction", "occurred_at"),
)


def upgrade() -> None:
    for name, table, at in CUSTOMER_INDEXES:
        op.drop_index(name, table_name=table)
        op.create_index(
            name,
            table,
            ["customer_id", sa.text(f"{at} desc")],
            postgresql_where=sa.text("customer_id is not null"),
        )


def downgrade() -> None:
    for name, table, at in CUSTOMER_INDEXES:
        op.drop_index(name, table_name=table)
        op.create_index(name, table, ["customer_id", sa.text(f"{at} desc")])
