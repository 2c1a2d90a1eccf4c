"""Limits on what one request may ask (depth, size) and the end-of-request audit of unmasked PII reads.

Page sizes are bounded per connection (`first` <= 100, schema.relay); the depth and token limits bound a
whole document, so a query's cost is bounded before it runs."""

from __future__ import annotations

from typing import Any

import orjson
import sqlalchemy as sa
from strawberry.extensions import MaxAliasesLimiter, MaxTokensLimiter, QueryDepthLimiter, SchemaExtension


def limit_extensions(max_depth: int, max_tokens: int) -> list[Any]:
    # Factories, not instances: Strawberry builds a fresh extension per request.
    return [
        lambda: QueryDepthLimiter(max_depth=max_depth),
        lambda: MaxTokensLimiter(max_token_count=max_tokens),
        lambda: MaxAliasesLimiter(max_alias_count=30),
    ]


class AuditPII(SchemaExtension):
    """Every unmasked read of PII by staff or a service, one audit row per customer, written in one
    statement when the operation ends (so auditing adds one statement, however many customers were read)."""

    async def on_operation(self) -> Any:
        yield
        context = self.execution_context.context
        reads: dict[int, set[str]] = getattr(context, "pii_reads", {})
        if not reads:
            return
        principal = context.principal
        rows = [
            {
                "actor": principal.subject[:100],
                "role": principal.role,
                "cid": str(cid),
                "detail": orjson.dumps({"fields": sorted(f)}).decode(),
            }
            for cid, f in sorted(reads.items())
        ]
        async with context.engine.begin() as conn:
            await conn.execute(
                sa.text(
                    "insert into audit_log (actor, actor_role, action, subject_type, subject_id, detail) "
                    "select r.actor, r.role, 'pii.read', 'customer', r.cid, r.detail::jsonb "
                    "from jsonb_to_recordset(cast(:rows as jsonb)) as r(actor text, role text, cid text, detail text)"
                ),
                {"rows": orjson.dumps(rows).decode()},
            )
        reads.clear()
