"""Limits on what one request may ask (depth, size) and the end-of-request audit of unmasked PII reads.

Page sizes are bounded per connection (`first` <= 100, schema.relay); the depth and token limits bound a
whole document, so a query's cost is bounded before it runs."""

from __future__ import annotations

from typing import Any

import orjson
import sqlalchemy as sa
from strawberry.extensions import (
    AddValidationRules,
    MaxAliasesLimiter,
    MaxTokensLimiter,
    ParserCache,
    QueryDepthLimiter,
    SchemaExtension,
    ValidationCache,
)

# Distinct documents whose parse and validation are kept (LRU, bounded so unique query texts cannot grow
# memory). Parsing and validating a document costs more than a one-row mutation's SQL; clients send the
# same few documents with different variables, so both are done once per document.
DOCUMENT_CACHE_SIZE = 512


def validation_rules(max_depth: int) -> list[Any]:
    """The depth and alias rules, beside graphql-core's own; the compiled read path validates with them too."""
    return [
        *QueryDepthLimiter(max_depth=max_depth).validation_rules,
        *MaxAliasesLimiter(max_alias_count=30).validation_rules,
    ]


def limit_extensions(max_depth: int, max_tokens: int, rules: list[Any] | None = None) -> list[Any]:
    # The depth and alias rules are built once: the validation cache is keyed by the rule classes too,
    # and a limiter built per request would make a new class, and a miss, every time.
    rules = validation_rules(max_depth) if rules is None else rules
    # Factories, not instances: Strawberry builds a fresh extension per request (an instance shared by
    # concurrent requests would share their execution context); the caches themselves are module-level.
    return [
        lambda: MaxTokensLimiter(max_token_count=max_tokens),
        lambda: AddValidationRules(rules),
        lambda: ParserCache(maxsize=DOCUMENT_CACHE_SIZE),
        lambda: ValidationCache(maxsize=DOCUMENT_CACHE_SIZE),
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
