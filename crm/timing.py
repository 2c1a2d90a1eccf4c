"""Per-step wall time for the CRM runs, so a slow run says where its time went (logged and benchmarked)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager


class TimedSteps:
    """Mixin for a run's counts dataclass, which declares `seconds: dict[str, float]`."""

    seconds: dict[str, float]

    @contextmanager
    def timed(self, step: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[step] = round(time.perf_counter() - started, 3)
