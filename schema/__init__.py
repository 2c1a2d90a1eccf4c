"""The GraphQL schema served at /graphql."""

from __future__ import annotations

import strawberry

from schema.health import Health, resolve_health


@strawberry.type
class Query:
    health: Health = strawberry.field(
        resolver=resolve_health, description="Liveness of the API and its database."
    )


schema = strawberry.Schema(query=Query)

__all__ = ["schema"]
