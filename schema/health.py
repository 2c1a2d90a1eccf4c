from __future__ import annotations

import strawberry

from infra.db import check_database
from schema.context import Info


@strawberry.type(description="Whether the API can reach its database.")
class Health:
    database: bool = strawberry.field(description="True when PostgreSQL answered.")
    server_version: str | None = strawberry.field(description="PostgreSQL's `server_version`.")


async def resolve_health(info: Info) -> Health:
    result = await check_database(info.context.engine)
    return Health(database=result.ok, server_version=result.server_version)
