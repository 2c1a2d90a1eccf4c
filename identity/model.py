"""Fellegi-Sunter matching over agreement levels, fitted unsupervised with EM.

u (how often non-matches agree at each level) is estimated from random record pairs, which are
almost all non-matches; m (how often matches agree) and the match prior are then fitted by EM on the
candidate pairs, with u held fixed (the Splink recipe: it keeps EM identified and fast). EM runs over
distinct agreement patterns with their counts, so millions of pairs cost a few thousand rows.

A supervised model (logistic regression on the same levels) can replace the weights when labelled
pairs exist: `fit_supervised`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from identity.compare import FEATURES, Feature

_FLOOR = 1e-6


def _default_m(feature: Feature) -> np.ndarray:
    # Matches mostly agree exactly; the rest spreads over the fuzzy levels.
    k = feature.n_levels
    m = np.full(k, 0.1 / max(k - 1, 1))
    m[-1] = 0.9
    return m


def _default_u(feature: Feature) -> np.ndarray:
    k = feature.n_levels
    u = np.full(k, 0.01 / max(k - 1, 1))
    u[0] = 0.99
    return u


@dataclass
class FellegiSunterModel:
    """m and u per feature level, and the prior probability that a candidate pair is a match."""

    features: tuple[Feature, ...] = FEATURES
    m: list[np.ndarray] = field(default_factory=lambda: [_default_m(f) for f in FEATURES])
    u: list[np.ndarray] = field(default_factory=lambda: [_default_u(f) for f in FEATURES])
    prior: float = 0.01
    iterations: int = 0
    supervised: Any = None  # an sklearn classifier when fitted on labels

    def _log_ratio_tables(self) -> list[np.ndarray]:
        # Index level + 1 so level -1 (missing) maps to slot 0, weight 0.
        tables = []
        for m, u in zip(self.m, self.u, strict=True):
            lr = np.log2(np.maximum(m, _FLOOR) / np.maximum(u, _FLOOR))
            tables.append(np.r_[0.0, lr])
        return tables

    def match_weight(self, levels: np.ndarray) -> np.ndarray:
        """log2 Bayes factor of each pair plus the prior odds."""
        tables = self._log_ratio_tables()
        total = np.full(len(levels), np.log2(self.prior / (1 - self.prior)))
        for j, table in enumerate(tables):
            total += table[levels[:, j].astype(np.int64) + 1]
        return total

    def probability(self, levels: np.ndarray, adjustment: np.ndarray | None = None) -> np.ndarray:
        """Match probability of each pair (rows of agreement levels); `adjustment` adds bits per
        pair (term-frequency adjustments of the exact levels)."""
        if self.supervised is not None:
            return np.asarray(self.supervised.predict_proba(_one_hot(levels, self.features))[:, 1])
        weight = self.match_weight(levels)
        if adjustment is not None:
            weight = weight + adjustment
        return 1.0 / (1.0 + np.exp2(-weight))

    def u_exact(self) -> dict[str, float]:
        """u of each feature's exact (top) level, and of the phone's masked agreement
        (`phone_masked`), which is term-frequency adjusted too."""
        out = {f.name: float(u[-1]) for f, u in zip(self.features, self.u, strict=True)}
        for f, u in zip(self.features, self.u, strict=True):
            if f.name == "phone":
                out["phone_masked"] = float(u[f.levels.index("mask_compatible")])
        return out

    def estimate_u(self, random_levels: np.ndarray) -> FellegiSunterModel:
        """u from levels of random pairs (nearly all non-matches)."""
        for j, feature in enumerate(self.features):
            column = random_levels[:, j]
            observed = column[column >= 0]
            if len(observed) < 100:
                continue
            counts = np.bincount(observed, minlength=feature.n_levels).astype(float) + 0.5
            self.u[j] = counts / counts.sum()
        return self

    def fit_em(
        self,
        patterns: np.ndarray,
        counts: np.ndarray,
        max_iter: int = 100,
        tol: float = 1e-6,
        m_prior: list[np.ndarray] | None = None,
        prior_strength: float = 0.0,
    ) -> FellegiSunterModel:
        """EM for m and the prior on distinct level patterns with their counts; u stays fixed.

        With `m_prior`, m is a MAP estimate under a Dirichlet prior worth `prior_strength` pairs:
        features the data says little about (sparse marketplace records) stay near the prior, those
        with plenty of evidence (FEBRL's names and dates) follow the data."""
        counts = counts.astype(float)
        total = counts.sum()
        onehots = [
            [(patterns[:, j] == level) for level in range(f.n_levels)] for j, f in enumerate(self.features)
        ]
        for it in range(max_iter):
            p = self.probability_em(patterns)
            weighted = p * counts
            prior = float(weighted.sum() / total)
            new_m = []
            for j, feature in enumerate(self.features):
                present = patterns[:, j] >= 0
                denom = weighted[present].sum()
                m = np.array([weighted[onehots[j][lv]].sum() for lv in range(feature.n_levels)])
                if m_prior is not None and prior_strength > 0:
                    m, denom = m + prior_strength * m_prior[j], denom + prior_strength
                new_m.append(m / denom if denom > 0 else self.m[j])
            delta = max(float(np.abs(a - b).max()) for a, b in zip(new_m, self.m, strict=True))
            self.m, self.prior = [np.maximum(m, _FLOOR) for m in new_m], min(max(prior, 1e-9), 1 - 1e-9)
            self.iterations = it + 1
            if delta < tol:
                break
        return self

    def probability_em(self, patterns: np.ndarray) -> np.ndarray:
        return 1.0 / (1.0 + np.exp2(-self.match_weight(patterns)))

    def fit_supervised(self, levels: np.ndarray, labels: np.ndarray) -> FellegiSunterModel:
        """Replace the unsupervised weights by a logistic regression fitted on labelled pairs."""
        from sklearn.linear_model import LogisticRegression

        model = LogisticRegression(max_iter=1000)
        model.fit(_one_hot(levels, self.features), labels.astype(int))
        self.supervised = model
        return self

    def to_dict(self) -> dict[str, Any]:
        """JSON-serializable parameters (evidence and persistence)."""
        return {
            "prior": self.prior,
            "iterations": self.iterations,
            "m": {
                f.name: [round(float(x), 6) for x in m] for f, m in zip(self.features, self.m, strict=True)
            },
            "u": {
                f.name: [round(float(x), 6) for x in u] for f, u in zip(self.features, self.u, strict=True)
            },
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FellegiSunterModel:
        model = cls()
        model.prior = float(data["prior"])
        model.m = [np.asarray(data["m"][f.name], dtype=float) for f in model.features]
        model.u = [np.asarray(data["u"][f.name], dtype=float) for f in model.features]
        return model


def _one_hot(levels: np.ndarray, features: tuple[Feature, ...]) -> np.ndarray:
    blocks = []
    for j, f in enumerate(features):
        blocks.append(np.stack([levels[:, j] == lv for lv in range(f.n_levels)], axis=1))
    return np.concatenate(blocks, axis=1).astype(np.float32)


def pattern_codes(levels: np.ndarray, features: tuple[Feature, ...] = FEATURES) -> np.ndarray:
    """One int64 per pair encoding its whole agreement pattern (for counting distinct patterns)."""
    code = np.zeros(len(levels), dtype=np.int64)
    for j, f in enumerate(features):
        code = code * (f.n_levels + 1) + (levels[:, j].astype(np.int64) + 1)
    return code


def decode_patterns(codes: np.ndarray, features: tuple[Feature, ...] = FEATURES) -> np.ndarray:
    out = np.empty((len(codes), len(features)), dtype=np.int8)
    rest = codes.copy()
    for j in range(len(features) - 1, -1, -1):
        base = features[j].n_levels + 1
        out[:, j] = rest % base - 1
        rest //= base
    return out


# Hand-set weights for the database path when no fitted model is supplied. Conservative on names
# (Chinese given names repeat a lot, so a full name plus a city is review material, not a link).
_REFERENCE: dict[str, tuple[list[float], list[float]]] = {
    "family_name": ([0.03, 0.02, 0.05, 0.90], [0.90, 0.03, 0.02, 0.05]),
    "given_name": ([0.05, 0.03, 0.07, 0.85], [0.95, 0.02, 0.01, 0.02]),
    "name_hanzi": ([0.1, 0.9], [0.5, 0.5]),
    "birth_date": ([0.05, 0.02, 0.03, 0.90], [0.97, 0.025, 0.004, 0.0001]),
    "gender": ([0.03, 0.97], [0.5, 0.5]),
    "id_number": ([0.05, 0.05, 0.90], [0.99999, 1e-5, 1e-9]),
    "phone": ([0.10, 0.03, 0.27, 0.60], [0.99999, 1e-6, 3e-6, 1e-8]),
    # Chinese mailboxes are a name's pinyin and digits: namesakes' addresses look alike.
    "email": ([0.30, 0.05, 0.65], [0.999, 1e-3, 1e-8]),
    "address": ([0.30, 0.10, 0.15, 0.45], [0.99, 0.009, 0.0009, 0.0001]),
    "street_number": ([0.2, 0.8], [0.98, 0.02]),
    "city": ([0.15, 0.02, 0.83], [0.95, 0.005, 0.045]),
    "district": ([0.2, 0.8], [0.9, 0.1]),
    "postcode": ([0.15, 0.05, 0.80], [0.98, 0.01, 0.01]),
    "province": ([0.1, 0.9], [0.85, 0.15]),
}


def random_pair_prior(population: int, duplicates_per_record: float = 1.0) -> float:
    """Probability that two random records match: each record has about `duplicates_per_record`
    matches among `population` records. Weights are on the random-pair scale (u comes from random
    pairs), so the prior must be too; it shrinks as the population grows, which is what makes a
    weak agreement (a masked mobile alone) enough among 4,000 records and not among 1,000,000."""
    return min(0.5, duplicates_per_record / max(population - 1, 1))


def reference_model(population: int = 10_000) -> FellegiSunterModel:
    """A fixed model for incremental linking: the same weights on every run, so results do not
    depend on which identities happen to arrive together. `population`: identities in the base."""
    model = FellegiSunterModel()
    model.m = [np.asarray(_REFERENCE[f.name][0]) for f in model.features]
    model.u = [np.asarray(_REFERENCE[f.name][1]) for f in model.features]
    model.prior = random_pair_prior(population)
    return model
