"""Quality on FEBRL (targets of issue 3) and on the channel simulator's Chinese omnichannel truth."""

from __future__ import annotations

import pytest

from identity.engine import resolve_frame
from identity.evaluate import febrl4_dataset, febrl_dedup_dataset, pairwise_scores
from identity.model import reference_model


@pytest.mark.parametrize(("number", "target"), [(1, 0.9995), (2, 0.999), (3, 0.9995)])
def test_febrl_dedup_f1(number: int, target: float) -> None:
    # Measured F1 1.0000, 0.9992, 0.9997 (Splink 5.0: 1.000 on FEBRL1, 0.9999 on FEBRL3); the
    # birth-date passes find the pairs whose name parts both carry a typo.
    frame, truth = febrl_dedup_dataset(number)
    scores = pairwise_scores(resolve_frame(frame).customer_ids, truth)
    assert scores.precision >= 0.999 and scores.f1 >= target, scores


def test_febrl4_link_f1() -> None:
    frame, truth = febrl4_dataset()
    scores = pairwise_scores(resolve_frame(frame).customer_ids, truth)
    assert scores.f1 >= 0.999, scores  # measured 0.9998


def test_simulator_ground_truth() -> None:
    from sync.simulator.dataset import identity_frame

    frame = identity_frame(seed=42, people=2000)
    truth = frame["true_person_id"].to_numpy()
    result = resolve_frame(frame.drop(columns=["true_person_id"]), model=reference_model(len(frame)))
    scores = pairwise_scores(result.customer_ids, truth)
    # Measured P 0.997 R 0.965 F1 0.981 (seeds 7 and 123: 0.980, 0.983). What is left carries no
    # shared evidence: Weibo nicknames with a city, marketplace receivers on a second mobile.
    assert scores.precision >= 0.99, scores
    assert scores.f1 >= 0.98, scores
