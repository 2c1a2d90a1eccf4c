"""erasure: the suppression list of erased people's identifiers

Revision ID: 0015
Revises: 0011
Create Date: 2026-12-04 00:50:00

Why: erasing a person (identity.erasure) removes their data, but the channels still have them; without a
list of what was erased the next sync lands them again. Only keyed hashes are kept, never the identifiers.
The hash leads the primary key: landing asks by hash for a whole batch.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0015"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "erasure_suppression",
        sa.Column("value_hash", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=48), nullable=False),
        sa.Column("customer_id", sa.BigInteger(), nullable=False),
        sa.Column("erased_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.text("now()")),
        sa.PrimaryKeyConstraint("value_hash", "kind"),
    )


def downgrade() -> None:
    op.drop_table("erasure_suppression")
