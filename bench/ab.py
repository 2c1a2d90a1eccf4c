"""What the A/B benches (`landing_ab`, `pipeline_ab`) share: the simulated Tmall feed they compare on, and
their report."""

from __future__ import annotations

import argparse
import json
import os
from typing import Any


def feed_arguments(parser: argparse.ArgumentParser) -> None:
    """The simulated feed both sides are given, batched as the product batches it."""
    parser.add_argument("--orders", type=int, default=200_000)
    parser.add_argument("--people", type=int, default=20_000)
    parser.add_argument("--days", type=int, default=80)
    parser.add_argument("--batch-size", type=int, default=10_000)


def print_report(benchmark: str, args: argparse.Namespace, runs: list[dict[str, Any]]) -> None:
    print(json.dumps({
        "benchmark": benchmark, "a": args.a, "b": args.b, "machine": {"cpus": os.cpu_count()},
        "batch_size": args.batch_size, "runs": runs,
    }, indent=2))  # fmt: skip
