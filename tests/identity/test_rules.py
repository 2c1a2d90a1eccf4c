"""The identity rules' small decisions, each with values a person can check by eye: which phones are
placeholders, which values are too shared to link on, and the order of the strong identifiers."""

from __future__ import annotations

from dataclasses import replace

import pandas as pd
import pytest

from identity.rules import DEFAULT_RULES, blocked_mask, is_placeholder_phone


@pytest.mark.parametrize(
    ("phone", "placeholder"),
    [
        (None, False),
        ("+8613812345678", False),
        ("+8613800138000", True),  # the classic dummy typed at tills: listed, not eight equal digits
        ("+8613911111111", True),  # the last eight digits all the same
        ("+8613800111111", False),  # only the last six are
        ("+8613000000001", False),
    ],
)
def test_placeholder_phones(phone: str | None, placeholder: bool) -> None:
    assert is_placeholder_phone(phone) is placeholder


def test_a_configured_placeholder_is_one_only_where_configured() -> None:
    rules = replace(DEFAULT_RULES, blocked_values={"phone": frozenset({"+8613812345678"})})
    assert is_placeholder_phone("+8613812345678", rules) is True
    assert is_placeholder_phone("+8613800138000", rules) is False
    assert is_placeholder_phone("+8613812345678") is False
    # Rules without a phone list still know the eight-equal-digits placeholder and nothing else.
    bare = replace(DEFAULT_RULES, blocked_values={})
    assert is_placeholder_phone("+8613800138000", bare) is False
    assert is_placeholder_phone("+8613911111111", bare) is True


def test_values_shared_by_more_than_the_limit_never_link() -> None:
    limit = DEFAULT_RULES.max_identities_per_value
    at_limit, over = "+8613812345678", "+8613900001111"
    values = pd.Series([at_limit] * limit + [over] * (limit + 1) + [None, "+8613800138000", "+8613700002222"])
    mask = blocked_mask(values, "phone")
    assert not mask[:limit].any(), "a value held exactly `limit` times may still link"
    assert mask[limit : 2 * limit + 1].all()
    assert list(mask[-3:]) == [True, True, False]  # missing, listed, an ordinary phone


def test_strong_identifiers_in_their_order() -> None:
    order = ["wechat_unionid", "id_number", "member_no", "phone", "email"]
    ranks = [DEFAULT_RULES.priority(kind) for kind in order]
    assert ranks == sorted(ranks) and len(set(ranks)) == len(ranks)
    assert DEFAULT_RULES.priority("nickname") > max(ranks)
