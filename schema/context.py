"""Per-request GraphQL context: the engine, and (later) the caller and DataLoaders built per request."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine
from strawberry.types import Info as StrawberryInfo


@dataclass
class Context:
    engine: AsyncEngine
    request: Any = None


Info = StrawberryInfo[Context, None]
