"""The GraphQL schema served at /graphql: one Query (and, as domains add them, Mutation) merged from the
per-domain modules listed here, with `node(id:)` and the limits of schema.limits."""

from __future__ import annotations

from typing import Any

import strawberry
from strawberry.tools import merge_types

from schema import (
    analytics_queries,
    care,
    changes,
    customer,
    interactions_mutations,
    loyalty,
    merges_mutations,
    profile_mutations,
    search,
    service,
)
from schema.context import Info
from schema.errors import MaskInternalErrors, log_errors
from schema.health import Health, resolve_health
from schema.limits import AuditPII, limit_extensions
from schema.relay import Node, from_global_id


async def resolve_node(info: Info, id: strawberry.ID) -> Node | None:
    """Any object by its global id (Customer for now; more types as domains add them)."""
    type_name, pk = from_global_id(id)
    if type_name == "Customer" and pk.isdigit():
        return await customer.load_customer(info, int(pk))
    if type_name == "ServiceCase" and pk.isdigit():
        return await service.resolve_case(info, id)
    return None


@strawberry.type
class CoreQuery:
    health: Health = strawberry.field(
        resolver=resolve_health, description="Liveness of the API and its database."
    )
    node: Node | None = strawberry.field(resolver=resolve_node, description="An object by its global id.")


# Each domain module contributes a Query (and later a Mutation) class; the order is the SDL's.
QUERIES: tuple[type, ...] = (
    CoreQuery, customer.Query, search.Query, changes.Query, merges_mutations.Query, loyalty.Query, service.Query,
    care.Query, analytics_queries.Query,
)  # fmt: skip
MUTATIONS: tuple[type, ...] = (
    merges_mutations.Mutation, loyalty.Mutation, service.Mutation, care.Mutation, analytics_queries.Mutation,
    interactions_mutations.Mutation, profile_mutations.Mutation,
)  # fmt: skip


class Schema(strawberry.Schema):
    def process_errors(self, errors: list[Any], execution_context: Any = None) -> None:
        # Strawberry logs every error as a server error; only our own failures are.
        log_errors(errors)


def build_schema(
    max_depth: int = 12, max_tokens: int = 4000, rules: list[Any] | None = None
) -> strawberry.Schema:
    query: Any = merge_types("Query", QUERIES)
    mutation: Any = merge_types("Mutation", MUTATIONS) if MUTATIONS else None
    return Schema(
        query=query,
        mutation=mutation,
        types=[customer.Customer],
        extensions=[*limit_extensions(max_depth, max_tokens, rules), AuditPII, MaskInternalErrors],
    )


schema = build_schema()

__all__ = ["build_schema", "schema"]
