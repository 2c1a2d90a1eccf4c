"""The resolution engine: standardized records in, clusters (customer ids) out. No database.

Steps: blocked values are masked out; deterministic rules link strong identifiers; multi-pass
blocking yields candidate pairs in chunks; each chunk is compared (vectorized) and scored by a
Fellegi-Sunter model fitted with EM; pairs above the link threshold become links, pairs between the
thresholds go to review; a constrained union-find applies links strongest first. The database path
(`identity.linking`) reuses every step with the candidate set restricted to new identities.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from identity.blocking import DEFAULT_PASSES, BlockingPass, blocking_keys, candidate_pairs, name_parts
from identity.cluster import ConstrainedUnionFind, apply_links, stable_cluster_ids
from identity.compare import (
    FEATURES,
    PreparedRecords,
    compare_pairs,
    full_name_key,
    nobodys_phone,
    tf_adjustment,
)
from identity.model import (
    FellegiSunterModel,
    decode_patterns,
    pattern_codes,
    random_pair_prior,
    reference_model,
)
from identity.rules import DEFAULT_RULES, IdentityRules, blocked_mask, is_placeholder_phone, strong_values
from identity.standardize import STANDARD_COLUMNS, chinese_surname_readings, standardize_frame

# progress(stage, amount): stage is "standardize", "fit", "compare", "cluster"; amount is records or pairs.
Progress = Callable[[str, int], None]
MASKABLE = ("phone", "phone_masked", "email", "member_no", "id_number", "wechat_unionid")


@dataclass
class Edges:
    """Links between records (positional indices), strongest first when applied."""

    left: np.ndarray
    right: np.ndarray
    strength: np.ndarray  # deterministic rules > 1 (by priority), probabilistic = probability
    rule: np.ndarray  # object: rule name or "fellegi_sunter"
    levels: np.ndarray  # (edges, features) agreement levels; -1 rows for deterministic edges

    @property
    def deterministic(self) -> np.ndarray:
        return np.fromiter((str(r).startswith("rule:") for r in self.rule), dtype=bool, count=len(self.rule))

    def subset(self, mask: np.ndarray) -> Edges:
        return Edges(
            self.left[mask], self.right[mask], self.strength[mask], self.rule[mask], self.levels[mask]
        )

    @classmethod
    def empty(cls, n_features: int) -> Edges:
        z = np.zeros(0, dtype=np.int64)
        return cls(z, z, np.zeros(0), np.zeros(0, dtype=object), np.zeros((0, n_features), dtype=np.int8))

    @classmethod
    def concat(cls, parts: list[Edges], n_features: int) -> Edges:
        if not parts:
            return cls.empty(n_features)
        return cls(
            np.concatenate([p.left for p in parts]),
            np.concatenate([p.right for p in parts]),
            np.concatenate([p.strength for p in parts]),
            np.concatenate([p.rule for p in parts]),
            np.concatenate([p.levels for p in parts]),
        )


@dataclass
class ResolveResult:
    """record_id -> customer_id, with the figures a caller reports."""

    record_ids: np.ndarray
    customer_ids: np.ndarray
    model: FellegiSunterModel
    pairs_compared: int = 0
    links: int = 0
    deterministic_links: int = 0
    review_pairs: int = 0
    refused_links: int = 0
    review: pd.DataFrame = field(default_factory=pd.DataFrame)
    seconds: dict[str, float] = field(default_factory=dict)

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame({"record_id": self.record_ids, "customer_id": self.customer_ids})


def mask_blocked(
    std: pd.DataFrame, rules: IdentityRules, shared: Mapping[str, pd.Series] | None = None
) -> pd.DataFrame:
    """A copy of a standardized frame with blocked identifier values set to None.

    `shared[kind]` optionally gives how many identities hold each value in a wider population (the
    database path); otherwise the frame itself is the population.
    """
    out = std.copy()
    for kind in MASKABLE:
        if kind not in out:
            continue
        values = out[kind]
        mask = blocked_mask(values, kind, rules)
        if shared is not None and kind in shared:
            counts = values.map(shared[kind]).fillna(0).to_numpy()
            mask |= counts > rules.max_identities_per_value
        if kind == "phone":
            mask |= values.map(lambda p: is_placeholder_phone(p, rules)).astype(bool).to_numpy()
        out[kind] = values.where(~mask, None)
    out["phone_verified"] = out["phone_verified"].astype(bool) & out["phone"].notna()
    return out


def deterministic_edges(std: pd.DataFrame, rules: IdentityRules, restrict: np.ndarray | None = None) -> Edges:
    """Star edges between records sharing a strong identifier (already masked for blocked values)."""
    parts: list[Edges] = []
    for ident in rules.strong_identifiers:
        values = strong_values(std, ident.kind)
        codes = pd.factorize(values, use_na_sentinel=True)[0]
        valid = np.flatnonzero(codes >= 0)
        if len(valid) < 2:
            continue
        order = valid[np.argsort(codes[valid], kind="stable")]
        sc = codes[order]
        is_first = np.r_[True, sc[1:] != sc[:-1]]
        group_first = order[np.maximum.accumulate(np.where(is_first, np.arange(len(order)), 0))]
        left, right = group_first[~is_first], order[~is_first]
        if restrict is not None:
            # A group with a new member links all of it: anchor new members to the group's first.
            touched = np.unique(codes[restrict & (codes >= 0)])
            keep = np.isin(codes[right], touched)
            left, right = left[keep], right[keep]
        if len(left) == 0:
            continue
        strength = np.full(len(left), 2.0 + (100 - ident.priority) / 100)
        rule = np.full(len(left), f"rule:{ident.kind}", dtype=object)
        parts.append(
            Edges(left, right, strength, rule, np.full((len(left), len(FEATURES)), -1, dtype=np.int8))
        )
    return Edges.concat(parts, len(FEATURES))


def node_constraints(std: pd.DataFrame, rules: IdentityRules, n: int | None = None) -> ConstrainedUnionFind:
    """A union-find with each record's cannot-link facts and limited values loaded."""
    uf = ConstrainedUnionFind(n if n is not None else len(std), limits=rules.per_customer_limits)

    def present(values: pd.Series) -> list[tuple[int, Any]]:
        # Plain arrays: a per-row .iat costs more than the union-find work on a million records.
        array = values.to_numpy(dtype=object)
        return [(i, array[i]) for i in np.flatnonzero(values.notna().to_numpy()).tolist()]

    for i, value in present(strong_values(std, "id_number")):
        uf.add_exclusive(i, "id_number", value)
    # One person, one sex: 李先生 on a parcel is not the 李女士 of the same household.
    for i, value in present(std["gender"]):
        uf.add_exclusive(i, "gender", value)
    for i, value in present(std["wechat_unionid"]):
        uf.add_exclusive(i, "wechat_unionid", value)
    verified = std["phone"].where(std["phone_verified"].astype(bool), None)
    source = (std["source"] if "source" in std else pd.Series([None] * len(std))).to_numpy(dtype=object)
    for i, value in present(verified):
        # Two verified mobiles from one member system are two accounts, so two people.
        uf.add_exclusive(i, ("verified_phone", source[i]), value)
    for kind, limit in rules.per_customer_limits.items():
        if limit <= 1 or kind not in std:
            continue  # limit 1 is an exclusive fact, loaded above
        for i, value in present(std[kind]):
            uf.add_limited(i, kind, value)
    add_name_facts(uf, std)
    return uf


def add_name_facts(uf: ConstrainedUnionFind, std: pd.DataFrame) -> None:
    """Each record's full name and the Chinese surname readings it admits (see
    `ConstrainedUnionFind.add_name`)."""
    pinyin = std["name_pinyin"].astype(object)
    present = pinyin.notna().to_numpy()
    if not present.any():
        return
    hanzi = std["name"].map(lambda v: isinstance(v, str) and any("\u3400" <= c <= "\u9fff" for c in v))
    # Once per distinct (name key, written in characters): names repeat across a person's records.
    in_chars_all = hanzi[present].to_numpy(dtype=bool)
    keys = pinyin[present].to_numpy(dtype=object)
    codes, uniques = pd.factorize(np.where(in_chars_all, keys + "\x01", keys))
    names = pd.Series([u.rstrip("\x01") for u in uniques], dtype=object)
    family, given = name_parts(names)
    full = full_name_key(names)
    readings = chinese_surname_readings()
    facts = []
    chars = [u.endswith("\x01") for u in uniques]
    for in_chars, fam, giv, key in zip(chars, family, given, full, strict=True):
        # Written in characters (or 王女士), the surname is the first part; a pinyin name's order is unsure.
        tokens = (fam,) if in_chars or giv is None else (fam, giv)
        surnames = frozenset(t for t in tokens if t is not None and t in readings)
        facts.append((key, bool(in_chars), surnames))
    for i, code in zip(np.flatnonzero(present).tolist(), codes.tolist(), strict=True):
        key, in_chars, surnames = facts[code]
        if key is not None or surnames:
            uf.add_name(i, key, in_chars, surnames)


# A name held by more customers than this is too common for "one compatible holder" to mean much
# (and checking each holder would cost holders x singletons on a large file).
MAX_NAME_HOLDERS = 20


def attach_by_full_name(
    std: pd.DataFrame,
    uf: ConstrainedUnionFind,
    restrict: np.ndarray | None = None,
    population_holders: np.ndarray | None = None,
    max_population_holders: int = 200,
    rec: PreparedRecords | None = None,
) -> int:
    """Cluster context for a record still alone after linking: when exactly one other cluster
    holding its full name is compatible with it (no other gender, city or birth date, no record of
    the same channel, no mobile it never used), attach it there. A Weibo profile under a real name has nothing else to offer;
    a name two compatible customers share stays unlinked. `restrict` limits it to the marked records
    (the database path: new identities). `population_holders[i]`: identities holding record i's
    name in the whole population; a name held by more than `max_population_holders` (the block
    size the database path loads) is skipped, so both paths see every holder. Returns the number
    attached."""
    names = std["name_pinyin"].astype(object)
    family, given = name_parts(names)
    full = names.where(family.notna() & given.notna(), None)
    if full.notna().sum() < 2:
        return 0
    labels = uf.labels()
    sizes = np.bincount(labels, minlength=len(labels))
    columns = {c: std[c].astype(object).where(std[c].notna(), None).to_numpy() for c in ("gender", "city")}
    columns["birth_date"] = std["birth_date"].astype(str).where(std["birth_date"].notna(), None).to_numpy()
    source = std["source"].astype(object).to_numpy() if "source" in std else np.full(len(std), None)
    phone = std["phone"].astype("string")
    mobile = phone.str.startswith("+86").fillna(False) & (phone.str.len() == 14).fillna(False)
    mask = (phone.str[3:6] + "****" + phone.str[-4:]).where(mobile)  # mask_phone, vectorized
    mask = mask.astype(object).where(mask.notna(), std["phone_masked"]).astype(object)
    mask = mask.where(mask.notna(), None).to_numpy()
    if rec is not None and len(rec.phone_names):
        # A phone that says nothing about who holds it (the shop's own, a household's delivery
        # phone on a parcel) does not make a namesake another person.
        mask[nobodys_phone(rec, np.arange(len(std)))] = None
    members: dict[int, list[int]] = {}
    for node, root in enumerate(labels.tolist()):
        members.setdefault(root, []).append(node)
    attached = 0
    for _, group in full.dropna().groupby(full.dropna(), sort=False):
        holders = group.index.to_numpy()
        if len(holders) < 2:
            continue
        alone = sizes[labels[holders]] == 1
        if restrict is not None:
            alone &= restrict[holders]
        if population_holders is not None:
            alone &= population_holders[holders] <= max_population_holders
        for node in holders[alone].tolist():
            others = {int(labels[h]) for h in holders if h != node}
            if len(others) > MAX_NAME_HOLDERS:
                continue  # a common name (张丽): one compatible holder among many says little
            compatible = []
            for root in others:
                nodes = members[root]
                if source[node] is not None and any(source[m] == source[node] for m in nodes):
                    continue
                # A namesake with other phones: a mobile (or its mask) the customer never used says
                # another person.
                if mask[node] is not None and not any(mask[m] == mask[node] for m in nodes):
                    if any(mask[m] is not None for m in nodes):
                        continue
                if any(
                    values[node] is not None
                    and any(values[m] is not None and values[m] != values[node] for m in nodes)
                    for values in columns.values()
                ):
                    continue
                compatible.append(root)
            if len(compatible) != 1:
                continue
            # The name alone is not enough: something else about the person must agree.
            nodes = members[compatible[0]]
            agrees = any(
                values[node] is not None and any(values[m] == values[node] for m in nodes)
                for values in columns.values()
            )
            if agrees and uf.union(node, compatible[0]):
                attached += 1
    return attached


@dataclass
class Scoring:
    """Scored candidate pairs: links and review pairs (positional), plus counts."""

    links: Edges
    review: Edges
    pairs_compared: int


def fit_model(
    rec: PreparedRecords,
    keys: pd.DataFrame,
    rules: IdentityRules,
    *,
    passes: tuple[BlockingPass, ...] = DEFAULT_PASSES,
    sorted_neighbourhood: bool = True,
    random_pairs: int = 300_000,
    max_em_pairs: int = 2_000_000,
    seed: int = 42,
    prior_strength: float = 300.0,
    progress: Progress | None = None,
) -> FellegiSunterModel:
    """u from random pairs, then m and the prior by EM on (a sample of) the candidate pairs, with
    the reference m as a Dirichlet prior worth `prior_strength` pairs."""
    rng = np.random.default_rng(seed)
    # Start EM from the reference weights: a sparse start (few shared fields) otherwise lets EM drift
    # to the degenerate "every candidate is a match" solution.
    n = rec.n
    model = reference_model(n)
    model.prior = 0.05
    if n < 2:
        return model
    left = rng.integers(0, n, random_pairs)
    right = rng.integers(0, n, random_pairs)
    keep = left != right
    model.estimate_u(compare_pairs(rec, left[keep], right[keep]))
    # Estimate the candidate count cheaply to pick a sampling rate that caps EM's input.
    counts: dict[int, int] = {}
    total = 0
    rate = 1.0
    for lc, rc, _ in candidate_pairs(
        keys,
        passes,
        max_block_size=rules.max_block_size,
        sorted_neighbourhood="name_key" if sorted_neighbourhood else None,
        window=rules.sorted_neighbourhood_window,
    ):
        total += len(lc)
        if total > max_em_pairs:
            rate = min(rate, max_em_pairs / (total * 2))
        if rate < 1.0:
            pick = rng.random(len(lc)) < rate
            lc, rc = lc[pick], rc[pick]
        codes = pattern_codes(compare_pairs(rec, lc, rc))
        uniq, cnt = np.unique(codes, return_counts=True)
        for c, k in zip(uniq.tolist(), cnt.tolist(), strict=True):
            counts[c] = counts.get(c, 0) + k
        if progress:
            progress("fit", len(lc))
    if counts:
        patterns = decode_patterns(np.fromiter(counts.keys(), dtype=np.int64))
        weights = np.fromiter(counts.values(), dtype=np.int64)
        start = [m.copy() for m in model.m]
        observed_u = [u.copy() for u in model.u]
        all_pairs = n * (n - 1) / 2
        for _ in range(3):
            model.prior = 0.05
            model.fit_em(patterns, weights, m_prior=start, prior_strength=prior_strength)
            degenerate = model.prior > 0.95 or _inverted(model)
            if degenerate:
                model.m, model.prior = start, random_pair_prior(n)
            else:
                # EM's prior is among candidate pairs; u is from random pairs, so score on that scale.
                model.prior = min(0.5, model.prior * total / all_pairs)
            # Random pairs of a small, dense file include true matches: take them out of u
            # (u_observed = (1 - prior) u + prior m), else a strong identifier looks common.
            model.u = [
                np.maximum((u - model.prior * m) / (1 - model.prior), 1e-7)
                for u, m in zip(observed_u, model.m, strict=True)
            ]
            model.u = [u / u.sum() for u in model.u]
            if degenerate:
                break
    return model


# Identifiers whose exact agreement can never be evidence against a match.
_SANITY_FEATURES = ("phone", "email", "id_number")


def _inverted(model: FellegiSunterModel) -> bool:
    """EM found a mixture that is not "same person" (e.g. "same name": matches then disagree on
    phone and birth date more often than they agree). Such a fit is discarded for the reference m."""
    index = {f.name: j for j, f in enumerate(model.features)}
    return any(model.m[index[name]][-1] < model.m[index[name]][0] for name in _SANITY_FEATURES)


def score_candidates(
    rec: PreparedRecords,
    keys: pd.DataFrame,
    model: FellegiSunterModel,
    rules: IdentityRules,
    *,
    passes: tuple[BlockingPass, ...] = DEFAULT_PASSES,
    sorted_neighbourhood: bool = True,
    restrict: np.ndarray | None = None,
    term_frequency: bool = True,
    progress: Progress | None = None,
) -> Scoring:
    """Compare and score every candidate pair chunk by chunk; keep only links and review pairs."""
    u_exact = model.u_exact()

    links: list[Edges] = []
    review: list[Edges] = []
    compared = 0
    for lc, rc, _ in candidate_pairs(
        keys,
        passes,
        max_block_size=rules.max_block_size,
        sorted_neighbourhood="name_key" if sorted_neighbourhood else None,
        window=rules.sorted_neighbourhood_window,
        restrict=restrict,
    ):
        levels = compare_pairs(rec, lc, rc)
        p = model.probability(levels, tf_adjustment(rec, lc, levels, u_exact, rc) if term_frequency else None)
        compared += len(lc)
        for bucket, mask in (
            (links, p >= rules.link_threshold),
            (review, (p >= rules.review_threshold) & (p < rules.link_threshold)),
        ):
            if mask.any():
                bucket.append(
                    Edges(
                        lc[mask],
                        rc[mask],
                        p[mask],
                        np.full(int(mask.sum()), "fellegi_sunter", dtype=object),
                        levels[mask],
                    )
                )
        if progress:
            progress("compare", len(lc))
    return Scoring(Edges.concat(links, len(FEATURES)), Edges.concat(review, len(FEATURES)), compared)


def fit_supervised_on(
    std: pd.DataFrame, rec: PreparedRecords, labelled_pairs: pd.DataFrame, base: FellegiSunterModel
) -> FellegiSunterModel:
    """A supervised model (logistic regression over agreement levels) from labelled record pairs."""
    position = pd.Series(np.arange(len(std)), index=std["record_id"].astype(str))
    left = position.reindex(labelled_pairs["left_record_id"].astype(str)).to_numpy()
    right = position.reindex(labelled_pairs["right_record_id"].astype(str)).to_numpy()
    known = ~(np.isnan(left) | np.isnan(right))
    if not known.any():
        raise ValueError("labelled_pairs: no pair refers to two record_ids of this file")
    labels = labelled_pairs["is_match"].astype(str).str.lower().isin(["1", "true", "yes", "y"]).to_numpy()
    if labels[known].all() or not labels[known].any():
        raise ValueError("labelled_pairs: need both matches and non-matches (is_match 1 and 0)")
    levels = compare_pairs(rec, left[known].astype(np.int64), right[known].astype(np.int64))
    model = FellegiSunterModel(m=base.m, u=base.u, prior=base.prior)
    return model.fit_supervised(levels, labels[known])


def resolve_frame(
    df: pd.DataFrame,
    rules: IdentityRules = DEFAULT_RULES,
    *,
    model: FellegiSunterModel | None = None,
    previous: Mapping[Any, int] | None = None,
    labelled_pairs: pd.DataFrame | None = None,
    sorted_neighbourhood: bool = True,
    standardized: bool = False,
    name_context: bool = True,
    progress: Progress | None = None,
) -> ResolveResult:
    """Resolve person records into customers.

    `df` has the contract columns (or `STANDARD_COLUMNS` when `standardized=True`). `model` fixes the
    match weights; without it a model is fitted on the data (EM). `previous` maps record_id ->
    customer_id of an earlier run: ids survive, merges keep the oldest (smallest) id, and a split
    cluster keeps the id on the side holding the earliest record (input order is age). New clusters
    are numbered after the largest previous id, in input order, so a re-run gives the same ids.
    `labelled_pairs` (left_record_id, right_record_id, is_match) switches scoring to a supervised
    model trained on those pairs of this file. `name_context` attaches records left alone by
    linking to the one compatible cluster holding their full name (`attach_by_full_name`).
    """
    seconds: dict[str, float] = {}
    t0 = time.perf_counter()
    std = df[list(STANDARD_COLUMNS)].reset_index(drop=True) if standardized else standardize_frame(df)
    if progress:
        progress("standardize", len(std))
    if std.empty:  # nothing to resolve: an empty OUT, not an error
        empty = np.zeros(0, dtype=np.int64)
        return ResolveResult(
            record_ids=std["record_id"].to_numpy(), customer_ids=empty, model=model or FellegiSunterModel()
        )
    std = mask_blocked(std, rules)
    keys = blocking_keys(std)
    rec = PreparedRecords.from_frame(std)
    seconds["standardize"] = time.perf_counter() - t0

    t1 = time.perf_counter()
    if model is None:
        model = fit_model(rec, keys, rules, sorted_neighbourhood=sorted_neighbourhood, progress=progress)
    if labelled_pairs is not None and len(labelled_pairs):
        model = fit_supervised_on(std, rec, labelled_pairs, model)
    seconds["fit"] = time.perf_counter() - t1

    t2 = time.perf_counter()
    det = deterministic_edges(std, rules)
    scoring = score_candidates(
        rec, keys, model, rules, sorted_neighbourhood=sorted_neighbourhood, progress=progress
    )
    seconds["compare"] = time.perf_counter() - t2

    t3 = time.perf_counter()
    uf = node_constraints(std, rules)
    edges = Edges.concat([det, scoring.links], det.levels.shape[1])
    _, held = apply_links(uf, edges.left, edges.right, edges.strength, trusted=edges.deterministic)
    review_edges = Edges.concat([scoring.review, edges.subset(held)], len(FEATURES))
    if name_context:
        attach_by_full_name(
            std,
            uf,
            population_holders=rec.full_name_holders,
            max_population_holders=rules.max_block_size,
            rec=rec,
        )
    labels = uf.labels()
    record_ids = std["record_id"].to_numpy()
    prev = [previous.get(r) for r in record_ids] if previous else [None] * len(record_ids)
    next_id = max((p for p in prev if p is not None), default=0) + 1
    customer_ids, _ = stable_cluster_ids(labels, prev, np.arange(len(labels)), next_id)
    if progress:
        progress("cluster", len(std))
    seconds["cluster"] = time.perf_counter() - t3

    review = pd.DataFrame(
        {
            "left_record_id": record_ids[review_edges.left],
            "right_record_id": record_ids[review_edges.right],
            "score": review_edges.strength,
        }
    )
    return ResolveResult(
        record_ids=record_ids,
        customer_ids=customer_ids,
        model=model,
        pairs_compared=scoring.pairs_compared,
        links=len(edges.left),
        deterministic_links=len(det.left),
        review_pairs=len(review),
        refused_links=uf.refused,
        review=review,
        seconds=seconds,
    )
