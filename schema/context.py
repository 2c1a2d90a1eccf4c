"""Per-request GraphQL context: the engine, the caller, the request's DataLoaders, and the unmasked PII
reads to write to the audit log when the request ends."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine
from strawberry.types import Info as StrawberryInfo

from api.auth import Principal


@dataclass
class Context:
    engine: AsyncEngine
    principal: Principal
    request: Any = None
    # Built lazily per request (schema.loaders.Loaders): one batched statement per kind of row.
    _loaders: Any = None
    # Other domains' per-request loaders, by domain name (see schema.loyalty.loyalty_loaders).
    domain_loaders: dict[str, Any] = field(default_factory=dict)
    # (customer_id, fields) of every unmasked PII read in this request.
    pii_reads: dict[int, set[str]] = field(default_factory=dict)

    @property
    def loaders(self) -> Any:
        if self._loaders is None:
            from schema.loaders import Loaders

            self._loaders = Loaders(self.engine)
        return self._loaders


Info = StrawberryInfo[Context, None]
