"""Deterministic identity rules: strong identifiers, their priority, per-customer limits, blocked values.

Everything is configuration in one frozen dataclass, so the batch command, the database path and the
tests run the same rules, and an operator changes a limit in one place.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from identity.standardize import is_valid_resident_id


@dataclass(frozen=True)
class StrongIdentifier:
    """An identifier that links on exact equality. Lower priority number = stronger evidence."""

    kind: str  # the standardized column
    priority: int
    per_customer_limit: int  # distinct values one golden customer may hold


@dataclass(frozen=True)
class IdentityRules:
    """Deterministic rules and thresholds for identity resolution.

    - `strong_identifiers`: exact-match link rules in priority order.
    - `blocked_values`: per column, values that never link (placeholders, POS dummies).
    - `max_identities_per_value`: a value shared by more identities than this is treated as blocked
      (a shop's own phone typed in at every checkout, a family email).
    - each strong identifier's `per_customer_limit`: distinct values one customer may hold.
    - `link_threshold` / `review_threshold`: match probability above which a scored pair links, and
      above which (but below the link threshold) it goes to the review queue.
    """

    strong_identifiers: tuple[StrongIdentifier, ...] = (
        StrongIdentifier("wechat_unionid", 1, 1),
        StrongIdentifier("id_number", 2, 1),
        StrongIdentifier("member_no", 3, 3),
        StrongIdentifier("phone", 4, 3),  # verified phones only
        StrongIdentifier("email", 5, 5),
    )
    blocked_values: dict[str, frozenset[str]] = field(
        default_factory=lambda: {
            "phone": frozenset(
                {
                    "+8613800000000",
                    "+8613800138000",
                    "+8613888888888",
                    "+8613900000000",
                    "+8618888888888",
                    "+8613000000000",
                    "+8613111111111",
                    "+8612345678901",
                    "+864000000000",
                    "+8613312345678",
                }
            ),
            "phone_masked": frozenset({"138****0000"}),
            "email": frozenset(
                {"test@test.com", "noreply@example.com", "a@a.com", "none@none.com", "na@na.com"}
            ),
            "member_no": frozenset({"0", "00000000", "NA", "NONE"}),
            "id_number": frozenset({"000000000000000000", "111111111111111111"}),
        }
    )
    max_identities_per_value: int = 20
    link_threshold: float = 0.92
    review_threshold: float = 0.5
    # Blocks bigger than this are skipped (a sorted-neighbourhood pass still covers their members).
    max_block_size: int = 200
    sorted_neighbourhood_window: int = 5

    @property
    def per_customer_limits(self) -> dict[str, int]:
        """Distinct values of each identifier one golden customer may hold (a link that would
        exceed it is refused, so a chain of weak links never gathers 40 phones)."""
        return {ident.kind: ident.per_customer_limit for ident in self.strong_identifiers}

    def priority(self, kind: str) -> int:
        for ident in self.strong_identifiers:
            if ident.kind == kind:
                return ident.priority
        return 100


DEFAULT_RULES = IdentityRules()


def blocked_mask(values: pd.Series, kind: str, rules: IdentityRules = DEFAULT_RULES) -> np.ndarray:
    """True where a value must never link: missing, configured as blocked, or over-shared."""
    present = values.notna().to_numpy()
    listed = values.isin(rules.blocked_values.get(kind, frozenset())).to_numpy()
    counts = values.map(values.value_counts()).fillna(0).to_numpy()
    return ~present | listed | (counts > rules.max_identities_per_value)


def strong_values(frame: pd.DataFrame, kind: str) -> pd.Series:
    """The values of a strong identifier that may link exactly: verified phones, valid resident ids."""
    values = frame[kind].astype(object).where(frame[kind].notna(), None)
    if kind == "phone":
        values = values.where(frame["phone_verified"].astype(bool), None)
    if kind == "id_number":
        values = values.where(values.map(is_valid_resident_id).astype(bool), None)
    return values


def is_placeholder_phone(e164: str | None, rules: IdentityRules = DEFAULT_RULES) -> bool:
    """Placeholder phones: configured dummies, and a mobile whose last 8 digits are all the same."""
    if e164 is None:
        return False
    if e164 in rules.blocked_values.get("phone", frozenset()):
        return True
    tail = e164[-8:]
    return len(set(tail)) == 1
