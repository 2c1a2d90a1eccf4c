"""Identity resolution benchmark: prints JSON.

- full: resolve N synthetic Chinese omnichannel identities (standardize, fit EM, block, compare,
  cluster): seconds per stage, peak RSS, candidate pairs compared, pairwise quality on the truth.
- incremental: with `--incremental K --base N` and a database URL, land N identities already
  resolved (COPY-style bulk insert), then land K new ones and time `link_source_identities`.

Each size runs in its own process so peak RSS is that size's own.

    python bench/identity.py --sizes 100000 1000000
    python bench/identity.py --sizes 100000 --data noisy
    python bench/identity.py --sizes 0 --incremental 10000 --base 1000000 --database-url postgresql://postgres@127.0.0.1:5432/test
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def records_for(size: int, seed: int, data: str = "synthetic") -> Any:
    from identity.synthetic import noisy_omnichannel_people, synthetic_people

    if data == "noisy":  # issue 16's noise: unverified and masked phones, pinyin, households...
        frame, truth = noisy_omnichannel_people(int(size / 2.0) + 10, seed=seed)
        frame = frame.assign(true_person_id=truth)
    else:
        frame = synthetic_people(int(size / 1.7) + 10, seed=seed)  # a little more, then cut to size
    return frame.iloc[:size].reset_index(drop=True)


def run_full(size: int, seed: int, data: str = "synthetic") -> dict[str, Any]:
    from identity.engine import resolve_frame
    from identity.evaluate import pairwise_scores

    t = time.perf_counter()
    records = records_for(size, seed, data)
    generated = time.perf_counter() - t
    t = time.perf_counter()
    result = resolve_frame(records.drop(columns=["true_person_id"]))
    total = time.perf_counter() - t
    scores = pairwise_scores(result.customer_ids, records["true_person_id"].to_numpy())
    return {
        "benchmark": "full_resolution",
        "data": data,
        "identities": len(records),
        "seconds_total": round(total, 2),
        "seconds_by_stage": {k: round(v, 2) for k, v in result.seconds.items()},
        "pairs_compared": result.pairs_compared,
        "links": result.links,
        "review_pairs": result.review_pairs,
        "customers": int(len(set(result.customer_ids.tolist()))),
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "generate_seconds": round(generated, 2),
        "pairwise": {k: round(v, 4) if isinstance(v, float) else v for k, v in scores.as_dict().items()},
    }


async def run_incremental(
    base: int, new: int, database_url: str, seed: int, keep: bool = False
) -> dict[str, Any]:
    import asyncpg

    from identity.engine import resolve_frame
    from identity.linking import link_source_identities
    from identity.model import reference_model
    from identity.standardize import STANDARDIZED_ATTRIBUTES, standardize_frame
    from infra.db import make_engine
    from infra.migrate import upgrade
    from infra.settings import to_async_url
    from tests.conftest import _dsn, create_database, drop_database

    url = await create_database(to_async_url(database_url), "c360_bench")
    try:
        await asyncio.to_thread(upgrade, url, "heads")
        # Shuffled, so new identities are a random sample: many belong to people already in the base.
        records = records_for(base + new, seed).sample(frac=1.0, random_state=seed).reset_index(drop=True)
        std = standardize_frame(records)
        old, fresh = std.iloc[:base].reset_index(drop=True), std.iloc[base:].reset_index(drop=True)
        t = time.perf_counter()
        resolved = resolve_frame(old, model=reference_model(), standardized=True, sorted_neighbourhood=False)
        base_seconds = time.perf_counter() - t
        conn = await asyncpg.connect(_dsn(url))
        try:
            await conn.executemany(
                "insert into channel (code, family, name, trust_rank) values ($1, $2, $1, $3)",
                [
                    ("tmall", "marketplace", 50),
                    ("jd", "marketplace", 50),
                    ("app", "own", 10),
                    ("pos", "pos", 30),
                    ("wechat", "social", 40),
                ],
            )
            n_customers = int(resolved.customer_ids.max())
            await conn.execute(
                "insert into golden_customer (id, status) overriding system value select g, 'active' from generate_series(1, $1) g",
                n_customers,
            )
            await conn.execute(
                "select setval(pg_get_serial_sequence('golden_customer', 'id'), $1)", n_customers
            )
            columns = [
                "channel_code",
                "external_id",
                *STANDARDIZED_ATTRIBUTES,
                "customer_id",
            ]

            def rows(frame: Any, customers: Any) -> list[tuple[Any, ...]]:
                f = frame.astype(object).where(frame.notna(), None)
                out = []
                for i, r in enumerate(f.itertuples(index=False)):
                    d = r._asdict()
                    out.append(
                        (
                            d["source"],
                            str(d["record_id"]),
                            *(d[c] for c in columns[2:7]),
                            bool(d["phone_verified"]),
                            *(d[c] for c in columns[8:20]),
                            None if customers is None else int(customers[i]),
                        )
                    )
                return out

            t = time.perf_counter()
            await conn.copy_records_to_table(
                "source_identity", records=rows(old, resolved.customer_ids), columns=columns
            )
            await conn.execute("analyze source_identity")
            load_seconds = time.perf_counter() - t
            await conn.copy_records_to_table("source_identity", records=rows(fresh, None), columns=columns)
            new_ids = [
                int(r[0])
                for r in await conn.fetch(
                    "select id from source_identity where customer_id is null order by id"
                )
            ]
        finally:
            await conn.close()
        engine = make_engine(url, 2)
        try:
            t = time.perf_counter()
            report = await link_source_identities(engine, new_ids, actor="bench")
            link_seconds = time.perf_counter() - t
        finally:
            await engine.dispose()
        return {
            "benchmark": "incremental_linking",
            "existing_identities": base,
            "new_identities": len(new_ids),
            "seconds": round(link_seconds, 2),
            "linked": report.linked,
            "created": report.created,
            "merged": report.merged,
            "queued_for_review": report.queued_for_review,
            "pairs_compared": report.pairs_compared,
            "seconds_by_step": report.seconds,
            "setup_seconds": {"resolve_base": round(base_seconds, 2), "load_base": round(load_seconds, 2)},
            "peak_rss_mb": round(peak_rss_mb(), 1),
            "new_customers_ratio": round(report.created / max(len(new_ids), 1), 3),
            "new_identities_whose_person_is_in_base": int(
                records["true_person_id"].iloc[base:].isin(set(records["true_person_id"].iloc[:base])).sum()
            ),
        }
    finally:
        if keep:
            print(f"kept database: {url}", file=sys.stderr)
        else:
            await drop_database(url)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", type=int, nargs="*", default=[100_000, 1_000_000])
    parser.add_argument("--incremental", type=int, default=0, help="new identities to link (0: skip)")
    parser.add_argument("--base", type=int, default=1_000_000, help="existing identities for --incremental")
    parser.add_argument("--database-url", default=None)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument(
        "--keep-database", action="store_true", help="--incremental: keep c360_bench for looking at its plans"
    )
    parser.add_argument(
        "--data",
        choices=["synthetic", "noisy"],
        default="synthetic",
        help="full runs: synthetic_people, or noisy_omnichannel_people (issue 16's noise)",
    )
    parser.add_argument("--one-size", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one_size is not None:
        print(json.dumps(run_full(args.one_size, args.seed, args.data)))
        return
    results = []
    for size in [s for s in args.sizes if s > 0]:
        out = subprocess.run(
            [
                sys.executable,
                __file__,
                "--one-size",
                str(size),
                "--seed",
                str(args.seed),
                "--data",
                args.data,
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        results.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(json.dumps(results[-1]), file=sys.stderr, flush=True)
    if args.incremental:
        import os

        url = args.database_url or os.environ.get("DATABASE_URL")
        if not url:
            raise SystemExit("--incremental needs --database-url or DATABASE_URL")
        results.append(
            asyncio.run(run_incremental(args.base, args.incremental, url, args.seed, args.keep_database))
        )
    print(json.dumps({"identity_benchmarks": results}, indent=2))


if __name__ == "__main__":
    main()
