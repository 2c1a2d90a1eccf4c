"""Wire formats the platforms use for times and money, and request parsing shared by the gateways."""

from __future__ import annotations

import time
from datetime import datetime
from urllib.parse import parse_qsl

from starlette.requests import Request

from sync.simulator.config import CST


def yuan(fen: int) -> str:
    """Integer fen as the platforms' decimal yuan string: 50800 -> "508.00"."""
    sign = "-" if fen < 0 else ""
    fen = abs(fen)
    return f"{sign}{fen // 100}.{fen % 100:02d}"


_DATES: dict[int, str] = {}


def _clock_parts(ts: int) -> tuple[str, int, int, int]:
    # Days repeat across rows, so the calendar date is computed once per day and the time by arithmetic.
    day, seconds = divmod(ts + 8 * 3600, 86400)
    date = _DATES.get(day)
    if date is None:
        t = time.gmtime(day * 86400)
        date = _DATES[day] = f"{t.tm_year:04d}-{t.tm_mon:02d}-{t.tm_mday:02d}"
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return date, hours, minutes, secs


def gmt8(ts: int | None) -> str | None:
    """`yyyy-MM-dd HH:mm:ss` in GMT+8, as TOP and JOS send times."""
    if ts is None:
        return None
    date, h, m, s = _clock_parts(ts)
    return f"{date} {h:02d}:{m:02d}:{s:02d}"


def iso(ts: int | None) -> str | None:
    """ISO 8601 with the +08:00 offset, as our own APIs send times."""
    if ts is None:
        return None
    date, h, m, s = _clock_parts(ts)
    return f"{date}T{h:02d}:{m:02d}:{s:02d}+08:00"


def weibo_time(ts: int) -> str:
    """`Wed Jun 01 00:50:25 +0800 2011`. English names regardless of locale."""
    moment = datetime.fromtimestamp(ts, CST)
    day = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")[moment.weekday()]
    month = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")[
        moment.month - 1
    ]
    return f"{day} {month} {moment:%d %H:%M:%S} +0800 {moment.year}"


def parse_gmt8(value: str) -> int:
    """Parse `yyyy-MM-dd HH:mm:ss` (GMT+8) to epoch seconds; ValueError when malformed."""
    return int(datetime.strptime(value.strip(), "%Y-%m-%d %H:%M:%S").replace(tzinfo=CST).timestamp())


def parse_iso(value: str) -> int:
    """Parse an ISO 8601 time; a naive one is taken as GMT+8 (the platforms' zone)."""
    text = value.strip().replace("Z", "+00:00")
    # An unencoded "+" in a query string arrives as a space: "2026-09-01T00:00:00 08:00".
    if "T" in text and " " in text:
        text = text.replace(" ", "+")
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=CST)
    return int(moment.timestamp())


async def gateway_params(request: Request) -> dict[str, str]:
    """Query-string and form-encoded body parameters together, as TOP and JOS accept both.
    Parsed by hand so the simulator needs no multipart library."""
    params = dict(request.query_params)
    body = (await request.body()).decode("utf-8", errors="replace")
    if body:
        params.update(parse_qsl(body, keep_blank_values=True))
    return params
