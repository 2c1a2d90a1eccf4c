"""Vectorized comparison of candidate pairs into agreement levels per feature.

Each feature maps a pair to a level: -1 when either side is missing (no evidence), 0 disagree, up
to the top level for exact agreement. Exact agreement is decided on integer codes (one factorize
per column); fuzzy similarity runs only on the pairs that differ, through rapidfuzz's pairwise
`process.cpdist` (C++, multi-threaded), never a Python call per pair.

`RecordlinkageFeature` wraps the same comparators as a `recordlinkage` compare feature, so they can
be plugged into `recordlinkage.Compare` when someone wants its API.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from rapidfuzz import process
from rapidfuzz.distance import DamerauLevenshtein, Indel, JaroWinkler

from identity.blocking import by_value, name_parts
from identity.standardize import chinese_surname_readings


@dataclass(frozen=True)
class Feature:
    """A comparison feature and the labels of its levels (index = level)."""

    name: str
    levels: tuple[str, ...]

    @property
    def n_levels(self) -> int:
        return len(self.levels)


FEATURES: tuple[Feature, ...] = (
    Feature("family_name", ("different", "jw>=0.80", "jw>=0.92", "exact")),
    Feature("given_name", ("different", "jw>=0.80", "jw>=0.92", "exact")),
    Feature("name_hanzi", ("homophone", "exact")),
    Feature("birth_date", ("different", "same_year", "one_edit", "exact")),
    Feature("gender", ("different", "exact")),
    Feature("id_number", ("different", "one_edit", "exact")),
    Feature("phone", ("different", "one_edit", "mask_compatible", "exact")),
    Feature("email", ("different", "similar_local", "exact")),
    Feature("address", ("different", "sim>=0.70_or_street", "sim>=0.90", "exact")),
    Feature("street_number", ("different", "exact")),
    Feature("city", ("different", "jw>=0.90", "exact")),
    Feature("district", ("different", "exact")),
    Feature("postcode", ("different", "one_edit", "exact")),
    Feature("province", ("different", "exact")),
)
FEATURE_INDEX: dict[str, int] = {f.name: i for i, f in enumerate(FEATURES)}
# Features whose exact level is weighted by how common the agreed value is (feature -> column).
TF_FEATURES: dict[str, str] = {"family_name": "family", "given_name": "given"}
# Bits added when a pair agrees exactly on a full name that no third record holds. The per-part
# term frequencies count the pair itself, so a name only these two records carry (李文子 on a
# Weibo profile and an app account) reads as rarer evidence than it is worth alone; a common
# full name (王伟) held by a third record gets nothing.
UNIQUE_FULL_NAME_BITS = 3.0
# Features that say where a person can be reached, not who they are: a household shares its
# delivery address and often one phone, and a shop's till phone is typed in for strangers. They are
# no evidence for a pair whose names or sexes disagree.
CONTACT_FEATURES: tuple[str, ...] = ("phone", "address", "street_number")
# u of an agreed mobile that one person holds: two strangers share an 11-digit mobile by chance
# about once in 10^8 pairs, and a masked one (3 + 4 digits seen) about once in 3 x 10^5. A file's
# random pairs overstate both (they include its duplicates), so a value's own rarity decides.
SHARED_PHONE_NAMES = 3
# Channels whose phone is a parcel's receiver's: a customer orders with a family member's phone as
# often as with her own. On the other channels (a member app, a till, a WeChat authorisation) the
# phone is the holder's own.
RECEIVER_SOURCES = frozenset({"tmall", "jd"})
PHONE_VALUE_U = 1e-8
MASK_VALUE_U = 3e-6


def full_name_key(name_pinyin: pd.Series) -> pd.Series:
    """Order-free key of a full name ("wei zhang" = "zhang wei"); None without both parts."""
    family, given = name_parts(name_pinyin)
    both = family.notna() & given.notna()
    key = pd.Series([None] * len(name_pinyin), index=name_pinyin.index, dtype=object)
    if both.any():
        f, g = family[both].astype(str), given[both].astype(str)
        key[both] = np.where(f <= g, f + " " + g, g + " " + f)
    return key


def _codes(values: pd.Series) -> np.ndarray:
    return pd.factorize(values.astype(object), use_na_sentinel=True)[0].astype(np.int64)


def _strings(values: pd.Series) -> np.ndarray:
    return values.astype(object).where(values.notna(), "").to_numpy(dtype=object)


def _cjk(value: Any) -> bool:
    return isinstance(value, str) and any("\u3400" <= c <= "\u9fff" for c in value)


@dataclass
class PreparedRecords:
    """Per-column integer codes (exact agreement) and strings (fuzzy) of a standardized frame."""

    n: int
    codes: dict[str, np.ndarray]
    strings: dict[str, np.ndarray]
    birth_int: np.ndarray  # yyyymmdd, -1 when missing
    address_numbered: np.ndarray  # the detail has a house number: exact agreement is strong evidence
    # Term frequency of each record's own value (share of records holding it), for the features
    # in TF_FEATURES: agreeing on 王 or 伟 is weaker evidence than agreeing on 翟 or 翊.
    term_frequency: dict[str, np.ndarray] = field(default_factory=dict)
    # How many records of the population hold each record's full name key (0 without both parts).
    full_name_holders: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    # How many different full names the population's holders of each record's phone carry (0
    # without one), and how many records have a phone at all: the rarity of an agreed phone. One
    # person's records share one name; a family phone or a shop's till phone carries several.
    phone_names: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    phone_population: int = 0
    # The same counted over the records whose phone is their own (not a receiver's, see
    # RECEIVER_SOURCES), and which records those are: a family phone a daughter gives on her
    # parcels is still one person's phone at the till.
    phone_owner_names: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    own_phone: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))
    # The surname is one of the Chinese surnames' readings (wang, ouyang).
    chinese_surname: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))
    # The same for each record's masked mobile (its own 138****5678, or its full phone's mask).
    mask_names: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    mask_population: int = 0

    @classmethod
    def from_frame(
        cls, frame: pd.DataFrame, population: Mapping[str, tuple[Mapping[str, int], int]] | None = None
    ) -> PreparedRecords:
        """`population[column] = (counts by value, total)` gives term frequencies from a wider
        population than the frame (the database path); by default the frame is the population."""
        family, given = name_parts(frame["name_pinyin"])
        hanzi = frame["name"].where(frame["name"].map(_cjk).astype(bool), None)
        detail = frame["address_detail"].astype(object)
        street_number = detail.fillna("").str.extract(r"^(\d+[a-z]?)\b", expand=False)
        masked = frame["phone_masked"].astype(object)
        from_phone = by_value(
            frame["phone"],
            lambda p: f"{p[3:6]}****{p[-4:]}" if p.startswith("+86") and len(p) == 14 else None,
        )
        columns: dict[str, pd.Series] = {
            "family": family,
            "given": given,
            "hanzi": hanzi,
            "gender": frame["gender"],
            "id_number": frame["id_number"],
            "phone": frame["phone"],
            "masked": masked.where(masked.notna(), from_phone),
            "masked_only": masked,
            "email": frame["email"],
            "address": detail,
            "street_number": street_number,
            "city": frame["city"],
            "district": frame["district"],
            "postcode": frame["postcode"],
            "province": frame["province"],
            "birth": frame["birth_date"].astype(str).where(frame["birth_date"].notna(), None),
        }
        birth = pd.to_datetime(frame["birth_date"], errors="coerce")
        birth_int = (birth.dt.year * 10000 + birth.dt.month * 100 + birth.dt.day).fillna(-1).astype(np.int64)
        term_frequency = {}
        for feature, column in TF_FEATURES.items():
            values = columns[column]
            if population is not None and column in population:
                counts, total = population[column]
                tf = values.map(counts).astype(float) / max(total, 1)
            else:
                tf = values.map(values.value_counts()).astype(float) / max(int(values.notna().sum()), 1)
            term_frequency[feature] = tf.fillna(0.0).to_numpy()
        full = frame["name_pinyin"].where(family.notna() & given.notna(), None)
        if population is not None and "full_name" in population:
            holders = full.map(population["full_name"][0])
        else:
            holders = full.map(full.value_counts())
        contact_names, contact_population = {}, {}
        names = full_name_key(frame["name_pinyin"])
        source = frame["source"] if "source" in frame else pd.Series([None] * len(frame), index=frame.index)
        own = ~source.isin(RECEIVER_SOURCES).to_numpy(dtype=bool)
        phone = frame["phone"].astype(object)
        for column, values, rows in (
            ("phone", phone, np.ones(len(frame), dtype=bool)),
            ("masked", columns["masked"], np.ones(len(frame), dtype=bool)),
            ("phone_owner", phone, own),
        ):
            if population is not None and column in population:
                counts, contact_population[column] = population[column]
                contact_names[column] = values.map(counts)
            else:
                # People: different full names, or different surnames (钱女士 beside 魏兰).
                held = pd.DataFrame({"value": values, "name": names, "family": family})
                held = held[held["value"].notna().to_numpy() & rows].groupby("value")
                people = np.maximum(held["name"].nunique(), held["family"].nunique())
                contact_names[column] = values.map(people)
                contact_population[column] = int((values.notna().to_numpy() & rows).sum())
        return cls(
            n=len(frame),
            term_frequency=term_frequency,
            full_name_holders=holders.fillna(0).astype(np.int64).to_numpy(),
            phone_names=contact_names["phone"].fillna(0).astype(np.int64).to_numpy(),
            phone_population=contact_population["phone"],
            phone_owner_names=contact_names["phone_owner"].fillna(0).astype(np.int64).to_numpy(),
            own_phone=own,
            mask_names=contact_names["masked"].fillna(0).astype(np.int64).to_numpy(),
            mask_population=contact_population["masked"],
            chinese_surname=family.isin(chinese_surname_readings()).to_numpy(dtype=bool),
            codes={k: _codes(v) for k, v in columns.items()},
            strings={k: _strings(v) for k, v in columns.items() if k in _FUZZY},
            birth_int=birth_int.to_numpy(),
            address_numbered=detail.fillna("").str.contains(r"\d", regex=True).to_numpy(dtype=bool),
        )


_FUZZY = {"family", "given", "id_number", "phone", "email", "address", "city", "postcode", "birth"}


def _similarity(a: np.ndarray, b: np.ndarray, scorer: Callable[..., Any], workers: int = -1) -> np.ndarray:
    if len(a) == 0:
        return np.zeros(0, dtype=np.float32)
    return np.asarray(process.cpdist(a, b, scorer=scorer, workers=workers))


def _graded(
    rec: PreparedRecords,
    column: str,
    left: np.ndarray,
    right: np.ndarray,
    thresholds: tuple[float, ...] = (),
    scorer: Callable[..., Any] = JaroWinkler.normalized_similarity,
    distance: bool = False,
) -> np.ndarray:
    """Levels: -1 missing, 0 different, 1..len(thresholds) by similarity, top = exact.

    With `distance=True`, thresholds are maximum edit distances (one_edit = (1,)).
    """
    codes = rec.codes[column]
    cl, cr = codes[left], codes[right]
    out = np.full(len(left), -1, dtype=np.int8)
    both = (cl >= 0) & (cr >= 0)
    out[both] = 0
    exact = both & (cl == cr)
    fuzzy = both & ~exact
    if thresholds and fuzzy.any():
        strings = rec.strings[column]
        idx = np.flatnonzero(fuzzy)
        sim = _similarity(strings[left[idx]], strings[right[idx]], scorer)
        level = np.zeros(len(idx), dtype=np.int8)
        for k, t in enumerate(thresholds, start=1):
            level[(sim <= t) if distance else (sim >= t)] = k
        out[idx] = level
    out[exact] = len(thresholds) + 1
    return out


def _exact(rec: PreparedRecords, column: str, left: np.ndarray, right: np.ndarray) -> np.ndarray:
    return _graded(rec, column, left, right)


def compare_pairs(rec: PreparedRecords, left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """Agreement levels, shape (pairs, len(FEATURES)), int8, -1 = missing on either side."""
    out = np.empty((len(left), len(FEATURES)), dtype=np.int8)
    family = _graded(rec, "family", left, right, (0.80, 0.92))
    given = _graded(rec, "given", left, right, (0.80, 0.92))
    # Names written in the other order ("Wei Zhang" / "Zhang Wei"): score the better orientation.
    not_exact = np.flatnonzero((family < 3) | (given < 3))
    if len(not_exact):
        sl, sr = left[not_exact], right[not_exact]
        swapped_f = _cross(rec, "family", "given", sl, sr)
        swapped_g = _cross(rec, "given", "family", sl, sr)
        better = (swapped_f.astype(np.int16) + swapped_g) > (
            family[not_exact].astype(np.int16) + given[not_exact]
        )
        better &= (swapped_f >= 0) & (swapped_g >= 0)
        family[not_exact[better]] = swapped_f[better]
        given[not_exact[better]] = swapped_g[better]
    # Written in characters, given names whose readings differ are two names (沈静怡 and her sister
    # 沈静雯), however alike the pinyin looks: a typo at a keyboard keeps the reading (a homophone).
    hanzi_l, hanzi_r = rec.codes["hanzi"][left] >= 0, rec.codes["hanzi"][right] >= 0
    given[hanzi_l & hanzi_r & (given > 0) & (given < 3)] = 0
    # The same between two Chinese names when one or both are typed in pinyin: an input method
    # writes a reading, so qin junxia (秦俊霞) is not qin juan (秦娟), nor zhang wen zhang wei.
    chinese = rec.chinese_surname[left] & rec.chinese_surname[right]
    given[chinese & (given > 0) & (given < 3)] = 0
    out[:, FEATURE_INDEX["family_name"]] = family
    out[:, FEATURE_INDEX["given_name"]] = given
    # Characters only tell homophones apart: defined when the pinyin agrees, so a name is not counted twice.
    hanzi = _exact(rec, "hanzi", left, right)
    hanzi[(family < 3) | (given < 3)] = -1
    out[:, FEATURE_INDEX["name_hanzi"]] = hanzi
    out[:, FEATURE_INDEX["birth_date"]] = _birth_levels(rec, left, right)
    out[:, FEATURE_INDEX["gender"]] = _exact(rec, "gender", left, right)
    out[:, FEATURE_INDEX["id_number"]] = _graded(
        rec, "id_number", left, right, (1,), DamerauLevenshtein.distance, distance=True
    )
    out[:, FEATURE_INDEX["phone"]] = _phone_levels(rec, left, right)
    out[:, FEATURE_INDEX["email"]] = _graded(
        rec, "email", left, right, (0.92,), JaroWinkler.normalized_similarity
    )
    out[:, FEATURE_INDEX["address"]] = _address_levels(rec, left, right)
    out[:, FEATURE_INDEX["street_number"]] = _exact(rec, "street_number", left, right)
    out[:, FEATURE_INDEX["city"]] = _graded(rec, "city", left, right, (0.90,))
    out[:, FEATURE_INDEX["district"]] = _exact(rec, "district", left, right)
    out[:, FEATURE_INDEX["postcode"]] = _graded(
        rec, "postcode", left, right, (1,), DamerauLevenshtein.distance, distance=True
    )
    province = _exact(rec, "province", left, right)
    # A city names its province: agreeing on both is one piece of evidence, not two.
    province[out[:, FEATURE_INDEX["city"]] == 2] = -1
    out[:, FEATURE_INDEX["province"]] = province
    # Two people of one household (or a stranger given the till's phone): a shared phone or address
    # is no evidence once their names or sexes disagree. A disagreeing phone stays evidence against.
    # Two Chinese surnames that differ (a wife keeps hers) say two people too; a Latin surname
    # that differs may be a typo or a maiden name.
    chinese = rec.chinese_surname[left] & rec.chinese_surname[right]
    other_person = (given == 0) | (out[:, FEATURE_INDEX["gender"]] == 0) | ((family == 0) & chinese)
    for name in CONTACT_FEATURES:
        column = out[:, FEATURE_INDEX[name]]
        column[other_person & (column > 0)] = -1
    return out


def _address_levels(rec: PreparedRecords, left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """Graded similarity; a street without a house number (a masked marketplace address) that equals
    or prefixes the other side only reaches the street level: many people live on one street."""
    out = _graded(rec, "address", left, right, (0.70, 0.90), Indel.normalized_similarity)
    numbered = rec.address_numbered[left] & rec.address_numbered[right]
    street_only = (out >= 0) & ~numbered
    idx = np.flatnonzero(street_only)
    if len(idx):
        sl, sr = rec.strings["address"][left[idx]], rec.strings["address"][right[idx]]
        prefix = np.fromiter(
            (
                len(a) >= 2 and len(b) >= 2 and (a.startswith(b) or b.startswith(a))
                for a, b in zip(sl, sr, strict=True)
            ),
            dtype=bool,
            count=len(idx),
        )
        out[idx] = np.where(prefix, 1, np.minimum(out[idx], 1))
    return out


def _cross(rec: PreparedRecords, a: str, b: str, left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """Name-part levels of column `a` on the left against column `b` on the right."""
    sa, sb = rec.strings[a][left], rec.strings[b][right]
    present = (rec.codes[a][left] >= 0) & (rec.codes[b][right] >= 0)
    out = np.full(len(left), -1, dtype=np.int8)
    idx = np.flatnonzero(present)
    sim = _similarity(sa[idx], sb[idx], JaroWinkler.normalized_similarity)
    level = np.zeros(len(idx), dtype=np.int8)
    level[sim >= 0.80] = 1
    level[sim >= 0.92] = 2
    level[sa[idx] == sb[idx]] = 3
    out[idx] = level
    return out


def _birth_levels(rec: PreparedRecords, left: np.ndarray, right: np.ndarray) -> np.ndarray:
    bl, br = rec.birth_int[left], rec.birth_int[right]
    out = np.full(len(left), -1, dtype=np.int8)
    both = (bl >= 0) & (br >= 0)
    out[both] = 0
    out[both & (bl // 10000 == br // 10000)] = 1
    differs = np.flatnonzero(both & (bl != br))
    if len(differs):
        sl = np.char.mod("%08d", bl[differs]).astype(object)
        sr = np.char.mod("%08d", br[differs]).astype(object)
        edits = _similarity(sl, sr, DamerauLevenshtein.distance)
        # Day and month swapped (a US-style form) counts as a typo too.
        swapped = (
            (bl[differs] // 10000 == br[differs] // 10000)
            & (bl[differs] % 100 == (br[differs] // 100) % 100)
            & ((bl[differs] // 100) % 100 == br[differs] % 100)
        )
        out[differs[(edits <= 1) | swapped]] = 2
    out[both & (bl == br)] = 3
    return out


def _phone_levels(rec: PreparedRecords, left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """exact E.164; mask_compatible when one side is a masked mobile matching the other's mask;
    one_edit when two full phones are one typo apart (a digit typed wrong at a till)."""
    out = _graded(rec, "phone", left, right, (1,), DamerauLevenshtein.distance, distance=True)
    out[out == 2] = 3
    masked_l, masked_r = rec.codes["masked_only"][left], rec.codes["masked_only"][right]
    any_masked = (masked_l >= 0) | (masked_r >= 0)
    mask_codes = rec.codes["masked"]
    ml, mr = mask_codes[left], mask_codes[right]
    comparable = any_masked & (ml >= 0) & (mr >= 0)
    out[comparable] = np.where(ml[comparable] == mr[comparable], 2, 0)
    if len(rec.phone_names):
        # A phone people of SHARED_PHONE_NAMES names or more give (the shop's own, typed for
        # customers who gave none) is nobody's in particular: differing from it says nothing.
        out[(out <= 1) & (out >= 0) & (nobodys_phone(rec, left) | nobodys_phone(rec, right))] = -1
    return out


def nobodys_phone(rec: PreparedRecords, nodes: np.ndarray) -> np.ndarray:
    """Records whose phone says nothing about who they are: one that people of SHARED_PHONE_NAMES
    names give (the shop's own, typed for customers who gave none), and a receiver's phone that
    other people hold too (a household's delivery phone: the family's, not necessarily hers)."""
    names = rec.phone_names[nodes]
    out = names >= SHARED_PHONE_NAMES
    if len(rec.own_phone):
        # The same for a masked receiver phone (138****5678) seen with other names.
        receiver = ~rec.own_phone[nodes]
        out |= receiver & (
            (names >= 2) | ((rec.codes["masked_only"][nodes] >= 0) & (rec.mask_names[nodes] >= 2))
        )
    return out


def tf_adjustment(
    rec: PreparedRecords,
    left: np.ndarray,
    levels: np.ndarray,
    u_exact: Mapping[str, float],
    right: np.ndarray | None = None,
) -> np.ndarray:
    """Bits to add per pair: log2(u_exact / tf(value)) on the TF features where the pair agrees
    exactly. The left record's frequency is used (both sides hold the same value) unless only the
    right one is written in characters (a pinyin name matched in the other order); with `right`, a
    full name that only the pair holds adds `UNIQUE_FULL_NAME_BITS`."""
    total = np.zeros(len(left))
    for feature, _column in TF_FEATURES.items():
        j = FEATURE_INDEX[feature]
        exact = levels[:, j] == FEATURES[j].n_levels - 1
        if not exact.any() or feature not in rec.term_frequency:
            continue
        tf = rec.term_frequency[feature][left[exact]]
        if right is not None:
            # A name matched in the other order (Guo Ming read as given-first, 郭明): written in
            # characters, the right side's parts are certain, so its reading's frequency counts.
            certain = (rec.codes["hanzi"][right[exact]] >= 0) & (rec.codes["hanzi"][left[exact]] < 0)
            tf = np.where(certain, rec.term_frequency[feature][right[exact]], tf)
        ok = tf > 0
        adjust = np.zeros(int(exact.sum()))
        adjust[ok] = np.log2(u_exact[feature] / tf[ok])
        total[np.flatnonzero(exact)] += adjust
    if len(rec.phone_names) and "phone" in u_exact:
        # An agreed phone that people of d different names hold (a family phone, the shop's own):
        # the d - 1 other people are the chance that a non-match shares it (Splink's term
        # frequency, counted in people rather than records); a phone one name holds gets
        # PHONE_VALUE_U in place of the model's average u.
        j = FEATURE_INDEX["phone"]
        exact = np.flatnonzero(levels[:, j] == FEATURES[j].n_levels - 1)
        holders = rec.phone_names[left[exact]]
        if right is not None and len(rec.own_phone):
            # Both records give the phone as their own: only the people who do so too share it
            # (a daughter's parcels to her mother's phone do not make it hers).
            own = rec.own_phone[left[exact]] & rec.own_phone[right[exact]]
            holders = np.where(own, rec.phone_owner_names[left[exact]], holders)
        others = np.maximum(holders - 1, 0) / max(rec.phone_population, 1)
        u_value = np.maximum(others, PHONE_VALUE_U)
        total[exact] += np.log2(u_exact["phone"] / u_value)
        if len(rec.mask_names) and "phone_masked" in u_exact:
            # A masked mobile several named people are seen with (a household's delivery phone).
            masked = np.flatnonzero(levels[:, j] == FEATURES[j].levels.index("mask_compatible"))
            others = np.maximum(rec.mask_names[left[masked]] - 1, 0) / max(rec.mask_population, 1)
            u_value = np.maximum(others, MASK_VALUE_U)
            total[masked] += np.log2(u_exact["phone_masked"] / u_value)
    if len(rec.full_name_holders):
        full = (levels[:, FEATURE_INDEX["family_name"]] == 3) & (levels[:, FEATURE_INDEX["given_name"]] == 3)
        holders_l = rec.full_name_holders[left]
        holders_r = rec.full_name_holders[right] if right is not None else holders_l
        unique = full & (holders_l >= 1) & (holders_l <= 2) & (holders_r >= 1) & (holders_r <= 2)
        # Namesakes, not one person, when the birth date, the gender or the city disagrees.
        unique &= (levels[:, FEATURE_INDEX["birth_date"]] != 0) & (levels[:, FEATURE_INDEX["gender"]] != 0)
        unique &= levels[:, FEATURE_INDEX["city"]] != 0
        total[unique] += UNIQUE_FULL_NAME_BITS
    return total


def describe_levels(levels: np.ndarray) -> dict[str, str]:
    """Readable evidence for one pair: feature -> level label (missing features left out)."""
    return {f.name: f.levels[int(v)] for f, v in zip(FEATURES, levels, strict=True) if v >= 0}


class RecordlinkageFeature:
    """Adapter: a `recordlinkage.base.BaseCompareFeature` running `compare_pairs` on a chunk.

    Use with `recordlinkage.Compare().add(RecordlinkageFeature.build(frame))`; the columns of the
    result are the feature names. Built lazily so importing this module does not import recordlinkage.
    """

    @staticmethod
    def build(frame: pd.DataFrame) -> Any:
        from recordlinkage.base import BaseCompareFeature

        rec = PreparedRecords.from_frame(frame.reset_index(drop=True))
        positions = pd.Series(np.arange(len(frame)), index=frame.index)

        class _Feature(BaseCompareFeature):
            def __init__(self) -> None:
                # Empty label lists: recordlinkage passes an empty frame indexed by each side's labels.
                super().__init__([], [], label=[f.name for f in FEATURES])

            def _compute(
                self, left_data: tuple[pd.DataFrame], right_data: tuple[pd.DataFrame]
            ) -> pd.DataFrame:
                left = positions.loc[left_data[0].index.get_level_values(0)].to_numpy()
                right = positions.loc[right_data[0].index.get_level_values(1)].to_numpy()
                return pd.DataFrame(compare_pairs(rec, left, right), columns=[f.name for f in FEATURES])

        return _Feature()
