"""Wire formats the platforms use for times and money, and request parsing shared by the gateways."""

from __future__ import annotations

import functools
import time
from datetime import datetime
from typing import Any
from urllib.parse import parse_qsl

import orjson
from starlette.requests import Request
from starlette.responses import JSONResponse

from sync.simulator.config import CST


def _yuan(fen: int) -> str:
    sign = "-" if fen < 0 else ""
    fen = abs(fen)
    return f"{sign}{fen // 100}.{fen % 100:02d}"


# Amounts repeat across rows (shelf prices times small quantities), so each string is built once.
_YUAN: dict[int, str] = {}


def yuan(fen: int) -> str:
    """Integer fen as the platforms' decimal yuan string: 50800 -> "508.00"."""
    text = _YUAN.get(fen)
    if text is None:
        text = _yuan(fen)
        if len(_YUAN) < 1_000_000:
            _YUAN[fen] = text
    return text


_DATES: dict[int, str] = {}
# "HH:MM:SS" for every second of a day: one list index instead of three divmods and a format per time.
_CLOCK = [f"{h:02d}:{m:02d}:{s:02d}" for h in range(24) for m in range(60) for s in range(60)]


def _date(day: int) -> str:
    # Days repeat across rows, so the calendar date is computed once per day.
    date = _DATES.get(day)
    if date is None:
        t = time.gmtime(day * 86400)
        date = _DATES[day] = f"{t.tm_year:04d}-{t.tm_mon:02d}-{t.tm_mday:02d}"
    return date


def gmt8(ts: int | None) -> str | None:
    """`yyyy-MM-dd HH:mm:ss` in GMT+8, as TOP and JOS send times."""
    if ts is None:
        return None
    day, seconds = divmod(ts + 28800, 86400)
    return f"{_DATES.get(day) or _date(day)} {_CLOCK[seconds]}"


def iso(ts: int | None) -> str | None:
    """ISO 8601 with the +08:00 offset, as our own APIs send times."""
    if ts is None:
        return None
    day, seconds = divmod(ts + 28800, 86400)
    return f"{_DATES.get(day) or _date(day)}T{_CLOCK[seconds]}+08:00"


def weibo_time(ts: int) -> str:
    """`Wed Jun 01 00:50:25 +0800 2011`. English names regardless of locale."""
    moment = datetime.fromtimestamp(ts, CST)
    day = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")[moment.weekday()]
    month = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")[
        moment.month - 1
    ]
    return f"{day} {month} {moment:%d %H:%M:%S} +0800 {moment.year}"


@functools.lru_cache(maxsize=4096)
def parse_gmt8(value: str) -> int:
    """Parse `yyyy-MM-dd HH:mm:ss` (GMT+8) to epoch seconds; ValueError when malformed. Cached: a
    pull sends each window's bounds with every page, and request timestamps repeat within a second
    (strptime costs ~7 us, three times per gateway call)."""
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
    # Gateway calls are form POSTs: skip building QueryParams when there is no query string.
    params = dict(request.query_params) if request.scope.get("query_string") else {}
    body = (await request.body()).decode("utf-8", errors="replace")
    if body:
        params.update(parse_qsl(body, keep_blank_values=True))
    return params


class ORJSONResponse(JSONResponse):
    """JSONResponse encoded by orjson: the same compact UTF-8 JSON as Starlette's, several times
    faster on 100-500 row pages."""

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)
