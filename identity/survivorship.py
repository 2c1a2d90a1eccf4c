"""Golden record survivorship: which source identity's value wins each attribute, and why.

Rules per attribute (first difference decides; empty values never win):
- source priority: the channel's `trust_rank` (lower wins), e.g. a verified own-app profile beats a
  masked marketplace one;
- most recent: the channel's own modified time (`observed_at`);
- most frequent: the value most identities agree on.
Address parts survive together from one identity so a golden address is never a mix of two.
Every surviving value keeps its lineage: source identity, channel, observed time and the rule.
A staff correction (lineage rule `manual`, written by the API's updateCustomerProfile) beats every rule:
`keep_manual` puts it back over what the identities say, so the next sync does not overwrite it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

# attribute -> the ordered criteria that pick the winner
SURVIVORSHIP_RULES: dict[str, tuple[str, ...]] = {
    "name": ("source_priority", "most_recent"),
    "phone": ("verified", "most_frequent", "most_recent"),
    "email": ("most_frequent", "most_recent"),
    "birth_date": ("most_frequent", "source_priority"),
    "gender": ("most_frequent", "source_priority"),
    "member_no": ("source_priority", "most_recent"),
    "address": ("completeness", "most_recent"),
}
# Values that travel with the winner of another attribute.
COMPANIONS: dict[str, tuple[str, ...]] = {
    "name": ("name_pinyin",),
    "address": ("province", "city", "district"),
}
GOLDEN_ATTRIBUTES: tuple[str, ...] = (
    "name",
    "name_pinyin",
    "phone",
    "email",
    "birth_date",
    "gender",
    "member_no",
    "province",
    "city",
    "district",
    "address",
)


@dataclass(frozen=True)
class GoldenRecord:
    """The surviving attribute values of one customer and the lineage of each."""

    attributes: dict[str, Any]
    lineage: dict[str, dict[str, Any]]


def _value(identity: Mapping[str, Any], attribute: str) -> Any:
    if attribute == "address":
        return identity.get("address_detail")
    return identity.get(attribute)


def _present(value: Any) -> bool:
    return value is not None and value == value and value != ""  # NaN != NaN


def _ts(identity: Mapping[str, Any]) -> float:
    observed = identity.get("observed_at")
    if isinstance(observed, datetime):
        return observed.timestamp()
    return float("-inf")


def _completeness(identity: Mapping[str, Any]) -> int:
    # A house number makes a detail line deliverable; a masked marketplace line stops at the street.
    detail = identity.get("address_detail")
    numbered = isinstance(detail, str) and any(c.isdigit() for c in detail)
    return (
        sum(_present(identity.get(k)) for k in ("address_detail", "province", "city", "district")) + numbered
    )


def survive(identities: Iterable[Mapping[str, Any]]) -> GoldenRecord:
    """Pick the golden record of one customer from its source identities.

    Each identity is a mapping with `id`, `channel_code`, `trust_rank` (lower = more trusted),
    `observed_at` (datetime or None), `phone_verified` and the standardized attributes. Ties fall to
    the lower source identity id, so the result is deterministic.
    """
    rows = list(identities)
    attributes: dict[str, Any] = dict.fromkeys(GOLDEN_ATTRIBUTES)
    lineage: dict[str, dict[str, Any]] = {}
    for attribute, criteria in SURVIVORSHIP_RULES.items():
        candidates = [r for r in rows if _present(_value(r, attribute))]
        if attribute == "address":
            candidates = [r for r in rows if _completeness(r) > 0]
        if not candidates:
            continue
        counts = Counter(_value(r, attribute) for r in candidates)

        def key(
            r: Mapping[str, Any],
            criteria: tuple[str, ...] = criteria,
            counts: Counter[Any] = counts,
            attribute: str = attribute,
        ) -> tuple[Any, ...]:
            parts: list[Any] = []
            for criterion in criteria:
                if criterion == "source_priority":
                    parts.append(r.get("trust_rank") if r.get("trust_rank") is not None else 1 << 30)
                elif criterion == "most_recent":
                    parts.append(-_ts(r))
                elif criterion == "most_frequent":
                    parts.append(-counts[_value(r, attribute)])
                elif criterion == "verified":
                    parts.append(0 if r.get("phone_verified") else 1)
                elif criterion == "completeness":
                    parts.append(-_completeness(r))
            parts.append(r.get("id") or 0)
            return tuple(parts)

        winner = min(candidates, key=key)
        decisive = _decisive_rule(candidates, winner, criteria, key)
        attributes[attribute] = _value(winner, attribute)
        observed = winner.get("observed_at")
        record = {
            "source_identity_id": winner.get("id"),
            "channel": winner.get("channel_code"),
            "observed_at": observed.isoformat() if isinstance(observed, datetime | date) else None,
            "rule": decisive,
        }
        lineage[attribute] = record
        for companion in COMPANIONS.get(attribute, ()):
            if _present(winner.get(companion)):
                attributes[companion] = winner.get(companion)
                lineage[companion] = record
    return GoldenRecord(attributes=attributes, lineage=lineage)


def _decisive_rule(
    candidates: list[Mapping[str, Any]], winner: Mapping[str, Any], criteria: tuple[str, ...], key: Any
) -> str:
    """The first criterion that separates the winner from the runner-up ('only' / 'tie' otherwise)."""
    if len(candidates) == 1:
        return "only_value"
    winner_key = key(winner)
    best_other = min((key(r) for r in candidates if r is not winner), default=None)
    if best_other is None:
        return "only_value"
    for i, criterion in enumerate(criteria):
        if winner_key[i] != best_other[i]:
            return criterion
    return "tie_lowest_id"


MANUAL_RULE = "manual"


def keep_manual(
    golden: GoldenRecord, current: Mapping[str, Any], current_lineage: Mapping[str, Any] | None
) -> GoldenRecord:
    """`golden` with every attribute a person corrected (lineage rule `manual`) kept as it is now."""
    manual = {
        k: v
        for k, v in (current_lineage or {}).items()
        if isinstance(v, Mapping) and v.get("rule") == MANUAL_RULE and k in GOLDEN_ATTRIBUTES
    }
    if not manual:
        return golden
    attributes = {**golden.attributes, **{k: current.get(k) for k in manual}}
    lineage = {**golden.lineage, **{k: dict(v) for k, v in manual.items()}}
    return GoldenRecord(attributes=attributes, lineage=lineage)
