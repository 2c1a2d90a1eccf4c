"""Each standardizer on real-looking Chinese (and Latin) inputs."""

from __future__ import annotations

from datetime import date

import pandas as pd
import pytest

from identity.standardize import (
    is_valid_resident_id,
    mask_phone,
    standardize_birth_date,
    standardize_email,
    standardize_frame,
    standardize_id_number,
    standardize_name,
    standardize_phone,
)


@pytest.mark.parametrize(
    ("raw", "phone", "masked"),
    [
        ("13812345678", "+8613812345678", None),
        ("+86 138-1234-5678", "+8613812345678", None),
        ("0086 13812345678", "+8613812345678", None),
        ("8613812345678", "+8613812345678", None),
        ("(138) 1234 5678 转 8021", "+8613812345678", None),
        ("010-62345678", "+861062345678", None),
        ("021 6234 5678 ext. 12", "+862162345678", None),
        ("138****5678", None, "138****5678"),
        ("+86 138****5678", None, "138****5678"),
        ("12345", None, None),
    ],
)
def test_phone_to_e164_and_masked_mobiles_as_partial_evidence(
    raw: str, phone: str | None, masked: str | None
) -> None:
    assert standardize_phone(raw) == (phone, masked)


def test_mask_of_a_full_mobile_matches_the_marketplace_mask() -> None:
    assert mask_phone("+8613812345678") == "138****5678"


@pytest.mark.parametrize(
    ("raw", "email"),
    [
        (" Zhang.Wei@QQ.com ", "zhang.wei@qq.com"),
        ("Zhang.Wei+shop@gmail.com", "zhangwei@gmail.com"),
        ("zhangwei@googlemail.com", "zhangwei@gmail.com"),
        ("li.na+jd@outlook.com", "li.na@outlook.com"),
        ("12345@vip.qq.com", "12345@qq.com"),
        ("not an email", None),
        ("a@b", None),
    ],
)
def test_email_lowercase_and_provider_aliases(raw: str, email: str | None) -> None:
    assert standardize_email(raw) == email


@pytest.mark.parametrize(
    ("name", "display", "key"),
    [
        ("曾小明", "曾小明", "zeng xiaoming"),  # 曾 as a surname is zeng, not ceng
        ("单田芳", "单田芳", "shan tianfang"),
        ("解晓东", "解晓东", "xie xiaodong"),
        ("仇英", "仇英", "qiu ying"),
        ("朴槿惠", "朴槿惠", "piao jinhui"),
        ("查良镛", "查良镛", "zha liangyong"),
        ("翟志刚", "翟志刚", "zhai zhigang"),
        ("張偉", "张伟", "zhang wei"),  # traditional to simplified
        ("歐陽娜娜", "欧阳娜娜", "ouyang nana"),  # compound surname
        ("宋**", None, "song "),  # masked receiver: only the surname is evidence
        ("柠檬宝不吃香菜705", None, None),  # a screen name, not a person's name
        ("Wei Zhang", "wei zhang", "zhang wei"),
        ("Zhang, Wei", "zhang wei", "zhang wei"),
    ],
)
def test_chinese_and_latin_names(name: str, display: str | None, key: str | None) -> None:
    assert standardize_name(name) == (display, key)


def test_name_parts_and_pinyin_written_names() -> None:
    assert standardize_name(None, given="小明", family="曾") == ("曾小明", "zeng xiaoming")
    assert standardize_name(None, given="Xiaoming", family="Zeng") == ("xiaoming zeng", "zeng xiaoming")


@pytest.mark.parametrize(
    ("raw", "value"),
    [
        ("1990-01-02", date(1990, 1, 2)),
        ("19900102", date(1990, 1, 2)),
        ("1990/1/2", date(1990, 1, 2)),
        ("1990.01.02", date(1990, 1, 2)),
        ("1990年1月2日", date(1990, 1, 2)),
        ("02/01/1990", date(1990, 1, 2)),
        ("1990-02-30", None),
        ("yesterday", None),
    ],
)
def test_birth_dates_in_several_formats(raw: str, value: date | None) -> None:
    assert standardize_birth_date(raw) == value


def test_resident_ids_check_digit_and_15_digit_upgrade() -> None:
    assert is_valid_resident_id("11010519491231002X")
    assert not is_valid_resident_id("110105194912310021")  # wrong check digit
    assert not is_valid_resident_id("110105194913310020")  # month 13
    assert standardize_id_number("110105 491231 002") == "11010519491231002X"
    assert standardize_id_number("11010519491231002x") == "11010519491231002X"


def test_frame_addresses_regions_and_id_derived_fields() -> None:
    frame = pd.DataFrame(
        [
            {
                "record_id": 1,
                "address": "上海市徐汇区虹漕路461号58号楼5楼",
                "id_number": "11010519491231002X",
            },
            {"record_id": 2, "address": "廣東省深圳市南山區科技園"},
            {
                "record_id": 3,
                "address": "金桥路********",
                "province": "上海",
                "city": "上海市",
                "district": "浦东新区",
            },
            {"record_id": 4, "province": "广东", "city": "深圳", "member_no": " m-0001 ", "gender": "女"},
            {"record_id": 6, "province": "浙江", "city": "杭州"},
            {
                "record_id": 5,
                "street_number": "44",
                "address_1": "Forbes Street",
                "address_2": "Wintersloe",
                "city": "Kellerberrin",
                "province": "VIC",
            },
        ]
    )
    out = standardize_frame(frame).set_index("record_id")
    assert out.loc[1, ["province", "city", "district", "address_detail"]].tolist() == [
        "上海市",
        "上海市",
        "徐汇区",
        "虹漕路461号58号楼5楼",
    ]
    assert (
        out.loc[1, "birth_date"] == date(1949, 12, 31) and out.loc[1, "gender"] == "f"
    )  # from the id: 17th digit even
    assert out.loc[2, ["province", "city", "district", "address_detail"]].tolist() == [
        "广东省",
        "深圳市",
        "南山区",
        "科技园",
    ]
    assert out.loc[3, ["province", "city", "district", "address_detail"]].tolist() == [
        "上海市",
        "上海市",
        "浦东新区",
        "金桥路",
    ]
    assert out.loc[4, ["province", "city", "member_no", "gender"]].tolist() == [
        "广东省",
        "深圳市",
        "M0001",
        "f",
    ]
    assert out.loc[5, ["address_detail", "city", "province"]].tolist() == [
        "44 forbes street wintersloe",
        "kellerberrin",
        "vic",
    ]


def test_frame_keeps_verified_flag_only_for_real_phones() -> None:
    frame = pd.DataFrame(
        [
            {"record_id": "a", "phone": "13812345678", "phone_verified": "true"},
            {"record_id": "b", "phone": "138****5678", "phone_verified": "true"},
            {"record_id": "c", "phone": "13812345678"},
        ]
    )
    out = standardize_frame(frame)
    assert out["phone_verified"].tolist() == [True, False, False]
    assert out["phone_masked"].tolist() == [None, "138****5678", None]


def test_frame_requires_record_id() -> None:
    with pytest.raises(ValueError, match="record_id"):
        standardize_frame(pd.DataFrame({"name": ["张伟"]}))
