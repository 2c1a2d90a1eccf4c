"""Merge history: every merge, unmerge, link and split a customer took part in, with its evidence."""

from __future__ import annotations

from datetime import datetime

import strawberry
from strawberry.scalars import JSON

from schema.relay import Node


@strawberry.type
class MergeEvent(Node):
    kind: str = strawberry.field(description="merge, unmerge, link, unlink or split.")
    actor: str
    reason: str | None
    surviving_customer_id: strawberry.ID | None
    absorbed_customer_ids: list[strawberry.ID]
    evidence: JSON = strawberry.field(description="The rule or score and the features that matched.")
    undone: bool
    created_at: datetime
