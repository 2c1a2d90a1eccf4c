"""sync under faults: pending links, quarantine that heals, per-stream accounting

Revision ID: 0014
Revises: 0015
Create Date: 2026-12-04 06:40:00

Why: identities landed by a run that died before linking were never linked (the run's memory was the only
record of them): an index over the unlinked ones lets every run find and link them. Quarantine entries keep
the history of their reasons and how they are retried (re-validate, or re-fetch from the channel). Each
sync run stores what every stream read and what became of it, so rows in equal rows out can be checked.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(
        "ix_source_identity_unlinked",
        "source_identity",
        ["id"],
        postgresql_where=sa.text("customer_id is null"),
    )
    op.add_column(
        "quarantine",
        sa.Column("history", postgresql.JSONB(), nullable=False, server_default=sa.text("'[]'::jsonb")),
    )
    op.add_column(
        "quarantine",
        sa.Column("retry", sa.String(length=16), nullable=False, server_default=sa.text("'revalidate'")),
    )
    op.create_table(
        "sync_stream_run",
        sa.Column("id", sa.BigInteger(), sa.Identity(), primary_key=True),
        sa.Column("stream", sa.String(length=64), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.text("now()")),
        sa.Column("rows_read", sa.BigInteger(), nullable=False),
        sa.Column("landed", sa.BigInteger(), nullable=False),
        sa.Column("quarantined", sa.BigInteger(), nullable=False),
        sa.Column("rejected", sa.BigInteger(), nullable=False),
        sa.Column("unchanged", sa.BigInteger(), nullable=False),
        sa.Column("counts", postgresql.JSONB(), nullable=False, server_default=sa.text("'{}'::jsonb")),
    )
    op.create_index("ix_sync_stream_run_stream", "sync_stream_run", ["stream", sa.text("finished_at desc")])


def downgrade() -> None:
    op.drop_index("ix_sync_stream_run_stream", table_name="sync_stream_run")
    op.drop_table("sync_stream_run")
    op.drop_column("quarantine", "retry")
    op.drop_column("quarantine", "history")
    op.drop_index("ix_source_identity_unlinked", table_name="source_identity")
