"""Row validation as the quarantine shows it: the good rows of a page in their order, each bad row held with
a reason that names its fields (at most five, then how many more), under the channel's own id for it."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel, field_validator

from sync.validation import describe_errors, key_of, require_known, validate_rows


class Sale(BaseModel):
    tid: str
    qty: int
    status: str

    @field_validator("status")
    @classmethod
    def _status(cls, value: str) -> str:
        return require_known(value, ("paid", "shipped"), "status")


def test_a_page_keeps_its_good_rows_in_order_and_holds_the_bad_ones() -> None:
    rows: list[Any] = [
        {"tid": "1", "qty": 1, "status": "paid"},
        {"tid": "2", "qty": "many", "status": "paid"},
        {"tid": "3", "qty": 2, "status": "shipped"},
        {"order_no": "4", "qty": 1, "status": "lost"},
        "not even an object",
    ]
    valid, held = validate_rows(
        Sale, rows, channel="jd", entity="order", external_id=key_of("tid", "order_no")
    )
    assert [(m.tid, raw) for m, raw in valid] == [("1", rows[0]), ("3", rows[2])]
    assert [(h.channel, h.entity, h.external_id) for h in held] == [
        ("jd", "order", "2"),
        ("jd", "order", "4"),
        ("jd", "order", None),
    ]
    assert held[0].reason.startswith("field `qty`: Input should be a valid integer")
    assert held[1].reason == (
        "field `tid`: Field required; field `status`: unknown status 'lost'; known: paid, shipped"
    )
    assert held[1].errors[0] == {"loc": ["tid"], "msg": "Field required", "type": "missing"}
    # A row that is no object at all is kept whole, under a key of its own.
    assert held[2].raw == {"value": "not even an object"}
    assert held[2].reason.startswith("field `(row)`:")


def test_a_page_of_good_rows_is_validated_as_is() -> None:
    rows = [{"tid": str(n), "qty": n, "status": "paid"} for n in range(3)]
    valid, held = validate_rows(Sale, rows, channel="tmall", entity="trade", external_id=key_of("tid"))
    assert held == [] and [m.qty for m, _ in valid] == [0, 1, 2]


def test_an_unreadable_id_is_just_unknown() -> None:
    def broken(raw: Any) -> str | None:
        raise KeyError("tid")

    _, held = validate_rows(Sale, [{"qty": 1}], channel="app", entity="order", external_id=broken)
    assert held[0].external_id is None


def test_reasons_name_five_fields_then_count_the_rest() -> None:
    errors = [{"loc": ("lines", n, "price"), "msg": f"Value error, bad {n}"} for n in range(7)]
    assert describe_errors(errors) == (
        "field `lines.0.price`: bad 0; field `lines.1.price`: bad 1; field `lines.2.price`: bad 2; "
        "field `lines.3.price`: bad 3; field `lines.4.price`: bad 4 (+2 more)"
    )
    # Six fields: the sixth is counted, not dropped.
    assert describe_errors(errors[:6]).endswith("field `lines.4.price`: bad 4 (+1 more)")
    assert describe_errors(errors[:5]).endswith("bad 4")
    assert describe_errors([{"msg": "tenders do not cover the total"}]) == (
        "field `(row)`: tenders do not cover the total"
    )


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ({"tid": "9", "order_no": "8"}, "9"),
        ({"tid": "", "order_no": "8"}, "8"),
        ({"tid": None, "order_no": 8}, "8"),
        ({"other": "1"}, None),
        (["tid", "9"], None),
    ],
)
def test_the_first_id_present_names_the_row(raw: Any, expected: str | None) -> None:
    assert key_of("tid", "order_no")(raw) == expected


def test_an_unknown_value_lists_the_known_ones() -> None:
    assert require_known("paid", ("paid",), "status") == "paid"
    with pytest.raises(ValueError, match=r"^unknown status 'lost'; known: paid, shipped$"):
        require_known("lost", ("paid", "shipped"), "status")
