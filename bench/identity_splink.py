"""Splink as the peer on the noisy Chinese omnichannel records (issue 16): prints JSON.

This project's `resolve_frame` (fitted and fixed weights) and Splink 5 (DuckDB backend) on
`noisy_omnichannel_people`, side by side: pairwise precision, recall, F1 and seconds per seed.
Splink gets this project's standardized columns (E.164 phones, the masked mobile's key, ISO dates,
pinyin surname and given name, simplified addresses), the configuration a competent user would write:
name, date and e-mail comparisons, term-frequency adjustments on names, phones, city and address,
u by random sampling, EM on two blocking passes, clusters at 0.95.

Splink is not a project dependency: it runs in its own virtual environment, given as --splink-python.

    python -m venv /tmp/splink && /tmp/splink/bin/pip install splink==5.0.0 pandas
    python bench/identity_splink.py --splink-python /tmp/splink/bin/python --people 2000 --seeds 1 2 3
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SPLINK_PROGRAM = r"""
import json, sys, time
import pandas as pd
import splink.comparison_library as cl
from splink import DuckDBAPI, Linker, SettingsCreator, block_on

df = pd.read_csv(sys.argv[1], dtype=str).rename(columns={"record_id": "unique_id"})
t = time.perf_counter()
settings = SettingsCreator(
    link_type="dedupe_only",
    comparisons=[
        cl.NameComparison("family").configure(term_frequency_adjustments=True),
        cl.NameComparison("given").configure(term_frequency_adjustments=True),
        cl.DateOfBirthComparison("birth_date", input_is_string=True),
        cl.ExactMatch("phone").configure(term_frequency_adjustments=True),
        cl.ExactMatch("mask_key").configure(term_frequency_adjustments=True),
        cl.EmailComparison("email"),
        cl.ExactMatch("gender"),
        cl.ExactMatch("city").configure(term_frequency_adjustments=True),
        cl.LevenshteinAtThresholds("address_detail", [2, 5]).configure(term_frequency_adjustments=True),
        cl.ExactMatch("unionid"),
        cl.ExactMatch("member_no"),
    ],
    blocking_rules_to_generate_predictions=[
        block_on("phone"), block_on("mask_key"), block_on("unionid"), block_on("member_no"),
        block_on("email"), block_on("family", "given"), block_on("family", "birth_date"),
        block_on("address_detail"),
    ],
)
linker = Linker(DuckDBAPI().register(df), settings, log_level=40)
linker.training.estimate_probability_two_random_records_match(
    [block_on("phone"), block_on("family", "given", "city")], recall=0.8
)
linker.training.estimate_u_using_random_sampling(max_pairs=2e6)
linker.training.estimate_parameters_using_expectation_maximisation(block_on("phone"))
linker.training.estimate_parameters_using_expectation_maximisation(block_on("family", "given"))
predictions = linker.inference.predict(threshold_match_probability=0.5)
clusters = linker.clustering.cluster_pairwise_predictions_at_threshold(predictions, 0.95).as_pandas_dataframe()
out = df[["unique_id"]].merge(clusters[["unique_id", "cluster_id"]], on="unique_id", how="left")
out.to_csv(sys.argv[2], index=False)
print(json.dumps({"seconds": time.perf_counter() - t}))
"""


def splink_columns(records: Any) -> Any:
    """The standardized columns Splink compares (what a competent user would prepare)."""
    from identity.blocking import name_parts
    from identity.standardize import standardize_frame

    std = standardize_frame(records)
    family, given = name_parts(std["name_pinyin"])
    phone = std["phone"].astype("string")
    mask = (phone.str[3:6] + phone.str[-4:]).where(phone.str.startswith("+86").fillna(False))
    masked = std["phone_masked"].astype("string")
    mask = mask.where(mask.notna(), masked.str[:3] + masked.str[-4:])
    return std[["record_id", "phone", "email", "gender", "city", "address_detail", "member_no"]].assign(
        family=family,
        given=given,
        birth_date=std["birth_date"].astype(str).where(std["birth_date"].notna(), None),
        mask_key=mask,
        unionid=std["wechat_unionid"],
    )


def run(people: int, seed: int, splink_python: str | None) -> list[dict[str, Any]]:
    import pandas as pd

    from identity.engine import resolve_frame
    from identity.evaluate import pairwise_scores
    from identity.model import reference_model
    from identity.synthetic import noisy_omnichannel_people

    records, truth = noisy_omnichannel_people(people, seed=seed)
    rows = []
    for tool, model in (("c360 fitted", None), ("c360 fixed weights", reference_model(len(records)))):
        t = time.perf_counter()
        scores = pairwise_scores(resolve_frame(records, model=model).customer_ids, truth)
        rows.append({"tool": tool, "seconds": round(time.perf_counter() - t, 2), **_figures(scores)})
    if splink_python:
        with tempfile.TemporaryDirectory() as tmp:
            given, clusters = Path(tmp) / "records.csv", Path(tmp) / "clusters.csv"
            splink_columns(records).to_csv(given, index=False)
            out = subprocess.run(
                [splink_python, "-c", SPLINK_PROGRAM, str(given), str(clusters)],
                capture_output=True,
                text=True,
                check=True,
            )
            seconds = json.loads(out.stdout.strip().splitlines()[-1])["seconds"]
            labels = pd.read_csv(clusters, dtype=str)["cluster_id"].to_numpy()
        rows.append(
            {
                "tool": "splink 5 (duckdb)",
                "seconds": round(seconds, 2),
                **_figures(pairwise_scores(labels, truth)),
            }
        )
    return [
        {
            "benchmark": "noisy_omnichannel_people",
            "people": people,
            "records": len(records),
            "seed": seed,
            **r,
        }
        for r in rows
    ]


def _figures(scores: Any) -> dict[str, float]:
    return {k: round(getattr(scores, k), 4) for k in ("precision", "recall", "f1")}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--people", type=int, default=2000)
    parser.add_argument("--seeds", type=int, nargs="*", default=[1, 2, 3])
    parser.add_argument("--splink-python", default=None, help="python of a venv with splink 5 installed")
    args = parser.parse_args()
    for seed in args.seeds:
        for row in run(args.people, seed, args.splink_python):
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
