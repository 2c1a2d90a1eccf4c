"""sync under faults: each stream run belongs to its sync run, quarantine entries know how to be re-fetched

Revision ID: 0016_syncfaults
Revises: 0014
Create Date: 2026-12-04 18:00:00

Why: the closing table of `c360 sync run` and the stored accounting must say which streams one run read, not
only when; a row the channel sent malformed cannot be healed from its own payload, so the entry keeps where
to read it again (the stream and the window it was read in, and its external id).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0016_syncfaults"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("sync_stream_run", sa.Column("run_id", sa.Uuid(), nullable=True))
    op.create_index("ix_sync_stream_run_run", "sync_stream_run", ["run_id"])
    op.add_column("quarantine", sa.Column("refetch", postgresql.JSONB(), nullable=True))


def downgrade() -> None:
    op.drop_column("quarantine", "refetch")
    op.drop_index("ix_sync_stream_run_run", table_name="sync_stream_run")
    op.drop_column("sync_stream_run", "run_id")
