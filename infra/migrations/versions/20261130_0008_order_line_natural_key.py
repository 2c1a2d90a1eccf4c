"""key order lines by (order_id, line_no); a refund names its line by number

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-30 13:00:00

Why: a line is already identified by its order and its number (`uq_order_line_order_line_no`), and every
query finds lines that way; the surrogate `id` cost each landed line a sequence value and an insert into a
second unique index that nothing read. (order_id, line_no) becomes the primary key; its index is built
before the unique constraint goes, so the lines are never without a uniqueness check.

The only reference to `order_line.id` was `refund.order_line_id`, which nothing wrote. A line does not keep
its row when its order changes (landing replaces changed lines), so a refund now names the line by
`line_no` within its order, which does survive that, instead of by a row id that would be set null.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.drop_column("refund", "order_line_id")  # and its foreign key to order_line.id
    op.add_column("refund", sa.Column("line_no", sa.Integer(), nullable=True))
    op.drop_constraint("order_line_pkey", "order_line", type_="primary")
    op.drop_column("order_line", "id")  # and its identity sequence
    op.execute("create unique index order_line_pkey on order_line (order_id, line_no)")
    op.drop_constraint("uq_order_line_order_line_no", "order_line", type_="unique")
    op.execute(
        "alter table order_line add constraint order_line_pkey primary key using index order_line_pkey"
    )


def downgrade() -> None:
    op.drop_constraint("order_line_pkey", "order_line", type_="primary")
    op.create_unique_constraint("uq_order_line_order_line_no", "order_line", ["order_id", "line_no"])
    op.add_column("order_line", sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False))
    op.create_primary_key("order_line_pkey", "order_line", ["id"])
    op.drop_column("refund", "line_no")
    op.add_column(
        "refund",
        sa.Column(
            "order_line_id",
            sa.BigInteger(),
            sa.ForeignKey("order_line.id", name="refund_order_line_id_fkey", ondelete="SET NULL"),
            nullable=True,
        ),
    )
