"""Batch engine: blocked values, cannot-link constraints, per-customer limits, stable ids, survivorship."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

import numpy as np
import pandas as pd

from identity.cluster import ConstrainedUnionFind, apply_links, stable_cluster_ids
from identity.engine import resolve_frame
from identity.model import reference_model
from identity.rules import DEFAULT_RULES
from identity.survivorship import survive


def clusters(frame: pd.DataFrame, **kwargs: object) -> dict[str, int]:
    result = resolve_frame(frame, model=reference_model(1000), **kwargs)  # type: ignore[arg-type]
    return dict(zip(result.record_ids, result.customer_ids.tolist(), strict=True))


def test_blocked_values_never_link() -> None:
    frame = pd.DataFrame(
        [
            # POS dummies and placeholders typed at checkout by different shoppers.
            {
                "record_id": "a",
                "source": "app",
                "name": "王伟",
                "phone": "13800000000",
                "phone_verified": "1",
            },
            {
                "record_id": "b",
                "source": "app",
                "name": "李娜",
                "phone": "13800000000",
                "phone_verified": "1",
            },
            {"record_id": "c", "source": "pos", "name": "赵敏", "phone": "13988888888"},
            {"record_id": "d", "source": "pos", "name": "孙丽", "phone": "13988888888"},
            {"record_id": "e", "source": "app", "name": "周杰", "email": "test@test.com"},
            {"record_id": "f", "source": "app", "name": "吴芳", "email": "Test@Test.com"},
        ]
    )
    assert len(set(clusters(frame).values())) == 6


def test_a_value_shared_by_too_many_identities_is_blocked_and_the_limit_is_configurable() -> None:
    shared = pd.DataFrame(
        [
            {"record_id": f"r{i}", "source": "app", "name": f"用户{i}", "email": "family@163.com"}
            for i in range(6)
        ]
    )
    assert len(set(clusters(shared).values())) == 1  # 6 <= 20 by default: an identifier like any other
    strict = replace(DEFAULT_RULES, max_identities_per_value=5)
    result = resolve_frame(shared, strict, model=reference_model(1000))
    assert len(set(result.customer_ids.tolist())) == 6
    custom = replace(
        DEFAULT_RULES, blocked_values={**DEFAULT_RULES.blocked_values, "email": frozenset({"family@163.com"})}
    )
    assert len(set(resolve_frame(shared, custom, model=reference_model(1000)).customer_ids.tolist())) == 6


def test_cannot_link_constraint_splits_a_chain() -> None:
    # a -phone- b -email- c, but a and c hold two different valid resident ids: two people.
    frame = pd.DataFrame(
        [
            {
                "record_id": "a",
                "source": "app",
                "name": "陈明",
                "phone": "13911112222",
                "phone_verified": "1",
                "id_number": "11010519491231002X",
            },
            {
                "record_id": "b",
                "source": "pos",
                "name": "陈明",
                "phone": "13911112222",
                "phone_verified": "1",
                "email": "cm@qq.com",
            },
            {
                "record_id": "c",
                "source": "jd",
                "name": "陈明",
                "email": "cm@qq.com",
                "id_number": "440106200104260598",
            },
        ]
    )
    out = clusters(frame)
    assert out["a"] != out["c"]
    assert out["b"] == out["a"]  # the verified phone outranks the email: b stays with a
    # Without the second id the chain closes.
    out = clusters(frame.assign(id_number=["11010519491231002X", None, None]))
    assert len(set(out.values())) == 1


def test_two_verified_mobiles_from_one_member_system_are_two_people() -> None:
    frame = pd.DataFrame(
        [
            {
                "record_id": "a",
                "source": "app",
                "name": "刘洋",
                "phone": "13911112222",
                "phone_verified": "1",
                "email": "ly@qq.com",
            },
            {
                "record_id": "b",
                "source": "app",
                "name": "刘洋",
                "phone": "13933334444",
                "phone_verified": "1",
                "email": "ly@qq.com",
            },
        ]
    )
    out = clusters(frame)
    assert out["a"] != out["b"]
    out = clusters(frame.assign(source=["app", "pos"]))  # different systems: the shared email links them
    assert out["a"] == out["b"]


def test_one_customer_never_holds_more_phones_than_the_limit() -> None:
    frame = pd.DataFrame(
        [
            {
                "record_id": f"r{i}",
                "source": "pos",
                "name": "黄磊",
                "email": "hl@qq.com",
                "phone": f"1391111{i:04d}",
            }
            for i in range(6)
        ]
    )
    out = clusters(frame)
    sizes = pd.Series(list(out.values())).value_counts()
    assert sizes.max() == DEFAULT_RULES.per_customer_limits["phone"]


def test_stable_ids_across_reruns_merges_and_splits() -> None:
    frame = pd.DataFrame(
        [
            {"record_id": "a", "source": "app", "name": "杨帆", "member_no": "M1"},
            {"record_id": "b", "source": "pos", "name": "杨帆", "member_no": "M1"},
            {"record_id": "c", "source": "app", "name": "郭静", "member_no": "M2"},
        ]
    )
    first = clusters(frame)
    assert clusters(frame) == first  # a re-run gives the same ids
    previous = {"a": 7, "b": 7, "c": 3}
    assert clusters(frame, previous=previous) == previous
    # c now shares a's member number: the clusters merge and the oldest (smallest) id, 3, survives.
    merged = clusters(frame.assign(member_no=["M1", "M1", "M1"]), previous=previous)
    assert set(merged.values()) == {3}
    # Customer 3 (a, b, c) splits: c takes another member number. The side holding the oldest record
    # (a: input order is age), here also the larger side, keeps 3; c gets the next new id.
    together = {"a": 3, "b": 3, "c": 3}
    split = clusters(frame.assign(member_no=["M1", "M1", "M2"]), previous=together)
    assert split == {"a": 3, "b": 3, "c": 4}
    # The oldest record decides, not the size: a alone keeps 3, b and c together get 4.
    split = clusters(
        frame.assign(name=["杨帆", "郭静", "郭静"], member_no=["M1", "M2", "M2"]), previous=together
    )
    assert split == {"a": 3, "b": 4, "c": 4}


def test_split_keeps_the_id_on_the_side_holding_the_oldest_identity() -> None:
    labels = np.array([0, 1, 1, 2])  # the old customer 5 (nodes 0, 1, 2) splits into {0} and {1, 2}
    ids, next_id = stable_cluster_ids(labels, [5, 5, 5, None], age=np.array([2, 0, 1, 3]), next_id=6)
    assert ids.tolist() == [6, 5, 5, 7] and next_id == 8


def test_union_find_refuses_a_forbidden_pair_and_its_transitive_route() -> None:
    uf = ConstrainedUnionFind(3)
    uf.forbid(0, 2)
    assert uf.union(0, 1)
    assert not uf.union(1, 2)
    assert uf.refused == 1


def test_union_find_keeps_one_name_per_customer_unless_a_pair_compared_the_names() -> None:
    # 0: 王丽, 1: 王娜 (her sister), 2: 王女士 on a parcel, 3: 李先生, 4: a member number's record.
    uf = ConstrainedUnionFind(5)
    uf.add_name(0, "li wang", True, frozenset({"wang"}))
    uf.add_name(1, "na wang", True, frozenset({"wang"}))
    uf.add_name(2, None, True, frozenset({"wang"}))
    uf.add_name(3, None, True, frozenset({"li"}))
    assert uf.union(2, 0)
    assert not uf.union(2, 1)  # the parcel's phone and address cannot make 王丽 王娜 too
    assert uf.union(3, 4)
    assert not uf.union(4, 0)  # nor a customer whose only surname is 李 one of 王's
    assert uf.union(1, 0, trusted=True)  # a shared deterministic identifier is trusted
    fresh = ConstrainedUnionFind(2)
    fresh.add_name(0, "li wang", True, frozenset({"wang"}))
    fresh.add_name(1, "na wang", True, frozenset({"wang"}))
    assert fresh.union(0, 1)  # the pair compared the two names itself: the model's score decides


def test_a_nameless_record_reaching_two_differently_named_customers_is_held() -> None:
    uf = ConstrainedUnionFind(4)
    uf.add_name(0, "li wang", True, frozenset({"wang"}))
    uf.add_name(1, "na wang", True, frozenset({"wang"}))
    uf.add_name(2, None, True, frozenset({"wang"}))
    uf.add_name(3, "li wang", False, frozenset({"wang", "li"}))
    left, right = np.array([0, 2, 1]), np.array([3, 0, 2])
    accepted, held = apply_links(uf, left, right, np.array([0.99, 0.999, 0.995]))
    assert accepted.tolist() == [True, False, False] and held.tolist() == [False, True, True]
    assert uf.find(2) not in (uf.find(0), uf.find(1)) and uf.find(0) == uf.find(3)


def test_survivorship_rules_and_lineage() -> None:
    t = datetime(2026, 1, 1, tzinfo=UTC)
    identities = [
        {
            "id": 1,
            "channel_code": "tmall",
            "trust_rank": 50,
            "observed_at": t.replace(month=3),
            "name": "張偉",
            "phone": "+8613811112222",
            "phone_verified": False,
            "address_detail": "建国路88号",
            "city": "北京市",
            "province": "北京市",
            "district": "朝阳区",
            "birth_date": None,
        },
        {
            "id": 2,
            "channel_code": "app",
            "trust_rank": 10,
            "observed_at": t.replace(month=1),
            "name": "张伟",
            "phone": "+8613933334444",
            "phone_verified": True,
            "address_detail": "虹桥路1号",
            "city": "上海市",
            "province": "上海市",
            "district": None,
            "email": "zw@qq.com",
        },
        {
            "id": 3,
            "channel_code": "pos",
            "trust_rank": 30,
            "observed_at": t.replace(month=2),
            "name": None,
            "phone": "+8613811112222",
            "phone_verified": False,
            "gender": "m",
        },
    ]
    golden = survive(identities)
    assert golden.attributes["name"] == "张伟" and golden.lineage["name"]["rule"] == "source_priority"
    assert golden.lineage["name"]["source_identity_id"] == 2 and golden.lineage["name"]["channel"] == "app"
    assert golden.attributes["phone"] == "+8613933334444" and golden.lineage["phone"]["rule"] == "verified"
    # Address parts survive together from the most complete, then most recent, identity.
    assert (golden.attributes["address"], golden.attributes["city"], golden.attributes["district"]) == (
        "建国路88号",
        "北京市",
        "朝阳区",
    )
    assert (
        golden.lineage["city"]["source_identity_id"] == 1
        and golden.lineage["address"]["rule"] == "completeness"
    )
    assert golden.lineage["address"]["observed_at"] == "2026-03-01T00:00:00+00:00"
    assert golden.attributes["gender"] == "m" and golden.lineage["gender"]["rule"] == "only_value"
    assert golden.attributes["birth_date"] is None and "birth_date" not in golden.lineage


def test_comparators_plug_into_recordlinkage_compare() -> None:
    import recordlinkage

    from identity.compare import FEATURES, RecordlinkageFeature
    from identity.standardize import standardize_frame

    frame = pd.DataFrame(
        [
            {"record_id": "a", "name": "曾小明", "phone": "13811112222", "city": "上海"},
            {"record_id": "b", "name": "曾小明", "phone": "138****2222", "city": "上海市"},
            {"record_id": "c", "name": "王芳", "phone": "13999990000", "city": "上海"},
        ]
    )
    std = standardize_frame(frame).set_index("record_id")
    pairs = recordlinkage.Index().full().index(std)
    compare = recordlinkage.Compare()
    compare.add(RecordlinkageFeature.build(std))
    features = compare.compute(pairs, std)
    assert list(features.columns) == [f.name for f in FEATURES]
    ab = features.loc[("b", "a")] if ("b", "a") in features.index else features.loc[("a", "b")]
    phone_levels = next(f.levels for f in FEATURES if f.name == "phone")
    assert ab["phone"] == phone_levels.index("mask_compatible") and ab["family_name"] == 3 and ab["city"] == 2
    ac = features.loc[("c", "a")] if ("c", "a") in features.index else features.loc[("a", "c")]
    assert ac["phone"] == 0 and ac["given_name"] == 0


def test_supervised_model_from_labelled_pairs() -> None:
    from identity.evaluate import febrl2_dataset, pairwise_scores

    frame, truth = febrl2_dataset()
    entity = dict(zip(frame["record_id"], truth, strict=True))
    # Neighbours within a surname: mostly non-matches, some matches, as a reviewer would label them.
    ordered = frame.sort_values(["family_name", "given_name"])["record_id"].tolist()
    pairs = pd.DataFrame({"left_record_id": ordered[:-1], "right_record_id": ordered[1:]}).iloc[::3]
    pairs["is_match"] = [
        int(entity[a] == entity[b])
        for a, b in zip(pairs["left_record_id"], pairs["right_record_id"], strict=True)
    ]
    result = resolve_frame(frame, labelled_pairs=pairs)
    assert result.model.supervised is not None
    assert pairwise_scores(result.customer_ids, truth).f1 >= 0.98


def test_empty_and_single_record_files_resolve() -> None:
    empty = resolve_frame(
        pd.DataFrame({"record_id": pd.Series([], dtype=str), "name": pd.Series([], dtype=str)})
    )
    assert len(empty.frame()) == 0
    single = resolve_frame(pd.DataFrame([{"record_id": "x", "name": "张三"}]))
    assert single.frame().to_dict("records") == [{"record_id": "x", "customer_id": 1}]
