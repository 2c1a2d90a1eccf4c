"""The retailer's home-goods range: one product per template variant, priced from the seed."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from sync.simulator.seeding import row_random, stream_key
from sync.simulator.vocabulary import CATALOGUE_TEMPLATES


@dataclass(frozen=True)
class Product:
    """A sellable SKU, with the ids the marketplaces gave its listings."""

    sku: str
    title: str
    category: str
    price_fen: int
    num_iid: int  # Taobao/Tmall item id
    taobao_sku_id: int
    jd_sku_id: int


@lru_cache(maxsize=8)
def catalogue(seed: int) -> tuple[Product, ...]:
    """All products for `seed`, in a stable order."""
    key = stream_key(seed, "catalogue")
    products: list[Product] = []
    for t, (category, code, noun, variants, low, high) in enumerate(CATALOGUE_TEMPLATES):
        rng = row_random(key, t)
        num_iid = 600_000_000_000 + rng.randint(0, 99_999_999_999)
        for v, variant in enumerate(variants):
            # Retail prices end in 9: 299, 1299.
            price_yuan = (rng.randint(low, high) // 10) * 10 + 9
            products.append(
                Product(
                    sku=f"HG-{code}-{t + 1:03d}-{v + 1:02d}",
                    title=f"{noun} {variant}",
                    category=category,
                    price_fen=price_yuan * 100,
                    num_iid=num_iid,
                    taobao_sku_id=5_000_000_000_000 + num_iid % 1_000_000 * 100 + v,
                    jd_sku_id=100_000_000_000 + rng.randint(0, 9_999_999_999),
                )
            )
    return tuple(products)
