"""Where identity resolution goes wrong on the noisy Chinese omnichannel simulator: prints JSON.

Per seed and model (fitted: what `c360 identity resolve` runs; fixed: the reference weights of
the database path), pairwise precision, recall and F1, and the errors broken down:

- false links, in record pairs, by what the wrongly joined record carries: `no_full_name` (a
  surname with an honorific or no name at all, joined through a household's phone or address),
  `same_full_name` (a namesake), `other`;
- missed links, in record pairs, by the best evidence between the two parts of one person:
  `no_evidence` (nothing beyond a surname, a city or a sex agrees: the match probability of the
  best pair is under 0.05), `weak` (under the review threshold), `review` (between the review and
  link thresholds), `contested` (above the link threshold, but the record went to, or was held
  between, another person of the household, or a per-customer fact refused the join);
- `held_for_review`: links held back because a record without a full name reached two people.

    python bench/identity_errors.py --people 2000 --seeds 1 2 3
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def _kind(name: object) -> str:
    if not isinstance(name, str):
        return "no_full_name"
    return "no_full_name" if re.search(r"(女士|先生|小姐)$", name) else "full_name"


def breakdown(people: int, seed: int, fitted: bool) -> dict[str, Any]:
    from identity.blocking import blocking_keys
    from identity.compare import PreparedRecords, compare_pairs, tf_adjustment
    from identity.engine import (
        Edges,
        apply_links,
        attach_by_full_name,
        deterministic_edges,
        fit_model,
        mask_blocked,
        node_constraints,
        score_candidates,
    )
    from identity.evaluate import pairwise_scores
    from identity.model import reference_model
    from identity.rules import DEFAULT_RULES as rules
    from identity.standardize import standardize_frame
    from identity.synthetic import noisy_omnichannel_people

    records, truth = noisy_omnichannel_people(people, seed=seed)
    # The steps of `resolve_frame`, kept apart to see which links were held.
    std = mask_blocked(standardize_frame(records), rules)
    keys = blocking_keys(std)
    rec = PreparedRecords.from_frame(std)
    model = fit_model(rec, keys, rules) if fitted else reference_model(len(std))
    scoring = score_candidates(rec, keys, model, rules)
    uf = node_constraints(std, rules)
    edges = Edges.concat([deterministic_edges(std, rules), scoring.links], scoring.links.levels.shape[1])
    _, held = apply_links(uf, edges.left, edges.right, edges.strength, trusted=edges.deterministic)
    attach_by_full_name(
        std,
        uf,
        population_holders=rec.full_name_holders,
        max_population_holders=rules.max_block_size,
        rec=rec,
    )
    labels = uf.labels()
    scores = pairwise_scores(labels, truth)
    names = records["name"].map(_kind).to_numpy()
    pinyin = std["name_pinyin"].to_numpy()

    false_links: Counter[str] = Counter()
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        people_in = Counter(truth[members].tolist())
        if len(people_in) < 2:
            continue
        main = people_in.most_common(1)[0][0]
        for node in members[truth[members] != main]:
            wrong = int((truth[members] != truth[node]).sum())
            if names[node] == "no_full_name":
                kind = "no_full_name"
            elif any(pinyin[m] == pinyin[node] for m in members if truth[m] == main):
                kind = "same_full_name"
            else:
                kind = "other"
            false_links[kind] += wrong
    # Each wrong pair was counted from both of its sides' minority records at most once per side.
    missed: Counter[str] = Counter()
    u_exact = model.u_exact()
    for person in np.unique(truth):
        members = np.flatnonzero(truth == person)
        parts: dict[int, list[int]] = {}
        for node in members:
            parts.setdefault(int(labels[node]), []).append(int(node))
        if len(parts) < 2:
            continue
        ordered = sorted(parts.values(), key=len, reverse=True)
        main_part = ordered[0]
        for part in ordered[1:]:
            left = np.array([a for a in main_part for _ in part])
            right = np.array([b for _ in main_part for b in part])
            lo, hi = np.minimum(left, right), np.maximum(left, right)
            levels = compare_pairs(rec, lo, hi)
            best = float(model.probability(levels, tf_adjustment(rec, lo, levels, u_exact, hi)).max())
            if best >= rules.link_threshold:
                kind = "contested"
            elif best >= rules.review_threshold:
                kind = "review"
            elif best >= 0.05:
                kind = "weak"
            else:
                kind = "no_evidence"
            missed[kind] += len(main_part) * len(part)
    return {
        "seed": seed,
        "model": "fitted" if fitted else "fixed",
        "records": len(records),
        "precision": round(scores.precision, 4),
        "recall": round(scores.recall, 4),
        "f1": round(scores.f1, 4),
        "true_pairs": scores.true_pairs,
        "false_link_pairs": scores.predicted_pairs - scores.correct_pairs,
        "missed_pairs": scores.true_pairs - scores.correct_pairs,
        "false_links_by_record": dict(false_links),
        "missed_by_best_evidence": dict(missed),
        "held_for_review": int(held.sum()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--people", type=int, default=2000)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    args = parser.parse_args()
    out = [breakdown(args.people, seed, fitted) for seed in args.seeds for fitted in (True, False)]
    print(json.dumps(out, indent=1, ensure_ascii=False))


if __name__ == "__main__":
    main()
