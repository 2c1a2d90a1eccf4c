"""drop the indexes no query reads that landing paid for on every write

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23 01:30:00

Why: `ix_source_identity_updated` (updated_at) and `ix_orders_channel_updated` (channel_code,
source_updated_at) are read by no query in the product (identity linking, merges, propagation and the
API select identities by id, key or attribute, and orders by key, identity or customer). Landing paid
for both on every write: updated_at changes on every re-landed identity version, so with that index no
identity update could be HOT (heap-only: no new index entries when no indexed column changes), and each
one wrote a new entry into all eight indexes of source_identity. Measured on 100k Tmall orders
(`bench/sync_ingest.py`): PostgreSQL CPU for the identity upsert 19 -> 8 us per order, for the orders
upsert 24 -> 22 us per order. A query that needs one of these orders later brings its index back.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.drop_index("ix_source_identity_updated", table_name="source_identity")
    op.drop_index("ix_orders_channel_updated", table_name="orders")


def downgrade() -> None:
    op.create_index(
        "ix_orders_channel_updated", "orders", ["channel_code", "source_updated_at"], unique=False
    )
    op.create_index("ix_source_identity_updated", "source_identity", ["updated_at"], unique=False)
