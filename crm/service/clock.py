"""SLA clocks: a deadline `hours` after a start, counting every hour (calendar) or only the configured
business hours in the retailer's zone (weekdays, opening times, holidays)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from crm.service.config import BusinessHours, Clock


def deadline(start: datetime, hours: float, clock: Clock, hours_of: BusinessHours, timezone: str) -> datetime:
    """When `hours` of the clock have passed since `start` (an aware datetime; the answer is in UTC)."""
    if clock == "calendar":
        return (start + timedelta(hours=hours)).astimezone(UTC)
    zone = ZoneInfo(timezone)
    left = timedelta(hours=hours)
    here = start.astimezone(zone)
    holidays = set(hours_of.holidays)
    # Walk day by day: at most a year of days for the largest target the configuration allows.
    for _ in range(3660):
        day = here.date()
        opens = datetime.combine(day, hours_of.start, zone)
        closes = datetime.combine(day, hours_of.end, zone)
        if day.isoweekday() in hours_of.weekdays and day not in holidays and here < closes:
            begin = max(here, opens)
            if begin + left <= closes:
                return (begin + left).astimezone(UTC)
            left -= closes - begin
        here = datetime.combine(day + timedelta(days=1), hours_of.start, zone)
    raise ValueError("no business hours within ten years: check business_hours")
