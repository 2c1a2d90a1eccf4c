"""order lines keep the channel's own id for them, so a refund can name its line

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-30 15:00:00

Why: a Tmall refund names the sub-order it refunds (`oid`), but lines did not keep `oid`, so
`refund.line_no` (0008) stayed empty and a partial refund could not be told from a whole one. Nullable: JD,
the app and POS lines carry no id of their own, and lines landed before this have none until their order is
landed again. No index: a refund finds its line among its own order's lines, by the primary key's prefix.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("order_line", sa.Column("external_id", sa.String(length=64), nullable=True))


def downgrade() -> None:
    op.drop_column("order_line", "external_id")
