"""orders keep a store sale's cashier and tenders

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23 02:20:00

Why: POS exports carry who rang a sale up and how it was paid (cash, cards, WeChat Pay, Alipay, points);
sync validated both but had nowhere to put them, so they were lost at landing. Both are null for channels
that have no till.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("orders", sa.Column("cashier_code", sa.String(length=64), nullable=True))
    op.add_column("orders", sa.Column("tenders", postgresql.JSONB(astext_type=sa.Text()), nullable=True))


def downgrade() -> None:
    op.drop_column("orders", "tenders")
    op.drop_column("orders", "cashier_code")
