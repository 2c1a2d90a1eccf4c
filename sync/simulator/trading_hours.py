"""When things happen: a monotone map from a row's index to its time, shaped like real trade.

Online orders peak in the evening (20:00-23:00) and barely happen before dawn; stores only sell
between 10:00 and 22:00. Weekends are busier, the ten days before 11.11 carry pre-sales and
双十一 itself is several times a normal day. The map from index to time is non-decreasing, so a time
window is still an index range (found by binary search) and row i stays a pure function of i.
"""

from __future__ import annotations

import bisect
from datetime import datetime, timedelta

import numpy as np
import numpy.typing as npt

from sync.simulator.config import CST
from sync.simulator.seeding import uniform_one, uniforms

DAY = 86400
I64 = npt.NDArray[np.int64]

# Relative activity per hour of day, 00:00-23:00.
ONLINE_HOURS = (3, 2, 1, 1, 1, 1, 2, 4, 6, 8, 9, 9, 8, 8, 9, 9, 8, 7, 7, 9, 11, 12, 11, 7)
STORE_HOURS = (0,) * 10 + (4, 6, 7, 6, 6, 7, 8, 8, 9, 10, 9, 6) + (0, 0)
HORIZON_DAYS = 3 * 365  # the clock can be advanced this far past the history before rows run out


def _day_weight(day: datetime, promotions: bool) -> float:
    weight = 1.25 if day.weekday() >= 5 else 1.0
    if promotions and day.month == 11:
        if day.day == 11:
            weight *= 6.0
        elif 1 <= day.day <= 10:
            weight *= 1.5
        elif day.day == 12:
            weight *= 2.0
    return weight


class Rhythm:
    """Index -> time for `per_span` rows over the first `days` days from `start`, continuing at the
    same average rate afterwards."""

    def __init__(
        self,
        key: int,
        start: datetime,
        days: int,
        per_span: int,
        hours: tuple[int, ...],
        promotions: bool = True,
    ) -> None:
        self.key = key
        self.start = int(start.timestamp())
        # Hours of the day are China's, whatever zone `start` was given in.
        local_midnight = start.astimezone(CST).replace(hour=0, minute=0, second=0, microsecond=0)
        self._offset = int((start - local_midnight).total_seconds())
        weights = np.array(
            [_day_weight(local_midnight + timedelta(days=d), promotions) for d in range(days + HORIZON_DAYS)]
        )
        self._day_cumulative = np.concatenate([[0.0], np.cumsum(weights)])
        self._weights = weights
        self._per_row = self._day_cumulative[days] / max(1, per_span)
        # Rows that fit in the calendar; searches stop here instead of running past its end.
        self._capacity = int(self._day_cumulative[-1] / self._per_row) - 1
        open_hours = [h for h, w in enumerate(hours) if w > 0]
        first, last = open_hours[0], open_hours[-1] + 1
        active = np.array(hours[first:last], dtype=np.float64)
        self._hour_cdf = np.concatenate([[0.0], np.cumsum(active) / active.sum()])
        self._hour_seconds = np.arange(first, last + 1, dtype=np.float64) * 3600
        self._day_list: list[float] = self._day_cumulative.tolist()
        self._weight_list: list[float] = self._weights.tolist()
        self._cdf_list: list[float] = self._hour_cdf.tolist()
        self._seconds_list: list[float] = self._hour_seconds.tolist()

    def times(self, index: npt.ArrayLike, jitter: npt.NDArray[np.float64] | None = None) -> I64:
        """Times (epoch seconds) of the rows at `index`; non-decreasing in the index. `jitter` is
        `uniforms(key, index, 0)` when the caller has it already."""
        idx = np.asarray(index, dtype=np.int64)
        position = (idx + (uniforms(self.key, idx, 0) if jitter is None else jitter)) * self._per_row
        day = np.minimum(
            np.searchsorted(self._day_cumulative, position, side="right") - 1, len(self._weights) - 1
        )
        fraction = np.clip((position - self._day_cumulative[day]) / self._weights[day], 0.0, 0.999999)
        k = np.minimum(np.searchsorted(self._hour_cdf, fraction, side="right") - 1, len(self._hour_cdf) - 2)
        x0, x1 = self._hour_cdf[k], self._hour_cdf[k + 1]
        y0, y1 = self._hour_seconds[k], self._hour_seconds[k + 1]
        # Spelled out (not np.interp) so `time` below repeats the exact float operations.
        seconds = y0 + (fraction - x0) * (y1 - y0) / (x1 - x0)
        # Days are counted from local midnight of the start day; rows before `start` are pushed to it.
        return np.maximum(self.start, self.start - self._offset + day * DAY + seconds.astype(np.int64))

    def time(self, i: int) -> int:
        """Time of row i: `times` for one index in plain Python (binary searches call it a lot)."""
        position = (i + uniform_one(self.key, i, 0)) * self._per_row
        day = min(bisect.bisect_right(self._day_list, position) - 1, len(self._weight_list) - 1)
        fraction = min(max((position - self._day_list[day]) / self._weight_list[day], 0.0), 0.999999)
        k = min(bisect.bisect_right(self._cdf_list, fraction) - 1, len(self._cdf_list) - 2)
        x0, x1 = self._cdf_list[k], self._cdf_list[k + 1]
        y0, y1 = self._seconds_list[k], self._seconds_list[k + 1]
        seconds = y0 + (fraction - x0) * (y1 - y0) / (x1 - x0)
        return max(self.start, self.start - self._offset + day * DAY + int(seconds))

    def first_at_or_after(self, t: int) -> int:
        """Smallest index whose time is >= t (binary search over the monotone map)."""
        if self.time(self._capacity) < t:
            return self._capacity
        lo, hi = 0, 1
        while self.time(hi) < t:
            lo, hi = hi, min(hi * 2, self._capacity)
        while lo < hi:
            mid = (lo + hi) // 2
            if self.time(mid) < t:
                lo = mid + 1
            else:
                hi = mid
        return lo
