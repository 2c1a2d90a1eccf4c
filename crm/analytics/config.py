"""The analytics rules, read from one TOML file (C360_ANALYTICS_CONFIG) and validated at start.

A bad file fails with the key that is wrong (`rfm.cells[2].r: ...`), never with a rule silently falling
back to a default. The rule language of tags and segments (`Rule`) is defined here too, so a segment
defined through the API is validated by the same model as one in the file.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ConfigDict, Field, model_validator

from crm.rules_file import load_rules
from infra.settings import get_settings

STAGES = ("potential", "new", "active", "at_risk", "churned", "won_back")
TIERS = ("high", "mid", "low")
ABC = ("A", "B", "C")
# What a rule's `measure` may name (crm.analytics.rules maps each to its SQL).
MEASURES = (
    "order_count",
    "total_spent_yuan",
    "net_spent_yuan",
    "average_order_value_yuan",
    "purchase_frequency",
    "days_since_last_order",
    "price_sensitivity",
    "channel_count",
    "category_count",
    "r_score",
    "f_score",
    "m_score",
    "clv_historical_yuan",
    "clv_predicted_yuan",
)
ATTRIBUTES = ("city", "province", "district", "gender", "city_tier", "age_band", "loyalty_tier")
MAX_RULE_NODES = 50
_KINDS = (
    "and_",
    "or_",
    "not_",
    "measure",
    "tag",
    "value_tier",
    "lifecycle",
    "rfm_cell",
    "abc",
    "attribute",
    "channel",
    "category",
    "birthday_this_month",
    "in_household",
)


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Rule(BaseModel):
    """One node of a tag's or segment's filter: `and`/`or`/`not`, or exactly one condition."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    and_: list[Rule] | None = Field(None, alias="and", min_length=1)
    or_: list[Rule] | None = Field(None, alias="or", min_length=1)
    not_: Rule | None = Field(None, alias="not")
    measure: Literal[MEASURES] | None = None  # type: ignore[valid-type]
    eq: float | None = None
    gte: float | None = None
    lte: float | None = None
    gt: float | None = None
    lt: float | None = None
    tag: str | None = Field(None, min_length=1, max_length=64)
    value_tier: list[Literal[TIERS]] | None = Field(None, min_length=1)  # type: ignore[valid-type]
    lifecycle: list[Literal[STAGES]] | None = Field(None, min_length=1)  # type: ignore[valid-type]
    rfm_cell: list[str] | None = Field(None, min_length=1)
    abc: list[Literal[ABC]] | None = Field(None, min_length=1)  # type: ignore[valid-type]
    attribute: Literal[ATTRIBUTES] | None = None  # type: ignore[valid-type]
    in_: list[str] | None = Field(None, alias="in", min_length=1)
    channel: str | None = Field(None, min_length=1, max_length=32)
    category: str | None = Field(None, min_length=1, max_length=100)
    birthday_this_month: bool | None = None
    in_household: bool | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> Rule:
        given = [k for k in _KINDS if getattr(self, k) is not None]
        if len(given) != 1:
            names = ", ".join(k.rstrip("_") for k in given) or "none"
            raise ValueError(f"a rule node has exactly one of and, or, not or a condition (given: {names})")
        ops = [self.eq, self.gte, self.lte, self.gt, self.lt]
        if self.measure is not None and all(v is None for v in ops):
            raise ValueError(f"measure {self.measure} needs at least one of eq, gte, lte, gt, lt")
        if self.measure is None and any(v is not None for v in ops):
            raise ValueError("eq, gte, lte, gt and lt go with a measure")
        if (self.attribute is None) != (self.in_ is None):
            raise ValueError("attribute and in go together: {attribute = 'city', in = ['上海']}")
        if self.size() > MAX_RULE_NODES:
            raise ValueError(f"a rule has at most {MAX_RULE_NODES} nodes")
        return self

    def size(self) -> int:
        subs = [*(self.and_ or []), *(self.or_ or []), *([self.not_] if self.not_ else [])]
        return 1 + sum(s.size() for s in subs)

    def tags(self) -> set[str]:
        """Every tag the rule names (a tag's own rule must not name system tags: they are computed together)."""
        subs = [*(self.and_ or []), *(self.or_ or []), *([self.not_] if self.not_ else [])]
        out = {self.tag} if self.tag else set()
        for s in subs:
            out |= s.tags()
        return out

    def as_json(self) -> dict[str, object]:
        return self.model_dump(by_alias=True, exclude_none=True)


class Orders(Strict):
    counted_statuses: list[str] = Field(["paid", "shipped", "completed", "refunded"], min_length=1)
    refund_statuses: list[str] = ["SUCCESS", "refunded", "completed"]


class Lifecycle(Strict):
    new_days: int = Field(90, ge=1, le=3650)
    active_days: int = Field(180, ge=1, le=3650)
    churn_days: int = Field(365, ge=1, le=3650)
    won_back_days: int = Field(180, ge=1, le=3650)

    @model_validator(mode="after")
    def _ordered(self) -> Lifecycle:
        if not self.active_days < self.churn_days:
            raise ValueError("active_days must be less than churn_days")
        return self


class ValueTier(Strict):
    high_min_yuan: int = Field(ge=1)
    mid_min_yuan: int = Field(ge=1)

    @model_validator(mode="after")
    def _ordered(self) -> ValueTier:
        if not self.mid_min_yuan < self.high_min_yuan:
            raise ValueError("mid_min_yuan must be less than high_min_yuan")
        return self


class AbcShares(Strict):
    a_share: float = Field(0.7, gt=0, lt=1)
    b_share: float = Field(0.9, gt=0, lt=1)

    @model_validator(mode="after")
    def _ordered(self) -> AbcShares:
        if not self.a_share < self.b_share:
            raise ValueError("a_share must be less than b_share (both are cumulative shares of spend)")
        return self


class Portrait(Strict):
    age_bands: list[int] = Field([25, 35, 45, 55], min_length=1)
    city_tiers: dict[str, list[str]] = {}

    @model_validator(mode="after")
    def _bands(self) -> Portrait:
        if self.age_bands != sorted(set(self.age_bands)) or self.age_bands[0] <= 0:
            raise ValueError("age_bands are positive ages, strictly increasing")
        seen: dict[str, str] = {}
        for tier, cities in self.city_tiers.items():
            for city in cities:
                if city in seen:
                    raise ValueError(f"city {city} is in both {seen[city]} and {tier}")
                seen[city] = tier
        return self

    def band_names(self) -> list[str]:
        b = self.age_bands
        return [f"<{b[0]}", *(f"{lo}-{hi - 1}" for lo, hi in zip(b, b[1:], strict=False)), f"{b[-1]}+"]


class Cell(Strict):
    code: str = Field(min_length=1, max_length=32, pattern=r"^[a-z][a-z0-9_]*$")
    name: str = Field(min_length=1, max_length=50)
    r: tuple[int, int]
    f: tuple[int, int]

    @model_validator(mode="after")
    def _ranges(self) -> Cell:
        for key, (lo, hi) in (("r", self.r), ("f", self.f)):
            if not 1 <= lo <= hi <= 5:
                raise ValueError(f"{key} is [low, high] with 1 <= low <= high <= 5")
        return self


class NoPurchaseCell(Strict):
    code: str = Field("prospect", min_length=1, max_length=32, pattern=r"^[a-z][a-z0-9_]*$")
    name: str = Field("潜在客户", min_length=1, max_length=50)


class Rfm(Strict):
    cells: list[Cell] = Field(min_length=1)
    # A customer who never bought has no scores but still a cell, so every customer sits somewhere on
    # the grid a marketer reads (and a segment can name the known-but-never-bought).
    no_purchase: NoPurchaseCell = NoPurchaseCell()

    @model_validator(mode="after")
    def _cover(self) -> Rfm:
        codes = [c.code for c in self.cells]
        if len(set(codes)) != len(codes):
            raise ValueError("cell codes must be unique")
        if self.no_purchase.code in codes:
            raise ValueError(f"no_purchase.code {self.no_purchase.code!r} is also a scored cell's code")
        for r in range(1, 6):
            for f in range(1, 6):
                if not any(c.r[0] <= r <= c.r[1] and c.f[0] <= f <= c.f[1] for c in self.cells):
                    raise ValueError(f"(r={r}, f={f}) is in no cell: the cells must cover all 25 pairs")
        return self

    def names(self) -> dict[str, str]:
        """Every cell's name by code, the no-purchase cell included."""
        return {**{c.code: c.name for c in self.cells}, self.no_purchase.code: self.no_purchase.name}

    def cell_of(self, r: int, f: int) -> str:
        return next(c.code for c in self.cells if c.r[0] <= r <= c.r[1] and c.f[0] <= f <= c.f[1])


class TagRule(Strict):
    name: str = Field(min_length=1, max_length=64)
    rule: Rule


class SegmentSpec(Strict):
    code: str = Field(min_length=1, max_length=64, pattern=r"^[a-z0-9][a-z0-9_-]*$")
    name: str = Field(min_length=1, max_length=100)
    rule: Rule


class Households(Strict):
    max_members: int = Field(6, ge=2, le=50)
    exclude_store_addresses: bool = True


class Clv(Strict):
    horizon_days: int = Field(365, ge=1, le=3650)
    min_customers: int = Field(50, ge=10)


class AnalyticsConfig(Strict):
    version: str = Field(min_length=1, max_length=32)
    timezone: str = "Asia/Shanghai"
    orders: Orders = Orders()
    lifecycle: Lifecycle = Lifecycle()
    value_tier: ValueTier
    abc: AbcShares = AbcShares()
    portrait: Portrait = Portrait()
    rfm: Rfm
    tags: list[TagRule] = []
    segments: list[SegmentSpec] = []
    households: Households = Households()
    clv: Clv = Clv()

    @model_validator(mode="after")
    def _references(self) -> AnalyticsConfig:
        try:
            ZoneInfo(self.timezone)
        except (KeyError, ValueError) as exc:
            raise ValueError(f"timezone {self.timezone!r} is not an IANA zone") from exc
        names = [t.name for t in self.tags]
        if len(set(names)) != len(names):
            raise ValueError("tag names must be unique")
        for t in self.tags:
            if t.rule.tags():
                raise ValueError(f"tag {t.name}: a system tag's rule cannot name tags")
        codes = [s.code for s in self.segments]
        if len(set(codes)) != len(codes):
            raise ValueError("segment codes must be unique")
        cells = set(self.rfm.names())
        for label, rule in [*((f"tag {t.name}", t.rule) for t in self.tags),
                            *((f"segment {s.code}", s.rule) for s in self.segments)]:  # fmt: skip
            unknown = check_cells(rule, cells)
            if unknown:
                raise ValueError(f"{label} names unknown RFM cells {sorted(unknown)}")
        return self


def check_cells(rule: Rule, cells: set[str]) -> set[str]:
    """The RFM cells a rule names that the configuration does not have."""
    subs = [*(rule.and_ or []), *(rule.or_ or []), *([rule.not_] if rule.not_ else [])]
    out = set(rule.rfm_cell or ()) - cells
    for s in subs:
        out |= check_cells(s, cells)
    return out


class AnalyticsConfigError(ValueError):
    """The analytics file is missing or invalid; the message names the file and the key."""


def load_config(path: Path) -> AnalyticsConfig:
    return load_rules(path, AnalyticsConfig, AnalyticsConfigError, "analytics", "C360_ANALYTICS_CONFIG")


@lru_cache(maxsize=1)
def get_config() -> AnalyticsConfig:
    """The configured rules (read once per process)."""
    return load_config(get_settings().analytics_config)
