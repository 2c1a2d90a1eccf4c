"""The product catalogue (`/catalog/v1/products`): SKUs that order lines link to."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from datetime import datetime
from typing import Any

from pydantic import AliasChoices, BaseModel, ConfigDict, Field

from sync.canonical import Batch, OptionalFen, ProductRecord
from sync.config import SyncSettings
from sync.connectors.base import ChannelClient, Connector
from sync.validation import key_of, validate_rows


class CatalogProduct(BaseModel):
    model_config = ConfigDict(coerce_numbers_to_str=True)

    sku: str = Field(min_length=1, max_length=64)
    title: str = Field(min_length=1)
    category: str | None = None
    list_price: OptionalFen = Field(None, validation_alias=AliasChoices("list_price", "price"))


def normalize_products(rows: list[Any]) -> Batch:
    valid, bad = validate_rows(
        CatalogProduct, rows, channel="catalog", entity="product", external_id=key_of("sku")
    )
    return Batch(
        products=[ProductRecord(p.sku, p.title, p.category, p.list_price) for p, _ in valid], quarantined=bad
    )


class CatalogConnector(Connector):
    """Not a channel of its own: lands products before the order feeds so lines find their product."""

    channel = "catalog"
    streams = ("products",)

    def __init__(self, settings: SyncSettings) -> None:
        self.settings = settings
        self.client = ChannelClient("catalog", settings.catalog_url, settings)

    def normalizers(self) -> dict[str, Callable[[list[Any]], Batch]]:
        return {"product": normalize_products}

    def pull(
        self, stream: str, watermark: dict[str, Any] | None, since: datetime | None
    ) -> AsyncIterator[Batch]:
        return self._products()

    async def _products(self) -> AsyncIterator[Batch]:
        cursor: Any = None
        while True:
            params: dict[str, Any] = {"limit": 500}
            if cursor:
                params["cursor"] = cursor
            body = await self.client.request_json("GET", "/catalog/v1/products", params=params)
            rows = body.get("data") or body.get("products") or [] if isinstance(body, dict) else body
            yield normalize_products(rows)
            cursor = body.get("next_cursor") if isinstance(body, dict) else None
            if not cursor or not rows:
                return
