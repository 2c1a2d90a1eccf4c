"""A module like the CRM ones that `serve` schedules through SCHEDULE_MODULES (used by the tests)."""

from __future__ import annotations

from prefect import flow


@flow(name="nightly-recompute")
def nightly_recompute() -> int:
    return 0


SCHEDULES = [(nightly_recompute, "0 3 * * *")]
