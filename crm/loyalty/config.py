"""The loyalty programme's rules, read from one TOML file (C360_LOYALTY_CONFIG) and validated at start.

A bad file fails with the key that is wrong (`tiers.levels[1].min_spend_yuan: ...`), never with a rule
silently falling back to a default. `version` is recorded on every ledger entry and tier change.
"""

from __future__ import annotations

from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import Literal
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ConfigDict, Field, model_validator

from crm.rules_file import load_rules
from infra.settings import get_settings


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Multiplier(Strict):
    category: str | None = None
    sku: str | None = None
    multiplier: float = Field(gt=0, le=20)

    @model_validator(mode="after")
    def _one_target(self) -> Multiplier:
        if (self.category is None) == (self.sku is None):
            raise ValueError("give exactly one of category or sku")
        return self


class MemberDay(Strict):
    day_of_month: int | None = Field(None, ge=1, le=31)
    weekday: int | None = Field(None, ge=1, le=7, description="ISO weekday, 1 = Monday")
    multiplier: float = Field(gt=0, le=20)
    tiers: list[str] = []  # only members of these tiers; empty: everyone

    @model_validator(mode="after")
    def _one_day(self) -> MemberDay:
        if (self.day_of_month is None) == (self.weekday is None):
            raise ValueError("give exactly one of day_of_month or weekday")
        return self


class Earn(Strict):
    points_per_yuan: float = Field(1.0, gt=0, le=100)
    max_points_per_order: int = Field(100_000, ge=1)
    max_points_per_day: int = Field(1_000_000, ge=1)
    pending_days: int = Field(0, ge=0, le=365)
    earning_statuses: list[str] = ["paid", "shipped", "completed", "refunded"]
    reversing_statuses: list[str] = ["refunded", "cancelled"]
    refund_statuses: list[str] = ["SUCCESS", "refunded", "completed"]
    multipliers: list[Multiplier] = []
    member_days: list[MemberDay] = []


class Expiry(Strict):
    policy: Literal["days", "end_of_month_after", "year_end", "never"] = "end_of_month_after"
    months: int = Field(12, ge=1, le=120)
    days: int = Field(365, ge=1, le=3650)
    expiring_soon_days: int = Field(30, ge=1, le=365)


class Refunds(Strict):
    on_spent: Literal["debt", "floor"] = "debt"


class Reward(Strict):
    code: str = Field(min_length=1, max_length=64)
    name: str
    kind: Literal["gift", "service"]
    points: int = Field(ge=1)


class Redeem(Strict):
    points_per_yuan: int = Field(100, ge=1)
    max_offset_share: float = Field(0.5, gt=0, le=1)
    rewards: list[Reward] = []


class Level(Strict):
    code: str = Field(min_length=1, max_length=16, pattern=r"^[a-z][a-z0-9_-]*$")
    name: str = Field(min_length=1, max_length=50)
    min_spend_yuan: int = Field(0, ge=0)
    min_orders: int = Field(0, ge=0)
    min_points: int = Field(0, ge=0)
    points_multiplier: float = Field(1.0, gt=0, le=20)
    discount_pct: int = Field(0, ge=0, le=90)
    free_delivery: bool = False
    priority_service: bool = False
    member_days: bool = False


class Tiers(Strict):
    window_days: int = Field(365, ge=1, le=3650)
    qualify_on: Literal["spend", "orders", "spend_or_orders", "spend_and_orders", "points_earned"] = (
        "spend_or_orders"
    )
    review_every_days: int = Field(90, ge=1, le=3650)
    grace_days: int = Field(30, ge=0, le=3650)
    levels: list[Level] = Field(min_length=1)

    @model_validator(mode="after")
    def _ordered(self) -> Tiers:
        codes = [lv.code for lv in self.levels]
        if len(set(codes)) != len(codes):
            raise ValueError("level codes must be unique")
        first = self.levels[0]
        if first.min_spend_yuan or first.min_orders or first.min_points:
            raise ValueError("the first level is the entry level: its thresholds must be 0")
        for low, high in zip(self.levels, self.levels[1:], strict=False):
            if (high.min_spend_yuan, high.min_orders, high.min_points) < (
                low.min_spend_yuan,
                low.min_orders,
                low.min_points,
            ):
                raise ValueError(
                    f"level {high.code} must not need less than {low.code}: list levels low to high"
                )
        return self


class Referrals(Strict):
    referrer_points: int = Field(0, ge=0)
    referee_points: int = Field(0, ge=0)


class CouponSpec(Strict):
    kind: Literal["amount", "percent"]
    value_yuan: int = Field(0, ge=0)
    percent_off: int = Field(0, ge=0, le=99)
    min_spend_yuan: int = Field(0, ge=0)
    valid_days: int = Field(30, ge=1, le=3650)

    @model_validator(mode="after")
    def _value(self) -> CouponSpec:
        if self.kind == "amount" and self.value_yuan <= 0:
            raise ValueError("an amount coupon needs value_yuan > 0")
        if self.kind == "percent" and not self.percent_off:
            raise ValueError("a percent coupon needs percent_off between 1 and 99")
        return self


class Audience(Strict):
    tiers: list[str] = []
    segment: str | None = None
    customers: list[int] = []

    @model_validator(mode="after")
    def _one(self) -> Audience:
        if sum(bool(x) for x in (self.tiers, self.segment, self.customers)) != 1:
            raise ValueError("give exactly one of tiers, segment or customers")
        return self


class CampaignSpec(Strict):
    code: str = Field(min_length=1, max_length=64)
    name: str = Field(min_length=1, max_length=200)
    audience: Audience
    holdout_pct: int = Field(0, ge=0, le=90)
    starts_at: datetime
    ends_at: datetime | None = None
    coupon: CouponSpec


class Birthday(Strict):
    enabled: bool = False
    coupon: CouponSpec | None = None


class LoyaltyConfig(Strict):
    version: str = Field(min_length=1, max_length=32)
    timezone: str = "Asia/Shanghai"
    earn: Earn = Earn()
    expiry: Expiry = Expiry()
    refunds: Refunds = Refunds()
    redeem: Redeem = Redeem()
    tiers: Tiers
    referrals: Referrals = Referrals()
    campaigns: list[CampaignSpec] = []
    birthday: Birthday = Birthday()

    @model_validator(mode="after")
    def _references(self) -> LoyaltyConfig:
        try:
            ZoneInfo(self.timezone)
        except (KeyError, ValueError) as exc:
            raise ValueError(f"timezone {self.timezone!r} is not an IANA zone") from exc
        codes = {lv.code for lv in self.tiers.levels}
        for d in self.earn.member_days:
            if set(d.tiers) - codes:
                raise ValueError(f"earn.member_days names unknown tiers {sorted(set(d.tiers) - codes)}")
        for c in self.campaigns:
            unknown = set(c.audience.tiers) - codes
            if unknown:
                raise ValueError(f"campaign {c.code} names unknown tiers {sorted(unknown)}")
        if self.birthday.enabled and self.birthday.coupon is None:
            raise ValueError("birthday.enabled needs birthday.coupon")
        return self

    def level(self, code: str) -> Level:
        return next(lv for lv in self.tiers.levels if lv.code == code)


class LoyaltyConfigError(ValueError):
    """The loyalty file is missing or invalid; the message names the file and the key."""


def load_config(path: Path) -> LoyaltyConfig:
    return load_rules(path, LoyaltyConfig, LoyaltyConfigError, "loyalty", "C360_LOYALTY_CONFIG")


@lru_cache(maxsize=1)
def get_config() -> LoyaltyConfig:
    """The configured programme (read once per process)."""
    return load_config(get_settings().loyalty_config)
