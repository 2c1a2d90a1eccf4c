"""Requests per caller per minute, a token bucket per token subject and role, in this process.

A runaway client (a mini-program in a retry loop, a job without backoff) gets 429 with Retry-After
instead of taking the API and its database down for everyone. Per process: with N workers the limit is
N times this; a shared limit belongs in the gateway in front."""

from __future__ import annotations

import time
from dataclasses import dataclass


@dataclass
class Bucket:
    tokens: float
    updated: float


class RateLimiter:
    def __init__(self, per_minute: int, max_callers: int = 100_000) -> None:
        self.rate = per_minute / 60.0
        self.burst = float(per_minute)
        self.max_callers = max_callers
        self.buckets: dict[str, Bucket] = {}

    def take(self, caller: str, now: float | None = None) -> float:
        """0 when the request may go; otherwise the seconds until it may."""
        now = time.monotonic() if now is None else now
        bucket = self.buckets.get(caller)
        if bucket is None:
            if len(self.buckets) >= self.max_callers:  # bounded memory: forget the idlest half
                for key, _ in sorted(self.buckets.items(), key=lambda kv: kv[1].updated)[
                    : self.max_callers // 2
                ]:
                    del self.buckets[key]
            bucket = self.buckets[caller] = Bucket(self.burst, now)
        bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.updated) * self.rate)
        bucket.updated = now
        if bucket.tokens >= 1:
            bucket.tokens -= 1
            return 0.0
        return (1 - bucket.tokens) / self.rate
