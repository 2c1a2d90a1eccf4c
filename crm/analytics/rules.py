"""The rule language of tags and segments compiled to one parameterized SQL predicate.

The predicate reads `m` (customer_metrics) and `g` (golden_customer) of one customer; the text is made of
fixed fragments only and every value (thresholds, names, `now`) is a bound parameter.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from crm.analytics.config import Rule

MEASURE_SQL = {
    "order_count": "m.order_count",
    "total_spent_yuan": "(m.total_spent_fen / 100.0)",
    "net_spent_yuan": "(m.net_spent_fen / 100.0)",
    "average_order_value_yuan": "(m.average_order_value_fen / 100.0)",
    "purchase_frequency": "m.purchase_frequency",
    "days_since_last_order": "(extract(epoch from ({now} - m.last_order_at)) / 86400.0)",
    "price_sensitivity": "m.price_sensitivity",
    "channel_count": "cardinality(m.channels)",
    "category_count": "cardinality(m.categories)",
    "r_score": "m.r_score",
    "f_score": "m.f_score",
    "m_score": "m.m_score",
    "clv_historical_yuan": "(m.clv_historical_fen / 100.0)",
    "clv_predicted_yuan": "(m.clv_predicted_fen / 100.0)",
}
# Cities are stored in their full form (上海市); rules name them either way.
ATTRIBUTE_SQL = {
    "city": "regexp_replace(g.city, '市$', '')",
    "province": "regexp_replace(g.province, '(省|市|自治区|壮族自治区|回族自治区|维吾尔自治区|特别行政区)$', '')",
    "district": "g.district",
    "gender": "g.gender",
    "city_tier": "m.city_tier",
    "age_band": "m.age_band",
    "loyalty_tier": "g.tier_code",
}
_SUFFIX = {
    "city": ("市",),
    "province": ("壮族自治区", "回族自治区", "维吾尔自治区", "特别行政区", "自治区", "省", "市"),
}


def _short(attribute: str, value: str) -> str:
    for suffix in _SUFFIX.get(attribute, ()):
        if value.endswith(suffix) and len(value) > len(suffix):
            return value[: -len(suffix)]
    return value


class Binds(Protocol):
    def bind(self, value: Any) -> str: ...


@dataclass
class Binder:
    """Collects bound values under names unique to one statement (`prefix` keeps statements apart)."""

    prefix: str = "r"
    params: dict[str, Any] = field(default_factory=dict)

    def bind(self, value: Any) -> str:
        name = f"{self.prefix}{len(self.params)}"
        self.params[name] = value
        return f":{name}"


def compile_rule(rule: Rule, binder: Binds, *, now: datetime, timezone: str) -> str:
    """`rule` as a SQL boolean over `m` and `g`; null-safe under `not` (a customer without the measure is
    not in `{measure > x}` and is in its negation)."""
    if rule.and_ is not None:
        return (
            "(" + " and ".join(compile_rule(r, binder, now=now, timezone=timezone) for r in rule.and_) + ")"
        )
    if rule.or_ is not None:
        return "(" + " or ".join(compile_rule(r, binder, now=now, timezone=timezone) for r in rule.or_) + ")"
    if rule.not_ is not None:
        return f"(not coalesce({compile_rule(rule.not_, binder, now=now, timezone=timezone)}, false))"
    if rule.measure is not None:
        expr = MEASURE_SQL[rule.measure]
        if "{now}" in expr:
            expr = expr.replace("{now}", f"cast({binder.bind(now)} as timestamptz)")
        parts = [
            f"{expr} {op} {binder.bind(float(v))}"
            for op, v in (("=", rule.eq), (">=", rule.gte), ("<=", rule.lte), (">", rule.gt), ("<", rule.lt))
            if v is not None
        ]
        return "coalesce(" + " and ".join(parts) + ", false)"
    if rule.tag is not None:
        return (
            "exists (select 1 from customer_tag ct join tag t on t.id = ct.tag_id"  # noqa: S608 - bound value
            f" where ct.customer_id = g.id and t.name = {binder.bind(rule.tag)})"
        )
    for key, column in (
        ("value_tier", "m.value_tier"),
        ("lifecycle", "m.lifecycle_stage"),
        ("rfm_cell", "m.rfm_cell"),
        ("abc", "m.abc_class"),
    ):
        values = getattr(rule, key)
        if values is not None:
            return f"coalesce({column} = any(cast({binder.bind(list(values))} as text[])), false)"
    if rule.attribute is not None:
        assert rule.in_ is not None
        values = [_short(rule.attribute, v.strip()) for v in rule.in_]
        column = ATTRIBUTE_SQL[rule.attribute]
        return f"coalesce({column} = any(cast({binder.bind(values)} as text[])), false)"
    if rule.channel is not None:
        return f"({binder.bind(rule.channel)} = any(m.channels))"
    if rule.category is not None:
        return f"({binder.bind(rule.category)} = any(m.categories))"
    if rule.birthday_this_month is not None:
        month = f"extract(month from cast({binder.bind(now)} as timestamptz) at time zone {binder.bind(timezone)})"
        same = f"coalesce(extract(month from g.birth_date) = {month}, false)"
        return same if rule.birthday_this_month else f"(not {same})"
    if rule.in_household is not None:
        exists = (
            "exists (select 1 from household_member hm join household h on h.id = hm.household_id"
            " where hm.customer_id = g.id and not hm.excluded and h.status <> 'split')"
        )
        return exists if rule.in_household else f"(not {exists})"
    raise AssertionError("a validated rule has one kind")  # pragma: no cover
